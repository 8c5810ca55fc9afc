"""Named deployments (keep-warm endpoints): `owner/name` pinned to a version with its own hardware
and min/max instances, each its own Serve application. `min_instances ≥ 1` keeps replicas warm;
every update bumps the release number and rolls the app to the new configuration (Serve replaces
replicas gracefully, so predictions already running finish)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

import redis.asyncio as aioredis

from router.apps import AppManager, AppSpec
from router.services.resolve import Resolver
from vendo_core.errors import Conflict, InvalidRequest, NotFound
from vendo_core.hardware import HardwareConfig
from vendo_core.ids import ModelRef, deployment_app_name
from vendo_core.keys import Keys
from vendo_core.records import Account, Deployment, Version
from vendo_core.store import now_iso

log = logging.getLogger("vendo.deployments")

MIN_INSTANCES = (0, 5)
MAX_INSTANCES = (1, 20)
FIELDS = ("version", "hardware", "min_instances", "max_instances")


def check_instances(min_i: Any, max_i: Any) -> tuple[int, int]:
    for field, value, (lo, hi) in (("min_instances", min_i, MIN_INSTANCES),
                                    ("max_instances", max_i, MAX_INSTANCES)):
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise InvalidRequest(field, f"must be an integer from {lo} to {hi}")
    if min_i > max_i:
        raise InvalidRequest("min_instances", "must not exceed max_instances")
    return min_i, max_i


class DeploymentService:
    def __init__(self, redis: aioredis.Redis, keys: Keys, apps: AppManager, resolver: Resolver,
                 skus: Callable[[], HardwareConfig]):
        """`resolver` applies visibility rules to the versions a deployment names; `skus()` returns
        the hardware config."""
        self.redis = redis
        self.keys = keys
        self.apps = apps
        self.resolver = resolver
        self.skus = skus
        self._removals: set[asyncio.Task] = set()

    async def get_record(self, owner: str, name: str) -> Deployment | None:
        raw = await self.redis.hgetall(self.keys.deployment(owner, name))
        return Deployment.from_redis(raw) if raw and "model" in raw else None

    async def get(self, account: Account, owner: str, name: str) -> Deployment:
        d = await self.get_record(owner, name)
        if d is None or not account.acts_for(d.owner):
            raise NotFound("Deployment", f"{owner}/{name}")
        return d

    async def list(self, account: Account) -> list[Deployment]:
        refs = await self.redis.zrange(self.keys.account_deployments(account.username), 0, -1)
        out = []
        for ref in refs:
            o, n = ref.split("/", 1)
            d = await self.get_record(o, n)
            if d:
                out.append(d)
        return out

    def _hardware(self, value: Any) -> str:
        return self.skus().pick(value)

    async def _version(self, account: Account, model: Any, version: Any) -> Version:
        if not isinstance(model, str):
            raise InvalidRequest("model", "must be owner/name")
        ref = ModelRef.parse(model, field="model")
        if version is not None and not isinstance(version, str):
            raise InvalidRequest("version", "must be a version id")
        _, v = await self.resolver.resolve(account, model_ref=ModelRef(ref.owner, ref.name, version))
        return v

    async def create(self, account: Account, body: dict) -> Deployment:
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("name", "is required")
        owner = account.username
        ModelRef(owner, name).check_names("name")
        v = await self._version(account, body.get("model"), body.get("version"))
        min_i, max_i = check_instances(body.get("min_instances", 0), body.get("max_instances", 1))
        now = now_iso()
        record = Deployment(owner=owner, name=name, model=v.model, version=v.id,
                            hardware=self._hardware(body.get("hardware")), min_instances=min_i,
                            max_instances=max_i, number=1, created_at=now, release_created_at=now,
                            created_by=owner)
        key = self.keys.deployment(owner, name)
        if not await self.redis.hsetnx(key, "owner", owner):
            raise Conflict(f"deployment {owner}/{name} already exists")
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping=record.to_redis())
        pipe.zadd(self.keys.account_deployments(owner), {f"{owner}/{name}": time.time()})
        pipe.sadd(self.keys.deployments(), f"{owner}/{name}")
        await pipe.execute()
        await self.roll(record, v)
        return await self.get_record(owner, name)

    async def update(self, account: Account, owner: str, name: str, body: dict) -> Deployment:
        d = await self.get(account, owner, name)
        unknown = [k for k in body if k not in FIELDS]
        if unknown:
            raise InvalidRequest(unknown[0], f"cannot be updated; one of {list(FIELDS)}")
        if not body:
            raise InvalidRequest("body", f"give at least one of {list(FIELDS)}")
        changes: dict[str, Any] = {}
        if "version" in body:
            v = await self._version(account, d.model, body["version"])
            changes["version"] = v.id
        if "hardware" in body:
            changes["hardware"] = self._hardware(body["hardware"])
        min_i, max_i = check_instances(body.get("min_instances", d.min_instances),
                                       body.get("max_instances", d.max_instances))
        changes.update(min_instances=min_i, max_instances=max_i, release_created_at=now_iso())
        key = self.keys.deployment(owner, name)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping={k: str(v_) for k, v_ in changes.items()})
        pipe.hincrby(key, "number", 1)
        await pipe.execute()
        d = await self.get_record(owner, name)
        await self.roll(d, await self.apps_version(d.version))
        return d

    async def apps_version(self, vid: str) -> Version:
        v = await self.resolver.registry.get_version(vid)  # not the cache: it may have been deleted
        if v is None:
            raise NotFound("Version", f"{vid} (deleted by its model's owner; update the deployment "
                           "to another version)")
        return v

    def spec(self, d: Deployment, version: Version) -> AppSpec:
        """What the Serve app of a deployment is built from: its version with the deployment's
        hardware and instance counts."""
        return AppSpec(version=version, app=deployment_app_name(d.owner, d.name), hardware=d.hardware,
                       min_replicas=d.min_instances, max_replicas=d.max_instances, deployment=d.ref,
                       release=d.number)

    async def roll(self, d: Deployment, version: Version) -> None:
        await self.apps.deploy(self.spec(d, version))

    async def delete(self, account: Account, owner: str, name: str) -> None:
        await self.get(account, owner, name)
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.deployment(owner, name))
        pipe.zrem(self.keys.account_deployments(owner), f"{owner}/{name}")
        pipe.srem(self.keys.deployments(), f"{owner}/{name}")
        # remembered until its app is gone: a router that dies before then leaves it to reconcile
        pipe.sadd(self.keys.deployments_deleted(), f"{owner}/{name}")
        await pipe.execute()
        # Serve waits for running predictions (graceful shutdown) while it tears the app down
        task = asyncio.get_running_loop().create_task(self._remove_app(owner, name))
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    async def _remove_app(self, owner: str, name: str, running: set[str] | None = None) -> None:
        ref = f"{owner}/{name}"
        if await self.redis.exists(self.keys.deployment(owner, name)):
            await self.redis.srem(self.keys.deployments_deleted(), ref)  # made again since: its app stays
            return
        app = deployment_app_name(owner, name)
        if running is None or app in running:
            await self.apps.delete(app)
            log.info("deleted Serve app %s of deleted deployment %s", app, ref)
        await self.redis.srem(self.keys.deployments_deleted(), ref)

    async def target(self, account: Account, owner: str, name: str) -> tuple[Deployment, AppSpec]:
        """(deployment, its app's spec) for a prediction through a deployment."""
        d = await self.get(account, owner, name)
        return d, self.spec(d, await self.apps_version(d.version))

    async def using_version(self, vid: str) -> list[str]:
        """The deployments (owner/name) whose current release runs version `vid`."""
        refs = sorted(await self.redis.smembers(self.keys.deployments()))
        pipe = self.redis.pipeline(transaction=False)
        for ref in refs:
            o, n = ref.split("/", 1)
            pipe.hget(self.keys.deployment(o, n), "version")
        return [ref for ref, v in zip(refs, await pipe.execute(), strict=True) if v == vid]

    async def reconcile(self) -> list[str]:
        """Recreate the apps of deployments that must stay up (min_instances ≥ 1) when Serve lacks
        them, e.g. after a head restart; the rest come back on demand."""
        created: list[str] = []
        refs = await self.redis.smembers(self.keys.deployments())
        deleted = await self.redis.smembers(self.keys.deployments_deleted())
        if not refs and not deleted:
            return created
        running = await self.apps.running_apps()  # one controller read per round, not per deployment
        for ref in deleted:  # deleted deployments whose app a dead router never removed
            await self._remove_app(*ref.split("/", 1), running=running)
        for ref in refs:
            o, n = ref.split("/", 1)
            d = await self.get_record(o, n)
            if not d or d.min_instances < 1:
                continue
            app = deployment_app_name(o, n)
            if app not in running:
                await self.apps.handle(self.spec(d, await self.apps_version(d.version)))
                created.append(app)
                log.info("reconcile: recreated %s", app)
        return created
