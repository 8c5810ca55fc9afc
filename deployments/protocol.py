"""The pipe between a replica and its model worker process: length-prefixed JSON frames.

Each frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON holding one object.
JSON, not pickle: a frame from the worker is data, never code, so a hostile model can at worst
send the parent wrong values (which it checks), never make it run anything. A frame longer than
`MAX_FRAME` is refused, so a worker cannot make its parent allocate without bound.

Parent → worker: `init`, `predict`, `cancel`. Worker → parent: `log`, `ready`, `setup_failed`,
`item`, `done`, `failed`, `introspected`. The worker's module docstring says what each carries.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import threading
from typing import Any

HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024


class ProtocolError(Exception):
    """The other end sent something that is not a frame."""


def encode(message: dict[str, Any]) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    if len(data) > MAX_FRAME:
        raise ProtocolError(f"a {len(data)}-byte message is over the {MAX_FRAME}-byte frame limit")
    return HEADER.pack(len(data)) + data


def decode(data: bytes) -> dict[str, Any]:
    try:
        message = json.loads(data)
    except ValueError as e:
        raise ProtocolError(f"not JSON: {e}") from None
    if not isinstance(message, dict):
        raise ProtocolError("a frame must hold a JSON object")
    return message


class FdWriter:
    """Blocking, thread-safe frame writer on a file descriptor (the worker's side)."""

    def __init__(self, fd: int):
        self.fd = fd
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        frame = encode(message)
        with self._lock:
            view = memoryview(frame)
            while view:
                view = view[os.write(self.fd, view):]


def read_frame_sync(fd: int) -> dict[str, Any] | None:
    """One frame from a blocking descriptor; None at end of file."""
    head = _read_exactly(fd, HEADER.size)
    if head is None:
        return None
    (size,) = HEADER.unpack(head)
    if size > MAX_FRAME:
        raise ProtocolError(f"frame of {size} bytes is over the limit")
    body = _read_exactly(fd, size)
    if body is None:
        raise ProtocolError("pipe closed inside a frame")
    return decode(body)


def _read_exactly(fd: int, n: int) -> bytes | None:
    parts, got = [], 0
    while got < n:
        chunk = os.read(fd, n - got)
        if not chunk:
            if got:
                raise ProtocolError("pipe closed inside a frame")
            return None
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """One frame from an asyncio stream (the parent's side); None at end of file."""
    try:
        head = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as e:
        if e.partial:
            raise ProtocolError("pipe closed inside a frame") from None
        return None
    (size,) = HEADER.unpack(head)
    if size > MAX_FRAME:
        raise ProtocolError(f"frame of {size} bytes is over the limit")
    try:
        body = await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise ProtocolError("pipe closed inside a frame") from None
    return decode(body)
