"""`Cancel-After`: a prediction's deadline, parsed at the edge, kept in a Redis sorted set written
with the prediction (so a router restart loses none), and enforced by a sweep on every router
replica that cancels lapsed predictions the way a user's cancel does."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from vendo_core import logctx
from vendo_core.errors import InvalidRequest
from vendo_core.keys import Keys

log = logging.getLogger("vendo.deadlines")

HEADER = "Cancel-After"
MIN_S = 5.0
MAX_S = 30 * 86400.0  # a prediction record lives 30 days
_NUM = r"\d+(?:\.\d+)?"
_BARE = re.compile(rf"^{_NUM}$")
_HMS = re.compile(rf"^(?:({_NUM})h)?(?:({_NUM})m)?(?:({_NUM})s)?$")
SWEEP_BATCH = 500


def parse_cancel_after(value: str | None) -> float | None:
    """Seconds from `Cancel-After: 30` / `30s` / `5m` / `1h30m45s` (minimum 5 s), or None when
    the header is absent. Raises InvalidRequest naming the header."""
    if value is None:
        return None
    text = value.strip().lower()
    if _BARE.match(text):
        seconds = float(text)
    else:
        m = _HMS.match(text)
        if not text or not m or not any(m.groups()):
            raise InvalidRequest(HEADER, f"expected seconds or an h/m/s duration such as 30s, 5m or "
                                         f"1h30m45s, got {value!r}")
        h, mi, s = (float(g) if g else 0.0 for g in m.groups())
        seconds = h * 3600 + mi * 60 + s
    if seconds < MIN_S:
        raise InvalidRequest(HEADER, f"must be at least {MIN_S:g} seconds, got {value!r}")
    if not seconds <= MAX_S:  # also catches inf and nan from absurdly long numbers
        raise InvalidRequest(HEADER, f"must be at most {MAX_S:g} seconds (30 days), got {value[:50]!r}")
    return seconds


class Deadlines:
    """Cancels predictions whose deadline passed. `cancel(pid)` is the service's cancel path."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, cancel: Callable[[str], Awaitable[bool]]):
        self.redis = redis
        self.keys = keys
        self.cancel = cancel

    async def sweep(self) -> int:
        """Cancel every lapsed prediction still running or queued; returns how many it saw."""
        due = await self.redis.zrangebyscore(self.keys.deadlines(), "-inf", time.time(),
                                             start=0, num=SWEEP_BATCH)
        for pid in due:
            with logctx.about(pid):
                if await self.cancel(pid):
                    log.info("prediction %s: canceled at its deadline", pid)
            # finished ones (and ones another replica just canceled) are simply dropped
            await self.redis.zrem(self.keys.deadlines(), pid)
        return len(due)
