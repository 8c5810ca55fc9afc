"""The whole HTTP API built in-process by `create_app(runtime)` over fakes (no Redis, no Ray):
the routes, dependencies, problem details and wire shapes a client sees, with the official
client's own requests."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from router.app import create_app
from router.runtime import Runtime
from tests.unit.fakes import FakeApps, FakeRegistry, FakeStore, NoLimits, replica
from tests.unit.test_services import SCHEMA, VID
from vendo_core.files import Files
from vendo_core.keys import Keys
from vendo_core.records import Version
from vendo_core.settings import Settings
from vendo_core.storage import open_store


async def _app(tmp_path, **settings_fields):
    settings = Settings(data_dir=tmp_path, redis_prefix="t:", **settings_fields)
    store, registry, limiter = FakeStore(), FakeRegistry(), NoLimits()
    token = await registry.create_account("alice")
    await registry.create_model("alice", "echo", "public")
    await registry.add_version(Version(id=VID, model="alice/echo", openapi_schema=SCHEMA, package_key="p"))
    objects = open_store(settings)
    rt = Runtime(settings, store=store, registry=registry, objects=objects, apps=FakeApps(replica(store, "hi")),
                 files=Files(None, Keys("t:"), objects), limiter=limiter)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(rt)), base_url="http://vendo.test",
                               headers={"Authorization": f"Bearer {token}"})
    return client, limiter


def test_create_and_get_in_process(tmp_path):
    async def go():
        client, limiter = await _app(tmp_path)
        async with client:
            r = await client.post("/v1/models/alice/echo/predictions", json={"input": {"text": "x"}},
                                  headers={"Prefer": "wait=5"})
            assert r.status_code == 201, r.text
            p = r.json()
            assert p["status"] == "succeeded" and p["output"] == "hi" and p["version"] == VID
            assert p["urls"]["get"] == f"http://vendo.test/v1/predictions/{p['id']}"
            assert r.headers["preference-applied"] == "wait=5"
            got = (await client.get(f"/v1/predictions/{p['id']}")).json()
            assert got["id"] == p["id"] and got["status"] == "succeeded" and got["input"] == {"text": "x"}
            listed = (await client.get("/v1/predictions")).json()
            assert [q["id"] for q in listed["results"]] == [p["id"]]
            assert (await client.get("/v1/account")).json()["username"] == "alice"
        assert limiter.hits == ["creates", "requests", "requests", "requests"]
    asyncio.run(go())


def test_problems_name_the_field(tmp_path):
    async def go():
        client, _ = await _app(tmp_path)
        async with client:
            r = await client.post("/v1/predictions", json={"input": {"text": "x"}})
            assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
            assert r.json()["invalid_fields"] == [{"field": "version", "reason": "is required"}]
            r = await client.post("/v1/predictions", json={"version": "alice/echo", "input": {}})
            assert r.status_code == 422 and r.json()["invalid_fields"][0]["field"] == "text"
            r = await client.get("/v1/predictions/nope")
            assert r.status_code == 404 and r.json()["title"] == "Not found"
            r = await client.get("/v1/predictions", headers={"Authorization": "Bearer wrong"})
            assert r.status_code == 401
            r = await client.post("/v1/predictions", content=b"x" * (17 * 1024 * 1024))
            assert r.status_code == 413
    asyncio.run(go())


def test_openapi_shows_every_response(tmp_path):
    async def go():
        client, _ = await _app(tmp_path)
        async with client:
            doc = (await client.get("/openapi.json")).json()
        missing = [f"{method.upper()} {path}" for path, ops in doc["paths"].items() for method, op in ops.items()
                   if not any("schema" in (resp.get("content") or {}).get("application/json", {})
                              for code, resp in op["responses"].items() if code.startswith("2"))
                   and "204" not in op["responses"]
                   and not path.endswith(("/stream", "/download"))]
        assert missing == []
        schemas = doc["components"]["schemas"]
        assert {"Prediction", "Version", "Model", "Account", "File", "Deployment"} <= set(schemas)
        assert "status" in schemas["Prediction"]["properties"]
    asyncio.run(go())


def test_bodies_are_capped_while_they_stream(tmp_path):
    """A chunked body (no Content-Length) past the route's limit is cut off where it crosses the
    limit and answered 413, on every route, before authentication or parsing."""
    chunk = b"x" * 4096

    async def go():
        client, _ = await _app(tmp_path, max_body_bytes=64 * 1024, max_package_bytes=64 * 1024)
        sent = []

        async def body():
            for _ in range(10_000):  # 40 MB if it were all read
                sent.append(len(chunk))
                yield chunk

        async with client:
            for method, path, headers in (("POST", "/v1/predictions", {}),
                                          ("POST", "/v1/models", {"Authorization": "Bearer nobody"}),
                                          ("PATCH", "/v1/deployments/alice/d", {}),
                                          ("POST", "/v1/models/alice/x/versions", {})):
                sent.clear()
                r = await client.request(method, path, content=body(), headers=headers)
                assert r.status_code == 413, (path, r.status_code, r.text)
                assert r.json()["title"] == "Payload too large"
                assert sum(sent) <= 64 * 1024 + 2 * len(chunk), (path, sum(sent))
            sent.clear()  # a route that never reads its body does not read it past the limit either
            r = await client.post("/v1/predictions/" + "a" * 26 + "/cancel", content=body())
            assert r.status_code == 404 and sum(sent) <= 64 * 1024 + 2 * len(chunk)
            small = await client.post("/v1/predictions", json={"version": "alice/echo", "input": {"text": "x"}})
            assert small.status_code == 201
    asyncio.run(go())


def test_open_streams_and_waits_are_capped_per_account(tmp_path):
    async def go():
        client, _ = await _app(tmp_path, max_open_per_account=2)
        async with client:
            r = await client.post("/v1/models/alice/echo/predictions", json={"input": {"text": "x"}})
            pid = r.json()["id"]
            slots = client._transport.app.state.runtime.open_slots
            slots.open["alice"] = 2  # two streams already open
            r = await client.post("/v1/models/alice/echo/predictions", json={"input": {"text": "x"}},
                                  headers={"Prefer": "wait=5"})
            assert r.status_code == 429 and r.headers["retry-after"] == "1"
            assert "open streams" in r.json()["detail"]
            assert (await client.get(f"/v1/predictions/{pid}/stream")).status_code == 429
            # without waiting, creating is not held back; another account is not either
            r = await client.post("/v1/models/alice/echo/predictions", json={"input": {"text": "x"}})
            assert r.status_code == 201
            slots.open["alice"] = 1
            r = await client.get(f"/v1/predictions/{pid}/stream")
            assert r.status_code == 200 and "event: done" in r.text
            assert slots.open == {"alice": 1}  # the finished stream gave its slot back
    asyncio.run(go())


def test_open_slots_are_taken_before_a_response_starts_and_given_back_once():
    import gc

    from router.openslots import OpenSlots
    from vendo_core.errors import TooManyOpen

    slots = OpenSlots(2)
    a, b = slots.acquire("alice"), slots.acquire("alice")
    with pytest.raises(TooManyOpen):
        slots.acquire("alice")  # a burst cannot slip under the cap: the count moved at acquire
    slots.acquire("bob").release()
    a.release()
    a.release()  # twice is once
    assert slots.open == {"alice": 1}

    import weakref

    async def never_started():
        yield "x"

    body = never_started()
    weakref.finalize(body, b.release)  # as the stream route does for a response never streamed
    del body
    gc.collect()
    assert slots.open == {}


def test_the_admin_namespace_says_nothing_about_bodies_to_others(tmp_path):
    async def go():
        client, _ = await _app(tmp_path)  # alice: not an admin
        async with client:
            for body in (b"{not json", b"\xff\xfe", b'{"username": 5}'):
                r = await client.post("/v1/admin/accounts", content=body,
                                      headers={"Content-Type": "application/json"})
                assert r.status_code == 404, (body, r.text)
                assert r.headers["content-type"] == "application/problem+json"
            r = await client.post("/v1/admin/accounts", content=b"{not json",
                                  headers={"Content-Type": "application/json", "Authorization": "Bearer wrong"})
            assert r.status_code == 401
            # an admin is told what is wrong with the body
            root = await client._transport.app.state.runtime.registry.create_account("root", roles=("admin",))
            r = await client.post("/v1/admin/accounts", content=b"{not json",
                                  headers={"Content-Type": "application/json", "Authorization": f"Bearer {root}"})
            assert r.status_code == 422 and r.json()["invalid_fields"][0]["field"] == "body"
            # outside the admin namespace a bad body still names its field
            r = await client.post("/v1/models", content=b"{not json", headers={"Content-Type": "application/json"})
            assert r.status_code == 422 and r.json()["invalid_fields"][0]["field"] == "body"
    asyncio.run(go())
