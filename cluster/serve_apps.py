"""The router's Serve application: the ingress deployment at `/`. Model versions get their own
applications from the router (`router/serve_apps.py`), on demand."""

from __future__ import annotations

from ray import serve

from router.ingress import Router
from vendo_core.settings import Settings

ROUTER_APP = "vendo"


def router_app(settings: Settings, redis_url: str):
    deployment = serve.deployment(
        Router,
        name="router",
        num_replicas=settings.router_replicas,
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=1000,
        graceful_shutdown_timeout_s=65.0,
        logging_config=settings.serve_logging(),
    )
    return deployment.bind(settings.model_dump(mode="json"), redis_url)


def deploy_router(settings: Settings, redis_url: str) -> None:
    serve.run(router_app(settings, redis_url), name=ROUTER_APP, route_prefix="/")
