"""The web app's pages in-process (no Ray, no browser; the browser tests are
tests/integration/test_web.py): signing in and out with CSRF, the dashboard, a prediction page,
what untrusted output turns into, and where a session may and may not act."""

from __future__ import annotations

import asyncio
import re

import httpx

from router.app import create_app
from router.runtime import Runtime
from router.sessions import Sessions
from router.web.routes import ago, outputs
from tests.unit.fakes import FakeApps, FakeHashes, FakeRegistry, FakeStore, NoLimits, replica
from tests.unit.test_services import SCHEMA, VID
from vendo_core.files import Files
from vendo_core.keys import Keys
from vendo_core.records import Version
from vendo_core.settings import Settings
from vendo_core.storage import open_store


async def _app(tmp_path, output="hi"):
    settings = Settings(data_dir=tmp_path, redis_prefix="t:")
    store, registry = FakeStore(), FakeRegistry()
    token = await registry.create_account("alice")
    other = await registry.create_account("bob")
    await registry.create_model("alice", "echo", "public")
    await registry.add_version(Version(id=VID, model="alice/echo", openapi_schema=SCHEMA, package_key="p"))
    objects = open_store(settings)
    rt = Runtime(settings, store=store, registry=registry, objects=objects, apps=FakeApps(replica(store, output)),
                 files=Files(None, Keys("t:"), objects), limiter=NoLimits())
    rt.sessions = Sessions(FakeHashes(), Keys("t:"), registry, 3600)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(rt)), base_url="http://vendo.test")
    return client, token, other


async def _sign_in(client, token):
    page = await client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    return await client.post("/login", data={"token": token, "csrf_token": csrf, "next": "/dashboard"})


def test_sign_in_needs_the_forms_csrf_and_a_valid_token(tmp_path):
    async def go():
        client, token, _ = await _app(tmp_path)
        async with client:
            page = await client.get("/login")
            assert 'for="token">API token</label>' in page.text and ">Sign in</button>" in page.text
            assert "script-src 'self'" in page.headers["content-security-policy"]
            r = await client.post("/login", data={"token": token, "csrf_token": "forged"})
            assert r.status_code == 403 and "vendo_session" not in r.cookies
            bad = await _sign_in(client, "wrong")
            assert bad.status_code == 401 and "That API token is not valid." in bad.text
            ok = await _sign_in(client, token)
            assert ok.status_code == 303 and ok.headers["location"] == "/dashboard"
            set_cookie = ok.headers["set-cookie"]
            assert "vendo_session=" in set_cookie and "HttpOnly" in set_cookie and "SameSite=lax" in set_cookie
            assert (await client.get("/login")).status_code == 303  # signed in: onward
    asyncio.run(go())


def test_next_is_a_path_on_this_site_only(tmp_path):
    async def go():
        client, token, _ = await _app(tmp_path)
        async with client:
            page = await client.get("/login", params={"next": "//evil.example/x"})
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
            r = await client.post("/login", data={"token": token, "csrf_token": csrf, "next": "https://evil.example"})
            assert r.headers["location"] == "/dashboard"
    asyncio.run(go())


def test_dashboard_and_prediction_page_escape_what_models_write(tmp_path):
    async def go():
        client, token, other = await _app(tmp_path, output="<script>alert(1)</script>")
        async with client:
            assert (await client.get("/dashboard")).headers["location"].startswith("/login?next=")
            await _sign_in(client, token)
            csrf = re.search(r'data-csrf="([^"]+)"', (await client.get("/dashboard")).text).group(1)
            r = await client.post("/v1/predictions", json={"version": VID, "input": {"text": "<b>x</b>"}},
                                  headers={"Prefer": "wait=5"})
            assert r.status_code == 403  # a session's write without the CSRF header
            r = await client.post("/v1/predictions", json={"version": VID, "input": {"text": "<b>x</b>"}},
                                  headers={"Prefer": "wait=5", "X-CSRF-Token": csrf})
            assert r.status_code == 201 and r.json()["source"] == "web", r.text
            pid = r.json()["id"]
            dash = (await client.get("/dashboard")).text
            assert f'href="/p/{pid}"' in dash and "<td>Web</td>" in dash and "alice/echo" in dash
            page = (await client.get(f"/p/{pid}")).text
            assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
            assert "&lt;b&gt;x&lt;/b&gt;" in page
            assert r.json()["urls"]["web"] == f"http://vendo.test/p/{pid}"
            # another account: the page does not exist
            async with httpx.AsyncClient(transport=client._transport, base_url="http://vendo.test") as bob:
                await _sign_in(bob, other)
                assert (await bob.get(f"/p/{pid}")).status_code == 404
            # sign out ends the session on the server, not just in this browser
            sid = client.cookies.get("vendo_session")
            assert (await client.post("/logout", data={"csrf_token": csrf})).status_code == 303
            async with httpx.AsyncClient(transport=client._transport, base_url="http://vendo.test",
                                         cookies={"vendo_session": sid}) as replay:
                assert (await replay.get("/v1/predictions")).status_code == 401
                assert (await replay.get(f"/v1/predictions/{pid}")).status_code == 404  # as to anyone
                assert (await replay.get("/dashboard")).status_code == 303
    asyncio.run(go())


def test_outputs_render_by_type():
    assert outputs(None) == []
    assert outputs(["the", " quick", " fox"]) == [{"kind": "text", "text": "the quick fox"}]
    got = outputs(["http://h/v1/storage/p/out-0.png?expires=1&sig=s", "http://h/a.wav", "http://h/b.mp4",
                   "http://h/c.bin"])
    assert [o["kind"] for o in got] == ["image", "audio", "video", "file"] and got[0]["name"] == "out-0.png"
    assert outputs({"a": 1}) == [{"kind": "json", "text": '{\n  "a": 1\n}'}]


def test_ago():
    assert ago("2026-01-01T00:00:10Z", now=1767225620.0) == "10 seconds ago"
    assert ago("2026-01-01T00:00:00Z", now=1767225600.0 + 3 * 3600) == "3 hours ago"
    assert ago(None) == ""


def test_the_run_form_has_a_control_for_every_cog_input_type():
    from deployments.cog_runtime import openapi_schema
    from router.web.form import fields

    got = {f.name: f for f in fields(openapi_schema("tests/fixtures/predictors/all_inputs"))}
    order = list(got)
    assert order[:4] == ["text", "times", "ratio", "flag"]  # x-order
    kinds = {n: f.kind for n, f in got.items()}
    assert kinds == {"text": "text", "times": "integer", "ratio": "number", "flag": "checkbox", "style": "select",
                     "level": "select", "code": "text", "note": "text", "maybe": "integer", "token": "password",
                     "tags": "lines", "files": "files", "image": "file", "seed": "integer", "old": "text",
                     "options": "json", "mixed": "json"}
    assert got["times"].slider and (got["times"].minimum, got["times"].maximum, got["times"].value) == (1, 5, "2")
    assert not got["seed"].slider and got["text"].required and got["text"].max_length == 20
    assert got["style"].choices == ["plain", "fancy"] and got["level"].choices == [1, 2, 3]
    assert got["image"].accept == "image/*" and got["tags"].value == "a" and got["flag"].value == "false"
    assert got["text"].description == "Some text" and got["old"].deprecated


def test_model_page_form_readme_and_snippets(tmp_path):
    async def go():
        client, token, other = await _app(tmp_path)
        rt_registry = client._transport.app.state.runtime.registry
        v = rt_registry.versions[VID]
        rt_registry.versions[VID] = v.model_copy(update={"readme": "# Echo\n\n<script>x()</script> [a](javascript:x) **b**"})
        async with client:
            assert (await client.get("/alice/echo")).headers["location"].startswith("/login?next=%2Falice%2Fecho")
            await _sign_in(client, token)
            page = await client.get("/alice/echo")
            assert page.status_code == 200
            html = page.text
            assert '<form id="run-form"' in html and f'data-version="{VID}"' in html
            assert '<label for="in-text">text</label> <span class="req">required</span>' in html
            assert ">Run</button>" in html and "replicate.run(" in html and f"alice/echo:{VID}" in html
            assert "<h1>Echo</h1>" in html and "<strong>b</strong>" in html
            assert "<script>x()</script>" not in html and "&lt;script&gt;x()&lt;/script&gt;" in html
            assert 'href="javascript' not in html
            assert (await client.get("/alice/nothing")).status_code == 404
            unknown = await client.get("/v1/nothing")  # the API's namespace keeps its problem answers
            assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/problem+json"
        async with httpx.AsyncClient(transport=client._transport, base_url="http://vendo.test") as bob:
            await _sign_in(bob, other)
            assert (await bob.get("/alice/echo")).status_code == 200  # public
    asyncio.run(go())



def test_the_script_and_stylesheet_are_served(tmp_path):
    async def go():
        client, _, _ = await _app(tmp_path)
        async with client:
            js, css = await client.get("/static/app.js"), await client.get("/static/app.css")
            assert js.status_code == 200 and "javascript" in js.headers["content-type"]
            assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    asyncio.run(go())
