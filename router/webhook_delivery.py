"""Webhook delivery by router replicas, from the Redis stream `Keys.webhooks()`.

`transition.lua` appends `{prediction, event}` to the stream atomically with the status change:
`start` on the move to processing, `completed` on every terminal move. Every router replica is a
consumer in one group, so each entry goes to one replica:

- `completed` is tried at once and retried on connection errors and non-2xx answers with
  exponential backoff, with the same `webhook-id` and body on every try. The schedule is measured
  from the entry's own time (its stream id), so an entry reclaimed from a dead replica carries on
  where it stopped; the last try is about `webhook_retry_base_s * 2**(attempts-1)` after completion.
  The entry is acknowledged (and deleted) once delivered or given up.
- `start` is sent once. The replica that sent it then follows the prediction's event stream and
  sends progress (`output`, `logs`) at most once per `throttle_s`; progress is best effort.
- Pending entries of a replica that died are reclaimed with XAUTOCLAIM once idle `claim_idle_s`;
  a live replica re-claims its own in-flight entries (XCLAIM JUSTID) well within that, so a long
  retry schedule is never taken from it.

Bodies are the prediction exactly as `GET /v1/predictions/{id}` returns it, under the base URL of
the create request, built from the record when the entry is handled. Destinations are re-checked
at send time: a host that now resolves to a non-public address is refused unless allowed.
Redirects are not followed; a 3xx is a failure."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import urllib.parse
import uuid
from typing import Callable

import httpx
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from router import wire
from router.webhooks import (
    PROGRESS_EVENTS,
    WebhookSecrets,
    retry_offsets,
    signed_headers,
    wants,
)
from vendo_core import logctx, metrics
from vendo_core.keys import Keys
from vendo_core.netpolicy import NonPublicAddress, check_public
from vendo_core.publicnet import PublicOnlyAsyncTransport
from vendo_core.records import Prediction
from vendo_core.store import PredictionStore

log = logging.getLogger("vendo.webhooks")

GROUP = "deliver"
READ_BLOCK_MS = 1000
PROGRESS_BLOCK_MS = 250
CONSUMER_FORGET_MS = 3600_000
DELIVERED, FAILED, REFUSED = "delivered", "failed", "refused"


def entry_time(entry_id: str) -> float:
    """Epoch seconds at which a stream entry was added (the millisecond part of its id)."""
    return int(entry_id.split("-", 1)[0]) / 1000.0


class _Follower:
    """A prediction whose progress this replica sends."""

    __slots__ = ("pid", "url", "account", "events", "last_id", "pending", "last_sent", "sending",
                 "done", "since", "count")

    def __init__(self, rec: Prediction):
        self.pid: str = rec.id
        self.url: str = rec.webhook
        self.account: str = rec.account
        self.events = frozenset(e for e in PROGRESS_EVENTS if wants(rec, e))
        self.last_id = "0-0"
        self.pending: str | None = None
        self.last_sent = 0.0
        self.sending: asyncio.Task | None = None
        self.done = False
        self.since = time.monotonic()
        self.count = 0

    def busy(self) -> bool:
        return self.sending is not None and not self.sending.done()


class WebhookDelivery:
    """One router replica's consumer of the webhook stream. `run()` until cancelled."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, store: PredictionStore, secrets: WebhookSecrets,
                 url_for: Callable[[str], Callable[[str], str]], default_base: str, *,
                 allow_private: bool = False, retry_base_s: float = 1.0, max_attempts: int = 7,
                 claim_idle_s: float = 30.0, throttle_s: float = 0.5, timeout_s: float = 5.0,
                 max_follow_s: float = 3600.0, max_concurrent: int = 100, max_per_destination: int = 4,
                 consumer: str | None = None):
        self.redis = redis
        self.keys = keys
        self.store = store
        self.secrets = secrets
        self.url_for = url_for
        self.default_base = default_base.rstrip("/")
        self.allow_private = allow_private
        self.offsets = retry_offsets(retry_base_s, max_attempts)
        self.claim_idle_s = claim_idle_s
        self.throttle_s = throttle_s
        self.max_follow_s = max_follow_s
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.stream = keys.webhooks()
        # no proxies from the environment: the address checked is the address connected to
        self.http = httpx.AsyncClient(follow_redirects=False, trust_env=False,
                                      transport=None if allow_private else PublicOnlyAsyncTransport(),
                                      timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 3.0)))
        self.timeout_s = timeout_s
        self._slots = asyncio.Semaphore(max_concurrent)
        # one destination (host:port) holds at most this many sends, so a receiver that trickles its
        # answers delays only its own deliveries, never another account's
        self.max_per_destination = max_per_destination
        self._destinations: dict[str, list] = {}  # host:port -> [its semaphore, sends using it]
        self._inflight: dict[str, asyncio.Task] = {}  # entry id -> its handler
        self._chains: dict[str, asyncio.Task] = {}  # prediction id -> its latest handler (keeps order)
        self._followers: dict[str, _Follower] = {}
        self._wake = asyncio.Event()

    # the loops

    async def run(self) -> None:
        while True:
            try:
                await self.ensure_group()
                break
            except Exception:  # noqa: BLE001 - Redis not reachable yet
                log.exception("webhook stream: cannot create the consumer group; retrying")
                await asyncio.sleep(1.0)
        loops = [asyncio.create_task(self._forever(fn, what)) for fn, what in (
            (self._read_round, "read"), (self._claim_round, "claim"), (self._progress_round, "progress"))]
        try:
            await asyncio.gather(*loops)
        finally:
            for t in loops:
                t.cancel()

    async def _forever(self, fn: Callable, what: str) -> None:
        while True:
            try:
                await fn()
            except asyncio.CancelledError:
                raise
            except ResponseError as e:
                if "NOGROUP" in str(e):
                    await self.ensure_group()
                    continue
                log.exception("webhook %s loop failed", what)
                await asyncio.sleep(1.0)
            except Exception:  # noqa: BLE001 - Redis blips: try again shortly
                log.exception("webhook %s loop failed", what)
                await asyncio.sleep(1.0)

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def _read_round(self) -> None:
        res = await self.redis.xreadgroup(GROUP, self.consumer, {self.stream: ">"}, count=100,
                                          block=READ_BLOCK_MS)
        for _, entries in res or []:
            for eid, fields in entries:
                self._spawn(eid, fields)

    async def _claim_round(self) -> None:
        await self.claim()
        await asyncio.sleep(self.claim_idle_s / 3)

    async def claim(self) -> int:
        """Keep this replica's in-flight entries fresh, then take over entries left idle by replicas
        that died. Returns how many were taken over."""
        mine = list(self._inflight)
        if mine:
            await self.redis.xclaim(self.stream, GROUP, self.consumer, 0, mine, justid=True)
        taken, cursor = 0, "0-0"
        while True:
            res = await self.redis.xautoclaim(self.stream, GROUP, self.consumer,
                                              int(self.claim_idle_s * 1000), start_id=cursor, count=100)
            cursor, entries = res[0], res[1]
            for eid, fields in entries:
                if eid in self._inflight:
                    continue
                if fields:
                    log.info("webhook entry %s reclaimed from a replica that stopped", eid)
                    self._spawn(eid, fields)
                    taken += 1
                else:
                    await self._ack(eid)
            if cursor in ("0-0", "0"):
                break
        # consumers of replicas long gone, with nothing left pending, are forgotten
        for c in await self.redis.xinfo_consumers(self.stream, GROUP):
            if c["name"] != self.consumer and not c["pending"] and c["idle"] > CONSUMER_FORGET_MS:
                await self.redis.xgroup_delconsumer(self.stream, GROUP, c["name"])
        return taken

    # one entry

    def _spawn(self, eid: str, fields: dict[str, str]) -> None:
        if eid in self._inflight:
            return
        task = asyncio.create_task(self.handle(eid, fields))
        self._inflight[eid] = task
        task.add_done_callback(lambda _t, eid=eid: self._inflight.pop(eid, None))

    async def handle(self, eid: str, fields: dict[str, str]) -> str | None:
        """Deliver one entry, then acknowledge it. An exception leaves it pending for a later claim.
        Entries of one prediction are handled in stream order on this replica."""
        pid, event = fields.get("prediction", ""), fields.get("event", "")
        logctx.set_about(pid)  # this entry's own task
        me = asyncio.current_task()
        prev = self._chains.get(pid)
        self._chains[pid] = me
        try:
            if prev is not None and not prev.done():
                await asyncio.wait({prev})
            outcome = None
            if event == "completed":
                outcome = await self._completed(pid, eid)
            elif event == "start":
                outcome = await self._start(pid)
            await self._ack(eid)
            return outcome
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - left pending; a claim retries it
            log.exception("prediction %s: %s webhook failed; it stays queued", pid, event)
            return None
        finally:
            if self._chains.get(pid) is me:
                del self._chains[pid]

    async def _ack(self, eid: str) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.xack(self.stream, GROUP, eid)
        pipe.xdel(self.stream, eid)
        await pipe.execute()

    async def _start(self, pid: str) -> str | None:
        rec = await self.store.get(pid)
        if rec is None:
            return None
        outcome = None
        if wants(rec, "start"):
            secret = await self.secrets.get(rec.account)
            outcome = await self.send(pid, rec.webhook, f"msg_{pid}_start", self.body(rec), secret)
        if not rec.done and any(wants(rec, e) for e in PROGRESS_EVENTS):
            if pid not in self._followers:
                self._followers[pid] = _Follower(rec)
                self._wake.set()
        return outcome

    async def _completed(self, pid: str, eid: str) -> str | None:
        follower = self._followers.pop(pid, None)
        if follower is not None and follower.busy():
            await asyncio.wait({follower.sending})
        rec = await self.store.get(pid)
        if rec is None:
            return None
        targets = [rec.webhook] if wants(rec, "completed") else []
        if rec.webhook_completed and rec.webhook_completed not in targets:
            targets.append(rec.webhook_completed)
        if not targets:
            return None
        body = self.body(rec)
        secret = await self.secrets.get(rec.account)
        done_at = entry_time(eid)
        outcomes = await asyncio.gather(*(
            self._with_retries(pid, url, f"msg_{pid}_completed", body, secret, done_at) for url in targets))
        return DELIVERED if all(o == DELIVERED for o in outcomes) else outcomes[0]

    async def _with_retries(self, pid: str, url: str, wid: str, body: bytes, secret: str,
                            done_at: float) -> str:
        attempt = 0
        while True:
            attempt += 1
            outcome = await self.send(pid, url, wid, body, secret)
            if outcome != FAILED:
                return outcome
            elapsed = time.time() - done_at
            nxt = next((o for o in self.offsets if o > elapsed), None)
            if nxt is None:
                log.warning("prediction %s: giving up on webhook %s after %d attempts", pid, wid, attempt)
                await self._count(metrics.inc("webhooks_given_up"))
                return FAILED
            await asyncio.sleep(nxt - elapsed)

    # sending

    def body(self, rec: Prediction) -> bytes:
        base = (rec.base_url or self.default_base).rstrip("/")
        return json.dumps(wire.record(rec, base, self.url_for(base)), separators=(",", ":")).encode()

    async def send(self, pid: str, url: str, wid: str, body: bytes, secret: str) -> str:
        """One signed POST. DELIVERED on 2xx, REFUSED for a non-public destination (not retried),
        FAILED otherwise; each outcome is counted in the platform's metrics."""
        outcome = await self._send(pid, url, wid, body, secret)
        await self._count(metrics.inc("webhook_sends", outcome))
        return outcome

    async def _count(self, *increments: tuple[str, int]) -> None:
        try:
            await metrics.count(self.redis, self.keys.metrics(), *increments)
        except RedisError:  # a count is not worth failing a delivery over
            log.warning("could not count a webhook outcome", exc_info=True)

    async def _send(self, pid: str, url: str, wid: str, body: bytes, secret: str) -> str:
        if not self.allow_private:
            try:
                await check_public(url)
            except NonPublicAddress as e:
                log.warning("prediction %s: webhook %s refused: %s", pid, wid, e)
                return REFUSED
            except (OSError, UnicodeError) as e:
                log.info("prediction %s: webhook %s: cannot resolve: %s", pid, wid, e)
                return FAILED
        try:
            async with self._destination(url), self._slots:
                # a total deadline: httpx's timeouts are per read, which a trickled answer never hits
                status = await asyncio.wait_for(self._post(url, wid, body, secret), self.timeout_s)
        except NonPublicAddress as e:  # it resolved to a public address for the check, not for the connect
            log.warning("prediction %s: webhook %s refused at connect: %s", pid, wid, e)
            return REFUSED
        except (httpx.HTTPError, asyncio.TimeoutError) as e:
            log.info("prediction %s: webhook %s to %s failed: %s", pid, wid, url, type(e).__name__)
            return FAILED
        if 200 <= status < 300:
            return DELIVERED
        log.info("prediction %s: webhook %s to %s answered %d", pid, wid, url, status)
        return FAILED

    async def _post(self, url: str, wid: str, body: bytes, secret: str) -> int:
        async with self.http.stream("POST", url, content=body, headers=signed_headers(secret, wid, body)) as resp:
            return resp.status_code

    @contextlib.asynccontextmanager
    async def _destination(self, url: str):
        """One of the destination's slots; a destination no send uses is forgotten, so the map
        holds only the destinations being sent to."""
        parts = urllib.parse.urlsplit(url)
        key = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
        entry = self._destinations.setdefault(key, [asyncio.Semaphore(self.max_per_destination), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._destinations[key]

    # progress

    async def _progress_round(self) -> None:
        if not self._followers:
            self._wake.clear()
            await self._wake.wait()
            return
        now = time.monotonic()
        streams, by_key = {}, {}
        for f in self._followers.values():
            key = self.keys.prediction_events(f.pid)
            streams[key], by_key[key] = f.last_id, f
        waits = [f.last_sent + self.throttle_s - now for f in self._followers.values()
                 if f.pending and not f.busy()]
        block_ms = PROGRESS_BLOCK_MS if not waits else min(PROGRESS_BLOCK_MS, max(1, int(min(waits) * 1000)))
        for key, entries in await self.redis.xread(streams, count=500, block=block_ms) or []:
            f = by_key[key]
            for eid, fields in entries:
                f.last_id = eid
                ev = fields.get("event")
                if ev == "done":
                    f.done = True
                elif ev in f.events and f.pending != "output":
                    f.pending = ev
        now = time.monotonic()
        for pid, f in list(self._followers.items()):
            if f.busy():
                continue
            if f.done or now - f.since > self.max_follow_s:
                del self._followers[pid]  # the completed webhook carries the rest
            elif f.pending and now - f.last_sent >= self.throttle_s:
                f.count += 1
                f.last_sent = now
                f.sending = asyncio.create_task(self._progress(f, f.pending, f.count))
                f.pending = None

    async def _progress(self, f: _Follower, event: str, n: int) -> None:
        try:
            rec = await self.store.get(f.pid)
            if rec is None or rec.done:
                return  # the completed webhook says it
            secret = await self.secrets.get(f.account)
            await self.send(f.pid, f.url, f"msg_{f.pid}_{event}_{n}", self.body(rec), secret)
        except Exception:  # noqa: BLE001 - progress is best effort
            log.exception("prediction %s: %s webhook failed", f.pid, event)

    async def close(self) -> None:
        await self.http.aclose()
