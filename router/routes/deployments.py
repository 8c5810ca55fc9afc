"""Named deployments: create, list, get, update, delete, and predictions through one."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from router import wire
from router.deps import CurrentAccount, Rt, json_body

router = APIRouter(prefix="/v1", tags=["deployments"])


@router.get("/deployments", response_model=wire.Page[wire.Deployment])
async def list_deployments(account: CurrentAccount, rt: Rt):
    """The caller's deployments."""
    return wire.page([wire.deployment(d, account) for d in await rt.deployments.list(account)])


@router.post("/deployments", status_code=201, response_model=wire.Deployment)
async def create_deployment(request: Request, account: CurrentAccount, rt: Rt):
    """Create a deployment of a model version with its own hardware and instance counts."""
    body = await json_body(request)
    return wire.deployment(await rt.deployments.create(account, body), account)


@router.get("/deployments/{owner}/{name}", response_model=wire.Deployment)
async def get_deployment(owner: str, name: str, account: CurrentAccount, rt: Rt):
    """Get a deployment."""
    return wire.deployment(await rt.deployments.get(account, owner, name), account)


@router.patch("/deployments/{owner}/{name}", response_model=wire.Deployment)
async def update_deployment(owner: str, name: str, request: Request, account: CurrentAccount, rt: Rt):
    """Change a deployment's version, hardware or instances; each update is a new release."""
    body = await json_body(request)
    return wire.deployment(await rt.deployments.update(account, owner, name, body), account)


@router.delete("/deployments/{owner}/{name}", status_code=204)
async def delete_deployment(owner: str, name: str, account: CurrentAccount, rt: Rt):
    """Delete a deployment; its running predictions finish first."""
    await rt.deployments.delete(account, owner, name)
    return Response(status_code=204)
