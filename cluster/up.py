"""Bringing a cluster up and down: embedded Redis, Ray, Serve and the router, plus the files in the
data directory that let the CLI find it (`cluster.json`, `token`)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from cluster.embedded import ensure_redis, stop_redis
from vendo_core.keys import Keys
from vendo_core.privatefile import private_dir, write_private
from vendo_core.redisconn import connect
from vendo_core.registry import Registry
from vendo_core.settings import Settings

STATE_FILE = "cluster.json"
TOKEN_FILE = "token"


def state_path(settings: Settings) -> Path:
    return settings.resolved_data_dir() / STATE_FILE


def read_state(settings: Settings) -> dict | None:
    try:
        return json.loads(state_path(settings).read_text())
    except (FileNotFoundError, ValueError):
        return None


def first_token(settings: Settings) -> str:
    """VENDO_API_TOKEN if set, else the token kept under the data directory (made once)."""
    if settings.api_token:
        return settings.api_token
    path = settings.resolved_data_dir() / TOKEN_FILE
    if path.exists():
        return path.read_text().strip()
    token = "r8_" + secrets.token_urlsafe(30)
    private_dir(path.parent)
    write_private(path, token + "\n")
    return token


async def _ensure_account(settings: Settings, redis_url: str, username: str, token: str,
                          roles: tuple[str, ...] = ("admin",)) -> None:
    r = connect(redis_url)
    try:
        await Registry(r, Keys(settings.redis_prefix)).configure_token(username, token, roles=roles)
    finally:
        await r.aclose()


def ensure_account(settings: Settings, redis_url: str, username: str, token: str) -> None:
    """The operator's account (the first one): an admin, so it may push and see everything."""
    asyncio.run(_ensure_account(settings, redis_url, username, token))


CPU_NODE_UNITS = 1000  # what a CPU node declares of `cpu_node_resource`: a marker, not a count


def start(settings: Settings, address: str | None = None, num_cpus: float | None = None,
          num_gpus: float | None = None) -> tuple[str, str, str]:
    """Start (or join) Ray, Serve and the router. Returns (base URL, token, redis URL)."""
    import ray  # heavy: only starting or stopping a cluster needs it
    from ray import serve  # heavy, as above

    from cluster.serve_apps import deploy_router, serve_env  # Ray Serve and the router: only `up` needs them

    private_dir(settings.resolved_data_dir())  # tokens, the Redis password, the signing key
    redis_url = ensure_redis(settings)
    token = first_token(settings)
    ensure_account(settings, redis_url, settings.username, token)
    init = {"address": address or "local", "logging_level": "WARNING", "namespace": "vendo"}
    if not address:
        init["num_cpus"] = num_cpus if num_cpus is not None else max(os.cpu_count() or 1, 4)
        if num_gpus is not None:
            init["num_gpus"] = num_gpus
        if settings.cpu_node_resource:  # this machine is a CPU node (router/placement.py)
            init["resources"] = {settings.cpu_node_resource: CPU_NODE_UNITS}
        init.update(include_dashboard=settings.dashboard, dashboard_host=settings.dashboard_host,
                    dashboard_port=settings.dashboard_port)
        os.environ.update(serve_env(settings))  # the processes this Ray starts inherit it
    ctx = ray.init(**init)
    for line in shared_state_warnings(settings, joined=bool(address)):
        print(f"vendo: warning: {line}", file=sys.stderr, flush=True)
    if not settings.dashboard_url and getattr(ctx, "dashboard_url", None):  # "host:port", when it runs
        host, _, port = ctx.dashboard_url.rpartition(":")
        settings.dashboard_url = f"http://{_display_host(host)}:{port}"
    serve.start(http_options={"host": settings.host, "port": settings.port}, proxy_location="HeadOnly")
    deploy_router(settings, redis_url)
    url = settings.public_url or f"http://{_display_host(settings.host)}:{settings.port}"
    return url, token, redis_url


def shared_state_warnings(settings: Settings, *, joined: bool) -> list[str]:
    """What cannot work when vendo joins a Ray cluster whose other nodes run replicas: state that
    only this machine holds."""
    if not joined:
        return []
    out = []
    if not settings.redis_url:
        out.append("the embedded Redis listens on this machine only, so replicas on other nodes cannot "
                   "reach it: set VENDO_REDIS_URL to a Redis every node reaches (rediss://user:password@host)")
    if not (settings.storage_url or "").startswith("s3://"):
        out.append("file storage is on this machine only, so replicas on other nodes cannot read packages "
                   "or store outputs: set VENDO_STORAGE_URL=s3://bucket/prefix")
    return out


def _display_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::") else host


def run_foreground(settings: Settings, address: str | None) -> None:
    """`vendo up` without --detach: start, write the state file, block until a signal."""
    import ray  # heavy: only starting or stopping a cluster needs it
    from ray import serve  # heavy, as above

    url, token, redis_url = start(settings, address)
    state = {"url": url, "pid": os.getpid(), "redis_url": redis_url, "started_at": time.time(),
             "port": settings.port, "data_dir": str(settings.resolved_data_dir())}
    write_private(state_path(settings), json.dumps(state, indent=2))  # its redis_url holds the password
    print(f"vendo is up at {url}", flush=True)
    if sys.stdout.isatty():  # a person at a terminal; never into a log file
        print(f"API token: {token}", flush=True)
    else:
        print(f"API token: in {settings.resolved_data_dir() / TOKEN_FILE} (or VENDO_API_TOKEN)", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    print("vendo: shutting down", flush=True)
    try:
        serve.shutdown()
    finally:
        ray.shutdown()
        state_path(settings).unlink(missing_ok=True)


def run_detached(settings: Settings, address: str | None, timeout_s: float = 180.0) -> tuple[str, str]:
    """Start `vendo up` in the background and return once the API answers."""
    data = private_dir(settings.resolved_data_dir())
    state_path(settings).unlink(missing_ok=True)
    log_path = data / "vendo.log"
    cmd = [sys.executable, "-m", "cluster.cli", "up", "--host", settings.host, "--port", str(settings.port)]
    if address:
        cmd += ["--address", address]
    cmd += ["--dashboard" if settings.dashboard else "--no-dashboard", "--dashboard-port", str(settings.dashboard_port)]
    env = dict(os.environ, VENDO_DATA_DIR=str(data))
    with open(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log:
        os.fchmod(log.fileno(), 0o600)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True,
                                cwd=str(Path(__file__).resolve().parent.parent))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vendo up exited with {proc.returncode}; see {log_path}")
        state = read_state(settings)
        if state and _answers(state["url"]):
            return state["url"], first_token(settings)
        time.sleep(0.5)
    raise RuntimeError(f"vendo did not answer within {timeout_s:.0f}s; see {log_path}")


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def stop(settings: Settings, timeout_s: float = 60.0) -> bool:
    """Stop the cluster that `vendo up` started for this data directory, and its embedded Redis."""
    state = read_state(settings)
    stopped = False
    if state:
        pid = int(state["pid"])
        try:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                os.kill(pid, 0)
                time.sleep(0.2)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        stopped = True
        state_path(settings).unlink(missing_ok=True)
    if not settings.redis_url:
        stopped = stop_redis(settings) or stopped
    return stopped
