"""The OpenAPI document is truthful and usable: it validates as OpenAPI 3.1; every operation
documents its success answer and its errors as problem+json; routes that need a token name the
bearer scheme (Swagger UI's "Authorize"); `/docs` loads nothing from outside; and a schemathesis
run over the document, against the in-process app over fakes, gets no 5xx and no answer that
differs from what the document says (its schema, its status codes, its content type)."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from html.parser import HTMLParser

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from router.app import create_app
from router.runtime import Runtime
from tests.unit.fakes import FakeApps, FakeRegistry, FakeStore, NoLimits, replica
from tests.unit.test_app import SCHEMA, VID, _app
from vendo_core.files import Files
from vendo_core.keys import Keys
from vendo_core.records import Version
from vendo_core.settings import Settings
from vendo_core.signing import signer_for
from vendo_core.storage import open_store

PROBLEM = {"$ref": "#/components/schemas/Problem"}
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
# operations whose success answer is not JSON, by design
NOT_JSON = {("GET", "/v1/predictions/{pid}/stream"): "text/event-stream",
            ("GET", "/v1/files/{file_id}/download"): "*/*"}
# Operations the schemathesis run leaves out, each because the in-process runtime over fakes has
# no Redis, so the service behind it does not exist there (the real one does; the integration
# tests drive these over real Redis). Everything else is fuzzed.
NEEDS_REDIS = {
    ("GET", "/v1/models"): "Registry.page_models reads Redis indexes FakeRegistry lacks",
    ("GET", "/v1/deployments"): "rt.deployments is None without Redis",
    ("POST", "/v1/deployments"): "rt.deployments is None without Redis",
    ("GET", "/v1/deployments/{owner}/{name}"): "rt.deployments is None without Redis",
    ("PATCH", "/v1/deployments/{owner}/{name}"): "rt.deployments is None without Redis",
    ("DELETE", "/v1/deployments/{owner}/{name}"): "rt.deployments is None without Redis",
    ("POST", "/v1/files"): "file records live in Redis (Files over None)",
    ("GET", "/v1/files"): "file records live in Redis (Files over None)",
    ("GET", "/v1/webhooks/default/secret"): "rt.webhook_secrets exists only with Redis",
    ("POST", "/v1/webhooks/default/secret/rotate"): "rt.webhook_secrets exists only with Redis",
    ("GET", "/v1/usage"): "usage is summed in Redis (AccountService over FakeRegistry)",
    ("GET", "/v1/batches"): "batch records live in Redis (rt.batches is None without it)",
    ("GET", "/v1/batches/{batch_id}"): "batch records live in Redis (rt.batches is None without it)",
}


def _doc(tmp_path) -> dict:
    async def go():
        client, _ = await _app(tmp_path)
        async with client:
            r = await client.get("/openapi.json")
            assert r.status_code == 200
            return r.json()
    return asyncio.run(go())


def _operations(doc: dict):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield method.upper(), path, op


def _resolve(doc: dict, obj: dict) -> dict:
    while "$ref" in obj:
        section, name = obj["$ref"].split("/")[-2:]
        obj = doc["components"][section][name]
    return obj


def test_document_validates_as_openapi_31(tmp_path):
    doc = _doc(tmp_path)
    assert doc["openapi"].startswith("3.1")
    validate(doc)  # raises on any error
    assert set(doc["paths"]["/v1/models"]) == {"get", "post"}  # QUERY is no OpenAPI 3.1 method
    assert {"HTTPValidationError", "ValidationError"}.isdisjoint(doc["components"]["schemas"])


def test_query_models_is_served_but_not_documented(tmp_path):
    async def go():
        client, _ = await _app(tmp_path)
        async with client:
            # not UTF-8: refused by the route itself, before the search (which needs Redis)
            r = await client.request("QUERY", "/v1/models", content=b"\xff", headers={"Content-Type": "text/plain"})
            assert r.status_code == 422 and r.json()["invalid_fields"][0]["field"] == "query"
            doc = (await client.get("/openapi.json")).json()
            assert "QUERY" in doc["paths"]["/v1/models"]["get"]["description"]
    asyncio.run(go())


def test_every_operation_documents_success_and_problem_errors(tmp_path):
    doc = _doc(tmp_path)
    problem = doc["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail"} <= set(problem["required"])
    invalid = _resolve(doc, problem["properties"]["invalid_fields"]["items"])
    assert set(invalid["required"]) == {"field", "reason"}
    missing = []
    for method, path, op in _operations(doc):
        responses = {code: _resolve(doc, r) for code, r in op["responses"].items()}
        success = {c: r for c, r in responses.items() if c.startswith("2")}
        if (method, path) in NOT_JSON:
            ok = any(NOT_JSON[(method, path)] in (r.get("content") or {}) for r in success.values())
        else:
            ok = "204" in success and not success["204"].get("content") or any(
                "schema" in (r.get("content") or {}).get("application/json", {}) for r in success.values())
        errors = {c: r for c, r in responses.items() if not c.startswith("2")}
        ok = ok and "default" in errors and all(
            r["content"] == {"application/problem+json": {"schema": PROBLEM}} for r in errors.values())
        # 422 is problem details, never FastAPI's HTTPValidationError
        ok = ok and ("422" in errors or not (op.get("parameters") or op.get("requestBody")))
        if not ok:
            missing.append(f"{method} {path}")
    assert missing == []


def test_request_bodies_are_documented(tmp_path):
    doc = _doc(tmp_path)
    ops = {(m, p): op for m, p, op in _operations(doc)}

    def body(method, path):
        return ops[(method, path)]["requestBody"]["content"]

    assert body("POST", "/v1/predictions")["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PredictionCreate"}
    for path in ("/v1/models/{owner}/{name}/predictions", "/v1/deployments/{owner}/{name}/predictions"):
        assert body("POST", path)["application/json"]["schema"]["$ref"].endswith("/ModelPredictionCreate")
        assert {"Prefer", "Cancel-After"} <= {p["name"] for p in ops[("POST", path)]["parameters"]}
    assert body("POST", "/v1/deployments")["application/json"]["schema"]["$ref"].endswith("/DeploymentCreate")
    assert body("PATCH", "/v1/deployments/{owner}/{name}")["application/json"]["schema"]["$ref"].endswith(
        "/DeploymentUpdate")
    upload = _resolve(doc, body("POST", "/v1/files")["multipart/form-data"]["schema"])
    assert upload["required"] == ["content"] and upload["properties"]["content"]["format"] == "binary"
    assert "application/gzip" in body("POST", "/v1/models/{owner}/{name}/versions")
    schemas = doc["components"]["schemas"]
    assert schemas["PredictionCreate"]["required"] == ["version"]
    assert set(schemas["PredictionCreate"]["properties"]) >= {"version", "input", "webhook",
                                                              "webhook_events_filter"}
    # every operation that takes a body says what it is
    assert [f"{m} {p}" for m, p, op in _operations(doc)
            if m in ("POST", "PUT", "PATCH") and "requestBody" not in op and not _bodiless(m, p)] == []


def _bodiless(method: str, path: str) -> bool:
    """Actions named by their path alone (share, cancel, rotate, membership)."""
    return path.endswith(("/share", "/unshare", "/cancel", "/rotate")) or path.startswith("/v1/admin/orgs/")


def test_security_scheme_and_who_needs_a_token(tmp_path):
    doc = _doc(tmp_path)
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": doc["components"]["securitySchemes"]["bearerAuth"][
            "description"]}
    required, optional, public = [{"bearerAuth": []}], [{"bearerAuth": []}, {}], []
    security = {(m, p): op.get("security") for m, p, op in _operations(doc)}
    assert security[("GET", "/v1/predictions/{pid}")] == optional  # a shared prediction needs no token
    assert security[("GET", "/v1/files/{file_id}/download")] == public  # the signed link is the key
    others = {k: v for k, v in security.items()
              if k not in (("GET", "/v1/predictions/{pid}"), ("GET", "/v1/files/{file_id}/download"))}
    assert {f"{m} {p}" for (m, p), v in others.items() if v != required} == set()
    assert all("401" in op["responses"] for m, p, op in _operations(doc) if op["security"])


class _Assets(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]


def test_docs_are_served_without_a_cdn(tmp_path):
    async def go():
        client, _ = await _app(tmp_path)
        async with client:
            for page, kinds in (("/docs", {"javascript", "css", "png"}), ("/redoc", {"javascript", "png"})):
                r = await client.get(page)
                assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
                assert not re.search(r"https?://", r.text), page  # no CDN, no Google Fonts
                parser = _Assets()
                parser.feed(r.text)
                assert parser.urls and all(u.startswith("/docs/assets/") for u in parser.urls), parser.urls
                seen = set()
                for url in parser.urls:
                    asset = await client.get(url)
                    assert asset.status_code == 200 and len(asset.content) > 1000, url
                    seen |= {k for k in kinds if k in asset.headers["content-type"]}
                assert seen == kinds, page
                assert "url: '/openapi.json'" in r.text or 'spec-url="/openapi.json"' in r.text
            # Swagger UI 5 (the first to read OpenAPI 3.1)
            js = (await client.get("/docs/assets/swagger-ui-bundle.js")).text
            assert "isOAS31" in js
            assert (await client.get("/openapi.json")).status_code == 200
    asyncio.run(go())


# schemathesis over the whole document


def _fuzz_app(tmp_dir):
    settings_ = Settings(data_dir=tmp_dir, redis_prefix="t:")
    store, registry = FakeStore(), FakeRegistry()

    async def seed() -> str:
        token = await registry.create_account("alice")  # not an admin: the admin API is a 404
        await registry.create_model("alice", "echo", "public")
        await registry.add_version(Version(id=VID, model="alice/echo", openapi_schema=SCHEMA, package_key="p"))
        return token

    token = asyncio.run(seed())
    objects = open_store(settings_)
    files = Files(None, Keys("t:"), objects, signer=signer_for(settings_))
    rt = Runtime(settings_, store=store, registry=registry, objects=objects, apps=FakeApps(replica(store, "hi")),
                 files=files, limiter=NoLimits())
    return create_app(rt), token


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


EXPLICIT = {401, 404, 413, 415, 422, 429}  # the errors router/openapi.py lists per operation


def _explicitly_documented(ctx, response, case):
    """Stricter than status_code_conformance, which any code passes once `default` is there: an
    operation that answers one of the errors listed per operation lists it (rarer ones, such as
    402, 403 or 409, are documented by `default`)."""
    codes = case.operation.definition.raw["responses"]
    if response.status_code in EXPLICIT and str(response.status_code) not in codes:
        raise AssertionError(f"{response.status_code} is answered but only {sorted(codes)} are listed")


def _fuzz(op, mode: GenerationMode, token: str) -> list[str]:
    """A few cases of `op` in `mode`, each answer checked; what failed, as text."""
    failed: list[str] = []

    @given(case=op.as_strategy(generation_mode=mode))
    @settings(max_examples=8, deadline=timedelta(seconds=10), database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def run(case):
        # a 5xx that is an exception in the app is raised here, with the case to reproduce it
        response = case.call(headers={"Authorization": f"Bearer {token}"})  # a negative case may override it
        try:
            case.validate_response(response, checks=CHECKS, additional_checks=[_explicitly_documented])
        except Exception as e:  # noqa: BLE001 - schemathesis's FailureGroup: collected, reported at the end
            failed.append(f"{mode.value}: {str(e)[:1500]}")

    try:
        run()
    except Unsatisfiable:
        # nothing to negate: a path of free-form strings, and no token needed
        assert mode == GenerationMode.NEGATIVE and op.path == "/v1/predictions/{pid}", op.label
    return failed


@pytest.mark.timeout(240)
def test_schemathesis_finds_no_5xx_and_no_undocumented_answer(tmp_path):
    schemathesis.openapi.media_type("application/gzip", st.binary(max_size=512))
    app, token = _fuzz_app(tmp_path)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: dict[str, list[str]] = {}
    fuzzed = 0
    for result in schema.get_all_operations():
        op = result.ok()
        if (op.method.upper(), op.path) in NEEDS_REDIS:
            continue
        fuzzed += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if failed := _fuzz(op, mode, token):
                failures[f"{op.label} ({mode.value})"] = failed
    assert fuzzed >= 30
    assert failures == {}, "\n\n".join(f"{k}:\n" + "\n".join(dict.fromkeys(v)) for k, v in failures.items())


def test_success_answers_match_the_document(tmp_path):
    """Random input seldom names anything that exists, so the run above sees few successes: here
    each main route is called as a client would, and its answer checked against the document."""
    app, token = _fuzz_app(tmp_path)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    auth = {"Authorization": f"Bearer {token}"}

    def call(method, path, status, *, headers=auth, **case):
        c = schema[path][method].Case(**case)
        response = c.call(headers=headers)
        assert response.status_code == status, (method, path, response.text)
        c.validate_response(response, checks=CHECKS, additional_checks=[_explicitly_documented])
        return response

    done = call("POST", "/v1/predictions", 201, body={"version": VID, "input": {"text": "x"}},
                headers={**auth, "Prefer": "wait=5"}, media_type="application/json").json()
    assert done["status"] == "succeeded"
    started = call("POST", "/v1/models/{owner}/{name}/predictions", 201, body={"input": {"text": "y"}},
                   path_parameters={"owner": "alice", "name": "echo"}, media_type="application/json")
    assert started.headers["location"][0].endswith(started.json()["id"])  # schemathesis: a list per header
    pid = {"pid": done["id"]}
    call("GET", "/v1/predictions/{pid}", 200, path_parameters=pid)
    call("POST", "/v1/predictions/{pid}/share", 200, path_parameters=pid)
    call("GET", "/v1/predictions/{pid}", 200, path_parameters=pid, headers={})  # shared: no token needed
    call("POST", "/v1/predictions/{pid}/unshare", 200, path_parameters=pid)
    call("GET", "/v1/predictions/{pid}", 401, path_parameters=pid, headers={"Authorization": "Bearer nope"})
    call("POST", "/v1/predictions/{pid}/cancel", 200, path_parameters=pid)
    stream = call("GET", "/v1/predictions/{pid}/stream", 200, path_parameters=pid)
    assert "event: done" in stream.text
    assert len(call("GET", "/v1/predictions", 200).json()["results"]) == 2
    model = {"owner": "alice", "name": "echo"}
    call("GET", "/v1/models/{owner}/{name}", 200, path_parameters=model)
    call("GET", "/v1/models/{owner}/{name}/versions", 200, path_parameters=model)
    call("GET", "/v1/models/{owner}/{name}/versions/{vid}", 200, path_parameters={**model, "vid": VID})
    sku = call("GET", "/v1/hardware", 200).json()[0]["sku"]
    call("POST", "/v1/models", 201, media_type="application/json",
         body={"owner": "alice", "name": "new", "visibility": "private", "hardware": sku})
    call("DELETE", "/v1/models/{owner}/{name}", 204, path_parameters={"owner": "alice", "name": "new"})
    for path in ("/v1/account", "/v1/status", "/v1/collections"):
        call("GET", path, 200)
