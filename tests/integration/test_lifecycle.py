"""Serve lifecycle: scale to zero, idle apps deleted, working set only, dead replicas, GPU
fractions, failed setup. Serve's own state changes have no event to wait on, so these poll
`serve.status()` with a deadline."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from ray import serve

from tests.integration.conftest import EXAMPLES, FIXTURES
from vendo_core.ids import app_name

pytestmark = pytest.mark.integration


def variant(src: Path, dest: Path, tag: str) -> Path:
    """A copy of a Cog project with different contents (so a different version id)."""
    shutil.copytree(src, dest)
    with open(dest / "predict.py", "a") as f:
        f.write(f"\n# variant {tag}\n")
    return dest


def replicas(app: str) -> dict[str, int] | None:
    from router.apps import replica_counts

    st = serve.status().applications.get(app)
    return None if st is None else replica_counts(st)


def wait_for(pred, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def wait_status(pred, statuses, timeout_s=60):
    def reached() -> bool:
        pred.reload()
        if pred.status not in statuses and pred.status in ("succeeded", "failed", "canceled"):
            raise AssertionError(f"{pred.id} ended {pred.status} ({pred.error}) waiting for {statuses}")
        return pred.status in statuses

    wait_for(reached, timeout_s, f"status in {statuses}")


def test_idle_version_scales_to_zero_and_cold_starts(cluster, examples, tmp_path):
    c = cluster.client()
    vid = cluster.push(variant(EXAMPLES / "hello-world", tmp_path / "h", "zero"), "alice/zero")
    app = app_name(vid)
    assert replicas(app) is None  # pushed, not deployed: costs Serve nothing
    assert c.run(f"alice/zero:{vid}", input={"text": "a"}) == "hello a"
    assert replicas(app).get("running") == 1
    wait_for(lambda: replicas(app) is not None and not replicas(app).get("running"), 60, "zero replicas")
    p = c.predictions.create(version=vid, input={"text": "b"})
    assert p.status == "starting"
    p.wait()
    assert p.status == "succeeded" and p.output == "hello b"


def test_working_set_not_catalogue(cluster, tmp_path):
    """300 pushed versions, 3 used: exactly those 3 have Serve applications."""
    src = EXAMPLES / "hello-world"
    vids = []
    for i in range(300):
        vids.append(cluster.push(variant(src, tmp_path / f"v{i}", f"catalogue {i}"), "alice/catalogue"))
    assert len(set(vids)) == 300
    c = cluster.client()
    for vid in vids[:3]:
        assert c.run(f"alice/catalogue:{vid}", input={"text": "x"}) == "hello x"
    apps = set(serve.status().applications)
    assert {app_name(v) for v in vids} & apps == {app_name(v) for v in vids[:3]}


def test_idle_app_is_deleted_then_recreated(cluster, examples, tmp_path):
    c = cluster.client()
    vid = cluster.push(variant(EXAMPLES / "hello-world", tmp_path / "h", "reap"), "alice/reap")
    app = app_name(vid)
    assert c.run(f"alice/reap:{vid}", input={"text": "1"}) == "hello 1"
    cluster.deploy_router(app_idle_s=1.0, reaper_interval_s=1.0)
    try:
        wait_for(lambda: replicas(app) is None, 90, "the idle app to be deleted")
        assert c.run(f"alice/reap:{vid}", input={"text": "2"}) == "hello 2"
        assert replicas(app) is not None
    finally:
        cluster.deploy_router()


def test_replica_killed_mid_prediction(cluster, examples):
    import ray

    c = cluster.client()
    p = c.predictions.create(version=examples["slow"], input={"steps": 600, "step_s": 0.1})
    wait_status(p, ("processing",))
    app = app_name(examples["slow"])
    names = [a for a in ray.util.list_named_actors(all_namespaces=True)
             if app in a["name"] and "model" in a["name"]]
    assert names, "no replica actor found"
    for a in names:
        ray.kill(ray.get_actor(a["name"], namespace=a["namespace"]), no_restart=True)
    t0 = time.monotonic()
    wait_status(p, ("failed",), timeout_s=30)
    assert time.monotonic() - t0 < 30
    assert "replica" in p.error
    q = c.predictions.create(version=examples["slow"], input={"steps": 1, "step_s": 0})
    q.wait()
    assert q.status == "succeeded"


def test_two_half_gpu_versions_share_one_gpu_and_a_third_waits(cluster, tmp_path):
    """The session's Ray has one logical GPU; `gpu-half` asks for 0.5 of it."""
    c = cluster.client()
    vids = [cluster.push(variant(FIXTURES / "cancel", tmp_path / f"g{i}", f"gpu {i}"), f"alice/gpu{i}",
                         hardware="gpu-half") for i in range(3)]
    first = [c.predictions.create(version=v, input={"seconds": 60}) for v in vids[:2]]
    for p in first:
        wait_status(p, ("processing",), timeout_s=90)
    third = c.predictions.create(version=vids[2], input={"seconds": 0.1})
    # both GPU halves are taken: the third cannot get a replica while they run
    time_limit = time.monotonic() + 5
    while time.monotonic() < time_limit:
        third.reload()
        assert third.status == "starting"
        time.sleep(0.5)
    for p in first:
        c.predictions.cancel(p.id)
    wait_status(third, ("succeeded",), timeout_s=90)


def test_failed_setup_fails_predictions_and_shows_in_status(cluster):
    c = cluster.client()
    vid = cluster.push(FIXTURES / "setup_fails", "alice/setup-fails")
    p = c.predictions.create(version=vid, input={})
    p.wait()
    assert p.status == "failed" and "weights are missing" in p.error
    with cluster.http() as h:
        rows = h.get("/v1/status").json()["versions"]
    row = next(r for r in rows if r["version"] == vid)
    assert row["state"] == "setup failed" and "weights are missing" in row["setup_error"]


def test_no_prediction_waits_or_runs_forever(cluster, tmp_path):
    """A prediction nobody can place fails after max_queue_s; one that runs past max_prediction_s
    is stopped and fails. Both limits come from the router's settings. The queue limit leaves room
    for the long one's cold start on a busy machine (it must start to run past its limit)."""
    c = cluster.client()
    cluster.deploy_router(max_queue_s=10.0, lease_s=3.0, max_prediction_s=3.0)
    try:
        stuck = cluster.push(variant(EXAMPLES / "hello-world", tmp_path / "q", "no room"), "alice/no-room",
                             hardware="gpu-x8")
        p = c.predictions.create(version=stuck, input={})
        long = cluster.push(variant(FIXTURES / "cancel", tmp_path / "l", "too long"), "alice/too-long")
        q = c.predictions.create(version=long, input={"seconds": 60})
        wait_status(p, ("failed",), timeout_s=60)
        assert "No capacity" in p.error
        wait_status(q, ("failed",), timeout_s=60)
        assert "longer than the 3s limit" in q.error
    finally:
        serve.delete(app_name(stuck))
        cluster.deploy_router()


def test_two_routers_creating_one_app_at_once(cluster, tmp_path):
    """Two router replicas both see a never-deployed version at the same moment: one creates its
    app, the other waits on the lock and uses it; every prediction succeeds."""
    from concurrent.futures import ThreadPoolExecutor

    cluster.deploy_router(router_replicas=2)
    try:
        vid = cluster.push(variant(EXAMPLES / "hello-world", tmp_path / "two", "two routers"), "alice/two")

        def create(i: int) -> dict:
            with cluster.http() as h:
                return h.post("/v1/predictions", json={"version": vid, "input": {"text": str(i)}},
                              headers={"Prefer": "wait"}).json()

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(create, range(8)))
        assert [r["status"] for r in results] == ["succeeded"] * 8, [r.get("error") for r in results]
        assert sorted(r["output"] for r in results) == sorted(f"hello {i}" for i in range(8))
        st = serve.status().applications[app_name(vid)]
        assert list(st.deployments) == ["model"]
    finally:
        cluster.deploy_router()
