"""The working set on a full cluster (real Ray, real Serve): a prediction whose replica cannot be
placed makes an idle replica of another version go to zero, least recently used first, and runs
within a cold start; a busy or warm-pinned replica is never evicted."""

from __future__ import annotations

import time

import pytest
import ray
from ray import serve

from router.apps import replica_counts
from tests.integration.conftest import EXAMPLES
from vendo_core.ids import DEPLOYMENT_APP_PREFIX, VERSION_APP_PREFIX, app_name, deployment_app_name

WIDE = 6  # CPUs of the cpu-wide SKU (tests/fixtures/hardware.yaml)


def _running(app: str) -> int:
    st = serve.status().applications.get(app)
    return replica_counts(st).get("running", 0) if st is not None else 0


def _settle(timeout_s: float = 30.0) -> None:
    """Wait until no earlier test's model replica holds CPUs. Room measured while one is still
    up (running or stopping) is undercounted: its CPUs come free mid-test, and a replica the test
    meant to keep out finds room without evicting anything."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        busy = [a for a, st in serve.status().applications.items()
                if a.startswith((VERSION_APP_PREFIX, DEPLOYMENT_APP_PREFIX)) and sum(replica_counts(st).values())]
        if not busy:
            return
        time.sleep(0.2)
    for a in busy:  # idle ones still up (a long downscale delay): this test needs their room
        serve.delete(a)


@pytest.fixture
def room():
    """How many cpu-wide replicas fit once other tests' replicas have gone."""
    _settle()
    cpus = ray.available_resources().get("CPU", 0)
    while True:  # a stopped replica's CPUs reach the resource view a report or two later
        time.sleep(0.5)
        now = ray.available_resources().get("CPU", 0)
        if now <= cpus:
            break
        cpus = now
    fit = int(cpus // WIDE)
    if fit < 1:
        pytest.skip("the test cluster has no room for a cpu-wide replica right now")
    return fit


def test_a_waiting_prediction_evicts_the_least_recently_used_idle_app(cluster, room):
    c = cluster.client()
    vids = [cluster.push(EXAMPLES / "hello-world", f"alice/wide-{i}", hardware="cpu-wide", downscale_delay_s=600)
            for i in range(room + 1)]
    try:
        for i, vid in enumerate(vids[:room]):  # fill the cluster, oldest first
            assert c.run(f"alice/wide-{i}:{vid}", input={"text": str(i)}) == f"hello {i}"
        assert all(_running(app_name(v)) == 1 for v in vids[:room])
        time.sleep(1.2)  # the rule: idle for evict_idle_s (1 s) before it may be evicted
        t0 = time.monotonic()
        assert c.run(f"alice/wide-{room}:{vids[room]}", input={"text": "late"}) == "hello late"
        took = time.monotonic() - t0
        # a cold start (a few seconds here) plus a margin; without eviction it waits out a 600 s downscale
        assert took < 30, took
        apps = serve.status().applications
        assert app_name(vids[0]) not in apps  # the least recently used one went
        states = {v[:8]: _running(app_name(v)) for v in vids[1:]}
        assert all(n == 1 for n in states.values()), (states, ray.available_resources().get("CPU"))
        with cluster.http() as h:
            assert "vendo_evictions_total" in h.get("/metrics").text
    finally:
        for v in vids:  # give the room back
            if app_name(v) in serve.status().applications:
                serve.delete(app_name(v))


def test_busy_and_pinned_replicas_are_never_evicted(cluster, room):
    c = cluster.client()
    names = [f"pinned-{i}" for i in range(room)]
    hello = cluster.push(EXAMPLES / "hello-world", "alice/wide-pin", hardware="cpu-wide")
    for name in names:
        c.deployments.create(name=name, model="alice/wide-pin", version=hello, hardware="cpu-wide",
                             min_instances=1, max_instances=1)
    try:
        for name in names:
            c.deployments.predictions.create(f"alice/{name}", input={"text": "warm"}).wait()
        late = cluster.push(EXAMPLES / "hello-world", "alice/wide-late", hardware="cpu-wide")
        p = c.predictions.create(version=late, input={"text": "x"})
        deadline = time.monotonic() + 6  # several eviction rounds (every 0.25 s after 0.5 s of waiting)
        while time.monotonic() < deadline:
            p.reload()
            assert p.status == "starting"
            time.sleep(0.5)
        assert all(_running(deployment_app_name("alice", n)) == 1 for n in names)
        p.cancel()
    finally:
        for name in names:
            c.deployments.delete("alice", name)


def _ts(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_one_accounts_queue_does_not_starve_another(cluster):
    """Alice queues twenty 0.2 s predictions on a one-replica model; bob's prediction on another
    model runs at once, and his on the same model waits for its round-robin share, not her queue."""
    alice, bob = cluster.client(), cluster.client("bob")
    slow = cluster.push(EXAMPLES / "slow", "alice/queue-slow", visibility="public")
    other = cluster.push(EXAMPLES / "hello-world", "alice/queue-other", visibility="public")
    job = {"steps": 1, "step_s": 0.2}
    try:
        assert alice.run(f"alice/queue-slow:{slow}", input={"steps": 1, "step_s": 0}).startswith("ran 1")
        assert bob.run(f"alice/queue-other:{other}", input={"text": "warm"}) == "hello warm"
        mine = [alice.predictions.create(version=slow, input=job) for _ in range(20)]
        # another model: not behind her queue (it finishes while most of hers still wait)
        assert bob.run(f"alice/queue-other:{other}", input={"text": "b"}) == "hello b"
        waiting = sum(1 for p in mine if alice.predictions.get(p.id).status == "starting")
        assert waiting >= 10, waiting
        theirs = bob.predictions.create(version=slow, input=job)
        theirs.wait()
        assert theirs.status == "succeeded", theirs.error
        for p in mine:
            p.wait()
        assert all(p.status == "succeeded" for p in mine), [p.error for p in mine if p.status != "succeeded"]
        created, started = _ts(theirs.created_at), _ts(theirs.started_at)
        overtook = [p for p in mine if created < _ts(p.started_at) < started]
        after = [p for p in mine if _ts(p.started_at) > started]
        # her queue was still long, yet only her share (the slot it was waiting for, and one
        # more in the round) started between his create and his start
        assert len(after) >= 5, len(after)
        assert len(overtook) <= 3, len(overtook)
    finally:
        for v in (slow, other):
            if app_name(v) in serve.status().applications:
                serve.delete(app_name(v))


def test_a_queue_longer_than_one_replica_takes_scales_the_version_to_its_ceiling(cluster):
    """The router's queue hands Serve as many calls as the version's replicas at their ceiling
    take, so Serve's autoscaler sees the demand and adds replicas up to max_replicas (2)."""
    c = cluster.client()
    vid = cluster.push(EXAMPLES / "slow", "alice/queue-scales", max_replicas=2)
    app = app_name(vid)
    try:
        ps = [c.predictions.create(version=vid, input={"steps": 2, "step_s": 1.0}) for _ in range(8)]
        deadline, most = time.monotonic() + 60, 0
        while time.monotonic() < deadline and most < 2:
            most = max(most, _running(app))
            time.sleep(0.2)
        assert most == 2, (most, replica_counts(serve.status().applications[app]))
        for p in ps:
            p.wait()
        assert [p.status for p in ps] == ["succeeded"] * 8, [(p.status, p.error) for p in ps]
    finally:
        if app in serve.status().applications:
            serve.delete(app)
