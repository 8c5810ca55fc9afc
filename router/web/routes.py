"""The web app's pages: sign in and out, the dashboard of predictions, a prediction's page.
Server-rendered (Jinja2, autoescaped: everything a model author or a model wrote is text), with
one small script (`static/app.js`) for the live parts, which calls the JSON API with the session
cookie and the CSRF header. Every page answers 404 for what the caller may not see, as the API."""

from __future__ import annotations

import json
import secrets
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markdown_it import MarkdownIt
from markupsafe import Markup
from starlette.exceptions import HTTPException as StarletteHTTPException

from router.apps import replica_counts
from router.deps import Rt, base_url, optional_account
from router.sessions import COOKIE, Session
from router.web import form
from router.wire import prediction as wire_prediction
from vendo_core.billing import usd
from vendo_core.errors import NotFound, VendoError
from vendo_core.hardware import skus_for
from vendo_core.ids import deployment_app_name
from vendo_core.records import Account

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")  # autoescaped (Starlette's default)
LOGIN_CSRF = "vendo_login_csrf"
SOURCES = {"api": "API", "web": "Web", "handle": "Handle", "batch": "Batch"}
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: http: https:; "
       "media-src 'self' blob: http: https:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'")

router = APIRouter(include_in_schema=False)


def _page(request: Request, name: str, code: int = 200, **context: Any) -> HTMLResponse:
    session: Session | None = getattr(request.state, "session", None)
    response = templates.TemplateResponse(request, name, {"session": session, **context}, status_code=code)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


def _secure(request: Request) -> bool:
    public = request.app.state.runtime.settings.public_url or ""
    return request.url.scheme == "https" or public.startswith("https://")


def _local(next_url: str | None) -> str:
    """Where to go after signing in: a path on this site only (never `//host` or a scheme)."""
    if next_url and next_url.startswith("/") and not next_url.startswith("//") and "\\" not in next_url:
        return next_url
    return "/dashboard"


async def signed_in(request: Request) -> Account | None:
    """The caller of a page: its web session's account (or a bearer token's), else None."""
    try:
        return await optional_account(request)
    except VendoError:
        return None


Viewer = Annotated[Account | None, Depends(signed_in)]


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?{urlencode({'next': target})}", status_code=303)


def ago(iso: str | None, now: float | None = None) -> str:
    """"10 seconds ago", as the dashboard shows a time."""
    if not iso:
        return ""
    try:
        ts = datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return iso
    s = max(0, int((now or time.time()) - ts))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if s >= size:
            n = s // size
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return f"{s} second{'s' if s != 1 else ''} ago"


def run_time(p: dict[str, Any]) -> str:
    t = (p.get("metrics") or {}).get("predict_time")
    return f"{t:.2f}s" if isinstance(t, (int, float)) else ""


templates.env.filters["ago"] = ago
templates.env.globals["SOURCES"] = SOURCES


# sign in and out


@router.get("/login")
async def login_page(request: Request, viewer: Viewer, next: str | None = None):
    if viewer is not None:
        return RedirectResponse(_local(next), status_code=303)
    csrf = secrets.token_urlsafe(24)
    response = _page(request, "login.html", next=_local(next), csrf=csrf, error=None)
    response.set_cookie(LOGIN_CSRF, csrf, httponly=True, samesite="strict", secure=_secure(request), path="/login")
    return response


@router.post("/login")
async def login(request: Request, rt: Rt, token: Annotated[str, Form()] = "",
                csrf_token: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/dashboard"):
    expected = request.cookies.get(LOGIN_CSRF)
    if not expected or not secrets.compare_digest(expected, csrf_token):
        return _page(request, "login.html", 403, next=_local(next), csrf=expected or "",
                     error="The sign-in form expired; try again.")
    opened = await rt.sessions.open(token.strip()) if token.strip() else None
    if opened is None:
        return _page(request, "login.html", 401, next=_local(next), csrf=expected,
                     error="That API token is not valid.")
    sid, _ = opened
    response = RedirectResponse(_local(next), status_code=303)
    response.set_cookie(COOKIE, sid, max_age=rt.settings.session_ttl_s, httponly=True, samesite="lax",
                        secure=_secure(request), path="/")
    response.delete_cookie(LOGIN_CSRF, path="/login")
    return response


async def _cookie_session(request: Request, rt: Rt) -> Session | None:
    sid = request.cookies.get(COOKIE)
    return await rt.sessions.get(sid) if sid and rt.sessions is not None else None


@router.post("/logout")
async def logout(request: Request, rt: Rt, csrf_token: Annotated[str, Form()] = ""):
    session = await _cookie_session(request, rt)
    if session is not None and session.csrf_ok(csrf_token):  # the form's field: a form sends no header
        await rt.sessions.close(request.cookies.get(COOKIE))
    elif session is not None:
        return Response("The sign-out form did not carry this session's CSRF token.", status_code=403)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


async def _form_session(request: Request, rt: Rt, csrf_token: str) -> Session | None:
    """The session of a form post whose CSRF field is right; None otherwise (a form sends no
    header, so the token is in the body)."""
    session = await _cookie_session(request, rt)
    if session is None or not session.csrf_ok(csrf_token):
        return None
    request.state.session = session
    return session


# the account


async def _account_page(request: Request, rt: Rt, account: Account, new_token: str | None = None) -> HTMLResponse:
    tokens = await rt.accounts.tokens(account.username)
    return _page(request, "account.html", account=account, tokens=tokens, new_token=new_token,
                 webhook_secret=await rt.webhook_secrets.get(account.username))


@router.get("/account")
async def account_page(request: Request, rt: Rt, viewer: Viewer):
    if viewer is None:
        return _to_login(request)
    return await _account_page(request, rt, viewer)


@router.post("/account/tokens")
async def account_create_token(request: Request, rt: Rt, csrf_token: Annotated[str, Form()] = "",
                               name: Annotated[str, Form()] = ""):
    session = await _form_session(request, rt, csrf_token)
    if session is None:
        return _to_login(request)
    _, token = await rt.accounts.create_token(session.account.username, name.strip()[:100] or None)
    return await _account_page(request, rt, session.account, new_token=token)  # shown this once


@router.post("/account/tokens/{tid}/revoke")
async def account_revoke_token(tid: str, request: Request, rt: Rt, csrf_token: Annotated[str, Form()] = ""):
    session = await _form_session(request, rt, csrf_token)
    if session is None:
        return _to_login(request)
    try:
        await rt.accounts.revoke_token(tid, owner=session.account.username)
    except NotFound:
        return _page(request, "404.html", 404, what="token")
    return RedirectResponse("/account", status_code=303)


# deployments


@router.get("/deployments")
async def deployments_page(request: Request, rt: Rt, viewer: Viewer):
    """The caller's deployments with their instances (Serve's replica states: warm or cold)."""
    if viewer is None:
        return _to_login(request)
    rows = []
    if rt.deployments is not None:
        found = await rt.deployments.list(viewer)
        statuses = await rt.apps.statuses() if found else {}
        for d in found:
            st = statuses.get(deployment_app_name(d.owner, d.name))
            counts = replica_counts(st) if st is not None else {}
            running = counts.get("running", 0)
            rows.append({"d": d, "running": running, "starting": counts.get("starting", 0),
                         "state": "warm" if running else "cold"})
    return _page(request, "deployments.html", rows=rows)


# the dashboard


@router.get("/dashboard")
async def dashboard(request: Request, rt: Rt, viewer: Viewer, cursor: str | None = None,
                    status: str | None = None, model: str | None = None):
    if viewer is None:
        return _to_login(request)
    recs, nxt = await rt.predictions.list(viewer, cursor or None)
    rows = [{"id": r.id, "model": r.model, "source": r.source, "status": r.status.value,
             "created_at": r.created_at, "run_time": run_time({"metrics": r.metrics})} for r in recs
            if (not status or r.status.value == status)
            and (not model or r.model == model or r.model.startswith(model + ":"))]
    spent = await rt.usage.spent(viewer.username, time.time()) if rt.usage is not None else 0
    filters = {k: v for k, v in (("status", status), ("model", model)) if v}
    next_url = f"/dashboard?{urlencode({**filters, 'cursor': nxt})}" if nxt else None
    return _page(request, "dashboard.html", rows=rows, next_url=next_url, status=status or "", model=model or "",
                 usage=_dollars(usd(spent)), period=rt.settings.billing_period)


def _dollars(amount) -> str:
    """Cents, or a small amount's first significant digits ($0.000002 is not $0.00)."""
    return f"{amount:.2f}" if amount == 0 or amount >= Decimal("0.01") else f"{amount:.6f}"


# a prediction


def _kind(url: str) -> str:
    path = url.split("?", 1)[0].lower()
    ext = path.rsplit(".", 1)[-1] if "." in path.rsplit("/", 1)[-1] else ""
    if ext in ("png", "jpg", "jpeg", "gif", "webp", "bmp", "avif"):
        return "image"
    if ext in ("mp3", "wav", "ogg", "flac", "m4a", "aac", "opus"):
        return "audio"
    if ext in ("mp4", "webm", "mov", "mkv"):
        return "video"
    return "file"


def outputs(value: Any) -> list[dict[str, Any]]:
    """The output as pieces to render: files by kind, text, or JSON (pretty-printed)."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and value and all(isinstance(v, str) and not v.startswith(("http://", "https://"))
                                                 for v in value):
        return [{"kind": "text", "text": "".join(value)}]  # a streamed text's pieces
    out = []
    for v in items:
        if isinstance(v, str) and v.startswith(("http://", "https://")):
            out.append({"kind": _kind(v), "url": v, "name": v.split("?", 1)[0].rsplit("/", 1)[-1]})
        elif isinstance(v, str):
            out.append({"kind": "text", "text": v})
        else:
            out.append({"kind": "json", "text": json.dumps(v, indent=2, ensure_ascii=False)})
    return out


@router.get("/p/{pid}")
async def prediction_page(pid: str, request: Request, rt: Rt, viewer: Viewer):
    base = base_url(request)
    try:
        rec, own = await rt.predictions.get_readable(viewer, pid, base, rt.settings.url_expiry_s)
    except NotFound:
        return _page(request, "404.html", 404, what="prediction")
    p = wire_prediction(rec, base, rt.url_for(base))
    cost = f"${usd(rec.cost_nanos):.6f}" if rec.cost_nanos else None
    made = rec.output.get("version") if rec.kind == "training" and isinstance(rec.output, dict) else None
    return _page(request, "prediction.html", p=p, own=own, run_time=run_time(p), cost=cost,
                 training=rec.kind == "training", destination=rec.destination,
                 made=made if isinstance(made, str) and ":" in made else None,
                 outputs=outputs(p["output"]), input_json=json.dumps(p["input"], indent=2, ensure_ascii=False),
                 stream_path=f"/v1/predictions/{quote(pid)}/stream", done=rec.done,
                 created=datetime.fromtimestamp(rec.created_ts, timezone.utc).isoformat() if rec.created_ts else "")


@router.get("/")
async def explore(request: Request, rt: Rt, viewer: Viewer, q: str | None = None, cursor: str | None = None,
                  collection: str | None = None):
    """Explore: the public models and your own (search by words of owner/name or description), and
    the collections."""
    if viewer is None:
        return _to_login(request)
    chosen = None
    try:
        if collection:
            chosen, found = await rt.catalogue.collection(viewer, collection)
            nxt = None
        else:
            found, nxt = await rt.catalogue.page(viewer, sort_by=None, direction=None, cursor=cursor,
                                                 query=q.strip() if q and q.strip() else None)
    except VendoError:
        return _page(request, "404.html", 404, what="such collection or page")
    params = {k: v for k, v in (("q", q),) if v}
    next_url = f"/?{urlencode({**params, 'cursor': nxt})}" if nxt else None
    return _page(request, "explore.html", models=[m for m, _ in found], q=q or "", next_url=next_url,
                 collections=rt.catalogue.collections(), chosen=chosen)


# a model

# first path segments that are the platform's own: never a model page (their unknown paths stay
# the API's 404 problem)
RESERVED = frozenset({"v1", "static", "docs", "redoc", "openapi.json", "login", "logout", "dashboard", "p",
                      "health", "livez", "readyz", "metrics", "account", "deployments"})
_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def readme_html(text: str | None) -> Markup | None:
    """A README as HTML: Markdown with raw HTML off (it shows as text) and markdown-it's link
    check (no `javascript:`, `vbscript:`, `file:` or non-image `data:` links)."""
    return Markup(_markdown.render(text)) if text else None


def _median(xs: list[float]) -> float | None:
    xs = sorted(xs)
    return None if not xs else (xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2)


@router.get("/{owner}/{name}")
async def model_page(owner: str, name: str, request: Request, rt: Rt, viewer: Viewer):
    if owner in RESERVED:
        raise StarletteHTTPException(404, "Not Found")
    if viewer is None:
        return _to_login(request)
    try:
        model = await rt.versions.visible_model(viewer, owner, name)
    except VendoError:  # not visible, or not a model's name at all
        return _page(request, "404.html", 404, what="model")
    latest = await rt.versions.latest(model)
    versions = await rt.versions.list(viewer, owner, name)
    sku_name = (latest.hardware if latest else None) or model.hardware
    skus = skus_for(rt.settings)
    sku = skus.skus.get(sku_name or skus.default)
    recent, _ = await rt.predictions.list(viewer, None)
    times = [r.metrics["predict_time"] for r in recent
             if r.model == model.ref and r.metrics and isinstance(r.metrics.get("predict_time"), (int, float))]
    typical = _median(times)
    cost = f"${typical * sku.price_per_second:.6f}" if typical is not None and sku else None
    base = base_url(request)
    ref = f"{model.ref}:{latest.id}" if latest else model.ref
    fields = form.fields(latest.openapi_schema) if latest else []
    train_fields = form.fields(latest.openapi_schema, "TrainingInput") if latest and latest.trainable else None
    return _page(request, "model.html", model=model, latest=latest, versions=versions,
                 fields=fields, train_fields=train_fields, destination=f"{viewer.username}/{model.name}-trained",
                 readme=readme_html(await rt.registry.readme(latest.id)) if latest else None,
                 sku=sku, sku_name=sku_name, typical=f"{typical:.2f}s" if typical is not None else None, cost=cost,
                 base=base, ref=ref, example=json.dumps(_example(fields)))


def _example(fields: list[form.Field]) -> dict[str, Any]:
    """An input for the API snippets: each required field's default, or a placeholder."""
    out: dict[str, Any] = {}
    for f in fields:
        if f.default is not None:
            out[f.name] = f.default
        elif f.required:
            out[f.name] = {"integer": 1, "number": 1.0, "checkbox": True}.get(f.kind, "...")
    return out
