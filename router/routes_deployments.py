"""Named deployments: create, list, get, update, delete, and predictions through one."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from router import wire
from router.http import CurrentAccount, Rt
from router.refs import ModelRef
from router.routes_predictions import _create, _json_body

router = APIRouter(prefix="/v1", tags=["deployments"])


@router.get("/deployments")
async def list_deployments(account: CurrentAccount, rt: Rt):
    """The caller's deployments."""
    return wire.page([wire.deployment(d, account) for d in await rt.deployments.list(account)])


@router.post("/deployments", status_code=201)
async def create_deployment(request: Request, account: CurrentAccount, rt: Rt):
    """Create a deployment of a model version with its own hardware and instance counts."""
    body = await _json_body(request)
    return wire.deployment(await rt.deployments.create(account, body), account)


@router.get("/deployments/{owner}/{name}")
async def get_deployment(owner: str, name: str, account: CurrentAccount, rt: Rt):
    """Get a deployment."""
    return wire.deployment(await rt.deployments.get(account, owner, name), account)


@router.patch("/deployments/{owner}/{name}")
async def update_deployment(owner: str, name: str, request: Request, account: CurrentAccount, rt: Rt):
    """Change a deployment's version, hardware or instances; each update is a new release."""
    body = await _json_body(request)
    return wire.deployment(await rt.deployments.update(account, owner, name, body), account)


@router.delete("/deployments/{owner}/{name}", status_code=204)
async def delete_deployment(owner: str, name: str, account: CurrentAccount, rt: Rt):
    """Delete a deployment; its running predictions finish first."""
    await rt.deployments.delete(account, owner, name)
    return Response(status_code=204)


@router.post("/deployments/{owner}/{name}/predictions", status_code=201)
async def create_deployment_prediction(owner: str, name: str, request: Request, account: CurrentAccount,
                                       rt: Rt):
    """Create a prediction through a deployment (its warm replicas, its hardware)."""
    body = await _json_body(request)
    d, spec, app = await rt.deployments.target(account, owner, name)
    model_ref = ModelRef.parse(d["model"], field="model")
    model = await rt.registry.get_model(model_ref.owner, model_ref.name)
    return await _create(rt, request, account, body, model, {**spec, "app": app},
                         deployment=f"{owner}/{name}")
