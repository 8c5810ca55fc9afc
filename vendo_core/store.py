"""The Redis prediction store: a hash per prediction, its event stream, listing indexes and the one
compare-and-set that every status change goes through. Only this module and `registry.py` talk to
Redis, and only through `Keys`."""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime, timezone
from importlib import resources
from typing import Any, Callable

import redis.asyncio as aioredis

from vendo_core import metrics
from vendo_core.billing import day_of, period_of
from vendo_core.keys import Keys
from vendo_core.records import Prediction, encode_fields
from vendo_core.status import ALLOWED_FROM, Status

EVENTS_MAXLEN = 100_000
_TRANSITION_LUA = resources.files("vendo_core").joinpath("transition.lua").read_text()
_APPEND_LOGS_LUA = resources.files("vendo_core").joinpath("append_logs.lua").read_text()


def now_iso(ts: float | None = None) -> str:
    """RFC 3339 with microseconds and Z, as Replicate writes timestamps."""
    dt = datetime.fromtimestamp(time.time() if ts is None else ts, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(value: str) -> float:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def encode_cursor(score: float, member: str) -> str:
    return base64.urlsafe_b64encode(f"{score!r}|{member}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        score, member = raw.split("|", 1)
        return float(score), member
    except Exception as e:  # noqa: BLE001 - any malformed cursor is the caller's error
        raise ValueError("malformed cursor") from e


async def newest_first(redis: aioredis.Redis, key: str | list[str], cursor: str | None, limit: int, *,
                       after: float | None = None, before: float | None = None) -> tuple[list[str], str | None]:
    """One page of a sorted set's members (or of several sets' together), highest score first,
    strictly between `after` and `before` (None: unbounded), keyset-paginated by (score, member):
    the next page starts after the cursor's row even when others share its score. Returns
    (members, next cursor or None); raises ValueError for a malformed cursor. One round trip."""
    keys = [key] if isinstance(key, str) else key
    hi = "+inf" if before is None else f"({before!r}"
    lo = "-inf" if after is None else f"({after!r}"
    score = last = None
    if cursor:
        score, last = decode_cursor(cursor)
        if before is None or score < before:
            hi = repr(score)
    pipe = redis.pipeline(transaction=False)
    for k in keys:
        pipe.zrevrangebyscore(k, hi, lo, start=0, num=limit + (64 if cursor else 1), withscores=True)
    rows = [row for found in await pipe.execute() for row in found]
    if cursor:  # drop the rows at or before the cursor within the same score
        rows = [(m, s) for m, s in rows if s < score or (s == score and m < last)]
    if len(keys) > 1:
        rows.sort(key=lambda r: (r[1], r[0]), reverse=True)
    page = rows[:limit]
    nxt = encode_cursor(page[-1][1], page[-1][0]) if len(rows) > limit else None
    return [m for m, _ in page], nxt


class PredictionStore:
    """Async access to prediction records. Every method is one Redis round trip unless it says so."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, ttl_s: int = 30 * 24 * 3600, *,
                 retention_s: float = 0, max_log_bytes: int = 4 * 1024 * 1024,
                 blocking: aioredis.Redis | None = None, billing_period: str = "month"):
        self.redis = redis
        # blocking reads (XREAD BLOCK) hold a connection each: their own pool, so many open
        # streams never starve the short commands every request needs
        self.blocking = blocking or redis
        self.keys = keys
        self.ttl_s = ttl_s
        self.retention_s = retention_s
        self.max_log_bytes = max_log_bytes
        self.billing_period = billing_period
        self._transition = redis.register_script(_TRANSITION_LUA)
        self._append_logs = redis.register_script(_APPEND_LOGS_LUA)

    async def create(self, record: Prediction, router: int, also: Callable[[Any], None] | None = None) -> None:
        """Write a new `starting` prediction, index it for its account and as dispatched by `router`
        (a number from `join`, whose lease covers it). `also(pipe)` adds more writes to the same
        round trip."""
        pid = record.id
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.prediction(pid), mapping=record.to_redis(exclude={"logs"}))
        index = (self.keys.account_trainings if record.kind == "training"
                 else self.keys.account_predictions)(record.account)
        pipe.zadd(index, {pid: record.created_ts})
        pipe.zremrangebyscore(index, "-inf", record.created_ts - self.ttl_s)  # their records expired
        pipe.zadd(self.keys.dispatch(), {pid: router})
        queued = self.keys.account_queued(record.account)
        pipe.zadd(queued, {pid: record.created_ts})
        pipe.expire(queued, self.ttl_s)
        if record.deadline_ts:
            pipe.zadd(self.keys.deadlines(), {pid: record.deadline_ts})
        metrics.add(pipe, self.keys.metrics(), [
            metrics.inc("predictions_created", record.model or "", record.hardware or ""),
            metrics.inc("predictions_queued", record.model or "", record.version or "")])
        if also is not None:
            also(pipe)
        await pipe.execute()

    async def queued(self, username: str, limit: int) -> int:
        """How many of the account's predictions are `starting`, counted exactly only when the
        cheap count (one ZCARD) reaches `limit`: then the ones that moved on are pruned."""
        key = self.keys.account_queued(username)
        n = await self.redis.zcard(key)
        if n < limit:
            return n
        pids = await self.redis.zrange(key, 0, -1)
        pipe = self.redis.pipeline(transaction=False)
        for pid in pids:
            pipe.hget(self.keys.prediction(pid), "status")
        gone = [pid for pid, st in zip(pids, await pipe.execute(), strict=True) if st != Status.STARTING.value]
        if gone:
            await self.redis.zrem(key, *gone)
        return len(pids) - len(gone)

    async def get(self, pid: str) -> Prediction | None:
        """The record with `logs` and, for iterators still running, the output so far."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.prediction(pid))
        pipe.get(self.keys.prediction_logs(pid))
        pipe.lrange(self.keys.prediction_output(pid), 0, -1)
        raw, logs, chunks = await pipe.execute()
        if not raw or "status" not in raw:
            return None
        raw["logs"] = logs or ""
        rec = Prediction.from_redis(raw)
        if "output" not in raw and rec.iterator and chunks:
            rec.output = [json.loads(c) for c in chunks]
        return rec

    async def get_many(self, pids: list[str]) -> list[Prediction]:
        pipe = self.redis.pipeline(transaction=False)
        for pid in pids:
            pipe.hgetall(self.keys.prediction(pid))
            pipe.get(self.keys.prediction_logs(pid))
        res = await pipe.execute()
        out = []
        for i in range(0, len(res), 2):
            if res[i] and "status" in res[i]:
                res[i]["logs"] = res[i + 1] or ""
                out.append(Prediction.from_redis(res[i]))
        return out

    async def status(self, pid: str) -> Status | None:
        s = await self.redis.hget(self.keys.prediction(pid), "status")
        return Status(s) if s else None

    async def statuses(self, pids: list[str]) -> list[str | None]:
        pipe = self.redis.pipeline(transaction=False)
        for pid in pids:
            pipe.hget(self.keys.prediction(pid), "status")
        return await pipe.execute() if pids else []

    async def transition(
        self,
        pid: str,
        target: Status,
        fields: dict[str, Any] | None = None,
        *,
        heartbeat_deadline: float = 0.0,
        error: str | None = None,
        done_reason: str | None = None,
        retention_s: float | None = None,
        counts: list[tuple[str, int | float]] | None = None,
    ) -> tuple[bool, Status | None]:
        """Compare-and-set `pid` to `target`. Returns (applied, status before the call).

        A terminal target also removes the prediction from the running and dispatch indexes,
        appends `error` (if any) and `done` events, puts the ttl on every key and schedules the
        removal of its data `retention_s` from now (default: the store's; 0: never), atomically.
        `counts` (from `vendo_core.metrics`) are added to the platform's metrics if the move applies."""
        terminal = target.is_terminal()
        now = time.time()
        keep_s = self.retention_s if retention_s is None else retention_s
        purge_at = now + keep_s if terminal and keep_s > 0 else 0
        if done_reason is None:
            done_reason = {Status.FAILED: "error", Status.CANCELED: "canceled"}.get(target, "")
        done = json.dumps({"reason": done_reason}) if done_reason else "{}"
        err = json.dumps({"detail": error}) if (error and target == Status.FAILED) else ""
        fields = dict(fields or {})
        if err:
            fields["error"] = error
        flat: list[str] = []
        for k, v in encode_fields(fields, Prediction.JSON).items():
            flat += [k, v]
        allowed = ",".join(s.value for s in ALLOWED_FROM[target])
        k = self.keys
        active = (fields.get("metrics") or {}).get("predict_time") if terminal else None
        billed = str(max(0, round(float(active) * 1000))) if isinstance(active, (int, float)) else ""
        ok, prev = await self._transition(
            keys=[
                k.prediction(pid), k.running(), k.prediction_events(pid), k.dispatch(),
                k.prediction_logs(pid), k.prediction_output(pid), k.retention(), k.webhooks(), k.metrics(),
            ],
            args=[target.value, allowed, pid, "1" if terminal else "0", heartbeat_deadline, done, err,
                  self.ttl_s, purge_at, billed, k.usage_prefix(), period_of(now, self.billing_period),
                  day_of(now), repr(now), len(counts or ()), *metrics.flat(counts or ()), *flat],
        )
        return bool(ok), (Status(prev) if prev else None)

    async def set_shared(self, pid: str, shared: bool) -> bool:
        """Share (or unshare) an existing prediction; False when its record is gone."""
        key = self.keys.prediction(pid)
        pipe = self.redis.pipeline(transaction=True)
        pipe.exists(key)
        pipe.hset(key, "shared", "1" if shared else "0")
        exists, _ = await pipe.execute()
        if not exists:
            await self.redis.delete(key)  # we wrote a lone field on nothing
        return bool(exists)

    async def append_logs(self, pid: str, text: str) -> None:
        """Append to the logs (over `max_log_bytes` the oldest half goes, and the logs say so) and
        to the event stream, in one call."""
        await self._append_logs(keys=[self.keys.prediction_logs(pid), self.keys.prediction_events(pid)],
                                args=[text, self.max_log_bytes, EVENTS_MAXLEN])

    async def append_output(self, pid: str, item: Any, text: str, logs: str = "") -> None:
        """Append one iterator item (JSON-encoded into the output list, `text` as the SSE event)."""
        pipe = self.redis.pipeline(transaction=False)
        if logs:
            await self._append_logs(keys=[self.keys.prediction_logs(pid), self.keys.prediction_events(pid)],
                                    args=[logs, self.max_log_bytes, EVENTS_MAXLEN], client=pipe)
        pipe.rpush(self.keys.prediction_output(pid), json.dumps(item, separators=(",", ":")))
        pipe.xadd(self.keys.prediction_events(pid), {"event": "output", "data": text},
                  maxlen=EVENTS_MAXLEN, approximate=True)
        await pipe.execute()

    async def heartbeat(self, pids: list[str], deadline: float) -> None:
        """Push the running deadline of live predictions; XX so a late beat cannot resurrect one."""
        if pids:
            await self.redis.zadd(self.keys.running(), {p: deadline for p in pids}, xx=True)

    # dispatch leases: one per router, not one per prediction, so what a router pays to keep its
    # queue is flat however long the queue is

    async def join(self, deadline: float) -> int:
        """A new router number, its lease held until `deadline`."""
        n = int(await self.redis.incr(self.keys.router_seq()))
        await self.redis.zadd(self.keys.routers(), {str(n): deadline})
        return n

    async def renew(self, router: int, deadline: float) -> None:
        """Keep `router`'s lease, and with it every prediction it dispatches (one command)."""
        await self.redis.zadd(self.keys.routers(), {str(router): deadline})

    async def lapsed(self, now: float) -> tuple[list[str], list[str]]:
        """(running predictions whose heartbeat lapsed, starting ones whose router's lease lapsed or
        that no router holds). A lapsed router with nothing left to take is forgotten."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrangebyscore(self.keys.running(), "-inf", now, start=0, num=500)
        pipe.zrangebyscore(self.keys.routers(), "-inf", now, start=0, num=100)
        pipe.get(self.keys.router_seq())
        running, dead, seq = await pipe.execute()
        seq = int(seq or 0)
        pipe = self.redis.pipeline(transaction=False)
        for rid in dead:
            pipe.zrangebyscore(self.keys.dispatch(), rid, rid, start=0, num=500)
        pipe.zrangebyscore(self.keys.dispatch(), f"({seq}", "+inf", start=0, num=500)  # held by no router
        found = await pipe.execute()
        empty = [rid for rid, pids in zip(dead, found, strict=False) if not pids]
        if empty:
            await self.redis.zrem(self.keys.routers(), *empty)
        return running, [pid for pids in found for pid in pids]

    async def forget_lost(self, pid: str) -> None:
        """Drop a prediction whose record is gone from the running and dispatch indexes."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrem(self.keys.running(), pid)
        pipe.zrem(self.keys.dispatch(), pid)
        await pipe.execute()

    async def take_lease(self, pid: str, router: int) -> bool:
        """Move a starting prediction whose router's lease lapsed (or that no router holds) to
        `router`, so exactly one router re-dispatches it."""
        dispatch, routers = self.keys.dispatch(), self.keys.routers()
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(dispatch, routers)
                score = await pipe.zscore(dispatch, pid)
                owner = None if score is None else int(score)
                if owner is None or owner == router:
                    await pipe.unwatch()
                    return False
                seq = int(await pipe.get(self.keys.router_seq()) or 0)
                lease = await pipe.zscore(routers, str(owner)) if owner <= seq else None
                if lease is not None and lease > time.time():
                    await pipe.unwatch()
                    return False
                pipe.multi()
                pipe.zadd(dispatch, {pid: router}, xx=True)
                await pipe.execute()
                return True
            except aioredis.WatchError:
                return False

    async def list_ids(self, username: str | list[str], cursor: str | None, limit: int, *,
                       after_ts: float | None = None, before_ts: float | None = None,
                       kind: str = "prediction") -> tuple[list[str], str | None]:
        """Newest-first ids of an account's predictions, or trainings (or of several accounts'
        together: a member and its organizations) created strictly between `after_ts` and
        `before_ts` (None: unbounded), keyset-paginated by (created, id)."""
        names = [username] if isinstance(username, str) else username
        index = self.keys.account_trainings if kind == "training" else self.keys.account_predictions
        return await newest_first(self.redis, [index(n) for n in names], cursor, limit,
                                  after=after_ts, before=before_ts)

    async def read_events(self, pid: str, last_id: str, block_ms: int | None) -> list[tuple[str, str, str]]:
        """Events after `last_id`, waiting up to `block_ms` for the first (None: do not wait)."""
        client = self.redis if block_ms is None else self.blocking
        res = await client.xread({self.keys.prediction_events(pid): last_id}, count=500, block=block_ms)
        if not res:
            return []
        return [(eid, f["event"], f.get("data", "")) for eid, f in res[0][1]]

    async def wait_terminal(self, pid: str, timeout_s: float) -> bool:
        """Block on the event stream until `done` is appended or the timeout passes."""
        deadline = time.monotonic() + timeout_s
        last = "0-0"
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            for eid, event, _ in await self.read_events(pid, last, max(1, int(left * 1000))):
                last = eid
                if event == "done":
                    return True

    async def publish_cancel(self, pid: str) -> None:
        await self.redis.publish(self.keys.cancel_channel(), pid)

    async def _in_flight(self, field: str) -> list[tuple[str, str | None]]:
        """(id, `field`) of every prediction starting or processing. The dispatch and running
        indexes between them hold every non-terminal prediction (the transition script moves
        them), so this reads both at once and then each one's fields: a pass over what is in
        flight, for rare operations only (deleting a version, an eviction decision), never for a
        prediction's own path."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrange(self.keys.dispatch(), 0, -1)
        pipe.zrange(self.keys.running(), 0, -1)
        starting, processing = await pipe.execute()
        pids, out = list(dict.fromkeys(starting + processing)), []
        for i in range(0, len(pids), 1000):
            chunk = pids[i:i + 1000]
            pipe = self.redis.pipeline(transaction=False)
            for pid in chunk:
                pipe.hmget(self.keys.prediction(pid), field, "status")
            for pid, (value, status) in zip(chunk, await pipe.execute(), strict=True):
                if status in (Status.STARTING.value, Status.PROCESSING.value):
                    out.append((pid, value))
        return out

    async def busy_apps(self) -> set[str]:
        """The Serve apps some prediction is starting or processing on."""
        return {app for _, app in await self._in_flight("app") if app}

    async def live_of_version(self, version_id: str) -> list[str]:
        """Ids of the version's predictions still starting or processing."""
        return [pid for pid, vid in await self._in_flight("version") if vid == version_id]
