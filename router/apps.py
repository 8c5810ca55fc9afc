"""Serve applications track the working set: a version's app is created when a prediction first
needs it and deleted after it has sat at zero replicas for `app_idle_s`.

Never "ensure" an app by deploying it again (that replaces its replicas): create it only when the
controller lacks it, under a short Redis lock per app, and cache handles per app."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import redis.asyncio as aioredis

from vendo_core.errors import VersionNotFound
from vendo_core.grpcmsg import fits_grpc
from vendo_core.ids import VERSION_APP_PREFIX, app_name, training_app_name
from vendo_core.keys import Keys
from vendo_core.records import Version
from vendo_core.redislock import RedisLock

_SERVE_BUILD = threading.Lock()
log = logging.getLogger("vendo.apps")


REPLICATE_WEIGHTS = "replicate_weights"  # Replicate's input for swapping a base model's weights per request


@dataclass(frozen=True)
class AppSpec:
    """What one Serve application runs: a version and, for a named deployment, its own hardware,
    instance counts and release. A version's own app takes everything from the version.

    A call on it may name a fine-tune of its version: `finetune` (Serve's multiplexed model id: a
    replica loads that fine-tune's weights in a worker of its own), or `weights_input` (the input
    the base takes weights in, set to the fine-tune's: no second worker). `mode` "train" is the
    app of a version's trainings."""

    version: Version
    app: str
    hardware: str | None = None
    min_replicas: int = 0
    max_replicas: int | None = None
    deployment: str | None = None
    release: int | None = None
    mode: str = "predict"
    finetune: str | None = None
    weights_input: tuple[str, str] | None = None  # (input name, weights' storage key)

    @property
    def concurrency(self) -> int:
        """Predictions one replica runs at once (a training runs alone: a train target declares none)."""
        return 1 if self.mode == "train" else int(self.version.traits.get("concurrency_max") or 1)

    @property
    def slots(self) -> int:
        """Calls one replica takes (Serve's max_ongoing_requests): its predictor's slots and one
        more waiting inside it (still `starting`), so a slot that frees is taken at once."""
        return self.concurrency + 1

    def most_replicas(self, default: int) -> int:
        """The app's autoscaling ceiling: a named deployment's, else its version's, else `default`."""
        return self.max_replicas or self.version.max_replicas or default

    @classmethod
    def of(cls, version: Version, app: str | None = None) -> AppSpec:
        return cls(version=version, app=app or app_name(version.id))

    @classmethod
    def training(cls, version: Version) -> AppSpec:
        return cls(version=version, app=training_app_name(version.id), mode="train")

    @classmethod
    def finetune_of(cls, base: AppSpec, finetune: Version) -> AppSpec:
        """Where a prediction on `finetune` runs: on `base` (its base version's app, or a
        deployment of it), with the weights as the base's `replicate_weights` input where its
        schema takes one, else as a multiplexed fine-tune."""
        props = ((base.version.openapi_schema.get("components") or {}).get("schemas") or {}).get("Input") or {}
        if REPLICATE_WEIGHTS in (props.get("properties") or {}) and finetune.weights_key:
            return dataclasses.replace(base, weights_input=(REPLICATE_WEIGHTS, finetune.weights_key))
        return dataclasses.replace(base, finetune=finetune.id)


class AppManager:
    """Creates, caches and reaps the Serve apps of versions. `build` returns the Serve Application
    for a version record; it is only called when the app must be created. `version_live(id)` says
    whether a version is still registered: a deleted version's app is never created again."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, build: Callable[[AppSpec], Any], idle_s: float, *,
                 version_live: Callable[[str], Awaitable[bool]] | None = None, grpc: bool = False):
        self.redis = redis
        self.grpc = grpc  # calls go over Serve's gRPC transport instead of Ray's actor calls
        self.keys = keys
        self.build = build
        self.idle_s = idle_s
        self.version_live = version_live
        self.handles: dict[str, Any] = {}
        self.specs: dict[str, AppSpec] = {}  # what each app this router sent work to runs (for eviction)
        self._known: set[str] = set()
        self._creating: dict[str, asyncio.Future] = {}
        self._touched: dict[str, float] = {}
        self.on_create: Callable[[AppSpec], Awaitable[Any]] | None = None  # told of each app it creates

    async def _apps(self) -> dict[str, Any]:
        from ray import serve  # heavy: kept out of what unit tests import

        status = await asyncio.to_thread(serve.status)
        self._known = set(status.applications)
        return status.applications

    async def handle(self, spec: AppSpec) -> Any:
        """A cached handle to `spec.app`, creating the app first when the controller lacks it."""
        app = spec.app
        h = self.handles.get(app)
        if h is not None:
            return h
        self.specs[app] = dataclasses.replace(spec, finetune=None, weights_input=None)
        fut = self._creating.get(app)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._creating[app] = fut
            try:
                fut.set_result(await self._ensure(spec))
            except BaseException as e:
                fut.set_exception(e)
                fut.exception()  # mark retrieved: the caller below re-raises it
            finally:
                self._creating.pop(app, None)
        h = await asyncio.shield(fut)
        self.handles[app] = h
        return h

    def for_input(self, handle: Any, payload: Any) -> Any:
        """`handle` as a call with `payload` must use it: over Ray's actor calls when the input is
        too large for a replica's gRPC message (an inline data URI, a long text)."""
        if self.grpc and not fits_grpc(payload):
            return handle.options(_by_reference=True)
        return handle

    def forget(self, app: str) -> None:
        self.handles.pop(app, None)
        self._known.discard(app)

    async def _ensure(self, spec: AppSpec) -> Any:
        from ray import serve  # heavy: kept out of what unit tests import

        app = spec.app
        if app not in self._known:
            await self._apps()
        if app not in self._known:
            async with self._lock(app):
                await self._apps()
                if app not in self._known:
                    if self.version_live is not None and not await self.version_live(spec.version.id):
                        raise VersionNotFound(spec.version.id)  # deleted: its teardown holds this lock
                    await self.touch(app, force=True)  # before it exists: the reaper never sees it unused
                    t0 = time.monotonic()
                    await asyncio.to_thread(self._run, spec)
                    self._known.add(app)
                    log.info("created Serve app %s in %.3fs", app, time.monotonic() - t0)
                    if self.on_create is not None:  # e.g. make room for its first replica
                        asyncio.get_running_loop().create_task(self.on_create(spec))
        handle = serve.get_deployment_handle("model", app_name=app)
        return handle.options(_by_reference=False) if self.grpc else handle

    def _run(self, spec: AppSpec) -> None:
        """Build and start `spec`'s Serve app, one at a time in this process: Ray Serve's deployment
        options register and unregister a module with cloudpickle, a process-wide table, so two
        apps built at once can fail with "is not registered for pickle by value"."""
        from ray import serve  # heavy: kept out of what unit tests import

        with _SERVE_BUILD:
            target = serve.RunTarget(self.build(spec), name=spec.app, route_prefix=None)
            serve.run_many([target], wait_for_applications_running=False)

    def _lock(self, app: str) -> RedisLock:
        return RedisLock(self.redis, self.keys.app_lock(app))

    async def touch(self, app: str, force: bool = False) -> None:
        """Record that `app` is in use. Written at most every `idle_s / 20` (≤ 5 s) per app unless
        forced, so the hot path rarely pays a round trip; the reaper's horizon is far longer."""
        now = time.time()
        if not force and now - self._touched.get(app, 0.0) < min(5.0, self.idle_s / 20):
            return
        self._touched[app] = now
        await self.redis.zadd(self.keys.app_last_used(), {app: now})

    async def last_used(self) -> dict[str, float]:
        """When each app was last sent work (as `touch` records it)."""
        return {a: float(t) for a, t in await self.redis.zrange(self.keys.app_last_used(), 0, -1, withscores=True)}

    async def count(self, *increments: tuple[str, int]) -> None:
        from vendo_core import metrics

        await metrics.count(self.redis, self.keys.metrics(), *increments)

    async def reap_idle(self, now: float | None = None) -> list[str]:
        """Delete version apps idle at zero replicas for `idle_s`; returns the names deleted."""
        from ray import serve  # heavy: kept out of what unit tests import

        now = time.time() if now is None else now
        apps = await self._apps()
        deleted = []
        for name, st in apps.items():
            if not name.startswith(VERSION_APP_PREFIX) or _replicas(st) > 0:
                continue
            last = await self.redis.zscore(self.keys.app_last_used(), name)
            if last is None:
                # made before this registry knew it (e.g. by an earlier cluster): start its clock
                await self.redis.zadd(self.keys.app_last_used(), {name: now}, nx=True)
                continue
            if now - last < self.idle_s:
                continue
            async with self._lock(name):
                last = await self.redis.zscore(self.keys.app_last_used(), name)
                if last is None or time.time() - last < self.idle_s:
                    continue
                await asyncio.to_thread(serve.delete, name)
                self.forget(name)
                await self.redis.zrem(self.keys.app_last_used(), name)
                deleted.append(name)
                log.info("deleted idle Serve app %s", name)
        return deleted

    async def statuses(self) -> dict[str, Any]:
        """Serve's status of every application by name, read from the controller once."""
        return await self._apps()

    async def running_apps(self) -> set[str]:
        """The names of every Serve application, read from the controller once."""
        return set(await self._apps())

    async def deploy(self, spec: AppSpec) -> None:
        """Create `spec.app`, or roll it to a new configuration (a named deployment's update). Serve
        replaces the replicas gracefully, so running predictions finish on the old ones."""
        app = spec.app
        self.specs[app] = spec
        async with self._lock(app):
            await self.touch(app, force=True)
            await asyncio.to_thread(self._run, spec)
            self._known.add(app)
        self.handles.pop(app, None)

    async def delete(self, app: str) -> None:
        """Delete `app` (Serve drains its running requests first)."""
        from ray import serve  # heavy: kept out of what unit tests import

        async with self._lock(app):
            await asyncio.to_thread(serve.delete, app)
            self.forget(app)
            await self.redis.zrem(self.keys.app_last_used(), app)

    async def delete_when_idle(self, app: str, busy: Callable[[], Awaitable[list[str]]],
                               wait: Callable[[list[str]], Awaitable[None]]) -> None:
        """Delete a deleted version's `app` once none of its predictions is starting or processing:
        `busy()` lists those, `wait(ids)` blocks until they end. Waits outside the app's lock (a
        queued prediction may need it to create the app), then deletes under it, as the reaper
        does, after a last look, so a prediction that slipped in meanwhile is waited for too. The
        version must already be gone from the registry, so `_ensure` cannot bring the app back."""
        from ray import serve  # heavy: kept out of what unit tests import

        while True:
            pending = await busy()
            if pending:
                await wait(pending)
                continue
            async with self._lock(app):
                if await busy():
                    continue
                if app in await self._apps():
                    await asyncio.to_thread(serve.delete, app)
                    log.info("deleted Serve app %s of a deleted version", app)
                self.forget(app)
                await self.redis.zrem(self.keys.app_last_used(), app)
                return


def _replicas(app_status: Any) -> int:
    n = 0
    for dep in app_status.deployments.values():
        for state, count in (dep.replica_states or {}).items():
            if str(state).split(".")[-1].upper() in ("RUNNING", "STARTING", "UPDATING", "RECOVERING"):
                n += count
    return n


def replica_counts(app_status: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for dep in app_status.deployments.values():
        for state, count in (dep.replica_states or {}).items():
            key = str(state).split(".")[-1].lower()
            out[key] = out.get(key, 0) + count
    return out
