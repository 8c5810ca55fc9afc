"""vendo on more than one node, with `ray.cluster_utils.Cluster` (several raylets on this machine):
a CPU head holding the router, a CPU node and a node with a logical GPU, on the ingress vendo
gives a cluster it starts (Serve's HAProxy on the head by default). Placement is read from
Ray's state API; storage is the S3 server, so packages reach each node from object storage.

Run in its own pytest invocation (`make test` does): it starts its own Ray cluster, and two Ray
clusters never run at once."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.integration.conftest import EXAMPLES
from tests.integration.test_lifecycle import variant, wait_status
from tests.multinode.stack import MARK, platform_nodes, replica_nodes, vendo_stack
from tests.s3server import TEST_CREDENTIALS
from vendo_core.ids import app_name

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def multi():
    import ray
    from ray.cluster_utils import Cluster as RayCluster

    from cluster.serve_apps import serve_env
    from vendo_core.settings import Settings

    os.environ.update(TEST_CREDENTIALS)  # S3's credentials in every node's environment, as on a cluster
    # the ingress vendo gives a cluster it starts (HAProxy unless VENDO_SERVE_INGRESS says otherwise),
    # in every node's environment as `ray start` would need it: the router's replicas on the CPU
    # node are reached by the head's HAProxy
    os.environ.update(serve_env(Settings()))
    # the head takes no CPU work: CPU versions must find the CPU node, GPU ones the GPU node
    rc = RayCluster(initialize_head=True, head_node_args={"num_cpus": 0, "resources": {MARK: 1000}})
    try:
        cpu = rc.add_node(num_cpus=2, resources={MARK: 1000})
        gpu = rc.add_node(num_cpus=4, num_gpus=1)
        rc.wait_for_nodes()
        ray.init(address=rc.address, namespace="vendo-multinode", logging_level="WARNING")
        with vendo_stack() as stack:
            yield SimpleNamespace(ray=rc, stack=stack, head=rc.head_node, cpu=cpu, gpu=gpu)
    finally:
        ray.shutdown()
        rc.shutdown()


def test_versions_land_by_hardware_and_a_lost_gpu_node_fails_its_prediction(multi, tmp_path):
    stack = multi.stack
    c = stack.client()
    cpu_vid = stack.push(EXAMPLES / "hello-world", "alice/hello", hardware="cpu")
    gpu_vid = stack.push(variant(EXAMPLES / "slow", tmp_path / "slow", "gpu"), "alice/slow-gpu", hardware="gpu-half")

    # a CPU version on the CPU node, never on the GPU node's spare CPUs; its output through S3
    assert c.run(f"alice/hello:{cpu_vid}", input={"text": "cpu"}) == "hello cpu"
    assert replica_nodes(app_name(cpu_vid)) == {multi.cpu.node_id}
    # the router and file delivery on CPU nodes too
    platform = platform_nodes()
    assert len(platform) == 2 and multi.gpu.node_id not in platform.values()

    # a half-GPU version on the GPU node
    p = c.predictions.create(version=gpu_vid, input={"steps": 1, "step_s": 0})
    p.wait()
    assert p.status == "succeeded", p.error
    assert replica_nodes(app_name(gpu_vid)) == {multi.gpu.node_id}

    # the GPU node goes away while a prediction runs on it: the prediction fails, clearly, soon
    p = c.predictions.create(version=gpu_vid, input={"steps": 600, "step_s": 0.1})
    wait_status(p, ("processing",), timeout_s=60)
    t0 = time.monotonic()
    multi.ray.remove_node(multi.gpu)
    wait_status(p, ("failed",), timeout_s=30)
    lost_after = time.monotonic() - t0
    assert lost_after < 30 and "replica" in p.error, p.error
    print(f"prediction failed {lost_after:.1f} s after its node was removed: {p.error!r}")

    # a GPU node comes back: the next prediction is served there
    multi.gpu = multi.ray.add_node(num_cpus=4, num_gpus=1)
    q = c.predictions.create(version=gpu_vid, input={"steps": 1, "step_s": 0})
    wait_status(q, ("succeeded",), timeout_s=120)
    assert replica_nodes(app_name(gpu_vid)) == {multi.gpu.node_id}
    # and the CPU version was never disturbed
    assert c.run(f"alice/hello:{cpu_vid}", input={"text": "again"}) == "hello again"


def test_the_redis_password_reaches_no_log_and_no_status(multi):
    """The state is on a Redis that requires TLS and a password (tests/redistls.py); after the
    predictions above, that password is in no Ray or Serve log file, in no status answer, and not
    in what `vendo status` prints."""
    import ray

    from tests.integration.test_cli import vendo

    stack, password = multi.stack, multi.stack.redis_password
    assert stack.redis_url.startswith("rediss://vendo:")
    with stack.http() as h:
        status = h.get("/v1/status").json()
    assert status["redis"].startswith("rediss://***@127.0.0.1:") and password not in json.dumps(status)
    shown = vendo(stack, "status")
    assert shown.returncode == 0 and "rediss://***@" in shown.stdout and password not in shown.stdout + shown.stderr
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    files = [f for f in logs.rglob("*") if f.is_file()]
    assert len(files) > 10
    leaked = [str(f) for f in files if password.encode() in f.read_bytes()]
    assert leaked == []
