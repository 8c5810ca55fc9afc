"""Serve options come from vendo's settings and the version, never Ray's defaults."""

from router.serve_apps import autoscaling
from vendo_core.settings import Settings


def test_every_autoscaling_field_is_set_and_scales_to_zero():
    a = autoscaling(Settings(autoscale_downscale_delay_s=60, autoscale_upscale_delay_s=2), 3)
    assert a["min_replicas"] == 0 and a["initial_replicas"] == 0 and a["max_replicas"] == 3
    assert a["downscale_delay_s"] == a["downscale_to_zero_delay_s"] == 60
    assert a["upscale_delay_s"] == 2
    from ray.serve.config import AutoscalingConfig

    unset = set(AutoscalingConfig.model_fields) - set(a) - {"policy", "aggregation_function",
                                                            "upscale_smoothing_factor",
                                                            "downscale_smoothing_factor",
                                                            "upscaling_factor", "downscaling_factor"}
    assert not unset, f"left to Ray's defaults: {unset}"
    AutoscalingConfig(**a)  # valid for this Ray


def test_per_version_delays_and_keep_warm():
    a = autoscaling(Settings(), 2, 1, downscale_delay_s=5, upscale_delay_s=0)
    assert a["min_replicas"] == a["initial_replicas"] == 1
    assert a["downscale_delay_s"] == 5 and a["upscale_delay_s"] == 0


def test_the_ingress_setting_becomes_the_clusters_environment():
    from cluster.serve_apps import haproxy_available, serve_env

    assert serve_env(Settings(serve_ingress="proxy")) == {"RAY_SERVE_ENABLE_HA_PROXY": "0"}
    env = serve_env(Settings(serve_ingress="haproxy", ingress_drain_s=1.5))
    if not haproxy_available():  # the `haproxy` extra is not installed here: the Python proxy, said so
        assert env == {"RAY_SERVE_ENABLE_HA_PROXY": "0"}
        return
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    # not Serve's 30 s: every model version's app is an ingress, so it would hold each scale-down
    assert env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] == "1.5"
    ports = {int(env["RAY_SERVE_HAPROXY_STATS_PORT"]), int(env["RAY_SERVE_HAPROXY_METRICS_PORT"])}
    assert len(ports) == 2 and not ports & {8404, 9101}


def test_a_bad_ingress_setting_is_refused():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="serve_ingress"):
        Settings(serve_ingress="nginx")
