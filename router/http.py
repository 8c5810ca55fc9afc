"""The HTTP surface: the FastAPI app, authentication, problem-details errors and body limits.
Routes live in `routes_*.py`; they call the service and never touch Redis or storage directly."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from router.errors import PayloadTooLarge, Unauthenticated, VendoError
from router.ratelimit import bucket_for
from router.runtime import Runtime

_runtime: Runtime | None = None


def set_runtime(rt: Runtime | None) -> None:
    global _runtime
    _runtime = rt


def runtime() -> Runtime:
    assert _runtime is not None, "router runtime not initialised"
    return _runtime


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": None, "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def base_url(request: Request) -> str:
    rt = runtime()
    if rt.settings.public_url:
        return rt.settings.public_url.rstrip("/")
    return str(request.base_url).rstrip("/")


async def current_account(request: Request) -> dict:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() not in ("bearer", "token") or not token.strip():
        raise Unauthenticated()
    rt = runtime()
    acct = await rt.account_for(token.strip())
    if acct is None:
        raise Unauthenticated()
    await rt.limiter.hit(token.strip(), bucket_for(request.method, request.url.path))  # one round trip
    return acct


async def _runtime_dep() -> Runtime:
    # async on purpose: FastAPI runs a sync dependency in a thread pool, on every request
    return runtime()


CurrentAccount = Annotated[dict, Depends(current_account)]
Rt = Annotated[Runtime, Depends(_runtime_dep)]


def create_app() -> FastAPI:
    from router import (
        routes_admin,
        routes_deployments,
        routes_files,
        routes_models,
        routes_predictions,
        routes_storage,
        routes_webhooks,
    )

    app = FastAPI(title="vendo", version="0.1.0", redirect_slashes=False,
                  description="A self-hosted, Replicate-compatible model API on Ray Serve")

    @app.exception_handler(VendoError)
    async def _vendo_error(request: Request, exc: VendoError):
        body = exc.problem()
        return JSONResponse(body, status_code=exc.status, media_type="application/problem+json",
                            headers=exc.headers())

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        fields = [{"field": ".".join(str(p) for p in e.get("loc", ())[1:]) or "body", "reason": e.get("msg")}
                  for e in errs]
        detail = "; ".join(f"{f['field']}: {f['reason']}" for f in fields) or "invalid request"
        return problem(422, "Invalid request", detail, invalid_fields=fields)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "Error")
        return problem(exc.status_code, title, str(exc.detail))

    app.add_middleware(_BodyLimit)

    @app.get("/health", include_in_schema=False)
    async def health():
        return {"status": "ok"}

    app.include_router(routes_predictions.router)
    app.include_router(routes_models.router)
    app.include_router(routes_admin.router)
    app.include_router(routes_deployments.router)
    app.include_router(routes_storage.router)
    app.include_router(routes_files.router)
    app.include_router(routes_webhooks.router)
    return app


class _BodyLimit:
    """Refuses a declared Content-Length over the route's limit before anything reads the body.
    Plain ASGI: Starlette's `@app.middleware("http")` costs a task and a stream per request."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            for k, v in scope["headers"]:
                if k == b"content-length":
                    limit = _limit_for(scope["method"], scope["path"])
                    if v.isdigit() and int(v) > limit:
                        resp = JSONResponse(PayloadTooLarge(limit).problem(), status_code=413,
                                            media_type="application/problem+json")
                        return await resp(scope, receive, send)
                    break
        await self.app(scope, receive, send)


def _limit_for(method: str, path: str) -> int:
    s = runtime().settings
    if method == "POST" and path.endswith("/versions"):
        return s.max_package_bytes
    if path.startswith("/v1/files"):
        return s.max_upload_bytes
    return s.max_body_bytes
