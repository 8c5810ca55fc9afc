"""Streaming parse of a `POST /v1/files` body, as the replicate client sends it: a file part
`content` (with filename and Content-Type) and optional text parts (`metadata`, `filename`,
`type`). The file goes to a temporary file while it arrives, hashed on the way; the whole body is
counted as it streams, so an oversize upload is refused (413) without being read to the end, even
without a Content-Length."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from vendo_core.errors import InvalidRequest, PayloadTooLarge
from vendo_core.files import Upload

FILE_PART = "content"
MAX_FIELD_BYTES = 64 * 1024
MAX_PARTS = 16
FLUSH_BYTES = 1024 * 1024
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# type/subtype with optional parameters, no control characters (it becomes a response header)
_MEDIA_TYPE = re.compile(rf"^{_TOKEN}/{_TOKEN}(?:\s*;[^\x00-\x1f\x7f]*)?$")


class _Sink:
    """The file part: a temporary file written off the event loop, hashed on the way."""

    def __init__(self):
        fd, name = tempfile.mkstemp(prefix="vendo-upload-")
        self.path = Path(name)
        self.file = os.fdopen(fd, "wb")
        self.pending = bytearray()
        self.size = 0
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5()  # noqa: S324 - an etag, not a security check

    def _write(self, data: bytes) -> None:
        self.file.write(data)
        self.sha256.update(data)
        self.md5.update(data)

    async def flush(self, force: bool = False) -> None:
        if self.pending and (force or len(self.pending) >= FLUSH_BYTES):
            data, self.pending = bytes(self.pending), bytearray()
            self.size += len(data)
            await asyncio.to_thread(self._write, data)

    def close(self, keep: bool) -> None:
        self.file.close()
        if not keep:
            self.path.unlink(missing_ok=True)


class _Parts:
    """python-multipart callbacks: route the `content` part to the sink, keep small text parts."""

    def __init__(self, charset: str):
        self.charset = charset
        self.sink: _Sink | None = None
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.part_type: str | None = None
        self.parts = 0
        self.ended = False
        self._name = b""
        self._value = b""
        self._headers: dict[bytes, bytes] = {}
        self._field: str | None = None
        self._data = bytearray()
        self._is_file = False

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise InvalidRequest("body", f"at most {MAX_PARTS} form parts")
        self._headers, self._field, self._data, self._is_file = {}, None, bytearray(), False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._name.lower()] = self._value
        self._name, self._value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise InvalidRequest("body", 'every form part needs a Content-Disposition "name"')
        self._field = options[b"name"].decode(self.charset, "replace")
        if self._field == FILE_PART:
            if self.sink is not None:
                raise InvalidRequest(FILE_PART, "only one file per upload")
            self._is_file = True
            self.sink = _Sink()
            if b"filename" in options:
                self.filename = options[b"filename"].decode(self.charset, "replace")
            ctype = self._headers.get(b"content-type", b"").decode("latin-1").strip()
            self.part_type = ctype or None

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            assert self.sink is not None
            self.sink.pending += data[start:end]
            return
        if len(self._data) + (end - start) > MAX_FIELD_BYTES:
            raise InvalidRequest(self._field or "body", f"form fields hold at most {MAX_FIELD_BYTES} bytes")
        self._data += data[start:end]

    def on_part_end(self) -> None:
        if not self._is_file and self._field is not None:
            self.fields[self._field] = self._data.decode(self.charset, "replace")

    def on_end(self) -> None:
        self.ended = True


async def read_upload(content_type: str | None, body: AsyncIterator[bytes], limit_bytes: int) -> Upload:
    """Parse a multipart upload from `body`, counting every byte against `limit_bytes`.

    Raises PayloadTooLarge as soon as the count passes the limit, and InvalidRequest (naming the
    header or part) for anything that is not a well-formed upload with a `content` part."""
    ctype, params = parse_options_header(content_type or "")
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise InvalidRequest("Content-Type", "must be multipart/form-data with a boundary")
    charset = params.get(b"charset", b"utf-8").decode("latin-1") or "utf-8"
    parts = _Parts(charset)
    callbacks = {name: getattr(parts, name) for name in (
        "on_part_begin", "on_part_data", "on_part_end", "on_header_field", "on_header_value",
        "on_header_end", "on_headers_finished", "on_end")}
    parser = MultipartParser(params[b"boundary"], callbacks)
    received = 0
    try:
        async for chunk in body:
            received += len(chunk)
            if received > limit_bytes:
                raise PayloadTooLarge(limit_bytes)
            parser.write(chunk)
            if parts.sink is not None:
                await parts.sink.flush()
        parser.finalize()
        if not parts.ended:
            raise InvalidRequest("body", "the multipart body ended early")
        if parts.sink is None:
            raise InvalidRequest(FILE_PART, "a file part named 'content' is required")
        await parts.sink.flush(force=True)
    except MultipartParseError as e:
        if parts.sink is not None:
            parts.sink.close(keep=False)
        raise InvalidRequest("body", f"malformed multipart body: {e}") from None
    except BaseException:
        if parts.sink is not None:
            parts.sink.close(keep=False)
        raise
    sink = parts.sink
    sink.close(keep=True)
    fields = parts.fields
    filename = fields.get("filename") or parts.filename or "file"
    content_type = fields.get("type") or parts.part_type or "application/octet-stream"
    if not _MEDIA_TYPE.match(content_type):
        sink.path.unlink(missing_ok=True)
        raise InvalidRequest("type" if fields.get("type") else FILE_PART,
                             f"not a media type: {content_type!r}")
    return Upload(sink.path, filename, content_type, sink.size, sink.sha256.hexdigest(),
                  sink.md5.hexdigest(), fields)
