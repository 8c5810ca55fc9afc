"""Where the platform's deployments and CPU-only versions may run (router/placement.py)."""

from __future__ import annotations

from router.placement import SLIVER, cpu_node_options, version_options


def test_cpu_node_marker_asked_only_where_the_cluster_declares_it():
    assert cpu_node_options("vendo_cpu", declared=lambda r: True) == {"resources": {"vendo_cpu": SLIVER}}
    assert cpu_node_options("vendo_cpu", declared=lambda r: False) == {}
    assert cpu_node_options(None, declared=lambda r: True) == {}


def test_gpu_versions_go_by_their_gpus_and_cpu_versions_to_cpu_nodes():
    yes = lambda r: True  # noqa: E731
    gpu = {"num_cpus": 1, "num_gpus": 0.5}
    assert version_options(gpu, "vendo_cpu", declared=yes) == gpu
    cpu = {"num_cpus": 1, "num_gpus": 0, "memory": 1 << 30}
    assert version_options(cpu, "vendo_cpu", declared=yes) == {**cpu, "resources": {"vendo_cpu": SLIVER}}
    assert version_options(cpu, "vendo_cpu", declared=lambda r: False) == cpu
