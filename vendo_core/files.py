"""Uploaded files: records in Redis, bytes in the object store under `files/{id}`, owned by one
account, gone after `file_expiry_s`. The router serves metadata and signed download links; a
model replica turns the platform's own `/v1/files/{id}` input URLs into local copies of the
stored bytes (never an HTTP fetch of our own API)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis

from vendo_core.errors import InvalidInput, InvalidRequest, NotFound
from vendo_core.ids import OPAQUE_ID, new_prediction_id
from vendo_core.keys import Keys, file_object
from vendo_core.records import Account, File
from vendo_core.signing import LinkSigner
from vendo_core.storage import ObjectStore
from vendo_core.store import newest_first, now_iso

log = logging.getLogger("vendo.files")

# how an output file is stored in a prediction: its object-store key behind this marker, turned
# into an expiring URL only when read
FILE_MARKER = "vendo+file://"


def stored_ref(key: str) -> str:
    """The stored form of an output file at object-store `key`."""
    return FILE_MARKER + key


def stored_key(value: str) -> str | None:
    """The object-store key of a stored output file, or None for any other string."""
    return value[len(FILE_MARKER):] if value.startswith(FILE_MARKER) else None


# the path of a platform file URL, under any base (REPLICATE_BASE_URL may carry a path prefix)
_FILE_PATH = re.compile(r"(?:^|/)v1/files/([a-z2-7]{26})$")
SWEEP_BATCH = 200
SWEEP_GRACE_S = 3600


@dataclass
class Upload:
    """One received file, in a temporary file the caller must `discard()`."""

    path: Path
    filename: str
    content_type: str
    size: int
    sha256: str
    md5: str
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def _safe_name(name: str) -> str:
    name = os.path.basename(name.replace("\\", "/")).strip().replace("\0", "")
    return name[:255] or "file"


def _metadata(raw: str | None) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    try:
        value = json.loads(raw)
    except ValueError as e:
        raise InvalidRequest("metadata", f"must be a JSON object: {e}") from None
    if not isinstance(value, dict):
        raise InvalidRequest("metadata", "must be a JSON object")
    return value


def file_urls_in(value: Any) -> list[str]:
    """Every string in an input value (nested lists and objects included)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in file_urls_in(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in file_urls_in(v)]
    return []


def file_id_of(url: str) -> str | None:
    """The file id if `url` looks like a platform file URL (`…/v1/files/{id}`), else None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.query or parts.fragment:
        return None
    m = _FILE_PATH.search(parts.path)
    return m.group(1) if m else None


class Files:
    """The files service: create, read, list, delete, sign, expire, and localize for replicas."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, objects: ObjectStore, *, expiry_s: int = 86400,
                 signer: LinkSigner | None = None):
        self.redis = redis
        self.keys = keys
        self.objects = objects
        self.expiry_s = expiry_s
        self.signer = signer  # a replica, which only reads files, has none

    # records

    async def _record(self, file_id: str) -> File | None:
        if not OPAQUE_ID.match(file_id or ""):
            return None
        return _unexpired(await self.redis.hgetall(self.keys.file(file_id)), time.time())

    async def create(self, account: Account, upload: Upload) -> File:
        """Store an upload's bytes and record it for `account`; returns the record."""
        metadata = _metadata(upload.fields.get("metadata"))
        fid = new_prediction_id()
        now = time.time()
        expires = now + self.expiry_s
        key = file_object(fid)
        await asyncio.to_thread(self.objects.put_file, key, upload.path, upload.content_type)
        rec = File(id=fid, account=account.username, name=_safe_name(upload.filename),
                   content_type=upload.content_type, size=upload.size, md5=upload.md5, sha256=upload.sha256,
                   metadata=metadata, created_at=now_iso(now), created_ts=now, expires_at=now_iso(expires),
                   expires_ts=expires, key=key)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.file(fid), mapping=rec.to_redis())
        # the hash outlives the file by an hour: reads already treat it as gone at `expires_ts`, and
        # the sweep still finds whose index to remove it from
        pipe.expireat(self.keys.file(fid), int(expires) + SWEEP_GRACE_S)
        pipe.zadd(self.keys.account_files(account.username), {fid: now})
        pipe.zadd(self.keys.files_expiring(), {fid: expires})
        await pipe.execute()
        return rec

    async def get(self, account: Account, file_id: str) -> File:
        """The caller's unexpired file; NotFound for anything else, whoever owns it."""
        rec = await self._record(file_id)
        if rec is None or rec.account != account.username:
            raise NotFound("File", file_id)
        return rec

    async def list(self, account: Account, cursor: str | None, limit: int = 100) -> tuple[list[File], str | None]:
        """The caller's unexpired files, newest first, keyset-paginated like predictions."""
        try:
            page, nxt = await newest_first(self.redis, self.keys.account_files(account.username), cursor, limit)
        except ValueError as e:
            raise InvalidRequest("cursor", str(e)) from None
        pipe = self.redis.pipeline(transaction=False)
        for fid in page:
            pipe.hgetall(self.keys.file(fid))
        now = time.time()
        out = [rec for raw in await pipe.execute() if (rec := _unexpired(raw, now))]
        return out, nxt

    async def delete(self, account: Account, file_id: str) -> None:
        rec = await self.get(account, file_id)
        await self._remove(file_id, rec.account)

    async def _remove(self, file_id: str, username: str | None) -> None:
        # bytes first: a crash in between leaves a record the sweep still finds
        await asyncio.to_thread(self.objects.delete_prefix, file_object(file_id))
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.file(file_id))
        if username:
            pipe.zrem(self.keys.account_files(username), file_id)
        pipe.zrem(self.keys.files_expiring(), file_id)
        await pipe.execute()

    async def sweep(self) -> int:
        """Delete the files whose expiry passed; returns how many."""
        due = await self.redis.zrangebyscore(self.keys.files_expiring(), "-inf", time.time(),
                                             start=0, num=SWEEP_BATCH)
        for fid in due:
            username = await self.redis.hget(self.keys.file(fid), "account")
            try:
                await self._remove(fid, username)
            except Exception:  # noqa: BLE001 - retried on the next sweep
                log.exception("file %s: could not delete the expired file", fid)
        return len(due)

    # prediction inputs

    async def check_inputs(self, account: Account, payload: dict[str, Any], prefixes: Sequence[str]) -> None:
        """Every input string under one of our file URL `prefixes` must name an unexpired file of
        the caller: InvalidInput naming the field otherwise."""
        for name, value in payload.items():
            for url in file_urls_in(value):
                if not any(url.startswith(p) for p in prefixes):
                    continue
                fid = file_id_of(url)
                rec = await self._record(fid) if fid else None
                if rec is None or rec.account != account.username:
                    raise InvalidInput(name, f"file not found: {url}")

    async def prediction_owner(self, pid: str) -> str | None:
        return await self.redis.hget(self.keys.prediction(pid), "account")

    async def localize(self, owner: str, payload: dict[str, Any], dest: Path) -> dict[str, str]:
        """Download the stored bytes of every platform file URL in `payload` that names a file of
        `owner` into `dest`; returns {url: local path} for `prepare_input(resolve_url=…)`."""
        out: dict[str, str] = {}
        for url in {u for v in payload.values() for u in file_urls_in(v)}:
            fid = file_id_of(url)
            rec = await self._record(fid) if fid else None
            if rec is None or rec.account != owner:
                continue  # not ours: an ordinary URL, downloaded the ordinary way
            local = dest / fid / rec.name
            try:
                await asyncio.to_thread(self.objects.download, rec.key, local)
            except FileNotFoundError:
                continue
            out[url] = str(local)
        return out

    # signed downloads

    async def signed_inputs(self, value: Any, owner: str, base: str, expiry_s: int) -> Any:
        """`value` with each of `owner`'s file URLs (`…/v1/files/{id}`) replaced by a signed
        download link: what a shared prediction's readers get, who hold no token of the owner's."""
        if isinstance(value, str):
            fid = file_id_of(value)
            rec = await self._record(fid) if fid else None
            return await self.download_url(rec, base, expiry_s) if rec is not None and rec.account == owner else value
        if isinstance(value, list):
            return [await self.signed_inputs(v, owner, base, expiry_s) for v in value]
        if isinstance(value, dict):
            return {k: await self.signed_inputs(v, owner, base, expiry_s) for k, v in value.items()}
        return value

    async def download_url(self, rec: File, base: str, expiry_s: int) -> str:
        """`{base}/v1/files/{id}/download?owner=&expiry=&signature=`, good until the link expiry
        or the file's, whichever is first."""
        expiry = int(min(time.time() + expiry_s, rec.expires_ts))
        sig = self.signer.sign(rec.account, rec.id, expiry)
        return f"{base}/v1/files/{rec.id}/download?owner={rec.account}&expiry={expiry}&signature={sig}"

    async def open_signed(self, file_id: str, owner: str, expiry: int, signature: str) -> tuple[Path, File, bool]:
        """(local path, record, whether the path is a temporary copy to delete) for a valid,
        unexpired link; NotFound otherwise."""
        if not self.signer.verify(signature, expiry, owner, file_id):
            raise NotFound("File", file_id)
        rec = await self._record(file_id)
        if rec is None or rec.account != owner:
            raise NotFound("File", file_id)
        opener = getattr(self.objects, "open", None)
        try:
            if opener is not None:
                return await asyncio.to_thread(opener, rec.key), rec, False
            tmp = Path(tempfile.mkdtemp(prefix="vendo-download-")) / "content"
            await asyncio.to_thread(self.objects.download, rec.key, tmp)
            return tmp, rec, True
        except FileNotFoundError:
            raise NotFound("File", file_id) from None


def discard_download(path: Path) -> None:
    shutil.rmtree(path.parent, ignore_errors=True)


def _unexpired(raw: dict[str, str], now: float) -> File | None:
    if not raw or float(raw.get("expires_ts", 0)) <= now:
        return None
    return File.from_redis(raw)
