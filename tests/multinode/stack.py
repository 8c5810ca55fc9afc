"""vendo's platform apps deployed on a Ray cluster the test already started and connected to, with
its state off the head as a multi-node vendo keeps it: the S3 server, and an external Redis as
managed services give it (`rediss://` with TLS, an ACL user and password: `tests/redistls.py`);
Serve's proxy on the head, the router and file delivery, an admin account. One cluster at a time."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.integration.conftest import Cluster, _free_port, _wait_health, _worker_python
from tests.redistls import tls_redis
from tests.s3server import TEST_CREDENTIALS, s3_server

ROOT = Path(__file__).resolve().parents[2]
MARK = "vendo_cpu"  # Settings.cpu_node_resource: what CPU nodes declare


@contextmanager
def vendo_stack(**overrides) -> Iterator[Cluster]:
    import boto3
    from ray import serve

    from cluster.serve_apps import deploy_router
    from cluster.up import _ensure_account
    from vendo_core.settings import Settings

    data_dir = Path(tempfile.mkdtemp(prefix="vendo-multinode-"))
    with tls_redis() as (redis_url, password), s3_server() as endpoint:
        os.environ.update(TEST_CREDENTIALS)
        os.environ["VENDO_DATA_DIR"] = str(data_dir)
        settings = Settings(**{
            "data_dir": data_dir, "redis_url": redis_url, "storage_url": "s3://vendo-multi/outputs",
            "s3_endpoint_url": endpoint, "port": _free_port(), "autoscale_downscale_delay_s": 4.0,
            "autoscale_upscale_delay_s": 0.0, "sweep_interval_s": 2.0, "max_prediction_s": 120.0,
            "hardware_config": ROOT / "tests" / "fixtures" / "hardware.yaml", "worker_python": _worker_python(),
            "worker_kill_grace_s": 2.0, **overrides})
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="vendo-multi")
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": settings.port}, proxy_location="HeadOnly")
            deploy_router(settings, redis_url)
            stack = Cluster(f"http://127.0.0.1:{settings.port}", redis_url, settings, data_dir)
            stack.redis_password = password
            stack.tokens["alice"] = "multi-token-alice"
            asyncio.run(_ensure_account(settings, redis_url, "alice", stack.tokens["alice"], ("admin",)))
            _wait_health(stack.url)
            yield stack
        finally:
            serve.shutdown()


def replica_nodes(app: str) -> set[str]:
    """The nodes of `app`'s live model replicas, from Ray's state API."""
    return {a.node_id for a in _alive() if a.class_name == f"ServeReplica:{app}:model"}


def platform_nodes() -> dict[str, str]:
    """Where the router's and file delivery's replicas run: class name → node id."""
    return {a.class_name: a.node_id for a in _alive()
            if a.class_name in ("ServeReplica:vendo:router", "ServeReplica:vendo-files:files")}


def _alive():
    from ray.util.state import list_actors

    return list_actors(filters=[("state", "=", "ALIVE")], limit=10_000, raise_on_missing_output=False)
