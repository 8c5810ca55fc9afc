"""Models' versions: push (hash, store once, introspect, register), read, and where each one runs.
The HTTP layer and the CLI push through this; user code is never imported here, only in a Ray task
with the version's runtime_env (`deployments.introspect`)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any, Awaitable, Callable

from deployments.supervisor import WorkerOptions
from router.apps import AppManager, replica_counts
from router.services.resolve import Resolver
from vendo_core.errors import InvalidRequest, ModelNotFound, NotFound, PackageInvalid
from vendo_core.hardware import HardwareConfig
from vendo_core.ids import ModelRef, app_name, version_id
from vendo_core.keys import package_key
from vendo_core.packaging import UnpackLimits, package_digest
from vendo_core.records import COG_VERSION, Account, Model, Version
from vendo_core.registry import Registry, visible
from vendo_core.storage import ObjectStore

VISIBILITIES = ("public", "private")
# what a version record keeps of its introspection: nothing the model's own code could set decides
# where its package lives, what it runs on or how far it scales
INTROSPECTED = ("openapi_schema", "traits", "runtime_env", "readme")

Introspect = Callable[[bytes, UnpackLimits], Any]  # awaitable -> the introspection dict


async def introspect_in_ray(data: bytes, limits: UnpackLimits, *, options: WorkerOptions | None = None,
                            timeout_s: float = 300.0) -> dict[str, Any]:
    """Read the predictor's schema in a Ray task with the version's runtime_env. cog.yaml (plain
    YAML) is read here; user code is only ever imported in the model worker that task starts."""
    import ray  # heavy: only a router that pushes needs it

    from deployments.introspect import introspect_package, package_runtime_env

    runtime_env = await asyncio.to_thread(package_runtime_env, data, limits)
    task = ray.remote(num_cpus=0, max_retries=0)(introspect_package)
    try:
        return await task.options(runtime_env=runtime_env or None).remote(data, limits, options, timeout_s)
    except Exception as e:  # noqa: BLE001 - surface the predictor's own import/definition error
        cause = getattr(e, "cause", None) or e
        if isinstance(cause, PackageInvalid):
            raise cause from None
        raise PackageInvalid(f"could not load the predictor: {type(cause).__name__}: {cause}") from e


class VersionService:
    def __init__(self, registry: Registry, resolver: Resolver, objects: ObjectStore, apps: AppManager, *,
                 skus: Callable[[], HardwareConfig], limits: UnpackLimits = UnpackLimits(),
                 introspect: Introspect = introspect_in_ray):
        self.registry = registry
        self.resolver = resolver
        self.objects = objects
        self.apps = apps
        self.skus = skus
        self.limits = limits
        self.introspect = introspect

    async def visible_model(self, account: Account, owner: str, name: str) -> Model:
        """The model if the caller may see it; ModelNotFound otherwise."""
        ModelRef(owner, name).check_names()
        model = await self.registry.get_model(owner, name)
        if not visible(model, account):
            raise ModelNotFound(f"{owner}/{name}")
        return model

    async def latest(self, model: Model) -> Version | None:
        return await self.resolver.version(model.latest_version) if model.latest_version else None

    async def list(self, account: Account, owner: str, name: str) -> list[Version]:
        """A model's versions, newest first."""
        await self.visible_model(account, owner, name)
        out = []
        for vid in await self.registry.list_version_ids(owner, name):
            v = await self.resolver.version(vid)
            if v:
                out.append(v)
        return out

    async def get(self, account: Account, owner: str, name: str, vid: str) -> Version:
        await self.visible_model(account, owner, name)
        v = await self.registry.get_version(vid)  # not the cache: the version may have been deleted
        if v is None or v.model != f"{owner}/{name}":
            raise NotFound("Version", f"{owner}/{name}:{vid}")
        return v

    async def push(self, account: Account, owner: str, name: str, read: Callable[[], Awaitable[bytes]], *,
                   hardware: str | None = None,
                   visibility: str = "private", max_replicas: int | None = None,
                   downscale_delay_s: float | None = None, upscale_delay_s: float | None = None) -> Version:
        """Register the Cog package that `read()` returns (a tar.gz; read only once the arguments
        are valid) as a version of `owner/name`, creating the
        model on a first push. The id is derived from the model and the package's digest, so the
        same package pushed to the same model is the same version (a no-op), and to another model
        another version; the bytes are stored once, by digest."""
        ModelRef(owner, name).check_names()
        if not account.acts_for(owner):
            raise ModelNotFound(f"{owner}/{name}")
        account.require("push", "push versions")
        if visibility not in VISIBILITIES:
            raise InvalidRequest("visibility", f"must be one of {list(VISIBILITIES)}")
        skus = self.skus()
        if hardware is not None:
            skus.pick(hardware)
        if max_replicas is not None and not 1 <= max_replicas <= 100:
            raise InvalidRequest("max_replicas", "must be between 1 and 100")
        for field, value in (("downscale_delay_s", downscale_delay_s), ("upscale_delay_s", upscale_delay_s)):
            if value is not None and not 0 <= value <= 86400:
                raise InvalidRequest(field, "must be between 0 and 86400 seconds")
        data = await read()
        if not data:
            raise InvalidRequest("body", "expected a tar.gz of a Cog project")
        digest = await asyncio.to_thread(package_digest, data, None, self.limits)
        vid = version_id(f"{owner}/{name}", digest)
        existing = await self.registry.get_version(vid)  # not the cache: it may have been deleted
        if existing is not None:
            return existing
        info = await self.introspect(data, self.limits)
        key = package_key(digest)
        model = await self.registry.ensure_model(owner, name, visibility=visibility,
                                                 hardware=hardware or skus.default)
        sku = hardware or model.hardware or skus.default  # `models.create` may have chosen one
        record = Version(id=vid, model=f"{owner}/{name}", cog_version=COG_VERSION, package_key=key,
                         package_digest=digest, package_sha256=hashlib.sha256(data).hexdigest(), hardware=sku,
                         max_replicas=max_replicas, downscale_delay_s=downscale_delay_s,
                         upscale_delay_s=upscale_delay_s, **{k: info[k] for k in INTROSPECTED if k in info})
        # under the package's lock, so the teardown of another version with these contents
        # cannot remove the bytes between our check and our registration
        async with self.registry.package_lock(digest):
            if not await asyncio.to_thread(self.objects.exists, key):
                await asyncio.to_thread(self.objects.put_bytes, key, data, "application/gzip")
            version, _ = await self.registry.add_version(record)
        return version

    async def status(self, account: Account) -> tuple[list[dict[str, Any]], int]:
        """Each version the caller can see with its Serve state, its replicas, its predictions
        queued and running now and its replica starts (cold starts) in the last hour, and how many
        Serve apps run."""
        apps = await self.apps.statuses()
        rows = []
        for m in await self.registry.list_models():
            if not visible(m, account):
                continue
            for vid in await self.registry.list_version_ids(m.owner, m.name):
                v = await self.registry.get_version(vid)
                if v is None:
                    continue  # deleted meanwhile
                app = app_name(vid)
                st = apps.get(app)
                counts = replica_counts(st) if st is not None else {}
                running = counts.get("running", 0)
                if v.setup_status == "failed":
                    state = "setup failed"
                elif st is None:
                    state = "not deployed"
                else:
                    state = f"{running} replica{'s' if running > 1 else ''}" if running else (
                        "starting" if counts.get("starting") else "deployed at zero")
                rows.append({"model": m.ref, "version": vid, "app": app, "hardware": v.hardware,
                             "state": state, "setup_error": v.setup_error or None,
                             "isolation": v.isolation, "isolation_reason": v.isolation_reason or None,
                             "replicas": running, "replicas_starting": counts.get("starting", 0)})
        activity = await self.registry.version_activity([r["version"] for r in rows], time.time() - 3600)
        for r in rows:
            a = activity.get(r["version"], {})
            r.update(queued=a.get("queued", 0), running=a.get("running", 0),
                     cold_starts_last_hour=a.get("replica_starts", 0))
        return rows, len(apps)
