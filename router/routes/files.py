"""Files: upload (multipart, as the replicate client sends it), get, list, delete, and the signed
download of the bytes."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.background import BackgroundTask

from router import wire
from router.deps import CurrentAccount, Rt, base_url
from router.downloads import file_response
from router.multipart import read_upload
from vendo_core.files import discard_download

router = APIRouter(prefix="/v1", tags=["files"])


async def _file_json(rt, rec: dict, base: str) -> dict:
    return wire.file(rec, base, await rt.files.download_url(rec, base, rt.settings.url_expiry_s))


@router.post("/files", status_code=201, response_model=wire.File)
async def create_file(request: Request, account: CurrentAccount, rt: Rt):
    """Upload a file (multipart part `content`, optional `metadata` JSON string)."""
    upload = await read_upload(request.headers.get("content-type"), request.stream(),
                               rt.settings.max_upload_bytes)
    try:
        rec = await rt.files.create(account, upload)
    finally:
        upload.discard()
    return await _file_json(rt, rec, base_url(request))


@router.get("/files", response_model=wire.Page[wire.File])
async def list_files(request: Request, account: CurrentAccount, rt: Rt, cursor: str | None = None):
    """The caller's files, newest first."""
    recs, nxt = await rt.files.list(account, cursor)
    base = base_url(request)
    return wire.page([await _file_json(rt, r, base) for r in recs],
                     f"{base}/v1/files?cursor={nxt}" if nxt else None)


@router.get("/files/{file_id}", response_model=wire.File)
async def get_file(file_id: str, request: Request, account: CurrentAccount, rt: Rt):
    """A file's metadata (the bytes are at its signed download link)."""
    return await _file_json(rt, await rt.files.get(account, file_id), base_url(request))


@router.delete("/files/{file_id}", status_code=204)
async def delete_file(file_id: str, account: CurrentAccount, rt: Rt):
    """Delete a file."""
    await rt.files.delete(account, file_id)
    return Response(status_code=204)


@router.get("/files/{file_id}/download")
async def download_file(file_id: str, rt: Rt, owner: str = "", expiry: int = 0, signature: str = ""):
    """A file's bytes, for whoever holds a valid, unexpired signed link."""
    path, rec, temporary = await rt.files.open_signed(file_id, owner, expiry, signature)
    return file_response(path, rec.content_type, rec.name,
                         background=BackgroundTask(discard_download, path) if temporary else None)
