"""Batch predictions (`python -m cluster.batch`, what `ray job submit` runs) against the test
cluster: every line a prediction through the handle, results in input order, a bad line failed
without stopping the batch, progress on stdout and on the batch's record, a resubmission that
skips done lines, and a stop (SIGTERM, as `ray job stop` sends) that cancels what is in flight."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_cli import vendo

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _batch(cluster, *args: str, **popen) -> subprocess.Popen:
    env = dict(os.environ, VENDO_API_TOKEN=cluster.tokens["alice"], RAY_ADDRESS="auto")
    return subprocess.Popen([sys.executable, "-m", "cluster.batch", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


def test_a_batch_runs_every_line_in_order_and_resumes(cluster, examples, tmp_path):
    lines = [{"text": f"n{i}"} for i in range(60)]
    lines[17] = {"text": "bad", "repeat": 99}  # over the schema's bound: this line fails, the rest run
    lines[30] = {"input": {"text": "wrapped"}}
    src, dst = tmp_path / "inputs.jsonl", tmp_path / "out" / "results.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    args = ("--model", "alice/hello-world", "--input", str(src), "--output", str(dst), "--concurrency", "8",
            "--batch-id", "t-batch-1", "--progress-s", "0.2")
    proc = _batch(cluster, *args)
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log
    assert "done" in log and "ETA" in log and "finished: 59 succeeded, 1 failed, 0 skipped" in log, log

    rows = [json.loads(x) for x in dst.read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(60))
    assert rows[17]["status"] == "failed" and "repeat" in rows[17]["error"]
    assert rows[30]["output"] == "hello wrapped"
    assert all(r["output"] == f"hello n{r['index']}" for r in rows if r["index"] not in (17, 30))
    ids = {r["id"] for r in rows if r["status"] == "succeeded"}
    assert len(ids) == 59

    with cluster.http("alice") as h:
        rec = h.get("/v1/batches/t-batch-1").json()
        assert (rec["status"], rec["total"], rec["done"], rec["succeeded"], rec["failed"]) == \
            ("succeeded", 60, 60, 59, 1), rec
        assert rec["model"] == "alice/hello-world" and rec["output"] == str(dst)
        got = h.get(f"/v1/predictions/{rows[0]['id']}").json()
        assert got["source"] == "batch" and got["output"] == "hello n0"
    with cluster.http("bob") as h:
        assert h.get("/v1/batches/t-batch-1").status_code == 404
    shown = vendo(cluster, "batches", "list")
    assert shown.returncode == 0 and "t-batch-1" in shown.stdout and "60/60" in shown.stdout

    # the same batch again: the 59 done lines are skipped (same results), the failed one runs again
    proc = _batch(cluster, *args)
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0 and "finished: 0 succeeded, 1 failed, 59 skipped" in log, log
    again = [json.loads(x) for x in dst.read_text().splitlines()]
    assert [r["index"] for r in again] == list(range(60))
    assert {r["id"] for r in again if r["status"] == "succeeded"} == ids
    with cluster.http("alice") as h:
        assert h.get("/v1/batches/t-batch-1").json()["skipped"] == 59


def test_stopping_a_batch_cancels_its_predictions(cluster, examples, tmp_path):
    src, dst = tmp_path / "slow.jsonl", tmp_path / "slow-results.jsonl"
    src.write_text("".join(json.dumps({"steps": 500}) + "\n" for _ in range(6)))
    proc = _batch(cluster, "--model", "alice/slow", "--input", str(src), "--output", str(dst),
                  "--concurrency", "2", "--batch-id", "t-batch-stop", "--progress-s", "0.2")
    with cluster.http("alice") as h:
        running = []
        for _ in range(600):  # until its predictions run
            running = [p for p in h.get("/v1/predictions", params={"source": "batch"}).json()["results"]
                       if p["model"] == "alice/slow" and p["status"] == "processing"]
            if running:
                break
            time.sleep(0.2)
        assert running
        proc.send_signal(signal.SIGTERM)
        log, _ = proc.communicate(timeout=120)
        assert proc.returncode == 130, log
        assert "canceling" in log
        assert h.get("/v1/batches/t-batch-stop").json()["status"] == "canceled"
        for p in running:
            assert h.get(f"/v1/predictions/{p['id']}").json()["status"] == "canceled"
