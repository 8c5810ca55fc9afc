"""What an operator's tools read: the Prometheus exposition of the platform's metrics and the
readiness of what the router depends on. The counts come from Redis (`vendo_core.metrics`, one
HGETALL, shared by every replica); what is a state rather than a count (Serve's apps and replicas,
the webhook backlog, Redis's round trip) is read here at scrape time, never on a prediction's path."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import redis.asyncio as aioredis
from prometheus_client.core import GaugeMetricFamily, Metric

from router.apps import AppManager, replica_counts
from vendo_core import metrics
from vendo_core.keys import Keys
from vendo_core.storage import ObjectStore

log = logging.getLogger("vendo.ops")

READY_TIMEOUT_S = 5.0


class Ops:
    def __init__(self, redis: aioredis.Redis, keys: Keys, apps: AppManager, objects: ObjectStore):
        self.redis = redis
        self.keys = keys
        self.apps = apps
        self.objects = objects

    async def metrics_text(self) -> bytes:
        t0 = time.perf_counter()
        await self.redis.ping()
        rtt = time.perf_counter() - t0
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.metrics())
        pipe.xlen(self.keys.webhooks())
        raw, backlog = await pipe.execute()
        extra: list[Metric] = [
            _gauge("redis_roundtrip_seconds", "One PING to Redis from this router replica, at scrape time", rtt),
            _gauge("webhook_backlog", "Webhook deliveries queued or being retried", backlog),
        ]
        extra += await self._serve_families()
        return metrics.render(raw, extra)

    async def _serve_families(self) -> list[Metric]:
        apps = GaugeMetricFamily("vendo_serve_apps", "Serve applications by status", labels=["status"])
        replicas = GaugeMetricFamily("vendo_serve_replicas", "Replicas of each Serve application by state",
                                     labels=["app", "state"])
        try:
            statuses = await asyncio.wait_for(self.apps.statuses(), READY_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - the counts from Redis are still worth a scrape
            log.warning("Serve status unavailable for /metrics", exc_info=True)
            return [apps, replicas]
        by_status: dict[str, int] = {}
        for name, st in sorted(statuses.items()):
            s = str(getattr(st, "status", "unknown")).split(".")[-1].lower()
            by_status[s] = by_status.get(s, 0) + 1
            for state, n in sorted(replica_counts(st).items()):
                replicas.add_metric([name, state], n)
        for s, n in sorted(by_status.items()):
            apps.add_metric([s], n)
        return [apps, replicas]

    async def readiness(self) -> dict[str, Any]:
        """Each dependency's check: Redis answers, the Serve controller answers, storage takes a
        write. Nothing in the answer names an address or a credential (it is unauthenticated)."""
        checks = await asyncio.gather(self._check(self.redis.ping()), self._check(self.apps.statuses()),
                                      self._check(asyncio.to_thread(self._probe_storage)))
        return dict(zip(("redis", "serve", "storage"), checks, strict=True))

    @staticmethod
    async def _check(awaitable) -> str:
        try:
            await asyncio.wait_for(awaitable, READY_TIMEOUT_S)
            return "ok"
        except Exception as e:  # noqa: BLE001 - any failure means not ready
            log.warning("readiness check failed: %s", e)
            return "failing"

    def _probe_storage(self) -> None:
        key = f"health/{uuid.uuid4().hex}"
        self.objects.put_bytes(key, b"ok")
        self.objects.delete_prefix(key)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(f"{metrics.NAMESPACE}_{name}", doc)
    g.add_metric([], value)
    return g
