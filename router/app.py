"""The HTTP surface: `create_app(runtime)` builds the FastAPI app over one runtime (no module
state), maps every `VendoError` to problem details in one place, and caps request bodies. Routes
live in `router/routes/`; they parse, call a service and render."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from router import openapi
from router.deps import admin_account
from router.routes import (
    admin,
    batches,
    catalogue,
    deployments,
    files,
    models,
    ops,
    predictions,
    storage,
    trainings,
    usage,
    webhooks,
)
from router.runtime import Runtime
from router.web import routes as web_routes
from vendo_core.errors import InvalidRequest, PayloadTooLarge, VendoError
from vendo_core.settings import Settings

PROBLEM_JSON = "application/problem+json"
WEB_STATIC = web_routes.HERE / "static"
_UNREADABLE_BODY = "There was an error parsing the body"  # FastAPI's 400 detail


class _BodyTooLarge(Exception):
    """Raised from `receive` into whatever reads a body past its limit."""


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": None, "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def _invalid_field(error: dict) -> dict[str, Any]:
    """One of FastAPI's validation errors as `{field, reason}`. A body that is not JSON is `body`
    (FastAPI puts the character offset where the field would be), as `json_body` names it."""
    loc = error.get("loc", ())
    if error.get("type") == "json_invalid":
        where = f" (char {loc[1]})" if len(loc) > 1 else ""
        return {"field": "body", "reason": f"not valid JSON: {(error.get('ctx') or {}).get('error', '')}{where}"}
    return {"field": ".".join(str(p) for p in loc[1:]) or "body", "reason": error.get("msg")}


async def vendo_error(request: Request, exc: VendoError) -> JSONResponse:
    return JSONResponse(exc.problem(), status_code=exc.status, media_type=PROBLEM_JSON, headers=exc.headers())


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "Error")
    return problem(exc.status_code, title, str(exc.detail))


def create_app(runtime: Runtime) -> FastAPI:
    """The whole API over `runtime` (real, or built over fakes in unit tests)."""
    app = FastAPI(title="vendo", version="0.1.0", redirect_slashes=False, docs_url=None, redoc_url=None,
                  description="A self-hosted, Replicate-compatible model API on Ray Serve")
    app.state.runtime = runtime
    app.state.objects = runtime.objects
    app.add_exception_handler(VendoError, vendo_error)
    _vendo_error = vendo_error

    async def _unseen(request: Request) -> JSONResponse | None:
        """The answer to a caller who may not see the admin namespace, before any answer about its
        request's body (FastAPI reads a declared body before the admin check runs): None for an
        admin, or outside that namespace."""
        if not request.url.path.startswith(admin.router.prefix + "/"):
            return None
        try:
            await admin_account(request)
        except VendoError as e:
            return await _vendo_error(request, e)
        except StarletteHTTPException:
            return problem(404, "Not found", "Not Found")
        return None

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        if (unseen := await _unseen(request)) is not None:
            return unseen
        fields = [_invalid_field(e) for e in exc.errors()]
        detail = "; ".join(f"{f['field']}: {f['reason']}" for f in fields) or "invalid request"
        return problem(422, "Invalid request", detail, invalid_fields=fields)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400 and exc.detail == _UNREADABLE_BODY:
            if (unseen := await _unseen(request)) is not None:
                return unseen
            # FastAPI's answer to a declared JSON body that is not UTF-8: answered as `json_body` does
            invalid = InvalidRequest("body", "not valid JSON: not UTF-8 text")
            return JSONResponse(invalid.problem(), status_code=invalid.status, media_type=PROBLEM_JSON)
        return await http_error(request, exc)

    app.add_middleware(BodyLimit, settings=runtime.settings)

    @app.get("/health", include_in_schema=False)
    async def health():
        return {"status": "ok"}

    app.mount("/static", StaticFiles(directory=WEB_STATIC), name="static")  # before the pages' /{owner}/{name}
    for module in (predictions, trainings, models, catalogue, deployments, storage, files, webhooks, admin, usage,
                   batches, ops, web_routes):
        app.include_router(module.router)
    openapi.install(app)  # the document as the routes really behave, and /docs without a CDN
    return app


class BodyLimit:
    """Caps every request body at its route's limit: a declared Content-Length over it is refused
    before anything is read, and a body that grows past it while streaming (chunked, or longer than
    declared) is cut off at the chunk that crosses it and answered 413, whatever the route, and
    before authentication. Plain ASGI: Starlette's `@app.middleware("http")` costs a task and a
    stream per request."""

    def __init__(self, app, settings: Settings):
        self.app = app
        self.settings = settings

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope["method"], scope["path"])
        for k, v in scope["headers"]:
            if k == b"content-length":
                if v.isdigit() and int(v) > limit:
                    return await self._too_large(scope, receive, send, limit)
                break
        seen, over, started = 0, False, False

        async def capped_receive():
            nonlocal seen, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    over = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message):
            nonlocal started
            if over:
                return  # whatever the app answers to a body it never got whole, the answer is 413
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, capped_receive, guarded_send)
        except Exception:
            if not over:
                raise
        if over and not started:
            await self._too_large(scope, receive, send, limit)

    @staticmethod
    async def _too_large(scope, receive, send, limit: int) -> None:
        resp = JSONResponse(PayloadTooLarge(limit).problem(), status_code=413, media_type=PROBLEM_JSON,
                            headers={"Connection": "close"})
        await resp(scope, receive, send)

    def limit_for(self, method: str, path: str) -> int:
        s = self.settings
        if method == "POST" and path.endswith("/versions"):
            return s.max_package_bytes
        if path.startswith("/v1/files"):
            return s.max_upload_bytes
        return s.max_body_bytes
