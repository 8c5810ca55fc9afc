"""Batch jobs (a vendo extension): what `python -m cluster.batch` jobs of the caller's account did,
as they report it: counts, status, where the input came from and where the results go."""

from __future__ import annotations

from fastapi import APIRouter

from router import wire
from router.deps import CurrentAccount, Rt
from vendo_core.errors import NotFound

router = APIRouter(prefix="/v1", tags=["batches"])


def _service(rt: Rt):
    if rt.batches is None:
        raise NotFound("Batch", "(no Redis)")
    return rt.batches


@router.get("/batches", response_model=wire.Page[wire.Batch])
async def list_batches(account: CurrentAccount, rt: Rt):
    """The caller's batch jobs, newest first (kept 90 days)."""
    return {"previous": None, "next": None,
            "results": [b.model_dump(exclude={"created_ts"}) for b in await _service(rt).list(account)]}


@router.get("/batches/{batch_id}", response_model=wire.Batch)
async def get_batch(batch_id: str, account: CurrentAccount, rt: Rt):
    """One batch job: its counts and status as the job last reported them."""
    return (await _service(rt).get(account, batch_id)).model_dump(exclude={"created_ts"})
