"""The Serve application of one model version (or one named deployment): deployment `model`
running `ModelReplica`. Every Serve option is set here, from the hardware SKU and the version,
never left to Ray's defaults. The router's app manager builds apps with `version_app_builder`."""

from __future__ import annotations

from typing import Any, Callable

from ray import serve

from deployments.replica import ModelReplica
from vendo_core.hardware import skus_for
from vendo_core.settings import Settings


def autoscaling(settings: Settings, max_replicas: int, min_replicas: int = 0,
                version: dict[str, Any] | None = None) -> dict[str, Any]:
    """Scale to zero by default; every field set so Ray's defaults (min 1, 600 s) never apply.
    A version may carry its own `downscale_delay_s` / `upscale_delay_s`."""
    version = version or {}
    def pick(field: str, default: float) -> float:
        value = version.get(field)
        return float(value) if value not in (None, "") else default

    down = pick("downscale_delay_s", settings.autoscale_downscale_delay_s)
    up = pick("upscale_delay_s", settings.autoscale_upscale_delay_s)
    return {
        "min_replicas": min_replicas,
        "initial_replicas": min_replicas,
        "max_replicas": max_replicas,
        "target_ongoing_requests": 1,
        "metrics_interval_s": 1.0,
        "look_back_period_s": settings.autoscale_look_back_period_s,
        "smoothing_factor": 1.0,
        "upscale_delay_s": up,
        "downscale_delay_s": down,
        "downscale_to_zero_delay_s": down,
    }


def version_app(version: dict[str, Any], settings: dict[str, Any], redis_url: str):
    """The Serve application for one version: deployment `model` running `ModelReplica`. A named
    deployment passes its version with its own `hardware`, `min_replicas` and `max_replicas`."""
    s = Settings(**settings)
    sku = skus_for(s).get(version.get("hardware"))
    traits = version.get("traits") or {}
    concurrency = int(traits.get("concurrency_max") or 1)
    max_replicas = int(version.get("max_replicas") or s.autoscale_max_replicas)
    min_replicas = int(version.get("min_replicas") or 0)
    opts = sku.ray_actor_options()
    if version.get("runtime_env"):
        opts["runtime_env"] = version["runtime_env"]
    deployment = serve.deployment(
        ModelReplica,
        name="model",
        ray_actor_options=opts,
        # one request more than the predictor's slots waits inside the replica (still `starting`),
        # so a slot that frees is taken at once instead of after Serve's routing backoff
        max_ongoing_requests=concurrency + 1,
        max_queued_requests=-1,
        autoscaling_config=autoscaling(s, max_replicas, min_replicas, version),
        graceful_shutdown_timeout_s=s.max_prediction_s + 10,
        graceful_shutdown_wait_loop_s=1.0,
        health_check_period_s=10.0,
        health_check_timeout_s=30.0,
    )
    slim = {k: version.get(k) for k in ("id", "package_key", "hardware")}
    slim["num_gpus"] = sku.num_gpus
    slim["concurrency"] = concurrency
    return deployment.bind(slim, settings, redis_url)


def version_app_builder(settings: dict[str, Any], redis_url: str) -> Callable[[dict], Any]:
    return lambda version: version_app(version, settings, redis_url)
