"""Predictions: create, get, list, cancel, and the SSE stream."""

from __future__ import annotations

import re
import weakref
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from router import wire
from router.deadlines import parse_cancel_after
from router.deps import CurrentAccount, MaybeAccount, Rt, base_url, json_body
from router.runtime import Runtime
from vendo_core.errors import InvalidRequest
from vendo_core.ids import ModelRef
from vendo_core.records import Account

router = APIRouter(prefix="/v1", tags=["predictions"])

MAX_WAIT_S = 60.0
WAIT_MARGIN_S = 0.3  # the client's read timeout is N + 0.5 s
KEEPALIVE_MS = 15_000
_LINE_END = re.compile(r"\r\n|\r|\n")
_EVENT_ID = re.compile(r"^\d{1,20}-\d{1,20}$")  # a Redis stream id, as this stream's events carry
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait(?:=(\d+))?(?:$|[,;\s])")


def prefer_wait(header: str | None) -> float | None:
    """Seconds to hold a create, from `Prefer: wait[=N]` (clamped to 1..60), or None."""
    if not header:
        return None
    m = _PREFER_WAIT.search(header.strip())
    if not m:
        return None
    n = float(m.group(1)) if m.group(1) else MAX_WAIT_S
    return max(1.0, min(n, MAX_WAIT_S))


async def _created(request: Request, rt: Runtime, account: Account, body: dict[str, Any],
                   **target: Any) -> JSONResponse:
    """Every create, whatever it names: the one service call, then the 201 (or, with
    `Prefer: wait`, the finished prediction, or the unfinished one as `starting`)."""
    wait = prefer_wait(request.headers.get("prefer"))
    base = base_url(request)
    deadline_s = parse_cancel_after(request.headers.get("cancel-after"))
    source = getattr(request.state, "source", "api")  # "web" when the browser's session made it
    if wait is None:
        rec = await rt.predictions.create(account, body, **target, deadline_s=deadline_s, source=source,
                                          file_url_prefixes=(f"{base}/v1/files/",), base=base)
    else:
        async with rt.open_slots.hold(account.username):  # 429 before anything is created
            rec = await rt.predictions.create(
                account, body, **target, deadline_s=deadline_s, wait_s=wait - WAIT_MARGIN_S, source=source,
                file_url_prefixes=(f"{base}/v1/files/",), base=base)
    headers = {}
    if wait is not None:
        headers["Preference-Applied"] = f"wait={int(wait)}"
    done = rec.done
    body_out = wire.prediction(rec, base, rt.url_for(base), as_starting=not done)
    if not done:
        headers["Location"] = body_out["urls"]["get"]
    return JSONResponse(body_out, status_code=201, headers=headers)


@router.post("/predictions", status_code=201, response_model=wire.Prediction)
async def create_prediction(request: Request, account: CurrentAccount, rt: Rt):
    """Create a prediction for a version id, owner/name:version or owner/name."""
    body = await json_body(request)
    return await _created(request, rt, account, body, version=body.get("version"))


@router.post("/models/{owner}/{name}/predictions", status_code=201, response_model=wire.Prediction)
async def create_model_prediction(owner: str, name: str, request: Request, account: CurrentAccount, rt: Rt):
    """Create a prediction on a model's latest version."""
    ref = ModelRef(owner, name)
    ref.check_names()
    return await _created(request, rt, account, await json_body(request), model=ref)


@router.post("/deployments/{owner}/{name}/predictions", status_code=201, response_model=wire.Prediction,
             tags=["deployments"])
async def create_deployment_prediction(owner: str, name: str, request: Request, account: CurrentAccount,
                                       rt: Rt):
    """Create a prediction through a deployment (its warm replicas, its hardware)."""
    ref = ModelRef(owner, name)
    ref.check_names()
    return await _created(request, rt, account, await json_body(request), deployment=ref)


@router.get("/predictions/{pid}", response_model=wire.Prediction)
async def get_prediction(pid: str, request: Request, account: MaybeAccount, rt: Rt):
    """Get a prediction: your own, or one its owner shared (that one also without a token)."""
    base = base_url(request)
    rec, _ = await rt.predictions.get_readable(account, pid, base, rt.settings.url_expiry_s)
    return JSONResponse(wire.prediction(rec, base, rt.url_for(base)))  # built once: no re-validation


@router.post("/predictions/{pid}/share", response_model=wire.Prediction)
async def share_prediction(pid: str, request: Request, account: CurrentAccount, rt: Rt):
    """Share a prediction (a vendo extension; Replicate's Share button): anyone with its id may
    then read it, input files and outputs included, without a token; nothing else of yours."""
    rec = await rt.predictions.share(account, pid, True)
    base = base_url(request)
    return JSONResponse(wire.prediction(rec, base, rt.url_for(base)))


@router.post("/predictions/{pid}/unshare", response_model=wire.Prediction)
async def unshare_prediction(pid: str, request: Request, account: CurrentAccount, rt: Rt):
    """Make a shared prediction private again: to others it is a 404 at once."""
    rec = await rt.predictions.share(account, pid, False)
    base = base_url(request)
    return JSONResponse(wire.prediction(rec, base, rt.url_for(base)))


@router.get("/predictions", response_model=wire.Page[wire.Prediction])
async def list_predictions(request: Request, account: CurrentAccount, rt: Rt, cursor: str | None = None,
                           created_after: str | None = None, created_before: str | None = None,
                           source: str | None = None):
    """List the caller's predictions, newest first; optionally created after or before a time
    (ISO 8601) or from one source (`api`, `web`)."""
    recs, nxt = await rt.predictions.list(
        account, cursor or None, created_after=_instant("created_after", created_after),
        created_before=_instant("created_before", created_before), source=source)
    base = base_url(request)
    url_for = rt.url_for(base)
    results = [wire.prediction(r, base, url_for) for r in recs]
    filters = {k: v for k, v in (("created_after", created_after), ("created_before", created_before),
                                 ("source", source)) if v is not None}
    next_url = f"{base}/v1/predictions?{urlencode({**filters, 'cursor': nxt})}" if nxt else None
    return wire.page(results, next_url)


def _instant(field: str, value: str | None) -> float | None:
    """An ISO 8601 date-time (or date) as a Unix time; one without a zone is UTC."""
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidRequest(field, f"expected an ISO 8601 date-time such as 2026-01-31T12:00:00Z, "
                                    f"got {value[:100]!r}") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()


@router.post("/predictions/{pid}/cancel", response_model=wire.Prediction)
async def cancel_prediction(pid: str, request: Request, account: CurrentAccount, rt: Rt):
    """Cancel a prediction; a finished one is returned unchanged."""
    rec = await rt.predictions.cancel(account, pid)
    base = base_url(request)
    return wire.prediction(rec, base, rt.url_for(base))


@router.get("/predictions/{pid}/stream")
async def stream_prediction(pid: str, request: Request, account: CurrentAccount, rt: Rt):
    """Server-sent events: output, logs, error and done, replayed from the start (or after the
    event a reconnecting client names in `Last-Event-ID`)."""
    await rt.predictions.get(account, pid)
    base = base_url(request)
    url_for = rt.url_for(base)
    resume = (request.headers.get("last-event-id") or "").strip()
    start = resume if _EVENT_ID.match(resume) else "0-0"
    slot = rt.open_slots.acquire(account.username)  # 429 now; the stream holds it while it runs

    async def events():
        try:
            async for chunk in _events(start):
                yield chunk
        finally:
            slot.release()

    body = events()
    weakref.finalize(body, slot.release)  # a response that never started streaming: freed with it

    async def _events(last: str):
        while True:
            batch = await rt.predictions.events(pid, last, KEEPALIVE_MS)
            if not batch:
                if await request.is_disconnected():
                    return
                yield ": keep-alive\n\n"
                continue
            for eid, event, data in batch:
                last = eid
                if event == "output":
                    data = wire.resolve_files(data, url_for)
                yield sse_event(event, eid, data)
                if event == "done":
                    return

    return StreamingResponse(body, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def sse_event(event: str, eid: str, data: str) -> str:
    """One event; `data` split on every line ending the SSE spec's parsers split on (CR LF, CR, LF)."""
    lines = _LINE_END.split(data) if data else [""]
    if event == "logs" and len(lines) > 1 and lines[-1] == "":
        lines = lines[:-1]
    return f"event: {event}\nid: {eid}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"
