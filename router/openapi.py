"""The OpenAPI document and the docs pages, corrected in one place.

FastAPI derives `/openapi.json` from route signatures, and vendo's routes say less there than they
do: they read most bodies themselves (`json_body`, the multipart stream, the tar.gz push) so that
bad input gets Replicate's answers, not FastAPI's; they authenticate in a dependency FastAPI does
not know for a security scheme; and every error, 422 included, is `application/problem+json`, not
FastAPI's `HTTPValidationError`. Left alone, the document would show no request bodies, no
security and the wrong error shape, and a client generated from it (or Swagger UI's "Try it out")
would be wrong. `install(app)` amends the generated document with what the routes really do,
from the route table (which dependency authenticates) and from the tables below (bodies, headers
and non-JSON answers), and serves Swagger UI and ReDoc from assets shipped in a Python package
(`fastapi-offline`), since a self-hosted cluster may have no way out to a CDN.

The routes' JSON is untouched: only its description changes here."""

from __future__ import annotations

import re
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.responses import HTMLResponse

from router import wire
from router.deps import admin_account, current_account, optional_account

PROBLEM_JSON = "application/problem+json"
SECURITY_SCHEME = "bearerAuth"
ASSETS_URL = "/docs/assets"
# Swagger UI 5 (it reads OpenAPI 3.1; the 4.x of `swagger-ui-bundle` refuses a 3.1 document) and ReDoc 2
ASSETS_DIR = files("fastapi_offline").joinpath("static")

_JSON = "application/json"
_BINARY = {"type": "string", "format": "binary"}
_PREDICTION_CREATE_HEADERS = [
    {"name": "Prefer", "in": "header", "required": False,
     "description": "`wait` or `wait=N` (N is held to 1..60, `wait` alone is 60): hold the request until the "
                    "prediction finishes or N seconds pass; an unfinished one is answered with status `starting`.",
     "schema": {"type": "string", "pattern": r"^wait(=\d+)?$"}},
    {"name": "Cancel-After", "in": "header", "required": False,
     "description": "Cancel the prediction this long after creation: seconds (`30`) or an h/m/s duration "
                    "(`5m`, `1h30m45s`); at least 5 s, at most 30 days.",
     "schema": {"type": "string"}},
]
_PREDICTION_CREATED_HEADERS = {
    "Location": {"description": "the prediction's URL, when it is not finished yet",
                 "schema": {"type": "string"}},
    "Preference-Applied": {"description": "`wait=N`, when the request asked to wait",
                           "schema": {"type": "string"}},
}

# (method, path) -> (media type, schema model or schema, required): bodies the routes read themselves
REQUEST_BODIES: dict[tuple[str, str], tuple[str, type[BaseModel] | dict, bool]] = {
    ("POST", "/v1/predictions"): (_JSON, wire.PredictionCreate, True),
    ("POST", "/v1/models/{owner}/{name}/predictions"): (_JSON, wire.ModelPredictionCreate, False),
    ("POST", "/v1/deployments/{owner}/{name}/predictions"): (_JSON, wire.ModelPredictionCreate, False),
    ("POST", "/v1/models/{owner}/{name}/versions/{version_id}/trainings"): (_JSON, wire.TrainingCreate, True),
    ("POST", "/v1/deployments"): (_JSON, wire.DeploymentCreate, True),
    ("PATCH", "/v1/deployments/{owner}/{name}"): (_JSON, wire.DeploymentUpdate, True),
    ("POST", "/v1/files"): ("multipart/form-data", wire.FileUpload, True),
    # a Cog project as `vendo push` packs it
    ("POST", "/v1/models/{owner}/{name}/versions"): ("application/gzip", _BINARY, True),
}
# (method, path) -> header parameters the routes read from the request themselves
REQUEST_HEADERS: dict[tuple[str, str], list[dict]] = {
    ("POST", "/v1/predictions"): _PREDICTION_CREATE_HEADERS,
    ("POST", "/v1/models/{owner}/{name}/predictions"): _PREDICTION_CREATE_HEADERS,
    ("POST", "/v1/deployments/{owner}/{name}/predictions"): _PREDICTION_CREATE_HEADERS,
    ("GET", "/v1/predictions/{pid}/stream"): [
        {"name": "Last-Event-ID", "in": "header", "required": False,
         "description": "resume after this event (a reconnecting EventSource sends it)",
         "schema": {"type": "string"}}],
}
# (method, path) -> the success answer, where it is not the route's JSON response model
SUCCESS_RESPONSES: dict[tuple[str, str], tuple[str, dict]] = {
    ("GET", "/v1/predictions/{pid}/stream"): ("200", {
        "description": "Server-sent events, replayed from the start and ending with `done`; a `: keep-alive` "
                       "comment when idle.",
        # before OpenAPI 3.2's `itemSchema`, the schema of an event stream describes one event
        "content": {"text/event-stream": {"schema": {
            "type": "object", "required": ["event", "id", "data"],
            "properties": {
                "event": {"enum": ["output", "logs", "error", "done"]},
                "id": {"type": "string", "description": "send it back as `Last-Event-ID` to resume after it"},
                "data": {"type": "string", "description": "output: JSON (the whole output, or the next item of "
                                                          "an iterator); logs: text; error: the message; "
                                                          "done: a JSON object"}}}}}}),
    ("GET", "/v1/files/{file_id}/download"): ("200", {
        "description": "The file's bytes, as the Content-Type it was uploaded with.",
        "content": {"*/*": {"schema": _BINARY}}}),
}
SUCCESS_HEADERS: dict[tuple[str, str], dict] = {
    ("POST", "/v1/predictions"): _PREDICTION_CREATED_HEADERS,
    ("POST", "/v1/models/{owner}/{name}/predictions"): _PREDICTION_CREATED_HEADERS,
    ("POST", "/v1/deployments/{owner}/{name}/predictions"): _PREDICTION_CREATED_HEADERS,
}


def _problem(description: str, **extra: Any) -> dict:
    return {"description": description,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}, **extra}


ERROR_RESPONSES = {
    "Unauthenticated": _problem("No valid API token (`Authorization: Bearer <token>`)"),
    "NotFound": _problem("No such object, or none the caller may see"),
    "PayloadTooLarge": _problem("The body is over this route's size limit"),
    "UnsupportedMediaType": _problem("The body is declared as something other than JSON"),
    "InvalidRequest": _problem("A parameter, header, body field or model input is invalid: "
                               "`invalid_fields` names each and says why"),
    "RateLimited": _problem("Too many requests: the token's per-minute limit, or the account's open "
                            "streams, waiting creates or queued predictions",
                            headers={"Retry-After": {"description": "seconds to wait",
                                                     "schema": {"type": "integer"}}}),
    "Error": _problem("Any other error, as problem details (402 spend limit reached, 403, 409, 5xx)"),
}


def install(app: FastAPI) -> None:
    """Amend `app`'s OpenAPI document (built lazily, as FastAPI does) and serve the docs pages.
    Call it once every route is included: a table entry that names no route is an error now."""
    routes = {(m, r.path_format): r for r in iter_route_contexts(app.routes)
              if isinstance(r.original_route, APIRoute) and r.include_in_schema for m in r.methods}
    stale = [k for table in (REQUEST_BODIES, REQUEST_HEADERS, SUCCESS_RESPONSES, SUCCESS_HEADERS)
             for k in table if k not in routes]
    if stale:
        raise RuntimeError(f"router/openapi.py describes routes that do not exist: {stale}")
    generate = app.openapi  # FastAPI's, which caches until the routes change
    amended: list[dict] = []

    def openapi() -> dict[str, Any]:
        doc = generate()
        if not amended or amended[0] is not doc:
            _amend(doc, routes)
            amended[:] = [doc]
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
    _serve_docs(app)


def auth_of(route: RouteContext) -> str | None:
    """"required", "optional" or None: what the route's dependencies ask of the caller."""
    calls, stack = set(), [route.dependant]
    while stack:
        d = stack.pop()
        calls.add(d.call)
        stack.extend(d.dependencies)
    if calls & {current_account, admin_account}:
        return "required"
    return "optional" if optional_account in calls else None


def _amend(doc: dict[str, Any], routes: dict[tuple[str, str], RouteContext]) -> None:
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):  # the API never answers these
        schemas.pop(name, None)
    _add_schemas(schemas, [wire.Problem] + [m for _, m, _ in REQUEST_BODIES.values() if isinstance(m, type)])
    components["responses"] = dict(ERROR_RESPONSES)
    components["securitySchemes"] = {SECURITY_SCHEME: {
        "type": "http", "scheme": "bearer",
        "description": "An API token, as `Authorization: Bearer <token>` (`Token <token>`, the form older "
                       "Replicate clients send, is accepted too)."}}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            key = (method.upper(), path)
            _amend_operation(op, key, routes[key])


def _amend_operation(op: dict, key: tuple[str, str], route: RouteContext) -> None:
    responses = op.setdefault("responses", {})
    responses.pop("422", None)  # FastAPI's HTTPValidationError; added back below as problem details
    if key in SUCCESS_RESPONSES:
        code, resp = SUCCESS_RESPONSES[key]
        responses[code] = resp
    if key in SUCCESS_HEADERS:
        code = next(c for c in responses if c.startswith("2"))
        responses[code]["headers"] = SUCCESS_HEADERS[key]
    if key in REQUEST_BODIES:
        media, model, required = REQUEST_BODIES[key]
        schema = {"$ref": f"#/components/schemas/{model.__name__}"} if isinstance(model, type) else model
        op["requestBody"] = {"required": required, "content": {media: {"schema": schema}}}
    if key in REQUEST_HEADERS:
        op["parameters"] = op.get("parameters", []) + REQUEST_HEADERS[key]

    auth = auth_of(route)
    op["security"] = {"required": [{SECURITY_SCHEME: []}], "optional": [{SECURITY_SCHEME: []}, {}],
                      None: []}[auth]
    errors = []
    if auth:
        errors += [("401", "Unauthenticated"), ("429", "RateLimited")]
    body = op.get("requestBody")
    # what a path, a body or an `account` query names may not exist (or not be the caller's to
    # see); the whole admin API is a 404 to non-admins
    names_account = any(p.get("in") == "query" and p.get("name") == "account" for p in op.get("parameters", []))
    if "{" in key[1] or body or key[1].startswith("/v1/admin/") or names_account:
        errors.append(("404", "NotFound"))
    if body:
        errors.append(("413", "PayloadTooLarge"))
        if REQUEST_BODIES.get(key, ("",))[0] == _JSON:  # json_body's 415; FastAPI's own bodies answer 422
            errors.append(("415", "UnsupportedMediaType"))
    if body or op.get("parameters"):
        errors.append(("422", "InvalidRequest"))
    for code, name in errors + [("default", "Error")]:
        responses.setdefault(code, {"$ref": f"#/components/responses/{name}"})


def _add_schemas(schemas: dict, models: list[type[BaseModel]]) -> None:
    _, defs = models_json_schema([(m, "validation") for m in dict.fromkeys(models)],
                                 ref_template="#/components/schemas/{model}")
    for name, schema in defs.get("$defs", {}).items():
        if name in schemas and schemas[name] != schema:
            raise RuntimeError(f"two different schemas named {name!r} in the OpenAPI document")
        schemas[name] = schema


def _serve_docs(app: FastAPI) -> None:
    """Swagger UI at /docs and ReDoc at /redoc, with every asset served from here."""
    app.mount(ASSETS_URL, StaticFiles(directory=str(ASSETS_DIR)), name="docs-assets")

    def urls(request: Request) -> tuple[str, str]:
        root = re.sub(r"/+$", "", request.scope.get("root_path", ""))
        return f"{root}{app.openapi_url}", f"{root}{ASSETS_URL}"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        spec, assets = urls(request)
        return get_swagger_ui_html(openapi_url=spec, title=f"{app.title} - Swagger UI",
                                   swagger_js_url=f"{assets}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{assets}/swagger-ui.css",
                                   swagger_favicon_url=f"{assets}/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        spec, assets = urls(request)
        return get_redoc_html(openapi_url=spec, title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{assets}/redoc.standalone.js",
                              redoc_favicon_url=f"{assets}/favicon.png", with_google_fonts=False)
