"""A webhook receiver on 127.0.0.1 for the time-to-webhook measurement: a minimal HTTP/1.1 server
(keep-alive, Content-Length bodies) on the benchmark's own event loop that resolves one future per
path with (arrival time, JSON body) and answers 200."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any


class WebhookSink:
    def __init__(self):
        self._waiting: dict[str, asyncio.Future] = {}
        self._server: asyncio.AbstractServer | None = None
        self.port = 0
        self.deliveries = 0
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> WebhookSink:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):  # keep-alive connections would outlive the loop otherwise
            w.close()
        await asyncio.sleep(0)
        for fut in self._waiting.values():
            fut.cancel()

    def expect(self, path: str) -> tuple[str, asyncio.Future]:
        """The URL to give as `webhook`, and the future its first `completed` delivery resolves."""
        fut = asyncio.get_running_loop().create_future()
        self._waiting[path] = fut
        return f"http://127.0.0.1:{self.port}{path}", fut

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                arrived = time.perf_counter()
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1] if len(lines[0].split(" ")) > 1 else "/"
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip() or 0)
                body = await reader.readexactly(length) if length else b""
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
                self.deliveries += 1
                self._resolve(path, arrived, body)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def _resolve(self, path: str, arrived: float, body: bytes) -> None:
        fut = self._waiting.get(path)
        if fut is None or fut.done():
            return
        try:
            doc: Any = json.loads(body or b"null")
        except ValueError:
            doc = None
        if isinstance(doc, dict) and doc.get("status") in ("succeeded", "failed", "canceled"):
            self._waiting.pop(path, None)
            fut.set_result((arrived, doc))
