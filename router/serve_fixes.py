"""Fixes to Ray Serve that vendo applies in its own router processes, each behind a setting.

`fix_cold_push`: Serve's cold-start optimization (a handle that queues a request for a deployment
at zero replicas pushes its metrics to the controller at once instead of at the next
`metrics_interval_s` tick) reports the handle's *recorded* queue-length series, not the request
just queued. A handle that has been idle within the look-back window has recorded zeros, so the
controller reads "no demand", does not scale up, and the request waits for the next recording and
push: up to `metrics_interval_s` (1 s in vendo's autoscaling config) on every scale-from-zero but
a handle's first. The fix records a point with the queued request just before that push, so the
controller scales up on it. Measured (findings.md, cold start): a handle's scale-up from zero
2.0-2.1 s → 1.4 s on the same deployment.

Serve's internals move between releases: the fix applies only where the methods it wraps exist
and says so in the log where they do not (the cold start then is Serve's own)."""

from __future__ import annotations

import functools
import logging

log = logging.getLogger("vendo.serve_fixes")


def fix_cold_push() -> bool:
    """Wrap Serve's `RouterMetricsManager.should_send_scaled_to_zero_optimized_push` so that, when
    it says "push now", a metrics point with the current queue is recorded first. Applies once per
    process (the wrapper is marked); returns whether the fix is in place."""
    try:
        from ray.serve._private.router import RouterMetricsManager as manager
    except ImportError:  # pragma: no cover - Serve without this router
        manager = None
    should = getattr(manager, "should_send_scaled_to_zero_optimized_push", None)
    if should is None or not hasattr(manager, "_add_autoscaling_metrics_point"):
        log.warning("Serve's cold-start push is not where vendo's fix expects it: not applied")
        return False
    if getattr(should, "__vendo_fix__", False):
        return True

    @functools.wraps(should)  # and `__wrapped__`: Serve's own, for the test that it still needs fixing
    def should_push(self, curr_num_replicas: int) -> bool:
        push = should(self, curr_num_replicas)
        if push:  # the report that follows must carry the request that made it
            self._add_autoscaling_metrics_point()
        return push

    should_push.__vendo_fix__ = True  # type: ignore[attr-defined]
    manager.should_send_scaled_to_zero_optimized_push = should_push
    return True
