"""Per-token rate limits shared by every router replica: GCRA in one Lua call (one Redis round
trip per request). Two buckets per token, as Replicate has: prediction creates, and everything else."""

from __future__ import annotations

import math
from importlib import resources

import redis.asyncio as aioredis

from vendo_core.errors import RateLimited
from vendo_core.keys import Keys
from vendo_core.registry import token_digest

PERIOD_MS = 60_000
CREATES, REQUESTS = "creates", "requests"
_GCRA_LUA = resources.files("router").joinpath("ratelimit.lua").read_text()


def bucket_for(method: str, path: str) -> str:
    """`creates` for a prediction create (any `POST …/predictions`), else `requests`."""
    return CREATES if method == "POST" and path.rstrip("/").endswith("/predictions") else REQUESTS


class RateLimiter:
    """`creates_per_min` / `requests_per_min` per token, each also the largest burst; 0: no limit."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, *, creates_per_min: int, requests_per_min: int):
        self.keys = keys
        self.limits = {CREATES: creates_per_min, REQUESTS: requests_per_min}
        self._gcra = redis.register_script(_GCRA_LUA)

    async def hit(self, token: str, bucket: str) -> int | None:
        """Count one request; returns how many more the bucket allows now (None: unlimited).
        Raises RateLimited with whole seconds to wait when over the limit."""
        limit = self.limits[bucket]
        if limit <= 0:
            return None
        ok, retry_ms, remaining = await self._gcra(keys=[self.keys.rate_limit(token_digest(token), bucket),
                                                         self.keys.metrics()],
                                                   args=[limit, PERIOD_MS, bucket])
        if not ok:
            raise RateLimited(max(1, math.ceil(int(retry_ms) / 1000)), bucket=bucket, limit_per_min=limit)
        return int(remaining)
