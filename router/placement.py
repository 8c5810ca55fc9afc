"""Where the platform's own deployments and CPU-only versions may run: on CPU nodes, marked by a
custom resource (`Settings.cpu_node_resource`, "vendo_cpu") that `vendo up`, `ray_cluster.yaml`
and the KubeRay manifest declare on the head and on CPU workers, never on GPU workers. Each such
actor asks for a sliver of it, so a CPU model never takes a GPU node's CPUs while CPU nodes exist,
and the router and the file delivery stay off the nodes that cost most. In a cluster that does
not declare the resource, nothing is asked (everything may go anywhere, as Ray would place it)."""

from __future__ import annotations

import time

SLIVER = 0.001  # a thousand actors per declared unit: the resource marks nodes, it does not count
_CACHE_S = 30.0
_seen: dict[str, tuple[float, bool]] = {}


def _declared(resource: str) -> bool:
    import ray  # heavy: kept out of what unit tests import

    now = time.monotonic()
    hit = _seen.get(resource)
    if hit and now - hit[0] < _CACHE_S:
        return hit[1]
    present = ray.is_initialized() and resource in ray.cluster_resources()
    _seen[resource] = (now, present)
    return present


def cpu_node_options(resource: str | None, declared=None) -> dict:
    """Ray actor options that keep an actor on CPU nodes: `{"resources": {resource: SLIVER}}` where
    the cluster declares `resource`, else nothing. `declared` replaces the cluster lookup in tests."""
    if not resource:
        return {}
    if not (declared or _declared)(resource):
        return {}
    return {"resources": {resource: SLIVER}}


def version_options(sku_options: dict, resource: str | None, declared=None) -> dict:
    """A version's actor options: its SKU's, plus the CPU-node marker when it asks for no GPU."""
    if sku_options.get("num_gpus"):
        return sku_options
    extra = cpu_node_options(resource, declared)
    if not extra:
        return sku_options
    return {**sku_options, "resources": {**sku_options.get("resources", {}), **extra["resources"]}}
