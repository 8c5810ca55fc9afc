"""Wire-contract edges that break the official client when they are wrong (replicate-api.md §15)."""

from __future__ import annotations

import pytest
import redis

pytestmark = pytest.mark.integration


def test_prefer_wait_timeout_answers_starting_without_output(cluster, examples):
    with cluster.http() as h:
        r = h.post("/v1/predictions", json={"version": examples["slow"], "input": {"steps": 40, "step_s": 0.1}},
                   headers={"Prefer": "wait=1"})
        assert r.status_code == 201
        body = r.json()
        assert body["status"] == "starting" and body["output"] is None
        assert r.headers["Location"] == body["urls"]["get"]
        h.post(f"/v1/predictions/{body['id']}/cancel")


def test_prefer_wait_over_60_is_clamped(cluster, examples):
    with cluster.http() as h:
        r = h.post("/v1/predictions", json={"version": examples["hello-world"], "input": {}},
                   headers={"Prefer": "wait=120"})
        assert r.status_code == 201 and r.json()["status"] == "succeeded"
        assert r.headers["Preference-Applied"] == "wait=60"


def test_sse_replays_everything_after_completion(cluster, examples):
    c = cluster.client()
    p = c.predictions.create(version=examples["stream"], input={"prompt": "x y z", "max_tokens": 4, "delay": 0})
    p.wait()
    with cluster.http() as h:
        r = h.get(p.urls["stream"], headers={"Accept": "text/event-stream"})
    assert r.headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in r.text.split("\n\n") if b.strip()]
    events = [next(line[7:] for line in b.split("\n") if line.startswith("event: ")) for b in blocks]
    assert events.count("output") == 4 and events[-1] == "done"
    assert all("\nid: " in "\n" + b for b in blocks)


def test_errors_are_problem_json(cluster, examples):
    with cluster.http() as h:
        r = h.get("/v1/predictions/doesnotexist")
        assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["status"] == 404
        r = h.post("/v1/predictions", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and r.json()["invalid_fields"][0]["field"] == "body"
        r = h.post("/v1/predictions", json={"input": {}})
        assert r.status_code == 422 and "version" in r.json()["detail"]
        r = h.post("/v1/predictions", json={"version": "nobody/nothing", "input": {}})
        assert r.status_code == 404
        r = h.post("/v1/predictions", json={"version": examples["hello-world"], "input": "text"})
        assert r.status_code == 422 and r.json()["invalid_fields"][0]["field"] == "input"
        r = h.get("/v1/predictions/")  # no redirect for a trailing slash
        assert r.status_code == 404


def test_cancel_of_a_finished_prediction_returns_it_unchanged(cluster, examples):
    c = cluster.client()
    p = c.predictions.create(version=examples["hello-world"], input={})
    p.wait()
    q = c.predictions.cancel(p.id)
    assert q.status == "succeeded" and q.output == p.output


def test_owner_name_and_full_ref_in_version_field(cluster, examples):
    with cluster.http() as h:
        for ref in ("alice/hello-world", f"alice/hello-world:{examples['hello-world']}"):
            r = h.post("/v1/predictions", json={"version": ref, "input": {"text": "ref"}},
                       headers={"Prefer": "wait"})
            assert r.status_code == 201 and r.json()["output"] == "hello ref"


def test_private_models_are_404_to_others(cluster, tmp_path):
    from tests.integration.conftest import EXAMPLES
    from tests.integration.test_lifecycle import variant

    vid = cluster.push(variant(EXAMPLES / "hello-world", tmp_path / "p", "private"), "alice/private-hello",
                       visibility="private")
    with cluster.http("bob") as h:
        assert h.get("/v1/models/alice/private-hello").status_code == 404
        r = h.post("/v1/predictions", json={"version": vid, "input": {}})
        assert r.status_code == 404
    with cluster.http("bob") as h:
        r = h.post("/v1/models/alice/x/versions", content=b"x", headers={"Content-Type": "application/gzip"})
        assert r.status_code == 404


def test_same_package_under_another_model_is_another_version(cluster, examples):
    """A version's identity includes its model: the same package pushed to a second model (a fork,
    a staging copy) is a new version there, runs, and its bytes are stored once; pushed again to
    the same model it is the same version."""
    from tests.integration.conftest import EXAMPLES
    from vendo_core.ids import version_id
    from vendo_core.keys import Keys, package_key
    from vendo_core.packaging import pack_project
    from vendo_core.storage import open_store

    data, digest = pack_project(EXAMPLES / "hello-world")
    original = examples["hello-world"]
    assert original == version_id("alice/hello-world", digest)
    with cluster.http() as h:
        r = h.post("/v1/models/alice/copy/versions", content=data, headers={"Content-Type": "application/gzip"})
        assert r.status_code == 201, r.text
        copy = r.json()["id"]
        assert copy == version_id("alice/copy", digest) and copy != original
        again = h.post("/v1/models/alice/copy/versions", content=data,
                       headers={"Content-Type": "application/gzip"})
        assert again.status_code == 201 and again.json()["id"] == copy
    client = cluster.client()
    assert client.run(f"alice/copy:{copy}", input={"text": "fork"}) == "hello fork"
    assert client.models.get("alice/copy").latest_version.id == copy
    assert client.models.get("alice/hello-world").latest_version.id == original
    assert open_store(cluster.settings).exists(package_key(digest))
    r = redis.Redis.from_url(cluster.redis_url, decode_responses=True)
    keys = Keys(cluster.settings.redis_prefix)
    assert {r.hget(keys.version(v), "package_key") for v in (original, copy)} == {package_key(digest)}


def test_a_decompression_bomb_push_is_refused(cluster, tmp_path):
    from tests.unit.test_packaging import _bomb

    data = _bomb(tmp_path, 300 * 2**20)
    with cluster.http() as h:
        r = h.post("/v1/models/alice/bomb/versions", content=data, headers={"Content-Type": "application/gzip"})
        assert r.status_code == 422 and "decompression bomb" in r.json()["detail"], r.text
        assert h.get("/v1/models/alice/bomb").status_code == 404  # nothing was registered


def test_one_accounts_open_streams_never_fail_another_accounts_requests(cluster, examples):
    """Past its cap an account's new streams get 429s (with Retry-After); they hold their own
    Redis pool, so another account's requests meanwhile answer as usual."""
    import asyncio

    import httpx

    cap = cluster.settings.max_open_per_account
    with cluster.http("bob") as h:
        slow = h.post("/v1/predictions", json={"version": examples["slow"],
                                               "input": {"steps": 600, "step_s": 0.1}}).json()

    async def go():
        limits = httpx.Limits(max_connections=cap + 40)
        bob = httpx.AsyncClient(base_url=cluster.url, limits=limits, timeout=60,
                                headers={"Authorization": f"Bearer {cluster.tokens['bob']}"})
        alice = httpx.AsyncClient(base_url=cluster.url, timeout=30,
                                  headers={"Authorization": f"Bearer {cluster.tokens['alice']}"})
        opened: asyncio.Queue = asyncio.Queue()

        async def stream():
            async with bob.stream("GET", f"/v1/predictions/{slow['id']}/stream") as r:
                await opened.put((r.status_code, r.headers.get("retry-after")))
                if r.status_code == 200:
                    async for _ in r.aiter_raw():
                        pass

        tasks = [asyncio.create_task(stream()) for _ in range(cap + 20)]
        answers = [await opened.get() for _ in tasks]
        # meanwhile, another account is served as usual
        for _ in range(5):
            assert (await alice.get("/v1/predictions")).status_code == 200
            r = await alice.post("/v1/predictions", json={"version": examples["hello-world"], "input": {}},
                                 headers={"Prefer": "wait=30"})
            assert r.status_code == 201 and r.json()["status"] == "succeeded"
        await bob.post(f"/v1/predictions/{slow['id']}/cancel")
        await asyncio.gather(*tasks)
        await bob.aclose()
        await alice.aclose()
        return answers

    answers = asyncio.run(go())
    ok = [a for a in answers if a[0] == 200]
    refused = [a for a in answers if a[0] == 429]
    assert len(ok) == cap and len(refused) == 20 and all(ra == "1" for _, ra in refused)
