"""What an operator sees of a running vendo, on the real stack: the probes, `/metrics` (admins
only, parsed with Prometheus's own parser) counting exactly what was run, and a cold prediction's
`metrics` splitting its wait into boot, setup and queue time, read through the official client, and
JSON log lines that carry the prediction's ids as fields, router and replica alike."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import httpx
import pytest
import replicate
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import FIXTURES
from tests.integration.test_cli import vendo
from vendo_core.ids import app_name

pytestmark = pytest.mark.integration


def _scrape(cluster) -> dict[tuple[str, tuple], float]:
    with cluster.http("alice") as h:
        r = h.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(scraped, name: str, **labels) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def test_probes_and_who_may_read_metrics(cluster):
    assert httpx.get(f"{cluster.url}/livez").json() == {"status": "ok"}
    ready = httpx.get(f"{cluster.url}/readyz", timeout=30)
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ok", "checks": {"redis": "ok", "serve": "ok", "storage": "ok"}}
    assert httpx.get(f"{cluster.url}/metrics").status_code == 401
    with cluster.http("bob") as h:  # not an admin: there is nothing there
        assert h.get("/metrics").status_code == 404
    scraped = _scrape(cluster)
    assert _value(scraped, "vendo_redis_roundtrip_seconds") > 0
    assert ("vendo_webhook_backlog", ()) in scraped


def test_metrics_count_what_ran_and_a_cold_start_explains_its_wait(cluster):
    model = "alice/observed"
    vid = cluster.push(FIXTURES / "slow_setup", model, visibility="public")
    # run by an account of its own: alice's private replicas elsewhere in the suite bill her their
    # idle time, which would move her counter while this test reads it
    with cluster.http() as h:
        made = h.post("/v1/admin/accounts", json={"username": f"observer{secrets.token_hex(3)}"}).json()
    runner = made["account"]["username"]
    before = _scrape(cluster)
    client = replicate.Client(api_token=made["token"], base_url=cluster.url)
    cold = client.predictions.create(version=vid, input={"text": "a"})
    cold.wait()
    warm = [client.predictions.create(version=vid, input={"text": str(i)}) for i in range(2)]
    for p in warm:
        p.wait()
    assert [p.status for p in (cold, *warm)] == ["succeeded"] * 3

    # the cold one waited for its replica: boot (placement, process, package) and the 3 s setup()
    m = cold.metrics
    assert m["setup_time"] >= 2.5 and m["boot_time"] > 0, m
    waited = m["queue_time"] + m["boot_time"] + m["setup_time"]
    assert waited == pytest.approx(m["total_time"] - m["predict_time"], abs=0.05)
    for p in warm:  # the replica was up before they came
        assert p.metrics["boot_time"] == 0 and p.metrics["setup_time"] == 0, p.metrics

    after = _scrape(cluster)

    def delta(name, **labels):
        return _value(after, name, **labels) - _value(before, name, **labels)
    assert delta("vendo_predictions_created_total", model=model, hardware="cpu") == 3
    assert delta("vendo_predictions_finished_total", status="succeeded", model=model, hardware="cpu") == 3
    assert _value(after, "vendo_predictions_queued", model=model, version=vid) == 0
    assert _value(after, "vendo_predictions_running", model=model, version=vid) == 0
    assert delta("vendo_cold_starts_total", model=model, version=vid) == 1
    assert delta("vendo_cold_start_seconds_count", model=model, version=vid) == 1
    assert delta("vendo_replica_setups_total", model=model, version=vid, outcome="succeeded") >= 1
    assert _value(after, "vendo_replica_setup_seconds_sum", model=model, version=vid) >= 2.5
    # a public model bills active time only: the counter moved by exactly the predictions' seconds
    active = sum(round(p.metrics["predict_time"] * 1000) for p in (cold, *warm)) / 1000
    assert delta("vendo_billed_seconds_total", account=runner, hardware="cpu") == pytest.approx(active, abs=1e-6)
    # `vendo status` (and /v1/status under it): the replica start is a cold start of the last hour
    with cluster.http("alice") as h:
        row = next(r for r in h.get("/v1/status").json()["versions"] if r["version"] == vid)
    assert row["cold_starts_last_hour"] >= 1 and row["queued"] == 0 and row["running"] == 0, row
    # Serve's own view of the version's app, read at scrape time
    assert _value(after, "vendo_serve_replicas", app=app_name(vid), state="running") >= 1
    assert sum(v for (name, _), v in after.items() if name == "vendo_serve_apps") >= 2  # router and this one


def _json_lines_about(pid: str) -> dict[str, list[dict]]:
    """Serve's log files (by file name) with the JSON lines that carry `pid` as a field."""
    import ray

    found: dict[str, list[dict]] = {}
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs" / "serve"
    for path in logs.glob("*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if pid not in line:
                continue
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if row.get("prediction_id") == pid:
                found.setdefault(path.name, []).append(row)
    return found


def test_logs_are_json_with_the_prediction_as_fields(cluster, examples):
    client = cluster.client()
    p = client.predictions.create(version=examples["slow"], input={"steps": 300})
    with cluster.http("alice") as h:
        for _ in range(600):  # until it runs, so the replica has a line about it too
            if h.get(f"/v1/predictions/{p.id}").json()["status"] == "processing":
                break
            time.sleep(0.1)
    with cluster.http("alice") as h:  # while it runs, status counts it
        row = next(r for r in h.get("/v1/status").json()["versions"] if r["version"] == examples["slow"])
    assert row["running"] == 1 and row["queued"] == 0 and row["replicas"] >= 1, row
    shown = vendo(cluster, "status")
    assert shown.returncode == 0 and "cold/1h" in shown.stdout, shown.stderr
    p.cancel()
    p.wait()
    assert p.status == "canceled"
    want = {"prediction_id": p.id, "model": "alice/slow", "version": examples["slow"], "account": "alice"}
    for _ in range(100):  # Serve's file handlers write as lines come; give the replica's a moment
        found = _json_lines_about(p.id)
        router = [r for name, rows in found.items() if "vendo_router" in name for r in rows]
        replica = [r for name, rows in found.items() if app_name(examples["slow"]) in name for r in rows]
        if any("canceled" in r["message"] for r in router) and any("canceled" in r["message"] for r in replica):
            break
        time.sleep(0.2)
    # vendo's own lines about it on both sides (and Serve's lines inside its requests too)
    assert any(p.id in r["message"] and "canceled" in r["message"] for r in router), found
    assert any(p.id in r["message"] and "canceled" in r["message"] for r in replica), found
    for row in router + replica:
        assert {k: row.get(k) for k in want} == want, row
        assert row["levelname"] and row["asctime"]
