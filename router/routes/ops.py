"""Probes and metrics for the people and tools that run vendo: `/livez` (the process answers),
`/readyz` (what it depends on answers; 503 otherwise), and `/metrics` in Prometheus's format,
readable with an admin token (it names accounts and models), or by anyone when
`VENDO_METRICS_PUBLIC` says so (a scrape from inside a private network)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from router.deps import Rt, admin_account

router = APIRouter(tags=["operations"])


@router.get("/livez", include_in_schema=False)
async def livez():
    return {"status": "ok"}


@router.get("/readyz", include_in_schema=False)
async def readyz(rt: Rt):
    if rt.ops is None:
        return {"status": "ok", "checks": {}}
    checks = await rt.ops.readiness()
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ok else "failing", "checks": checks}, status_code=200 if ok else 503)


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(request: Request, rt: Rt):
    if not rt.settings.metrics_public:
        await admin_account(request)
    if rt.ops is None:
        return Response(b"", media_type=CONTENT_TYPE_LATEST)
    return Response(await rt.ops.metrics_text(), media_type=CONTENT_TYPE_LATEST)
