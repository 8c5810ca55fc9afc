"""How stored bytes are served (uploaded files and `file://` outputs): never sniffed by a browser,
and shown inline only when they are images, audio or video; everything else is an attachment,
so an uploaded HTML or SVG page can never run as the platform's own origin."""

from __future__ import annotations

from pathlib import Path

from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

INLINE = ("image/", "audio/", "video/")
UNSAFE_INLINE = ("image/svg+xml",)  # an image that can carry script


def file_response(path: Path, media_type: str, filename: str | None = None,
                  background: BackgroundTask | None = None) -> FileResponse:
    media = (media_type or "application/octet-stream").split(";")[0].strip().lower()
    inline = media.startswith(INLINE) and media not in UNSAFE_INLINE
    return FileResponse(path, media_type=media_type, filename=filename or path.name,
                        content_disposition_type="inline" if inline else "attachment",
                        headers={"X-Content-Type-Options": "nosniff"}, background=background)
