"""The working set on a full cluster: when a prediction waits because its version's replica cannot
be placed (Ray's resources are held), idle replicas of other versions make room, least recently
used first, as Replicate's "we only run the models that are actually being used" means.

An app may be evicted (its Serve app deleted: it comes back at its next prediction, like any app
the idle reaper removed) only when it is idle: nothing queued or running on it, nothing sent to it
for `evict_idle_s`, every replica past setup(), and not a deployment's `min_instances`. Only what
is short is freed; every eviction is logged and counted."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from router.apps import AppManager, AppSpec, replica_counts
from vendo_core import metrics
from vendo_core.hardware import HardwareConfig

log = logging.getLogger("vendo.capacity")
RESOURCES = ("CPU", "GPU", "memory")
_OPTION = {"CPU": "num_cpus", "GPU": "num_gpus", "memory": "memory"}


@dataclass
class Need:
    """Amounts of Ray resources (CPU, GPU, memory)."""

    amounts: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of_options(cls, opts: dict[str, Any], times: int = 1) -> Need:
        return cls({r: float(opts.get(_OPTION[r]) or 0) * times for r in RESOURCES})

    def add(self, other: Need) -> None:
        for r, v in other.amounts.items():
            self.amounts[r] = self.amounts.get(r, 0.0) + v

    def short_of(self, available: dict[str, float]) -> Need:
        """What of this need `available` does not cover."""
        return Need({r: v - float(available.get(r, 0.0)) for r, v in self.amounts.items()
                     if v - float(available.get(r, 0.0)) > 1e-9})

    def covered_by(self, freed: Need) -> bool:
        return all(freed.amounts.get(r, 0.0) + 1e-9 >= v for r, v in self.amounts.items())

    def matches(self, bundle: dict[str, float]) -> bool:
        """Whether a pending request's bundle asks for exactly this (other resources aside)."""
        return all(abs(float(bundle.get(r, 0.0)) - v) < 1e-6 for r, v in self.amounts.items())

    def __bool__(self) -> bool:
        return any(v > 1e-9 for v in self.amounts.values())


class Cluster:
    """What the cluster says about placement (Ray's state; a fake in unit tests)."""

    def available(self) -> dict[str, float]:
        import ray  # heavy: kept out of what unit tests import

        return dict(ray.available_resources())

    def pending_demands(self) -> list[dict[str, float]]:
        """The resource bundles of whatever waits for room in the cluster now (the GCS's view of the
        raylets' queues): a replica that was granted its resources is not among them, even before
        its worker process runs."""
        import ray  # heavy: kept out of what unit tests import
        from ray.autoscaler.v2.sdk import get_cluster_resource_state

        state = get_cluster_resource_state(ray._private.worker.global_worker.gcs_client)
        return [dict(r.request.resources_bundle) for r in state.pending_resource_requests for _ in range(r.count)]

    def pending_apps(self) -> set[str]:
        """Apps with a Serve replica waiting to be placed: its actor pending creation and not yet
        on a node (one that is placed and running its constructor, setup(), holds its resources
        already and is not waiting for room)."""
        from ray._private import state  # the GCS's actor table, without the dashboard

        out = set()
        for info in state.actors(actor_state_name="PENDING_CREATION").values():
            name = str(info.get("Name") or "")
            port = (info.get("Address") or {}).get("Port") or 0  # 0 until a worker on a node holds it
            if name.startswith("SERVE_REPLICA::") and not port:
                out.add(name[len("SERVE_REPLICA::"):].split("#", 1)[0])
        return out


class WorkingSet:
    def __init__(self, apps: AppManager, store: Any, skus: Callable[[], HardwareConfig], *,
                 waiting: Callable[[float], dict[str, AppSpec]], after_s: float, idle_s: float,
                 cluster: Cluster | None = None, local_busy: Callable[[], set[str]] = set):
        self.apps = apps
        self.store = store
        self.skus = skus
        self.waiting = waiting  # {prediction id: its spec} for predictions dispatched before a time
        self.after_s = after_s
        self.idle_s = idle_s
        self.cluster = cluster or Cluster()
        self.local_busy = local_busy
        self.evicted = 0
        self._made_room: dict[str, float] = {}  # app → when room was last made for it
        self._evicting: Any = None  # an asyncio.Lock, made on the loop: one eviction decision at a time

    def demand(self, spec: AppSpec, replicas: int = 1) -> Need:
        sku = self.skus().get(spec.hardware or spec.version.hardware)
        return Need.of_options(sku.ray_actor_options(), replicas)

    def _lock(self) -> Any:
        import asyncio

        self._evicting = self._evicting or asyncio.Lock()
        return self._evicting

    async def make_room(self, now: float | None = None) -> list[str]:
        """Evict what the predictions waiting for placement need; returns the apps evicted."""
        async with self._lock():
            return await self._make_room(now)

    async def _make_room(self, now: float | None) -> list[str]:
        import asyncio

        now = time.time() if now is None else now
        waiting = self.waiting(now - self.after_s)
        if not waiting:
            return []
        statuses = await self.store.statuses(list(waiting))
        wanted = {spec.app: spec for (pid, spec), st in zip(waiting.items(), statuses, strict=True)
                  if st == "starting"}
        if not wanted:
            return []
        pending = await asyncio.to_thread(self.cluster.pending_apps)
        demands = await asyncio.to_thread(self.cluster.pending_demands) if pending else []
        need, hold = Need(), max(10.0, 10 * self.after_s)
        for app, spec in wanted.items():
            # room made for it moments ago is still being given back (replicas draining): wait
            if app not in pending or now - self._made_room.get(app, 0.0) <= hold:
                continue
            want = self.demand(spec)
            match = next((d for d in demands if want.matches(d)), None)
            if match is not None:  # Ray holds its request in a queue: it waits for room
                demands.remove(match)
                need.add(want)
        if not need:
            return []  # queued behind busy replicas, or in setup: autoscaling's work, not room
        short = need.short_of(await asyncio.to_thread(self.cluster.available))
        if not short:
            return []  # it fits now: Ray is placing it
        return await self._evict(short, {a: s for a, s in wanted.items() if a in pending}, now)

    async def make_room_for(self, spec: AppSpec) -> list[str]:
        """Called as `spec.app` is created: if its first replica cannot fit in what the cluster has
        free, evict for it now, while Serve is still asking for that replica, rather than once it
        has waited `after_s` (the cold start and the eviction then overlap)."""
        import asyncio

        try:
            async with self._lock():
                short = self.demand(spec).short_of(await asyncio.to_thread(self.cluster.available))
                return await self._evict(short, {spec.app: spec}, time.time()) if short else []
        except Exception:  # noqa: BLE001 - the waiting prediction's own eviction round still runs
            log.exception("making room for new app %s", spec.app)
            return []

    async def _evict(self, short: Need, wanted: dict[str, AppSpec], now: float) -> list[str]:
        """Evict idle apps, least recently used first, until `short` is covered (or none, if all of
        them together could not cover it), for `wanted`: room made for those is held for a while
        (it is being given back), so no later round evicts for them again meanwhile."""
        serve = await self.apps.statuses()
        busy = await self.store.busy_apps() | self.local_busy() | set(wanted)
        last_used = await self.apps.last_used()
        candidates = []
        for app, st in serve.items():
            spec = self.apps.specs.get(app)
            counts = replica_counts(st)
            if (spec is None or app in busy or spec.min_replicas > 0 or not counts.get("running")
                    or any(k != "running" for k, n in counts.items() if n)
                    or now - last_used.get(app, 0.0) < self.idle_s):
                continue
            candidates.append((last_used.get(app, 0.0), app, spec, counts["running"]))
        # only apps holding something that is short free anything; if all of them together cannot
        # make it fit (a SKU no node has room for), evicting would only cost others a cold start
        candidates = [c for c in candidates
                      if any(self.demand(c[2]).amounts.get(r, 0) > 0 for r in short.amounts)]
        everything = Need()
        for _, _, spec, replicas in candidates:
            everything.add(self.demand(spec, replicas))
        if not short.covered_by(everything):
            log.info("no eviction can make room for %s (short of %s)", ", ".join(sorted(wanted)), short.amounts)
            return []
        for app in wanted:
            self._made_room[app] = now
        freed, evicted = Need(), []
        for _, app, spec, replicas in sorted(candidates, key=lambda c: c[0]):
            if short.covered_by(freed):
                break
            await self.apps.delete(app)
            freed.add(self.demand(spec, replicas))
            evicted.append(app)
            self.evicted += 1
            log.info("evicted idle app %s (%d replica%s) to make room for %s", app, replicas,
                     "" if replicas == 1 else "s", ", ".join(sorted(wanted)))
        await self.apps.count(metrics.inc("evictions", by=len(evicted)))
        return evicted
