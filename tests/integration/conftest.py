"""Session fixtures for integration tests: real Redis (the machine's, on a private logical
database, or an embedded redis-server), a real S3-protocol server over HTTP (moto's standalone
server), and one local Ray with Serve and the router, started once."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.redisdb import embedded_db, flush
from tests.s3server import TEST_CREDENTIALS, s3_server

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
FIXTURES = ROOT / "tests" / "fixtures" / "predictors"
TEST_DB = int(os.environ.get("VENDO_TEST_REDIS_DB", "13"))


def _worker_python() -> str | None:
    """An interpreter the model workers' uid can run. Run as root from a Python under /root (a
    folder other users cannot enter, as on CI), vendo could only give models partial isolation;
    the system's own Python of the same version can run as the worker uid, so tests use it, as an
    operator would with VENDO_WORKER_PYTHON. VENDO_TEST_WORKER_PYTHON overrides ("" for none)."""
    if "VENDO_TEST_WORKER_PYTHON" in os.environ:
        return os.environ["VENDO_TEST_WORKER_PYTHON"] or None
    candidate = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    if os.geteuid() == 0 and os.access(candidate, os.X_OK):
        return candidate
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """What tests need to reach the running cluster."""

    def __init__(self, url: str, redis_url: str, settings, data_dir: Path):
        self.url = url
        self.redis_url = redis_url
        self.settings = settings
        self.data_dir = data_dir
        self.tokens: dict[str, str] = {}
        self.versions: dict[str, str] = {}

    def client(self, user: str = "alice"):
        import replicate

        return replicate.Client(api_token=self.tokens[user], base_url=self.url)

    def http(self, user: str = "alice") -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60,
                            headers={"Authorization": f"Bearer {self.tokens[user]}"})

    def push(self, directory: Path, model: str, user: str = "alice", **params) -> str:
        from vendo_core.ids import version_id
        from vendo_core.packaging import pack_project

        data, digest = pack_project(directory)
        vid = version_id(model, digest)
        params.setdefault("visibility", "private")
        with self.http(user) as h:
            r = h.post(f"/v1/models/{model}/versions", content=data, params=params,
                       headers={"Content-Type": "application/gzip"}, timeout=300)
        assert r.status_code == 201, r.text
        assert r.json()["id"] == vid
        return vid

    def deploy_router(self, **overrides):
        from cluster.serve_apps import deploy_router

        settings = self.settings.model_copy(update=overrides)
        deploy_router(settings, self.redis_url)
        return settings


@pytest.fixture(scope="session")
def cluster():
    import asyncio

    import ray
    from ray import serve

    from cluster.serve_apps import deploy_router, serve_env
    from cluster.up import _ensure_account
    from vendo_core.settings import Settings

    data_dir = Path(tempfile.mkdtemp(prefix="vendo-test-"))
    packages = Path(tempfile.mkdtemp(prefix="vendo-test-packages-"))  # models read it; data_dir is 0700
    os.chmod(packages, 0o755)
    # the cluster's Redis has a password, as `vendo up`'s embedded one does (the model-isolation
    # tests check that model code cannot use it); the other Redis tests use the machine's
    redis_url = os.environ.get("VENDO_TEST_CLUSTER_REDIS") or embedded_db(TEST_DB)
    settings_env = {"VENDO_DATA_DIR": str(data_dir)}
    with s3_server() as endpoint:
        os.environ.update(TEST_CREDENTIALS)
        os.environ.update(settings_env)
        settings = Settings(
            data_dir=data_dir, redis_url=redis_url, storage_url="s3://vendo-test/outputs",
            s3_endpoint_url=endpoint, port=_free_port(), autoscale_downscale_delay_s=4.0,
            autoscale_look_back_period_s=2.0, autoscale_upscale_delay_s=0.0, sweep_interval_s=2.0,
            heartbeat_s=2.0, allow_private_urls=True, package_cache_dir=packages,
            max_prediction_s=120.0, hardware_config=ROOT / "tests" / "fixtures" / "hardware.yaml",
            collections_config=ROOT / "tests" / "fixtures" / "collections.yaml",
            allow_private_webhooks=True, webhook_retry_base_s=0.2, worker_python=_worker_python(),
            worker_kill_grace_s=2.0, log_format="json",
            finetunes_per_replica=2,  # small, so the trainings tests see fine-tunes unloaded and loaded again
        )
        import boto3

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="vendo-test")
        os.environ.update(serve_env(settings))  # the default ingress (HAProxy); VENDO_SERVE_INGRESS=proxy for the other
        ray.init(address="local", num_cpus=16, num_gpus=1, include_dashboard=False,
                 logging_level="WARNING", namespace="vendo-test")
        serve.start(http_options={"host": "127.0.0.1", "port": settings.port})
        deploy_router(settings, redis_url)
        url = f"http://127.0.0.1:{settings.port}"
        c = Cluster(url, redis_url, settings, data_dir)
        for user in ("alice", "bob"):
            c.tokens[user] = f"test-token-{user}"
            roles = ("admin",) if user == "alice" else ("push",)  # alice runs it; bob only pushes
            asyncio.run(_ensure_account(settings, redis_url, user, c.tokens[user], roles))
        _wait_health(url)
        try:
            yield c
        finally:
            serve.shutdown()
            ray.shutdown()
            flush(redis_url)
            shutil.rmtree(packages, ignore_errors=True)


def _wait_health(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("router did not come up")


@pytest.fixture(scope="session")
def examples(cluster) -> dict[str, str]:
    """The four examples pushed once as public models of alice: name → version id."""
    out = {}
    for name in ("hello-world", "stream", "image", "slow"):
        out[name] = cluster.push(EXAMPLES / name, f"alice/{name}", visibility="public")
    cluster.versions.update(out)
    return out
