"""The one signer of expiring links (stored files on `file://` storage, uploaded files' downloads):
HMAC-SHA256 under one key, urlsafe base64 without padding, compared in constant time."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import tempfile
import time
from pathlib import Path

KEY_FILE = "signing.key"


class LinkSigner:
    def __init__(self, key: bytes):
        if not key:
            raise ValueError("a link signer needs a non-empty key")
        self._key = bytes(key)

    def sign(self, *parts: str | int) -> str:
        msg = "\n".join(str(p) for p in parts).encode()
        return base64.urlsafe_b64encode(hmac.new(self._key, msg, hashlib.sha256).digest()).decode().rstrip("=")

    def verify(self, signature: str, expires: int | str, *parts: str | int, now: float | None = None) -> bool:
        """Whether `signature` signs `parts` until `expires` (a Unix time), and that is not past."""
        try:
            expires = int(expires)
        except (TypeError, ValueError):
            return False
        if not isinstance(signature, str) or (time.time() if now is None else now) > expires:
            return False
        # as bytes: compare_digest refuses str with non-ASCII characters (anyone can send those)
        return hmac.compare_digest(self.sign(*parts, expires).encode(),
                                   signature.rstrip("=").encode("utf-8", "replace"))


def load_signing_key(data_dir: str | Path) -> bytes:
    """The random 32-byte key at `data_dir/signing.key`, created (mode 0600) if missing."""
    path = Path(data_dir).expanduser() / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".signing-")  # created 0600
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32))
        try:
            os.link(tmp, path)  # atomic and never overwrites: a racing creator's key wins
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    key = path.read_bytes()
    if len(key) < 16:
        raise ValueError(f"signing key at {path} is too short")
    return key


def signer_for(settings) -> LinkSigner:
    """The signer `settings` name: `signing_key` when set, else the data directory's key file."""
    key = settings.signing_key.encode() if settings.signing_key else load_signing_key(settings.resolved_data_dir())
    return LinkSigner(key)
