"""Per-prediction capture of stdout/stderr inside one replica process.

`sys.stdout`/`sys.stderr` are replaced once by writers that route each write to the sink of the
prediction running in the current context (a contextvar), so concurrent predictions in one replica
keep their own logs. Carriage returns (tqdm) become newlines so clients can parse progress."""

from __future__ import annotations

import contextvars
import io
import sys
import threading

_sink: contextvars.ContextVar[LogSink | None] = contextvars.ContextVar("vendo_log_sink", default=None)
_installed = False
_install_lock = threading.Lock()


class LogSink:
    """A running prediction's logs: what arrived since the last `drain`, and the whole text while
    it is short (`whole`), so a finished prediction's answer needs no read back."""

    KEEP = 64 * 1024

    def __init__(self):
        self._parts: list[str] = []
        self._all: list[str] | None = []
        self._lock = threading.Lock()
        self.total = 0

    def write(self, text: str) -> None:
        if not text:
            return
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        with self._lock:
            self._parts.append(text)
            self.total += len(text)
            if self._all is not None:
                if self.total > self.KEEP:
                    self._all = None  # long: readers take the stored (perhaps trimmed) logs
                else:
                    self._all.append(text)

    def whole(self) -> str | None:
        """All the logs written so far, or None past `KEEP` characters."""
        with self._lock:
            return None if self._all is None else "".join(self._all)

    def drain(self) -> str:
        with self._lock:
            out = "".join(self._parts)
            self._parts.clear()
        return out


class _RoutedStream(io.TextIOBase):
    def __init__(self, fallback):
        self._fallback = fallback

    def write(self, s: str) -> int:
        sink = _sink.get()
        if sink is not None:
            sink.write(s)
        else:
            self._fallback.write(s)
        return len(s)

    def flush(self) -> None:
        if _sink.get() is None:
            self._fallback.flush()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self):
        return "utf-8"

    def fileno(self) -> int:
        return self._fallback.fileno()


def install() -> None:
    """Route this process's Python-level stdout/stderr through the per-context sinks (idempotent)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        sys.stdout = _RoutedStream(sys.stdout)
        sys.stderr = _RoutedStream(sys.stderr)
        _installed = True


def bind(sink: LogSink | None) -> contextvars.Token:
    return _sink.set(sink)


def unbind(token: contextvars.Token) -> None:
    _sink.reset(token)
