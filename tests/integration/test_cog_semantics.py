"""Cog projects behave under vendo as they do under Cog: coercion and defaults, iterators, async,
files, metrics, errors, and a setup() that starts a subprocess."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.conftest import FIXTURES

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fixtures(cluster):
    names = ["all_inputs", "async_model", "async_generator", "generator", "metrics", "pydantic_output",
             "paths_output", "subprocess_setup", "concat", "shadowing"]
    return {n: cluster.push(FIXTURES / n, f"alice/{n.replace('_', '-')}") for n in names}


def sync_create(cluster, vid: str, inp: dict, wait: int = 60) -> dict:
    with cluster.http() as h:
        r = h.post("/v1/predictions", json={"version": vid, "input": inp}, headers={"Prefer": f"wait={wait}"})
    assert r.status_code == 201, r.text
    return r.json()


def test_input_coercion_defaults_and_unknown_keys(cluster, fixtures):
    schema = cluster.client().models.get("alice/all-inputs").latest_version.openapi_schema
    props = schema["components"]["schemas"]["Input"]["properties"]
    required = schema["components"]["schemas"]["Input"].get("required", [])
    payload = {}
    for name in required:
        t = props[name].get("type")
        payload[name] = {"integer": "3", "number": 1, "boolean": True, "array": []}.get(t, "abc")
    payload["not_an_input"] = 1
    p = sync_create(cluster, fixtures["all_inputs"], payload)
    assert p["status"] == "succeeded", p.get("error")
    assert "not_an_input" not in p["input"]


def test_async_predictor_with_basemodel_and_file_output(cluster, fixtures):
    p = sync_create(cluster, fixtures["async_model"], {"text": "abc"})
    assert p["status"] == "succeeded", p.get("error")
    out = p["output"]
    assert out["text"] == "async:abc" and out["length"] == 3
    assert httpx.get(out["file"]).content == b"abc"
    assert p["metrics"]["calls"] == 1 and p["metrics"]["seen"] == ["abc"]


def test_sync_and_async_generators_stream_items(cluster, fixtures):
    for name in ("generator", "async_generator", "concat"):
        c = cluster.client()
        pred = c.predictions.create(version=fixtures[name], input={})
        events = [e for e in pred.stream()]
        kinds = [e.event.value for e in events]
        assert kinds[-1] == "done" and "output" in kinds, (name, kinds)
        pred.reload()
        assert pred.status == "succeeded", (name, pred.error)
        assert isinstance(pred.output, list) and len(pred.output) == kinds.count("output")


def test_metrics_are_collected_per_prediction(cluster, fixtures):
    p = sync_create(cluster, fixtures["metrics"], {"label": "m"})
    assert p["status"] == "succeeded", p.get("error")
    m = p["metrics"]
    assert m["steps"] == 3 and m["label"] == "m" and m["history"] == ["m"] and m["flag"] is True
    assert m["predict_time"] > 0 and m["total_time"] >= m["predict_time"]


def test_pydantic_output(cluster, fixtures):
    p = sync_create(cluster, fixtures["pydantic_output"], {"count": 3})
    assert p["output"] == {"labels": ["l0", "l1", "l2"], "best": 3}


def test_list_of_paths(cluster, fixtures):
    p = sync_create(cluster, fixtures["paths_output"], {})
    assert p["status"] == "succeeded", p.get("error")
    assert isinstance(p["output"], list) and all(u.startswith("http") for u in p["output"])
    for url in p["output"]:
        assert httpx.get(url).status_code == 200


def test_setup_that_starts_a_subprocess(cluster, fixtures):
    for text in ("one", "two"):
        p = sync_create(cluster, fixtures["subprocess_setup"], {"text": text})
        assert p["status"] == "succeeded", p.get("error")
        assert p["output"] == text.upper()


def test_project_modules_named_like_the_platforms_are_the_projects_own(cluster, fixtures):
    """A pushed project with its own core.py, utils.py, router.py, cluster/ and vendo.py gets its
    own modules in setup() and predict(), and the replica around it keeps working (its kernel is
    `vendo_core`, imported before any project is on sys.path)."""
    p = sync_create(cluster, fixtures["shadowing"], {"text": "mine"})
    assert p["status"] == "succeeded", p
    assert p["output"] == [f"the project's own {m}" for m in ("core", "utils", "router", "cluster", "vendo")] + [
        "mine"]
    again = cluster.client().run(f"alice/shadowing:{fixtures['shadowing']}", input={"text": "twice"})
    assert again[-1] == "twice"
