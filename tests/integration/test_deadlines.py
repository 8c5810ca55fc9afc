"""`Cancel-After`: a prediction is canceled at its deadline, running or still queued, and a router
restart does not lose the deadline. The client has no parameter for the header, so creates go
through httpx."""

from __future__ import annotations

import time

import pytest

from vendo_core.store import parse_iso

pytestmark = pytest.mark.integration

LONG = {"steps": 600, "step_s": 0.1}


def _create(cluster, version: str, cancel_after: str | None, inp: dict = LONG) -> dict:
    headers = {"Cancel-After": cancel_after} if cancel_after else {}
    with cluster.http() as h:
        r = h.post("/v1/predictions", json={"version": version, "input": inp}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def _until(cluster, pid: str, done, timeout_s: float = 60):
    p = cluster.client().predictions.get(pid)
    deadline = time.monotonic() + timeout_s
    while not done(p) and time.monotonic() < deadline:
        time.sleep(0.2)
        p.reload()
    assert done(p), (p.status, p.error)
    return p


def _terminal(p) -> bool:
    return p.status in ("succeeded", "failed", "canceled")


def test_running_and_queued_predictions_are_canceled_at_their_deadline(cluster, examples):
    running = _create(cluster, examples["slow"], "20s")
    assert parse_iso(running["deadline"]) == pytest.approx(parse_iso(running["created_at"]) + 20, abs=0.01)
    _until(cluster, running["id"], lambda p: p.status == "processing")
    # one replica, one prediction at a time: this one waits in the queue behind `running`
    queued = _create(cluster, examples["slow"], "5s")
    q = _until(cluster, queued["id"], _terminal, timeout_s=30)
    assert q.status == "canceled" and q.started_at is None
    lateness = parse_iso(q.completed_at) - parse_iso(queued["created_at"])
    assert 5 <= lateness < 8
    assert cluster.client().predictions.get(running["id"]).status == "processing"

    r = _until(cluster, running["id"], _terminal, timeout_s=40)
    assert r.status == "canceled" and r.started_at is not None
    assert 20 <= parse_iso(r.completed_at) - parse_iso(running["created_at"]) < 23


def test_a_deadline_survives_a_router_restart(cluster, examples):
    p = _create(cluster, examples["slow"], "6s")
    cluster.deploy_router()  # a new router replica; the old one's memory is gone
    done = _until(cluster, p["id"], _terminal, timeout_s=40)
    assert done.status == "canceled"
    assert parse_iso(done.completed_at) - parse_iso(p["created_at"]) >= 6


def test_a_prediction_that_finishes_first_is_untouched(cluster, examples):
    p = _create(cluster, examples["hello-world"], "1m", {"text": "quick"})
    done = _until(cluster, p["id"], _terminal)
    assert done.status == "succeeded" and done.output == "hello quick"


@pytest.mark.parametrize("value", ["3s", "4", "soon", "1x", ""])
def test_invalid_cancel_after_is_422_naming_the_header(cluster, examples, value):
    with cluster.http() as h:
        r = h.post("/v1/predictions", json={"version": examples["hello-world"], "input": {}},
                   headers={"Cancel-After": value})
    assert r.status_code == 422
    assert r.json()["invalid_fields"][0]["field"] == "Cancel-After"
