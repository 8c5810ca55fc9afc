"""Everything one benchmark run brings up and tears down on this machine: Redis (the machine's, on
a private logical database, or an embedded one), file:// storage in a temp dir, one local Ray with
Serve, vendo's router, the bare Serve apps beside it on the same proxy, and the benchmark's models
pushed to vendo. Ray is only ever started under the machine-wide lock that the test suite uses."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
MODELS = Path(__file__).resolve().parent / "models"
LOCK_PATH = os.environ.get("VENDO_RAY_LOCK", "/tmp/vendo-ray.lock")
BENCH_DB = int(os.environ.get("VENDO_BENCH_REDIS_DB", "11"))
USER = "bench"
TOKEN = "bench-token"  # a throwaway cluster on loopback: a fixed token is fine
NUM_CPUS = 16  # logical: 4 sleeping replicas and the rest fit on this 2-core machine
BARE_APP, BARE_PREFIX = "bare", "/bare"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def ray_lock(held: bool = False) -> Iterator[None]:
    """Hold the machine-wide Ray lock (`flock` on /tmp/vendo-ray.lock) for the whole run, so the
    benchmark never shares the cores with another Ray (a test run, another benchmark). `held`: the
    caller already holds it (e.g. `flock /tmp/vendo-ray.lock python -m benchmarks --lock-held`)."""
    if held:
        yield
        return
    with open(LOCK_PATH, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for {LOCK_PATH} (another Ray run holds it) ...", flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def redis_url_for(data_dir: Path) -> tuple[str, bool]:
    """(URL, embedded?): the machine's Redis on db 11 when it answers, else an embedded one."""
    url = os.environ.get("VENDO_BENCH_REDIS_URL", f"redis://127.0.0.1:6379/{BENCH_DB}")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        return url, False
    except redis.RedisError:
        from cluster.embedded import ensure_redis
        from vendo_core.settings import Settings

        return ensure_redis(Settings(data_dir=data_dir)), True


@dataclass
class Stack:
    """A running benchmark cluster; `versions` maps a model name to its pushed version id."""

    settings: Any
    redis_url: str
    data_dir: Path
    url: str
    embedded_redis: bool
    haproxy: bool = False  # Serve's HAProxy ingress (else its Python proxy)
    versions: dict[str, str] = field(default_factory=dict)
    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="vendo-bench-logs-")))

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}

    @property
    def bare_url(self) -> str:
        return self.url + BARE_PREFIX

    # models

    def push(self, project: Path, name: str, *, max_replicas: int | None = None, salt: str | None = None,
             hardware: str | None = None, visibility: str = "private") -> str:
        """Push `project` as bench/`name`; `salt` adds a file so the same code gets its own version."""
        from vendo_core.ids import version_id
        from vendo_core.packaging import pack_project

        src = project
        tmp = None
        if salt is not None:
            tmp = Path(tempfile.mkdtemp(prefix="bench-pkg-"))
            src = tmp / project.name
            shutil.copytree(project, src)
            (src / "SALT").write_text(salt + "\n")
        try:
            data, digest = pack_project(src)
            vid = version_id(f"{USER}/{name}", digest)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        params: dict[str, Any] = {"visibility": visibility}
        if max_replicas is not None:
            params["max_replicas"] = max_replicas
        if hardware is not None:
            params["hardware"] = hardware
        r = httpx.post(f"{self.url}/v1/models/{USER}/{name}/versions", content=data, params=params,
                       headers={**self.headers, "Content-Type": "application/gzip"}, timeout=300, trust_env=False)
        if r.status_code != 201:
            raise RuntimeError(f"push of {project.name} failed: {r.status_code} {r.text[:500]}")
        self.versions[name] = vid
        return vid

    def version_record(self, vid: str):
        from vendo_core.keys import Keys
        from vendo_core.redisconn import connect
        from vendo_core.registry import Registry

        async def get():
            r = connect(self.redis_url)
            try:
                return await Registry(r, Keys(self.settings.redis_prefix)).get_version(vid)
            finally:
                await r.aclose()

        return asyncio.run(get())

    def version_field(self, vid: str, name: str) -> str | None:
        from vendo_core.keys import Keys

        r = redis.Redis.from_url(self.redis_url, decode_responses=True)
        try:
            return r.hget(Keys(self.settings.redis_prefix).version(vid), name)
        finally:
            r.close()

    # Serve

    def app_of(self, vid: str) -> str:
        from vendo_core.ids import app_name

        return app_name(vid)


def replicas(app: str, deployment: str = "model") -> dict[str, int]:
    """Replica counts by state (`running`, `starting`, ...) of one deployment; {} if absent."""
    from ray import serve

    st = serve.status().applications.get(app)
    if st is None or deployment not in st.deployments:
        return {}
    out: dict[str, int] = {}
    for state, n in (st.deployments[deployment].replica_states or {}).items():
        key = str(state).split(".")[-1].lower()
        out[key] = out.get(key, 0) + n
    return out


def wait_replicas(app: str, pred, timeout_s: float, what: str, period_s: float = 0.2) -> float:
    """Poll Serve until `pred(replica counts)` holds; returns the seconds it took."""
    t0 = time.monotonic()
    while True:
        counts = replicas(app)
        if pred(counts):
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"{app}: {what} not reached in {timeout_s:.0f}s (replicas: {counts})")
        time.sleep(period_s)


def live(counts: dict[str, int]) -> int:
    return sum(n for s, n in counts.items() if s in ("running", "starting", "updating", "recovering", "stopping"))


@contextlib.contextmanager
def stack(*, autoscale_downscale_delay_s: float = 600.0, num_gpus: float | None = None,
          ingress: str | None = None) -> Iterator[Stack]:
    """Bring up Redis, storage, Ray, Serve and the router; yield the Stack; tear it all down.
    `ingress`: Serve's ingress for this cluster ("haproxy" or "proxy"), vendo's default if None;
    bare Serve's baseline runs on a "proxy" cluster of its own (the ingress is cluster-wide)."""
    import ray
    from ray import serve

    from cluster.serve_apps import deploy_router, serve_env
    from cluster.up import _ensure_account
    from vendo_core.settings import Settings

    os.chdir(ROOT)  # Ray puts the driver's cwd on the workers' sys.path: `benchmarks` imports there
    data_dir = Path(tempfile.mkdtemp(prefix="vendo-bench-"))
    redis_url, embedded = redis_url_for(data_dir)
    r = redis.Redis.from_url(redis_url)
    r.flushdb()  # our private logical database (or a fresh embedded server) only
    port = free_port()
    settings = Settings(
        data_dir=data_dir, redis_url=redis_url, storage_url=(data_dir / "storage").as_uri(), port=port,
        host="127.0.0.1", package_cache_dir=data_dir / "packages", app_idle_s=86400.0,
        autoscale_downscale_delay_s=autoscale_downscale_delay_s, autoscale_upscale_delay_s=0.0,
        autoscale_look_back_period_s=2.0, autoscale_max_replicas=1, max_prediction_s=120.0,
        rate_limit_creates_per_min=0, rate_limit_requests_per_min=0, allow_private_webhooks=True,
        allow_private_urls=True, retention_s=0, finetunes_per_replica=24,
        # part 13 holds thousands of predictions and streams open from one account
        max_queued_per_account=100_000, max_open_per_account=100_000, max_blocking_connections=4096,
        **({"serve_ingress": ingress} if ingress else {}),
    )
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # no "deploying/deleting app" lines
    gpus = {} if num_gpus is None else {"num_gpus": num_gpus}
    env = serve_env(settings)  # read by the processes Ray starts: set for this cluster only
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    ray.init(address="local", num_cpus=NUM_CPUS, include_dashboard=False, logging_level="WARNING",
             namespace="vendo-bench", log_to_driver=False, **gpus)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        deploy_router(settings, redis_url)
        asyncio.run(_ensure_account(settings, redis_url, USER, TOKEN))
        url = f"http://127.0.0.1:{port}"
        _wait_health(url)
        yield Stack(settings, redis_url, data_dir, url, embedded, env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1")
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        with contextlib.suppress(Exception):
            r.flushdb()
        if embedded:
            from cluster.embedded import stop_redis

            with contextlib.suppress(Exception):
                stop_redis(Settings(data_dir=data_dir))
        shutil.rmtree(data_dir, ignore_errors=True)


def _wait_health(url: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the vendo router did not come up")


def deploy_bare(name: str, prefix: str, project: Path, *, max_ongoing_requests: int,
                autoscaling_config: dict[str, Any], ray_actor_options: dict[str, Any],
                slots: int | None = None) -> None:
    """Run a bare Serve app (ingress + model) for `project` at `prefix` on the same proxy."""
    from ray import serve

    from benchmarks.bare import bare_app

    serve.run(bare_app(str(project), max_ongoing_requests=max_ongoing_requests,
                       autoscaling_config=autoscaling_config, ray_actor_options=ray_actor_options,
                       slots=slots),
              name=name, route_prefix=prefix)


def python_info() -> str:
    return f"{sys.version.split()[0]} ({sys.executable})"
