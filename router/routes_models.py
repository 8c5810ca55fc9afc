"""Models, versions (including `vendo push` uploads), the account, and cluster status."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from fastapi import APIRouter, Request

from router import wire
from router.errors import InvalidRequest, ModelNotFound, NotFound, PackageInvalid, PayloadTooLarge
from router.http import CurrentAccount, Rt, base_url
from router.refs import ModelRef, app_name
from router.service import visible

router = APIRouter(prefix="/v1", tags=["models"])

VISIBILITIES = ("public", "private")


async def _visible_model(rt, account: dict, owner: str, name: str) -> dict:
    ModelRef(owner, name).check_names()
    model = await rt.registry.get_model(owner, name)
    if not visible(model, account):
        raise ModelNotFound(f"{owner}/{name}")
    return model


async def _model_json(rt, m: dict, base: str) -> dict:
    latest = await rt.service.version(m["latest_version"]) if m.get("latest_version") else None
    return wire.model(m, base, latest)


@router.get("/account")
async def get_account(account: CurrentAccount):
    """The account that owns the token."""
    return wire.account(account)


@router.get("/models/{owner}/{name}")
async def get_model(owner: str, name: str, request: Request, account: CurrentAccount, rt: Rt):
    """Get a model."""
    return await _model_json(rt, await _visible_model(rt, account, owner, name), base_url(request))


@router.get("/models/{owner}/{name}/versions")
async def list_versions(owner: str, name: str, account: CurrentAccount, rt: Rt):
    """A model's versions, newest first."""
    await _visible_model(rt, account, owner, name)
    out = []
    for vid in await rt.registry.list_version_ids(owner, name):
        v = await rt.service.version(vid)
        if v:
            out.append(wire.version(v))
    return wire.page(out)


@router.get("/models/{owner}/{name}/versions/{vid}")
async def get_version(owner: str, name: str, vid: str, account: CurrentAccount, rt: Rt):
    """Get one version of a model."""
    await _visible_model(rt, account, owner, name)
    v = await rt.registry.get_version(vid)  # not the cache: the version may have been deleted
    if v is None or v["model"] != f"{owner}/{name}":
        raise NotFound("Version", f"{owner}/{name}:{vid}")
    return wire.version(v)


@router.post("/models/{owner}/{name}/versions", status_code=201)
async def push_version(owner: str, name: str, request: Request, account: CurrentAccount, rt: Rt,
                       hardware: str | None = None, visibility: str = "private",
                       max_replicas: int | None = None, downscale_delay_s: float | None = None,
                       upscale_delay_s: float | None = None):
    """Push a Cog project (a tar.gz body, as `vendo push` sends it) as a new version."""
    from cluster.hardware import hardware as hw_config
    from cluster.packaging import package_id

    ModelRef(owner, name).check_names()
    if owner != account["username"]:
        raise ModelNotFound(f"{owner}/{name}")
    if visibility not in VISIBILITIES:
        raise InvalidRequest("visibility", f"must be one of {list(VISIBILITIES)}")
    skus = hw_config(str(rt.settings.hardware_config) if rt.settings.hardware_config else None)
    if hardware is not None and hardware not in skus.skus:
        raise InvalidRequest("hardware", f"unknown SKU {hardware!r}; one of {sorted(skus.skus)}")
    if max_replicas is not None and not 1 <= max_replicas <= 100:
        raise InvalidRequest("max_replicas", "must be between 1 and 100")
    for field, value in (("downscale_delay_s", downscale_delay_s), ("upscale_delay_s", upscale_delay_s)):
        if value is not None and not 0 <= value <= 86400:
            raise InvalidRequest(field, "must be between 0 and 86400 seconds")
    data = await _read_limited(request, rt.settings.max_package_bytes)
    vid = await asyncio.to_thread(package_id, data)
    existing = await rt.registry.get_version(vid)  # not the cache: it may have been deleted
    if existing is None:
        info = await _introspect(data)
        key = f"packages/{vid}.tar.gz"
        await asyncio.to_thread(rt.objects.put_bytes, key, data, "application/gzip")
        model = await rt.registry.ensure_model(owner, name, visibility=visibility,
                                               hardware=hardware or skus.default)
        sku = hardware or model.get("hardware") or skus.default  # `models.create` may have chosen one
        record = {"id": vid, "cog_version": wire.COG_VERSION, "package_key": key, "hardware": sku,
                  "package_sha256": hashlib.sha256(data).hexdigest(), "max_replicas": max_replicas,
                  "downscale_delay_s": downscale_delay_s, "upscale_delay_s": upscale_delay_s, **info}
        existing, _ = await rt.registry.add_version(owner, name, record)
    elif existing["model"] != f"{owner}/{name}":
        await rt.registry.add_version(owner, name, existing)  # raises Conflict with the owner named
    return wire.version(existing)


async def _read_limited(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(limit)
        chunks.append(chunk)
    if not size:
        raise InvalidRequest("body", "expected a tar.gz of a Cog project")
    return b"".join(chunks)


async def _introspect(data: bytes) -> dict[str, Any]:
    """Import the predictor in a Ray task with the version's runtime_env and read its schema.
    cog.yaml (plain YAML) is read here; user code is only ever imported in that task."""
    import ray

    from cluster.introspect import introspect_package, package_runtime_env

    runtime_env = await asyncio.to_thread(package_runtime_env, data)
    task = ray.remote(num_cpus=0, max_retries=0)(introspect_package)
    try:
        return await task.options(runtime_env=runtime_env or None).remote(data)
    except Exception as e:  # noqa: BLE001 - surface the predictor's own import/definition error
        cause = getattr(e, "cause", None) or e
        if isinstance(cause, PackageInvalid):
            raise cause from None
        raise PackageInvalid(f"could not load the predictor: {type(cause).__name__}: {cause}") from e


@router.get("/status")
async def cluster_status(account: CurrentAccount, rt: Rt):
    """Each visible version with its Serve state, and where state and files live."""
    from ray import serve

    from router.apps import replica_counts

    apps = (await asyncio.to_thread(serve.status)).applications
    rows = []
    for m in await rt.registry.list_models():
        if not visible(m, account):
            continue
        for vid in await rt.registry.list_version_ids(m["owner"], m["name"]):
            v = await rt.registry.get_version(vid) or {}
            app = app_name(vid)
            st = apps.get(app)
            if v.get("setup_status") == "failed":
                state = "setup failed"
            elif st is None:
                state = "not deployed"
            else:
                counts = replica_counts(st)
                running = counts.get("running", 0)
                state = f"{running} replica{'s' if running > 1 else ''}" if running else (
                    "starting" if counts.get("starting") else "deployed at zero")
            rows.append({"model": f"{m['owner']}/{m['name']}", "version": vid, "app": app,
                         "hardware": v.get("hardware"), "state": state,
                         "setup_error": v.get("setup_error") or None})
    return {"versions": rows, "redis": _redact(rt.redis_url), "storage": rt.objects.describe(),
            "serve_apps": len(apps)}


def _redact(url: str) -> str:
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
