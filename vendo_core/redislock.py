"""A short lock in Redis: SET NX PX, released only by its holder (a Lua compare-and-delete)."""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio as aioredis

LOCK_TTL_MS = 60_000  # a holder that dies frees the lock after this


class RedisLock:
    _RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"

    def __init__(self, redis: aioredis.Redis, key: str, ttl_ms: int = LOCK_TTL_MS):
        self.redis, self.key, self.token, self.ttl_ms = redis, key, uuid.uuid4().hex, ttl_ms

    async def __aenter__(self):
        delay = 0.01
        while not await self.redis.set(self.key, self.token, nx=True, px=self.ttl_ms):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)
        return self

    async def __aexit__(self, *exc):
        await self.redis.eval(self._RELEASE, 1, self.key, self.token)
