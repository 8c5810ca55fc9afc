"""Batch jobs' records: `cluster.batch` (a Ray job) reports its progress through the router's
handle, and people read it through the API and `vendo batches`. A batch belongs to the account
whose token runs it; another account's batch is a 404."""

from __future__ import annotations

import re
import time
from typing import Any

import redis.asyncio as aioredis

from vendo_core.errors import InvalidRequest, NotFound
from vendo_core.keys import Keys
from vendo_core.records import Account, Batch
from vendo_core.store import now_iso

BATCH_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# what the job may report; the account, the id and the creation time are the service's
REPORTED = ("model", "input", "output", "status", "total", "done", "succeeded", "failed", "skipped",
            "concurrency", "job_id", "error")
KEEP_S = 90 * 24 * 3600


class BatchService:
    def __init__(self, redis: aioredis.Redis, keys: Keys):
        self.redis = redis
        self.keys = keys

    @staticmethod
    def check_id(batch_id: Any) -> str:
        if not isinstance(batch_id, str) or not BATCH_ID.match(batch_id):
            raise InvalidRequest("batch_id", "1-64 letters, digits, '_', '.' or '-', starting with a letter "
                                             "or digit")
        return batch_id

    async def save(self, account: Account, batch_id: str, report: dict[str, Any]) -> Batch:
        """Create the batch or update it with the job's report (one round trip to read, one to write)."""
        key = self.keys.batch(account.username, self.check_id(batch_id))
        unknown = set(report) - set(REPORTED)
        if unknown:
            raise InvalidRequest(sorted(unknown)[0], "is not a field a batch job reports")
        now = time.time()
        raw = await self.redis.hgetall(key)
        base = Batch.from_redis(raw).model_dump() if raw else {
            "id": batch_id, "account": account.username, "created_at": now_iso(now), "created_ts": now}
        try:
            rec = Batch.model_validate({**base, **report, "updated_at": now_iso(now)})
        except Exception as e:  # noqa: BLE001 - pydantic's error, said as a field's
            raise InvalidRequest("report", str(e).splitlines()[0][:300]) from None
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping=rec.to_redis())
        pipe.expire(key, KEEP_S)
        pipe.zadd(self.keys.account_batches(account.username), {batch_id: rec.created_ts})
        await pipe.execute()
        return rec

    async def get(self, account: Account, batch_id: str) -> Batch:
        rec = Batch.from_redis(await self.redis.hgetall(self.keys.batch(account.username, batch_id)))
        if rec is None:
            raise NotFound("Batch", batch_id)
        return rec

    async def list(self, account: Account, limit: int = 100) -> list[Batch]:
        """The account's batches, newest first (those whose record expired are dropped)."""
        index = self.keys.account_batches(account.username)
        ids = await self.redis.zrevrange(index, 0, limit - 1)
        pipe = self.redis.pipeline(transaction=False)
        for bid in ids:
            pipe.hgetall(self.keys.batch(account.username, bid))
        out, gone = [], []
        for bid, raw in zip(ids, await pipe.execute() if ids else [], strict=True):
            (out.append(Batch.from_redis(raw)) if raw else gone.append(bid))
        if gone:
            await self.redis.zrem(index, *gone)
        return out
