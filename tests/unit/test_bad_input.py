"""Bad input never gets a 500: the whole API in-process over fakes, fed what once answered 500
(deep JSON, lone surrogates, null versions, ids shaped like Redis key suffixes, junk filters,
non-JSON bodies), and the SSE framing of output that holds other line endings."""

from __future__ import annotations

import asyncio
import time

import pytest

from router.routes.predictions import sse_event
from tests.unit.test_app import _app
from vendo_core.store import now_iso, parse_iso


def _run(tmp_path, fn):
    async def go():
        client, _ = await _app(tmp_path)
        async with client:
            return await fn(client)
    return asyncio.run(go())


@pytest.mark.parametrize("body, field", [
    (b"[" * 5000 + b"]" * 5000, "body"),
    ('{"version": "alice/echo", "input": {"text": "\\ud800"}}'.encode(), "body"),
    (b'{"version": null, "input": {"text": "x"}}', "version"),
    (b'{"version": 5, "input": {"text": "x"}}', "version"),
    (b'{"version": "alice/echo", "input": []}', "input"),
    (b'["version"]', "body"),
    (b"\xff\xfe", "body"),
])
def test_malformed_creates_are_422_naming_the_field(tmp_path, body, field):
    async def go(client):
        r = await client.post("/v1/predictions", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["invalid_fields"][0]["field"] == field
    _run(tmp_path, go)


@pytest.mark.parametrize("body", [b'{"owner": ', b"\xac\xb2v", b"\xff\xfe"])
def test_malformed_bodies_of_declared_models_are_422_naming_the_body(tmp_path, body):
    """Routes whose body FastAPI parses (a pydantic model) answer as `json_body` routes do: not
    JSON, or not UTF-8 (once FastAPI's 400), is a 422 naming `body` (not the character offset)."""
    async def go(client):
        r = await client.post("/v1/models", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text
        assert r.json()["invalid_fields"][0]["field"] == "body"
        assert r.json()["invalid_fields"][0]["reason"].startswith("not valid JSON")
    _run(tmp_path, go)


def test_a_body_that_is_not_json_is_415(tmp_path):
    async def go(client):
        for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
            r = await client.post("/v1/predictions", content=b'{"version": "alice/echo"}',
                                  headers={"Content-Type": ctype})
            assert r.status_code == 415, (ctype, r.text)
        ok = await client.post("/v1/predictions", content=b'{"version": "alice/echo", "input": {"text": "x"}}',
                               headers={"Content-Type": "application/json; charset=utf-8"})
        assert ok.status_code == 201
    _run(tmp_path, go)


@pytest.mark.parametrize("pid", ["abc:events", "x" * 26 + ":events", "../../etc", "A" * 26, ""])
def test_ids_that_are_not_ours_are_404(tmp_path, pid):
    async def go(client):
        for method, path in (("GET", f"/v1/predictions/{pid}"), ("POST", f"/v1/predictions/{pid}/cancel"),
                             ("GET", f"/v1/predictions/{pid}/stream")):
            r = await client.request(method, path)
            assert r.status_code in (404, 405) and r.status_code != 500, (method, path, r.text)
    _run(tmp_path, go)


@pytest.mark.parametrize("query, field", [
    ("created_after=yesterday", "created_after"), ("created_before=2026-13-01", "created_before"),
    ("source=cli", "source"), ("created_after=" + "9" * 40, "created_after"),
])
def test_junk_list_filters_are_422(tmp_path, query, field):
    async def go(client):
        r = await client.get(f"/v1/predictions?{query}")
        assert r.status_code == 422, r.text
        assert r.json()["invalid_fields"][0]["field"] == field
    _run(tmp_path, go)


def test_list_filters_select_by_time_and_source(tmp_path):
    async def go(client):
        made = []
        for text in ("a", "b", "c"):
            r = await client.post("/v1/predictions", json={"version": "alice/echo", "input": {"text": text}})
            made.append(r.json())
            await asyncio.sleep(0.01)
        t = [parse_iso(p["created_at"]) for p in made]
        first_gap, second_gap = now_iso((t[0] + t[1]) / 2), now_iso((t[1] + t[2]) / 2)
        after = (await client.get("/v1/predictions", params={"created_after": second_gap})).json()["results"]
        before = (await client.get("/v1/predictions", params={"created_before": first_gap})).json()["results"]
        between = (await client.get("/v1/predictions", params={"created_after": first_gap,
                                                                "created_before": second_gap})).json()["results"]
        assert [p["id"] for p in after] == [made[2]["id"]]
        assert [p["id"] for p in before] == [made[0]["id"]]
        assert [p["id"] for p in between] == [made[1]["id"]]
        assert len((await client.get("/v1/predictions?source=api&cursor=")).json()["results"]) == 3
        assert (await client.get("/v1/predictions?source=web")).json()["results"] == []
        future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        assert (await client.get("/v1/predictions", params={"created_after": future})).json()["results"] == []
    _run(tmp_path, go)


def test_sse_data_lines_split_on_every_line_ending():
    event = sse_event("output", "1-0", "progress 0\rdone 0\r\nlast\nend")
    assert event == ("event: output\nid: 1-0\n"
                     "data: progress 0\ndata: done 0\ndata: last\ndata: end\n\n")
    assert sse_event("logs", "2-0", "a line\n") == "event: logs\nid: 2-0\ndata: a line\n\n"


def test_every_error_survives_pickling_as_itself():
    """A Serve handle call carries the router's error to the caller pickled: every VendoError,
    whatever its own arguments, arrives as itself with its problem details."""
    import pickle

    from vendo_core import errors

    samples = [errors.InvalidInput("repeat", "fails constraint <= 10"), errors.Unauthenticated(),
               errors.NotFound("Prediction", "abc"), errors.RateLimited(3, bucket="creates", limit_per_min=5)]
    for e in samples:
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is type(e) and back.problem() == e.problem() and str(back) == str(e)
        assert back.headers() == e.headers()
