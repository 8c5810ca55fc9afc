"""Log records made while a task works on a prediction carry its ids as attributes; another task's
records do not, and nothing leaks once the work is done."""

from __future__ import annotations

import asyncio
import logging

from vendo_core import logctx


class Keep(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def test_records_carry_the_prediction_of_their_own_task():
    logctx.install(handlers_of=None)
    log = logging.getLogger("vendo.test-logctx")
    keep = Keep()
    log.addHandler(keep)
    log.setLevel(logging.INFO)
    log.propagate = False

    async def work(pid: str, started: asyncio.Event, other: asyncio.Event):
        with logctx.about(pid, model="a/m", version="v1", account="alice"):
            started.set()
            await other.wait()  # the other task logs while this one is inside its context
            log.info("inside %s", pid)
        log.info("after %s", pid)

    async def go():
        a, b = asyncio.Event(), asyncio.Event()
        await asyncio.gather(work("p1", a, b), work("p2", b, a))
    asyncio.run(go())
    log.info("outside")
    rows = {r.getMessage(): getattr(r, "prediction_id", None) for r in keep.records}
    assert rows == {"inside p1": "p1", "inside p2": "p2", "after p1": None, "after p2": None, "outside": None}
    inside = next(r for r in keep.records if r.getMessage() == "inside p1")
    assert (inside.model, inside.version, inside.account) == ("a/m", "v1", "alice")
