"""Models, versions, hardware, collections and the account with the official client against a real
cluster: create, delete, list and search models, delete a version (its Serve app goes once its
running prediction finishes), and private models invisible (404) to other accounts everywhere."""

from __future__ import annotations

import pytest
import replicate
from ray import serve
from replicate.exceptions import ReplicateError

from tests.integration.conftest import EXAMPLES
from tests.integration.test_lifecycle import variant, wait_for, wait_status
from vendo_core.ids import app_name

pytestmark = pytest.mark.integration


def _status(call) -> tuple[int, str]:
    with pytest.raises(ReplicateError) as e:
        call()
    return e.value.status, str(e.value.detail)


def test_create_model_with_metadata_and_hardware(cluster):
    c = cluster.client()
    m = c.models.create("alice", "created", visibility="private", hardware="gpu-half",
                        description="Made by models.create", github_url="https://github.com/a/b",
                        paper_url="https://arxiv.org/abs/1", license_url="https://example.com/l",
                        cover_image_url="https://example.com/c.png")
    assert (m.owner, m.name, m.visibility, m.run_count, m.latest_version) == \
        ("alice", "created", "private", 0, None)
    assert m.description == "Made by models.create" and m.github_url == "https://github.com/a/b"
    assert m.url.endswith("/alice/created")
    got = c.models.get("alice/created")
    assert got.paper_url == "https://arxiv.org/abs/1" and got.cover_image_url == "https://example.com/c.png"
    assert _status(lambda: c.models.create("alice", "created", visibility="public", hardware="cpu"))[0] == 409
    # another owner, as for a model one cannot see
    assert _status(lambda: c.models.create("bob", "mine", visibility="public", hardware="cpu"))[0] == 404


@pytest.mark.parametrize("body, field", [
    ({"visibility": "secret", "hardware": "cpu"}, "visibility"),
    ({"hardware": "cpu"}, "visibility"),
    ({"visibility": "public", "hardware": "tpu"}, "hardware"),
    ({"visibility": "public"}, "hardware"),
    ({"visibility": "public", "hardware": "cpu", "github_url": "github.com/a"}, "github_url"),
    ({"visibility": "public", "hardware": "cpu", "colour": "red"}, "colour"),
    ({"visibility": "public", "hardware": "cpu", "name": "-bad name"}, "name"),
])
def test_create_model_bad_input_is_422_naming_the_field(cluster, body, field):
    with cluster.http() as h:
        r = h.post("/v1/models", json={"owner": "alice", "name": "bad", **body})
    assert r.status_code == 422, r.text
    problem = r.json()
    assert field in problem["detail"] and field in [f["field"] for f in problem["invalid_fields"]]
    assert r.headers["content-type"].startswith("application/problem+json")


def test_delete_model_only_without_versions(cluster, tmp_path):
    alice, bob = cluster.client(), cluster.client("bob")
    alice.models.create("alice", "doomed", visibility="public", hardware="cpu")
    vid = cluster.push(variant(EXAMPLES / "hello-world", tmp_path / "d", "models-admin doomed"), "alice/doomed")
    status, detail = _status(lambda: alice.models.delete("alice/doomed"))
    assert status == 409 and "1 version" in detail
    assert _status(lambda: bob.models.delete("alice/doomed"))[0] == 403  # public: visible, not bob's
    assert alice.models.get("alice/doomed").versions.delete(vid) is True
    assert alice.models.delete("alice/doomed") is True
    assert _status(lambda: alice.models.get("alice/doomed"))[0] == 404
    assert _status(lambda: alice.models.delete("alice/doomed"))[0] == 404
    alice.models.create("alice", "doomed-private", visibility="private", hardware="cpu")
    assert _status(lambda: bob.models.delete("alice/doomed-private"))[0] == 404
    # the name is free again
    assert alice.models.create("alice", "doomed", visibility="private", hardware="cpu").visibility == "private"


def test_push_to_a_created_model_uses_its_hardware(cluster, tmp_path):
    c = cluster.client()
    c.models.create("alice", "halfgpu", visibility="private", hardware="gpu-small")
    cluster.push(variant(EXAMPLES / "hello-world", tmp_path / "h", "models-admin halfgpu"), "alice/halfgpu")
    with cluster.http() as h:
        rows = h.get("/v1/status").json()["versions"]
    assert next(r for r in rows if r["model"] == "alice/halfgpu")["hardware"] == "gpu-small"


def test_search_matches_owner_name_and_description(cluster):
    alice, bob = cluster.client(), cluster.client("bob")
    alice.models.create("alice", "needle-public", visibility="public", hardware="cpu",
                        description="Finds the HAYSTACK")
    alice.models.create("alice", "needle-private", visibility="private", hardware="cpu")
    alice.models.create("alice", "other", visibility="public", hardware="cpu", description="a haystack")
    names = lambda page: {f"{m.owner}/{m.name}" for m in page.results}  # noqa: E731
    assert names(alice.models.search("needle")) == {"alice/needle-public", "alice/needle-private"}
    assert names(bob.models.search("NEEDLE")) == {"alice/needle-public"}
    assert names(bob.models.search("haystack")) == {"alice/needle-public", "alice/other"}
    assert names(bob.models.search("needle haystack")) == {"alice/needle-public"}
    assert names(bob.models.search("alice/needle")) == {"alice/needle-public"}
    assert bob.models.search("no-such-thing-anywhere").results == []
    page = alice.models.search("needle")
    assert all(m.latest_version is None and m.run_count == 0 for m in page.results) and page.next is None
    with cluster.http() as h:
        r = h.request("QUERY", "/v1/models", content=b"   ", headers={"Content-Type": "text/plain"})
    assert r.status_code == 422 and "query" in r.json()["detail"]


def test_list_paginates_over_100_models_and_sorts(cluster):
    c = cluster.client("bob")
    created = [f"list-{i:03d}" for i in range(105)]
    for name in created:
        c.models.create("bob", name, visibility="private", hardware="cpu")
    first = c.models.list()
    assert len(first.results) == 100 and first.next and first.next.startswith("http")
    seen = [f"{m.owner}/{m.name}" for page in replicate.paginate(c.models.list) for m in page]
    assert len(seen) == len(set(seen))
    mine = [s for s in seen if s.startswith("bob/list-")]
    # none of these has a version: newest model first among them
    assert mine == [f"bob/{n}" for n in reversed(created)]
    assert not any(s.startswith("bob/") for p in replicate.paginate(cluster.client("alice").models.list)
                   for s in (f"{m.owner}/{m.name}" for m in p))
    with cluster.http("bob") as h:
        r = h.get("/v1/models", params={"sort_by": "model_created_at", "sort_direction": "asc"})
        assert r.status_code == 200
        page = r.json()
        assert "sort_by=model_created_at" in page["next"] and "sort_direction=asc" in page["next"]
        ordered = [f"{m['owner']}/{m['name']}" for m in page["results"]]
        while page["next"]:
            page = h.get(page["next"]).json()
            ordered += [f"{m['owner']}/{m['name']}" for m in page["results"]]
        assert [s for s in ordered if s.startswith("bob/list-")] == [f"bob/{n}" for n in created]
        for params, field in (({"sort_by": "name"}, "sort_by"), ({"sort_direction": "up"}, "sort_direction"),
                              ({"cursor": "%%%"}, "cursor")):
            r = h.get("/v1/models", params=params)
            assert r.status_code == 422 and field in r.json()["detail"], r.text


def test_latest_version_sort_puts_new_versions_first(cluster, tmp_path):
    c = cluster.client()
    c.models.create("alice", "sort-old", visibility="public", hardware="cpu")
    c.models.create("alice", "sort-new", visibility="public", hardware="cpu")
    cluster.push(variant(EXAMPLES / "hello-world", tmp_path / "s", "models-admin sort"), "alice/sort-old")
    with cluster.http() as h:
        desc = [m["name"] for m in h.get("/v1/models").json()["results"]]
        assert desc.index("sort-old") < desc.index("sort-new")  # it has a version, sort-new none
        by_created = [m["name"] for m in h.get("/v1/models", params={"sort_by": "model_created_at"}).json()["results"]]
        assert by_created.index("sort-new") < by_created.index("sort-old")


def test_delete_version_waits_for_running_prediction_then_removes_app(cluster, tmp_path):
    c = cluster.client()
    v1, v2 = (cluster.push(variant(EXAMPLES / "slow", tmp_path / f"v{i}", f"models-admin vdel {i}"),
                           "alice/vdel", visibility="public") for i in (1, 2))
    assert c.models.get("alice/vdel").latest_version.id == v2
    p = c.predictions.create(version=v2, input={"steps": 50, "step_s": 0.1})
    wait_status(p, ("processing",), timeout_s=90)
    app = app_name(v2)
    import redis

    from vendo_core.storage import open_store

    objects = open_store(cluster.settings)
    with redis.Redis.from_url(cluster.redis_url, decode_responses=True) as r:
        packages = {v: r.hget(f"vendo:version:{v}", "package_key") for v in (v1, v2)}
    assert all(objects.exists(k) for k in packages.values())
    assert _status(lambda: cluster.client("bob").models.get("alice/vdel").versions.delete(v2))[0] == 403
    assert c.models.get("alice/vdel").versions.delete(v2) is True
    # gone from the registry at once ...
    assert c.models.get("alice/vdel").latest_version.id == v1
    assert [v.id for v in c.models.get("alice/vdel").versions.list()] == [v1]
    assert _status(lambda: c.models.get("alice/vdel").versions.get(v2))[0] == 404
    for ref in (v2, f"alice/vdel:{v2}"):
        assert _status(lambda ref=ref: c.predictions.create(version=ref, input={"steps": 1}))[0] == 404
    assert _status(lambda: c.models.get("alice/vdel").versions.delete(v2))[0] == 404
    # ... while the prediction already running keeps its app and finishes normally
    p.reload()
    assert p.status == "processing" and app in serve.status().applications
    p.wait()
    assert p.status == "succeeded" and "50 steps" in p.output
    wait_for(lambda: app not in serve.status().applications, 60, f"the Serve app {app} to be deleted")
    # its package goes with it (no other version has those contents); the other version's stays
    wait_for(lambda: not objects.exists(packages[v2]), 30, "the deleted version's package to be removed")
    assert objects.exists(packages[v1])
    # the model runs on its previous version
    assert c.run("alice/vdel", input={"steps": 1, "step_s": 0}).startswith("ran 1 steps")


def test_deleted_never_deployed_version_is_refused_and_pushable_again(cluster, tmp_path):
    c = cluster.client()
    src = variant(EXAMPLES / "hello-world", tmp_path / "r", "models-admin repush")
    vid = cluster.push(src, "alice/repush")
    assert c.models.get("alice/repush").versions.delete(vid) is True
    assert c.models.get("alice/repush").latest_version is None
    assert _status(lambda: c.run("alice/repush", input={}))[0] == 404
    assert app_name(vid) not in serve.status().applications
    assert cluster.push(src, "alice/repush") == vid  # the same contents register again
    assert c.run(f"alice/repush:{vid}", input={"text": "again"}) == "hello again"


def test_hardware_list(cluster):
    hw = cluster.client("bob").hardware.list()
    assert [(h.sku, h.name) for h in hw][:2] == [("cpu", "CPU"), ("gpu-small", "Quarter of a GPU")]
    assert {"gpu-half", "gpu"} <= {h.sku for h in hw}


def test_collections_show_only_visible_models(cluster, tmp_path):
    alice, bob = cluster.client(), cluster.client("bob")
    alice.models.create("alice", "coll-public", visibility="public", hardware="cpu")
    alice.models.create("alice", "coll-private", visibility="private", hardware="cpu")
    bob.models.create("bob", "coll-bob", visibility="private", hardware="cpu")
    vid = cluster.push(variant(EXAMPLES / "hello-world", tmp_path / "c", "models-admin coll"), "alice/coll-public")
    listed = alice.collections.list()
    assert [c.slug for c in listed.results] == ["starter-kit", "empty"] and listed.next is None
    assert all(c.models is None for c in listed.results)
    kit = alice.collections.get("starter-kit")
    assert kit.name == "Starter kit" and kit.description
    assert [f"{m.owner}/{m.name}" for m in kit] == ["alice/coll-public", "alice/coll-private"]
    assert kit.models[0].latest_version.id == vid
    assert [f"{m.owner}/{m.name}" for m in bob.collections.get("starter-kit")] == \
        ["alice/coll-public", "bob/coll-bob"]
    assert len(bob.collections.get("empty")) == 0
    assert _status(lambda: bob.collections.get("no-such-collection"))[0] == 404


def test_accounts_current(cluster):
    for user in ("alice", "bob"):
        acct = cluster.client(user).accounts.current()
        assert (acct.username, acct.type, acct.name) == (user, "user", user)


def test_private_model_is_404_to_others_everywhere(cluster, tmp_path):
    alice, bob = cluster.client(), cluster.client("bob")
    vid = cluster.push(variant(EXAMPLES / "hello-world", tmp_path / "p", "models-admin private"), "alice/hidden",
                       visibility="private")
    assert alice.run(f"alice/hidden:{vid}", input={"text": "me"}) == "hello me"
    calls = {
        "models.get": lambda: bob.models.get("alice/hidden"),
        "versions.list": lambda: bob.models.get("alice/hidden").versions.list(),
        "predictions.create by id": lambda: bob.predictions.create(version=vid, input={}),
        "predictions.create by ref": lambda: bob.predictions.create(version=f"alice/hidden:{vid}", input={}),
        "predictions.create by name": lambda: bob.predictions.create(version="alice/hidden", input={}),
        "models.predictions.create": lambda: bob.models.predictions.create("alice/hidden", input={}),
        "run": lambda: bob.run(f"alice/hidden:{vid}", input={}),
        "models.delete": lambda: bob.models.delete("alice/hidden"),
    }
    for what, call in calls.items():
        assert _status(call)[0] == 404, what
    with cluster.http("bob") as h:  # what the client reaches only through a Model it cannot get
        for method, path in (("GET", f"/v1/models/alice/hidden/versions/{vid}"),
                             ("GET", "/v1/models/alice/hidden/versions"),
                             ("DELETE", f"/v1/models/alice/hidden/versions/{vid}")):
            assert h.request(method, path).status_code == 404, (method, path)
    assert "alice/hidden" not in {f"{m.owner}/{m.name}" for m in bob.models.search("hidden").results}
    assert "alice/hidden" in {f"{m.owner}/{m.name}" for m in alice.models.search("hidden").results}
    assert "alice/hidden" not in {f"{m.owner}/{m.name}" for p in replicate.paginate(bob.models.list) for m in p}
    assert "alice/hidden" in {f"{m.owner}/{m.name}" for p in replicate.paginate(alice.models.list) for m in p}
    # a public model is anyone's to run
    shown = cluster.push(variant(EXAMPLES / "hello-world", tmp_path / "s", "models-admin shown"), "alice/shown",
                         visibility="public")
    assert bob.run(f"alice/shown:{shown}", input={"text": "bob"}) == "hello bob"
    assert bob.run("alice/shown", input={"text": "too"}) == "hello too"

