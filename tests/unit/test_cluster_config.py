"""The cluster configs people start vendo with: `ray_cluster.yaml` validates against the schema of
the installed Ray's cluster launcher, starts vendo on the head, and brings GPU workers from zero;
the KubeRay manifest has the same shape; both run the image deploy/Dockerfile builds."""

from __future__ import annotations

import json
from importlib import util
from pathlib import Path

import jsonschema
import yaml

from vendo_core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _launcher_schema() -> dict:
    ray_dir = Path(util.find_spec("ray").submodule_search_locations[0])  # no `import ray`: it is slow
    return json.loads((ray_dir / "autoscaler" / "ray-schema.json").read_text())


def test_ray_cluster_yaml_validates_and_scales_gpus_from_zero():
    config = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    jsonschema.validate(config, _launcher_schema())  # what `ray up` checks first
    types = config["available_node_types"]
    head = config["head_node_type"]
    assert head in types
    workers = {name: t for name, t in types.items() if name != head}
    gpu = {name: t for name, t in workers.items() if t.get("resources", {}).get("GPU")}
    assert gpu and all(t["min_workers"] == 0 for t in workers.values())
    assert not types[head].get("resources", {}).get("GPU")  # the head is a CPU node
    marker = Settings().cpu_node_resource  # router/placement.py: CPU nodes declare it, GPU nodes never
    assert all(bool(t.get("resources", {}).get(marker)) != bool(t.get("resources", {}).get("GPU"))
               for t in types.values())
    start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=0.0.0.0" in start and "vendo up --address auto" in start
    assert any("pip install" in c and "/home/ray/vendo" in c for c in config["setup_commands"])
    assert config["docker"]["image"].endswith(":latest")


def test_kuberay_manifest_is_a_raycluster_with_gpu_workers_from_zero():
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "kuberay" / "raycluster.yaml").read_text()))
    cluster = next(d for d in docs if d["kind"] == "RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["spec"]["enableInTreeAutoscaling"] is True
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "vendo up --address auto" in " ".join(head["lifecycle"]["postStart"]["exec"]["command"])
    assert head["readinessProbe"]["httpGet"]["path"] == "/readyz"
    gpu_groups = [g for g in cluster["spec"]["workerGroupSpecs"]
                  if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
    marker = Settings().cpu_node_resource
    for group in [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]:
        declared = json.loads(json.loads(group["rayStartParams"].get("resources", '"{}"')))
        assert bool(declared.get(marker)) != (group in gpu_groups)
    assert gpu_groups and all(g["minReplicas"] == 0 for g in cluster["spec"]["workerGroupSpecs"])
    images = {c["image"] for g in [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
              for c in g["template"]["spec"]["containers"]}
    ray_yaml = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    assert images == {ray_yaml["docker"]["image"]}  # one image for both
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "FROM rayproject/ray:2.60.0-py311" in dockerfile


def test_joining_a_cluster_with_state_on_this_machine_is_warned_about():
    from cluster.up import shared_state_warnings

    assert shared_state_warnings(Settings(), joined=False) == []
    local = shared_state_warnings(Settings(), joined=True)
    assert len(local) == 2 and "VENDO_REDIS_URL" in local[0] and "VENDO_STORAGE_URL" in local[1]
    shared = Settings(redis_url="rediss://u:p@redis.example:6380/0", storage_url="s3://bucket/vendo")
    assert shared_state_warnings(shared, joined=True) == []
