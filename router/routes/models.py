"""Models, versions (including `vendo push` uploads), the account, and cluster status."""

from __future__ import annotations

from fastapi import APIRouter, Request

from router import wire
from router.deps import CurrentAccount, Rt, base_url

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/account", response_model=wire.Account)
async def get_account(account: CurrentAccount):
    """The account that owns the token."""
    return wire.account(account)


@router.get("/models/{owner}/{name}", response_model=wire.Model)
async def get_model(owner: str, name: str, request: Request, account: CurrentAccount, rt: Rt):
    """Get a model."""
    model = await rt.versions.visible_model(account, owner, name)
    return wire.model(model, base_url(request), await rt.versions.latest(model))


@router.get("/models/{owner}/{name}/versions", response_model=wire.Page[wire.Version])
async def list_versions(owner: str, name: str, account: CurrentAccount, rt: Rt):
    """A model's versions, newest first."""
    return wire.page([wire.version(v) for v in await rt.versions.list(account, owner, name)])


@router.get("/models/{owner}/{name}/versions/{vid}", response_model=wire.Version)
async def get_version(owner: str, name: str, vid: str, account: CurrentAccount, rt: Rt):
    """Get one version of a model."""
    return wire.version(await rt.versions.get(account, owner, name, vid))


@router.post("/models/{owner}/{name}/versions", status_code=201, response_model=wire.Version)
async def push_version(owner: str, name: str, request: Request, account: CurrentAccount, rt: Rt,
                       hardware: str | None = None, visibility: str = "private",
                       max_replicas: int | None = None, downscale_delay_s: float | None = None,
                       upscale_delay_s: float | None = None):
    """Push a Cog project (a tar.gz body, as `vendo push` sends it) as a new version."""
    # the body is read only once the arguments are valid; BodyLimit caps it at max_package_bytes
    version = await rt.versions.push(account, owner, name, request.body, hardware=hardware, visibility=visibility,
                                     max_replicas=max_replicas, downscale_delay_s=downscale_delay_s,
                                     upscale_delay_s=upscale_delay_s)
    return wire.version(version)


@router.get("/status", response_model=wire.ClusterStatus)
async def cluster_status(account: CurrentAccount, rt: Rt):
    """Each visible version with its Serve state, and where state and files live."""
    rows, n_apps = await rt.versions.status(account)
    if not account.has("admin"):  # where state and files live is the operator's business
        return {"versions": rows, "redis": None, "storage": None, "serve_apps": n_apps}
    return {"versions": rows, "redis": _redact(rt.redis_url), "storage": rt.objects.describe(),
            "dashboard": rt.settings.dashboard_url, "serve_apps": n_apps}


def _redact(url: str) -> str:
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
