"""A real webhook receiver for tests: an HTTP server on 127.0.0.1 in a thread that records every
POST (per path, in arrival order) and answers with a status the test chooses."""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: str
    at: float  # time.monotonic() on arrival
    status: int  # what the receiver answered

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]


class Receiver:
    def __init__(self):
        self._queues: dict[str, queue.Queue[Delivery]] = {}
        self._answers: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                arrived = time.monotonic()
                body = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
                status, extra = receiver._answer(self.path)
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("content-length", "0")
                self.end_headers()
                delivery = Delivery(self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                                    arrived, status)
                receiver._queue(self.path).put(delivery)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def answer(self, path: str, *statuses: int, headers: dict[str, str] | None = None) -> None:
        """Answer the next requests to `path` with these statuses (then 200)."""
        with self._lock:
            self._answers.setdefault(path, []).extend((s, headers or {}) for s in statuses)

    def get(self, path: str, timeout: float = 60.0) -> Delivery:
        """The next delivery to `path`; raises queue.Empty after `timeout`."""
        return self._queue(path).get(timeout=timeout)

    def until(self, path: str, done, timeout: float = 120.0) -> list[Delivery]:
        """Deliveries to `path` up to and including the first for which `done(delivery)` holds."""
        out: list[Delivery] = []
        deadline = time.monotonic() + timeout
        while not out or not done(out[-1]):
            out.append(self.get(path, max(0.0, deadline - time.monotonic())))
        return out

    def pending(self, path: str) -> int:
        return self._queue(path).qsize()

    def _queue(self, path: str) -> queue.Queue[Delivery]:
        with self._lock:
            return self._queues.setdefault(path, queue.Queue())

    def _answer(self, path: str) -> tuple[int, dict[str, str]]:
        with self._lock:
            todo = self._answers.get(path)
            return todo.pop(0) if todo else (200, {})
