"""One way to open Redis. redis-py 8 defaults to a 5 s socket timeout, shorter than the blocking
reads vendo does (XREAD BLOCK for SSE and `Prefer: wait`, pub/sub for cancels), so every client
is made here with a timeout above the longest block."""

from __future__ import annotations

import redis.asyncio as aioredis

SOCKET_TIMEOUT_S = 120.0  # above the longest XREAD BLOCK (60 s waits, 15 s keep-alives)


def connect(url: str, max_connections: int | None = None, *, wait_for_connection: bool = False) -> aioredis.Redis:
    """A client of `url`. With `wait_for_connection`, a full pool makes callers wait for a free
    connection instead of failing (the pool for blocking reads: SSE and waits)."""
    kwargs = {"decode_responses": True, "socket_timeout": SOCKET_TIMEOUT_S, "health_check_interval": 30}
    if wait_for_connection:
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections or 1024,
                                                        timeout=None, **kwargs)
        return aioredis.Redis(connection_pool=pool)
    if max_connections:
        kwargs["max_connections"] = max_connections
    return aioredis.from_url(url, **kwargs)
