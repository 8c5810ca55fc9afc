"""Signed, expiring downloads of stored files, from either store: vendo's delivery path. The
route is mounted twice: in the router's API (in-process use and tests) and, in a cluster, as its
own Serve app at `/v1/storage` (`router/delivery.py`), scaled apart from the router so file bytes
never load the API. A link's signature is all it checks: an `Authorization` header, which the
official client sends with every request, is ignored."""

from __future__ import annotations

import mimetypes
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from router.downloads import file_response, safe_headers
from vendo_core.errors import NotFound
from vendo_core.storage import ObjectStore

PREFIX = "/v1/storage"


async def _objects(request: Request) -> ObjectStore:
    return request.app.state.objects


Objects = Annotated[ObjectStore, Depends(_objects)]


async def download(key: str, request: Request, objects: Objects, expires: int = 0, sig: str = ""):
    """Serve a stored file to whoever holds a valid, unexpired link."""
    if not objects.verify(key, expires, sig):
        raise NotFound("File", key)
    media = mimetypes.guess_type(key)[0] or "application/octet-stream"
    try:
        path = await run_in_threadpool(objects.local_path, key)
        if path is not None:
            return file_response(path, media)
        blob = await run_in_threadpool(objects.read, key, request.headers.get("range"))
    except (FileNotFoundError, ValueError, IsADirectoryError):
        raise NotFound("File", key) from None
    headers = {**safe_headers(media, key.rsplit("/", 1)[-1]), "Content-Length": str(blob.size),
               "Accept-Ranges": "bytes"}
    if blob.content_range:
        headers["Content-Range"] = blob.content_range
    return StreamingResponse(iterate_in_threadpool(blob.chunks), status_code=206 if blob.content_range else 200,
                             media_type=media, headers=headers)


router = APIRouter(prefix=PREFIX, tags=["files"])
router.add_api_route("/{key:path}", download, methods=["GET"], include_in_schema=False)

# the same route at the root of the delivery app, which Serve mounts at PREFIX
mounted = APIRouter(tags=["files"])
mounted.add_api_route("/{key:path}", download, methods=["GET"], include_in_schema=False)
