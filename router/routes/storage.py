"""Signed, expiring downloads of stored files for `file://` storage (S3 presigns its own)."""

from __future__ import annotations

import mimetypes

from fastapi import APIRouter

from router.deps import Rt
from router.downloads import file_response
from vendo_core.errors import NotFound

router = APIRouter(tags=["files"])


@router.get("/v1/storage/{key:path}", include_in_schema=False)
async def download(key: str, rt: Rt, expires: int = 0, sig: str = ""):
    """Serve a stored file to whoever holds a valid, unexpired link."""
    objects = rt.objects
    verify = getattr(objects, "verify", None)
    if verify is None or not verify(key, expires, sig):
        raise NotFound("File", key)
    try:
        path = objects.open(key)
    except (FileNotFoundError, ValueError):
        raise NotFound("File", key) from None
    if not path.is_file():
        raise NotFound("File", key)
    return file_response(path, mimetypes.guess_type(key)[0] or "application/octet-stream")
