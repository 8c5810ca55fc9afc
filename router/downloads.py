"""How stored bytes are served (uploaded files and stored outputs): never sniffed by a browser,
and shown inline only when they are images, audio or video; everything else is an attachment,
so an uploaded HTML or SVG page can never run as the platform's own origin."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

INLINE = ("image/", "audio/", "video/")
UNSAFE_INLINE = ("image/svg+xml",)  # an image that can carry script


def _inline(media_type: str | None) -> bool:
    media = (media_type or "application/octet-stream").split(";")[0].strip().lower()
    return media.startswith(INLINE) and media not in UNSAFE_INLINE


def safe_headers(media_type: str | None, filename: str) -> dict[str, str]:
    """The headers of a streamed answer that `file_response` sets on a file's."""
    kind = "inline" if _inline(media_type) else "attachment"
    return {"Content-Disposition": f"{kind}; filename*=utf-8''{quote(filename)}",
            "X-Content-Type-Options": "nosniff"}


def file_response(path: Path, media_type: str, filename: str | None = None,
                  background: BackgroundTask | None = None) -> FileResponse:
    return FileResponse(path, media_type=media_type, filename=filename or path.name,
                        content_disposition_type="inline" if _inline(media_type) else "attachment",
                        headers={"X-Content-Type-Options": "nosniff"}, background=background)
