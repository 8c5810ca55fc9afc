"""Per-token rate limits: the GCRA script on a real Redis, and 429 with an integer Retry-After from
a router redeployed with small limits (a fresh account, so other tests are unaffected)."""

from __future__ import annotations

import asyncio
import os
import secrets

import pytest
from replicate.exceptions import ReplicateError

from tests import redisdb

pytestmark = pytest.mark.integration

DB = int(os.environ.get("VENDO_TEST_RATELIMIT_DB", "10"))

redis_url = redisdb.fixture(DB)


def test_gcra_allows_the_limit_then_says_when(redis_url):
    from router.ratelimit import CREATES, REQUESTS, RateLimiter
    from vendo_core.errors import RateLimited
    from vendo_core.keys import Keys
    from vendo_core.redisconn import connect
    from vendo_core.registry import token_digest

    async def go():
        r = connect(redis_url)
        lim = RateLimiter(r, Keys("vendo:"), creates_per_min=2, requests_per_min=3)
        assert [await lim.hit("t1", REQUESTS) for _ in range(3)] == [2, 1, 0]
        with pytest.raises(RateLimited) as e:
            await lim.hit("t1", REQUESTS)
        assert e.value.retry_after_s == 20  # one request per 20 s at 3 per minute
        # a refused request is not counted: the wait does not grow
        with pytest.raises(RateLimited) as e:
            await lim.hit("t1", REQUESTS)
        assert e.value.retry_after_s == 20
        assert await r.hget("vendo:metrics", "rate_limited|requests") == "2"  # each refusal is counted
        # creates are a separate bucket, and so is every other token
        assert await lim.hit("t1", CREATES) == 1
        assert await lim.hit("t2", REQUESTS) == 2
        key = f"vendo:ratelimit:{token_digest('t1')}:requests"
        assert 0 < await r.pttl(key) <= 60_000
        # 0 means unlimited
        free = RateLimiter(r, Keys("vendo:"), creates_per_min=0, requests_per_min=0)
        assert await free.hit("t1", REQUESTS) is None
        await r.aclose()
    asyncio.run(go())


def test_token_over_its_limit_gets_429_with_retry_after(cluster, examples):
    from cluster.up import _ensure_account

    user = "ratelimited"
    cluster.tokens[user] = f"test-token-{secrets.token_hex(8)}"
    asyncio.run(_ensure_account(cluster.settings, cluster.redis_url, user, cluster.tokens[user]))
    cluster.deploy_router(rate_limit_requests_per_min=5, rate_limit_creates_per_min=2)
    try:
        with cluster.http(user) as h:
            assert [h.get("/v1/account").status_code for _ in range(5)] == [200] * 5
            r = h.get("/v1/account")
            assert r.status_code == 429
            assert r.headers["retry-after"].isdigit() and 1 <= int(r.headers["retry-after"]) <= 12
            assert r.headers["content-type"].startswith("application/problem+json")
            body = r.json()
            assert body["status"] == 429 and body["detail"].startswith("Request was throttled")
        # creates have their own bucket; POST is never retried by the client, so 429 reaches users
        c = cluster.client(user)
        for _ in range(2):
            c.predictions.create(version=examples["hello-world"], input={"text": "limited"})
        with pytest.raises(ReplicateError) as e:
            c.predictions.create(version=examples["hello-world"], input={"text": "limited"})
        assert e.value.status == 429
        # other tokens are not affected
        with cluster.http("bob") as h:
            assert h.get("/v1/account").status_code == 200
    finally:
        cluster.deploy_router()
