"""Trainings: create (from a trainable version, toward a destination model), get, list, cancel.
A training lives as a prediction does (statuses, logs, its event stream, deadlines, webhooks,
retention); only its shape and its listing are its own."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from router import wire
from router.deadlines import parse_cancel_after
from router.deps import CurrentAccount, Rt, base_url, json_body
from vendo_core.ids import ModelRef

router = APIRouter(prefix="/v1", tags=["trainings"])


@router.post("/models/{owner}/{name}/versions/{version_id}/trainings", status_code=201,
             response_model=wire.Training)
async def create_training(owner: str, name: str, version_id: str, request: Request, account: CurrentAccount,
                          rt: Rt):
    """Train a version (its cog.yaml `train` target) on `input`; when it succeeds its weights become
    a new version of `destination`, named in the training's output."""
    ref = ModelRef(owner, name, version_id)
    ref.check_names()
    body = await json_body(request)
    base = base_url(request)
    rec = await rt.predictions.create_training(
        account, ref, body, source=getattr(request.state, "source", "api"),
        deadline_s=parse_cancel_after(request.headers.get("cancel-after")),
        file_url_prefixes=(f"{base}/v1/files/",), base=base)
    out = wire.training(rec, base, rt.url_for(base))
    return JSONResponse(out, status_code=201, headers={"Location": out["urls"]["get"]})


@router.get("/trainings/{tid}", response_model=wire.Training)
async def get_training(tid: str, request: Request, account: CurrentAccount, rt: Rt):
    """Get a training of yours."""
    rec = await rt.predictions.get_training(account, tid)
    base = base_url(request)
    return JSONResponse(wire.training(rec, base, rt.url_for(base)))


@router.get("/trainings", response_model=wire.Page[wire.Training])
async def list_trainings(request: Request, account: CurrentAccount, rt: Rt, cursor: str | None = None):
    """List your trainings, newest first."""
    recs, nxt = await rt.predictions.list(account, cursor or None, kind="training")
    base = base_url(request)
    url_for = rt.url_for(base)
    next_url = f"{base}/v1/trainings?{urlencode({'cursor': nxt})}" if nxt else None
    return wire.page([wire.training(r, base, url_for) for r in recs], next_url)


@router.post("/trainings/{tid}/cancel", response_model=wire.Training)
async def cancel_training(tid: str, request: Request, account: CurrentAccount, rt: Rt):
    """Cancel a training; a finished one is returned unchanged."""
    rec = await rt.predictions.cancel_training(account, tid)
    base = base_url(request)
    return JSONResponse(wire.training(rec, base, rt.url_for(base)))
