"""Who a log line is about, as fields rather than words in the message.

`about(pid, model=…, version=…, account=…)` sets the prediction a piece of async work is doing
(a context variable, so it follows the request's task and the tasks it starts, and no other);
`install()` makes every log record created meanwhile carry `prediction_id`, `model`, `version` and
`account` as attributes, through the log record factory, so vendo's own lines, Serve's lines inside
the same request and anything a library logs all get them without passing them around. Ray's JSON
log encoding (`VENDO_LOG_FORMAT=json`) writes a record's extra attributes as JSON fields; the text
encoding, the default on a terminal, leaves lines as they were."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager

FIELDS = ("prediction_id", "model", "version", "account")
_current: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("vendo_log_context", default=None)
_installed = False


def set_about(pid: str, *, model: str | None = None, version: str | None = None,
              account: str | None = None) -> contextvars.Token:
    """Say which prediction the current task works on until the token is reset (or the task ends)."""
    ctx = {"prediction_id": pid, "model": model, "version": version, "account": account}
    return _current.set({k: v for k, v in ctx.items() if v})


@contextmanager
def about(pid: str, **kw: str | None) -> Iterator[None]:
    token = set_about(pid, **kw)
    try:
        yield
    finally:
        _current.reset(token)


def current() -> dict[str, str]:
    return dict(_current.get() or {})


def install(handlers_of: str | None = "ray.serve") -> None:
    """Wrap the process's log record factory once, so records made under `about` get its fields,
    and send vendo's loggers to the handlers of logger `handlers_of` (in a Serve replica, Serve's
    own: its log file, in the deployment's encoding, and the terminal), at INFO."""
    global _installed
    if handlers_of:
        source = logging.getLogger(handlers_of)
        if source.handlers:
            vendo = logging.getLogger("vendo")
            vendo.handlers = list(source.handlers)
            vendo.propagate = False
            vendo.setLevel(logging.INFO)
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        ctx = _current.get()
        if ctx:
            for k, v in ctx.items():
                if not hasattr(record, k):
                    setattr(record, k, v)
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
