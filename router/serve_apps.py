"""The Serve application of one model version (or one named deployment): deployment `model`
running `ModelReplica`. Every Serve option is set here, from the hardware SKU and the version,
never left to Ray's defaults. The router's app manager builds apps with `version_app_builder`."""

from __future__ import annotations

from typing import Any, Callable

from ray import serve

from deployments.deployment import ModelReplica
from router.apps import AppSpec
from router.placement import version_options
from vendo_core.hardware import skus_for
from vendo_core.settings import Settings


def autoscaling(settings: Settings, max_replicas: int, min_replicas: int = 0, *,
                downscale_delay_s: float | None = None, upscale_delay_s: float | None = None) -> dict[str, Any]:
    """Scale to zero by default; every field set so Ray's defaults (min 1, 600 s) never apply.
    A version may carry its own delays; None takes the settings'."""
    down = settings.autoscale_downscale_delay_s if downscale_delay_s is None else downscale_delay_s
    up = settings.autoscale_upscale_delay_s if upscale_delay_s is None else upscale_delay_s
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


def version_app(spec: AppSpec, settings: dict[str, Any], redis_url: str):
    """The Serve application `spec` describes: deployment `model` running `ModelReplica` on its
    version, with a named deployment's own hardware and instance counts where it has them."""
    s = Settings(**settings)
    v = spec.version
    hardware = spec.hardware or v.hardware
    sku = skus_for(s).get(hardware)
    concurrency = spec.concurrency
    max_replicas = spec.most_replicas(s.autoscale_max_replicas)
    opts = version_options(sku.ray_actor_options(), s.cpu_node_resource)
    if v.runtime_env:
        opts["runtime_env"] = v.runtime_env
    deployment = serve.deployment(
        ModelReplica,
        name="model",
        ray_actor_options=opts,
        max_ongoing_requests=spec.slots,  # the router's queue hands out no more than these
        max_queued_requests=-1,
        autoscaling_config=autoscaling(s, max_replicas, spec.min_replicas, downscale_delay_s=v.downscale_delay_s,
                                       upscale_delay_s=v.upscale_delay_s),
        graceful_shutdown_timeout_s=s.max_prediction_s + 10,
        graceful_shutdown_wait_loop_s=0.2,  # an evicted or reaped idle replica goes at once
        health_check_period_s=10.0,
        health_check_timeout_s=30.0,
        logging_config=s.serve_logging(),
    )
    replica = {"id": v.id, "package_key": v.package_key, "hardware": hardware, "num_gpus": sku.num_gpus,
               "concurrency": concurrency, "model": v.model, "deployment": spec.deployment,
               "price_nanos": sku.price_nanos, "mode": spec.mode, "weights_key": v.weights_key}
    return deployment.bind(replica, settings, redis_url)


def version_app_builder(settings: dict[str, Any], redis_url: str) -> Callable[[AppSpec], Any]:
    return lambda spec: version_app(spec, settings, redis_url)
