"""Named deployments (keep-warm) with the official client."""

from __future__ import annotations

import pytest
from replicate.exceptions import ReplicateError

from tests.integration.conftest import FIXTURES
from tests.integration.test_lifecycle import replicas, variant, wait_for
from vendo_core.ids import deployment_app_name

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def warm_versions(cluster, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("warm")
    return [cluster.push(variant(FIXTURES / "slow_setup", tmp / f"w{i}", f"warm {i}"), "alice/warm")
            for i in range(2)]


def test_deployment_lifecycle_with_the_client(cluster, warm_versions):
    c = cluster.client()
    d = c.deployments.create(name="warm-one", model="alice/warm", version=warm_versions[0],
                             hardware="cpu", min_instances=1, max_instances=2)
    assert d.owner == "alice" and d.current_release.number == 1
    assert d.current_release.configuration.min_instances == 1
    app = deployment_app_name("alice", "warm-one")
    # min_instances 1: a replica comes up (and runs setup) with no prediction asking for it
    wait_for(lambda: (replicas(app) or {}).get("running") == 1, 90, "a warm replica")
    p = c.deployments.predictions.create("alice/warm-one", input={"text": "hot"})
    p.wait()
    assert p.status == "succeeded" and p.output.startswith("hot from")
    # no cold start: the replica finished setup() before the prediction was even created
    import redis

    from vendo_core.store import parse_iso

    setup_done = float(redis.Redis.from_url(cluster.redis_url, decode_responses=True).hget(
        f"vendo:version:{warm_versions[0]}", "setup_completed_at"))
    assert setup_done < parse_iso(p.created_at)
    with cluster.http() as h:
        assert h.get(f"/v1/predictions/{p.id}").json()["deployment"] == "alice/warm-one"

    assert "warm-one" in [x.name for x in c.deployments.list().results]
    assert c.deployments.get("alice/warm-one").current_release.version == warm_versions[0]

    # a running prediction survives a release update to another version
    long = c.deployments.predictions.create("alice/warm-one", input={"text": "long", "seconds": 4})
    wait_for(lambda: long.reload() or long.status == "processing", 30, "the long prediction to run")
    d = c.deployments.update("alice", "warm-one", version=warm_versions[1], min_instances=1)
    assert d.current_release.number == 2 and d.current_release.version == warm_versions[1]
    long.wait()
    assert long.status == "succeeded", long.error
    q = c.deployments.predictions.create("alice/warm-one", input={"text": "new"})
    q.wait()
    assert q.status == "succeeded" and q.version == warm_versions[1]

    # the version a deployment runs cannot be deleted from under it
    with cluster.http() as h:
        r = h.delete(f"/v1/models/alice/warm/versions/{warm_versions[1]}")
    assert r.status_code == 409 and "alice/warm-one" in r.json()["detail"]

    assert c.deployments.delete("alice", "warm-one") is True
    wait_for(lambda: replicas(app) is None, 90, "the deployment's app to be deleted")
    with pytest.raises(ReplicateError) as e:
        c.deployments.get("alice/warm-one")
    assert e.value.status == 404


def test_scale_to_zero_deployment_and_validation(cluster, warm_versions):
    c = cluster.client()
    c.deployments.create(name="cold", model="alice/warm", version=warm_versions[0], hardware="cpu",
                         min_instances=0, max_instances=1)
    app = deployment_app_name("alice", "cold")
    assert not (replicas(app) or {}).get("running")  # nothing warm
    p = c.deployments.predictions.create("alice/cold", input={"text": "c"})
    assert p.status == "starting"
    p.wait()
    assert p.status == "succeeded"
    assert (replicas(app) or {}).get("running") == 1  # it scaled from zero for this prediction
    with cluster.http() as h:
        r = h.post("/v1/deployments", json={"name": "bad", "model": "alice/warm", "version": warm_versions[0],
                                            "min_instances": 3, "max_instances": 1})
        assert r.status_code == 422 and r.json()["invalid_fields"][0]["field"] == "min_instances"
        r = h.post("/v1/deployments", json={"name": "bad", "model": "alice/warm", "hardware": "tpu-9000"})
        assert r.status_code == 422 and "hardware" in r.json()["detail"]
        r = h.post("/v1/deployments", json={"name": "cold", "model": "alice/warm"})
        assert r.status_code == 409
    with cluster.http("bob") as h:
        assert h.get("/v1/deployments/alice/cold").status_code == 404
        assert h.post("/v1/deployments/alice/cold/predictions", json={"input": {}}).status_code == 404
    c.deployments.delete("alice", "cold")


def test_another_accounts_deployment_never_blocks_deleting_your_version(cluster, tmp_path):
    from tests.integration.conftest import EXAMPLES

    vid = cluster.push(variant(EXAMPLES / "hello-world", tmp_path / "p", "pinned"), "alice/pinned",
                       visibility="public")
    with cluster.http("bob") as h:
        r = h.post("/v1/deployments", json={"name": "pins-alice", "model": "alice/pinned", "version": vid,
                                            "hardware": "cpu", "min_instances": 0, "max_instances": 1})
        assert r.status_code == 201, r.text
    with cluster.http("alice") as h:
        r = h.delete(f"/v1/models/alice/pinned/versions/{vid}")
        assert r.status_code in (202, 204), r.text
    with cluster.http("bob") as h:
        r = h.post("/v1/deployments/bob/pins-alice/predictions", json={"input": {"text": "x"}})
        assert r.status_code == 404 and "deleted" in r.json()["detail"]
        assert h.delete("/v1/deployments/bob/pins-alice").status_code in (200, 204)


def test_deployment_app_names_cannot_collide():
    assert deployment_app_name("a--b", "c") != deployment_app_name("a", "b--c")
    assert deployment_app_name("a", "b") == deployment_app_name("a", "b")
