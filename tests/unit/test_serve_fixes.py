"""The fix to Serve's cold-start push (router/serve_fixes.py), on Serve's own metrics manager."""

from __future__ import annotations

import threading
from collections import defaultdict

import pytest

pytest.importorskip("ray.serve")

from ray.serve._private.common import DeploymentHandleSource, DeploymentID  # noqa: E402
from ray.serve._private.config import DeploymentConfig  # noqa: E402
from ray.serve._private.metrics_utils import InMemoryMetricsStore  # noqa: E402
from ray.serve._private.router import QUEUED_REQUESTS_KEY, RouterMetricsManager  # noqa: E402

from router.serve_apps import autoscaling  # noqa: E402
from router.serve_fixes import fix_cold_push  # noqa: E402
from vendo_core.settings import Settings  # noqa: E402


def idle_handle_metrics() -> RouterMetricsManager:
    """Serve's metrics manager of a handle to a deployment at zero replicas that has recorded its
    (empty) queue for a while, as every handle of a version that served before has."""
    m = RouterMetricsManager.__new__(RouterMetricsManager)
    m._deployment_id = DeploymentID(name="model", app_name="v-test")
    m._handle_id, m._self_actor_id, m._handle_source = "h", "a", DeploymentHandleSource.REPLICA
    m._deployment_config = DeploymentConfig(autoscaling_config=autoscaling(Settings(), 1))
    m.num_queued_requests = 0
    m.num_requests_sent_to_replicas = defaultdict(int)
    m._queries_lock = threading.Lock()
    m.metrics_store = InMemoryMetricsStore()
    m._add_autoscaling_metrics_point()  # what Serve's recording task did while idle
    return m


def queued_now(m: RouterMetricsManager) -> float:
    return m._get_metrics_report().queued_requests[-1].value


def test_serve_alone_reports_an_idle_queue_at_the_cold_start_push():
    """Why the fix exists: without it, the report pushed the moment a request queues at zero
    replicas says the queue is empty. If a Serve release fixes this, this test fails: the fix can go."""
    m = idle_handle_metrics()
    should = getattr(RouterMetricsManager.should_send_scaled_to_zero_optimized_push, "__wrapped__",
                     RouterMetricsManager.should_send_scaled_to_zero_optimized_push)
    m.num_queued_requests = 1
    assert should(m, 0) is True
    assert queued_now(m) == 0


def test_the_cold_start_push_carries_the_queued_request():
    assert fix_cold_push() is True
    assert fix_cold_push() is True  # once per process
    m = idle_handle_metrics()
    m.num_queued_requests = 1
    assert m.should_send_scaled_to_zero_optimized_push(0) is True
    assert queued_now(m) == 1


def test_no_point_is_recorded_where_serve_would_not_push():
    fix_cold_push()
    for replicas, queued in ((1, 1), (0, 0)):
        m = idle_handle_metrics()
        m.num_queued_requests = queued
        before = len(m.metrics_store.data[QUEUED_REQUESTS_KEY])
        assert m.should_send_scaled_to_zero_optimized_push(replicas) is False
        assert len(m.metrics_store.data[QUEUED_REQUESTS_KEY]) == before
