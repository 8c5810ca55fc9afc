"""Files only vendo's own user may read: tokens, passwords, and the state that holds them."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` with mode 0600 (also when the file existed with a wider mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def private_dir(path: str | os.PathLike) -> Path:
    """`path` made (if missing) and closed to other users (0700)."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    os.chmod(p, 0o700)
    return p
