"""Real Redis for tests: a private logical database of the machine's Redis, or, when none answers
(a user's machine without Redis) or VENDO_TEST_REDIS=embedded, one embedded server (Valkey, with a
generated password, as `vendo up` runs it) for the whole test session; the test cluster always uses
that one (`embedded_db`). Database 0 is never used, and each database is flushed before and after use."""

from __future__ import annotations

import atexit
import os
import tempfile
from pathlib import Path

import pytest
import redis

_embedded: str | None = None


def _embedded_base() -> str:
    global _embedded
    if _embedded is None:
        from cluster.embedded import ensure_redis, stop_redis
        from vendo_core.settings import Settings

        settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="vendo-test-redis-")))
        _embedded = ensure_redis(settings).rsplit("/", 1)[0]
        atexit.register(stop_redis, settings)
    return _embedded


def base_url() -> str:
    """redis://host:port of the server tests use (no database part)."""
    wanted = os.environ.get("VENDO_TEST_REDIS", "redis://127.0.0.1:6379")
    if wanted != "embedded":
        try:
            redis.Redis.from_url(wanted, socket_connect_timeout=1).ping()
            return wanted.rstrip("/")
        except redis.RedisError:
            pass
    return _embedded_base()


def private_db(db: int) -> str:
    """The URL of logical database `db` (never 0), flushed."""
    assert db != 0, "tests never touch database 0"
    url = f"{base_url()}/{db}"
    redis.Redis.from_url(url).flushdb()
    return url


def embedded_db(db: int) -> str:
    """Logical database `db` of this session's embedded server, which, as `vendo up` runs it,
    has a generated password: a model's code that finds its address still cannot use it."""
    assert db != 0, "tests never touch database 0"
    url = f"{_embedded_base()}/{db}"
    redis.Redis.from_url(url).flushdb()
    return url


def flush(url: str) -> None:
    redis.Redis.from_url(url).flushdb()


def fixture(db: int):
    """A pytest fixture giving the URL of private database `db`, flushed before and after."""

    @pytest.fixture
    def redis_url():
        url = private_db(db)
        yield url
        flush(url)

    return redis_url
