"""A head started the way `ray_cluster.yaml` starts it (`ray start --head --autoscaling-config=…`,
with its dashboard, GPU workers `min_workers: 0`) on Ray's fake multi-node provider (what Ray ships
for testing its autoscaler on one machine): Ray's own autoscaler brings a GPU worker up from zero
for a GPU version's first prediction and takes it away when the version has scaled to zero; and a
batch runs as a Ray job, by `ray job submit`, as people run it. Ray 2.60's wheel leaves
out the provider's example config and `AutoscalingCluster` starts GCS on 6379 (this machine's
Redis), so the cluster is started here directly.

`ray stop` is the only way to stop such a cluster, and it stops every Ray on the machine, so the
test is skipped where another Ray is running (a developer's `vendo up`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import pytest

from tests.integration.conftest import EXAMPLES, _free_port
from tests.integration.test_lifecycle import variant, wait_for, wait_status
from tests.multinode.stack import MARK, replica_nodes, vendo_stack
from tests.s3server import TEST_CREDENTIALS
from vendo_core.ids import app_name

pytestmark = pytest.mark.integration
RAY = os.path.join(os.path.dirname(sys.executable), "ray")
IDLE_TIMEOUT_MIN = 0.1  # the autoscaler removes a worker idle this long (6 s)


def _config(gcs: str) -> dict:
    return {
        "cluster_name": "vendo-fake", "max_workers": 1, "upscaling_speed": 1.0,
        "idle_timeout_minutes": IDLE_TIMEOUT_MIN,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": gcs},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 2, MARK: 1000}, "node_config": {}, "max_workers": 0},
            # as ray_cluster.yaml's gpu workers: from zero, no vendo_cpu
            "gpu-worker": {"resources": {"CPU": 2, "GPU": 1}, "node_config": {}, "min_workers": 0,
                           "max_workers": 1},
        },
        "head_node_type": "ray.head.default", "auth": {}, "docker": {}, "initialization_commands": [],
        "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": [], "worker_start_ray_commands": [], "file_mounts": {},
        "cluster_synced_files": [], "file_mounts_sync_continuously": False, "rsync_exclude": [],
        "rsync_filter": [],
    }


@pytest.fixture(scope="module")
def autoscaling():
    import ray
    from ray._private.services import find_gcs_addresses

    find_gcs_addresses.cache_clear()
    if find_gcs_addresses():
        pytest.skip("another Ray is running on this machine; `ray stop` would stop it too")
    ip = ray.util.get_node_ip_address()
    port, dashboard_port = _free_port(), _free_port()
    gcs = f"{ip}:{port}"
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(_config(gcs), f)
    # token auth off for this throwaway local cluster: a driver joining by address does not turn it on
    # and S3's credentials in every node's environment, as vendo.env gives them on a real cluster
    env = {**os.environ, **TEST_CREDENTIALS, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_AUTH_MODE": "disabled",
           "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}"}  # a job's `python`
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--num-cpus=2",
                    f"--resources={json.dumps({MARK: 1000})}", f"--autoscaling-config={f.name}",
                    "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
                    "--disable-usage-stats"], env=env, check=True,
                   capture_output=True, timeout=120)
    try:
        ray.init(address=gcs, namespace="vendo-autoscaler", logging_level="WARNING")
        with vendo_stack() as stack:
            stack.jobs = f"http://127.0.0.1:{dashboard_port}"
            stack.env = env
            yield stack
    finally:
        ray.shutdown()
        subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)
        find_gcs_addresses.cache_clear()
        os.unlink(f.name)


def _gpu_nodes() -> list[str]:
    import ray

    return [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU")]


def test_a_gpu_worker_comes_up_from_zero_and_goes_when_idle(autoscaling, tmp_path):
    c = autoscaling.client()
    vid = autoscaling.push(variant(EXAMPLES / "slow", tmp_path / "slow", "auto"), "alice/auto-gpu",
                           hardware="gpu-half")
    assert _gpu_nodes() == []  # GPU workers from zero
    t0 = time.monotonic()
    p = c.predictions.create(version=vid, input={"steps": 1, "step_s": 0})
    wait_status(p, ("succeeded",), timeout_s=240)  # a pending replica asks the autoscaler for a node
    up_s = time.monotonic() - t0
    nodes = _gpu_nodes()
    assert len(nodes) == 1 and replica_nodes(app_name(vid)) == set(nodes)
    print(f"GPU worker from zero to a finished prediction: {up_s:.1f} s")
    # idle: the version scales to zero (4 s), then the autoscaler removes the node (6 s idle)
    t1 = time.monotonic()
    wait_for(lambda: _gpu_nodes() == [], 180, "the idle GPU worker to be removed")
    print(f"GPU worker gone {time.monotonic() - t1:.1f} s after the prediction")


def test_a_batch_runs_as_a_ray_job(autoscaling, tmp_path):
    """`ray job submit … -- python -m cluster.batch`, with the issue's command line: progress lines
    in the job's logs, results in input order, every line a recorded prediction of source batch."""
    vid = autoscaling.push(EXAMPLES / "hello-world", "alice/hello-job", hardware="cpu")
    work = tmp_path / "job"
    work.mkdir()
    n = 120
    (work / "inputs.jsonl").write_text("".join(json.dumps({"text": f"j{i}"}) + "\n" for i in range(n)))
    results = tmp_path / "results.jsonl"
    runtime_env = {"env_vars": {"VENDO_API_TOKEN": autoscaling.tokens["alice"]}}
    job = subprocess.run(
        [RAY, "job", "submit", "--address", autoscaling.jobs, "--working-dir", str(work),
         "--runtime-env-json", json.dumps(runtime_env), "--",
         "python", "-m", "cluster.batch", "--model", f"alice/hello-job:{vid}", "--input", "inputs.jsonl",
         "--output", str(results), "--concurrency", "8", "--progress-s", "0.5"],
        env=autoscaling.env, capture_output=True, text=True, timeout=600)
    logs = job.stdout + job.stderr
    assert job.returncode == 0, logs[-3000:]
    assert f"{n}/{n} done" in logs and "ETA" in logs, logs[-3000:]  # progress lines in the job's logs
    assert f"finished: {n} succeeded, 0 failed, 0 skipped" in logs, logs[-3000:]
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["output"] for r in rows] == [f"hello j{i}" for i in range(n)]
    assert [r["index"] for r in rows] == list(range(n)) and all(r["status"] == "succeeded" for r in rows)
    with autoscaling.http() as h:
        for row in rows[:: n // 6]:
            body = h.get(f"/v1/predictions/{row['id']}").json()
            assert body["source"] == "batch" and body["output"] == row["output"]
