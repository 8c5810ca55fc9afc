"""vendo as a Python API inside the Ray cluster: `cluster.handle.Vendo` in a Ray task runs, streams,
creates, lists and cancels predictions through the router's Serve handle, with the REST API's
rules (tokens, validation, ownership) and records (`source` "handle", listed by the API and the
CLI)."""

from __future__ import annotations

import pytest
import ray

from tests.integration.test_cli import vendo

pytestmark = pytest.mark.integration


@ray.remote(num_cpus=0)
def _in_a_task(token: str, versions: dict[str, str]) -> dict:
    from cluster.handle import ModelError, Vendo
    from vendo_core.errors import FieldError, NotFound, Unauthenticated

    v = Vendo(token)
    out: dict = {"run": v.run("alice/hello-world", input={"text": "handle", "repeat": 2})}
    out["run_version"] = v.run(f"alice/hello-world:{versions['hello-world']}", input={"text": "pinned"})
    out["chunks"] = list(v.stream("alice/stream", input={"prompt": "hi", "max_tokens": 4, "delay": 0}))
    p = v.predictions.create("alice/slow", input={"steps": 300})
    out["created"] = (p.id, p.status, p.source, p.urls.get)
    out["listed"] = [q.id for q in v.predictions.list().results][:5]
    out["canceled"] = p.cancel().wait().status
    out["got"] = v.predictions.get(p.id).status
    try:
        v.predictions.create("alice/hello-world", input={"repeat": 99})
    except FieldError as e:  # as the API's 422: the field and the reason
        out["invalid"] = (e.status, e.problem())
    try:
        Vendo("not-a-token").run("alice/hello-world", input={})
    except Unauthenticated as e:
        out["unauthenticated"] = e.status
    try:
        v.predictions.get("nosuchprediction")
    except NotFound as e:
        out["not_found"] = e.status
    try:
        v.run(versions["raises"], input={})
    except ModelError as e:
        out["model_error"] = (e.prediction.status, e.prediction.error)
    # calls go over Serve's gRPC transport (4 MiB messages): a 2 MiB input's 8 MiB answer comes back
    # whole, and a 5 MiB input goes by Ray's actor call instead
    y, z = "y" * (2 * 2**20), "z" * (5 * 2**20)
    out["large_answer"] = v.run("alice/hello-world", input={"text": y, "repeat": 4}) == " ".join([f"hello {y}"] * 4)
    out["large_input"] = v.run("alice/hello-world", input={"text": z}) == f"hello {z}"
    out["transports"] = (v.handle_for(({"text": y},)).handle_options._by_reference,
                         v.handle_for(({"text": z},)).handle_options._by_reference)
    return out


def test_a_ray_task_uses_vendo_through_the_handle(cluster, examples):
    from tests.integration.conftest import FIXTURES

    raises = cluster.push(FIXTURES / "raises", "alice/raises")
    got = ray.get(_in_a_task.remote(cluster.tokens["alice"], {**examples, "raises": raises}), timeout=300)
    assert got["run"] == "hello handle hello handle"
    assert got["run_version"] == "hello pinned"
    assert "".join(got["chunks"]).strip() and len(got["chunks"]) == 4, got["chunks"]
    pid, status, source, url = got["created"]
    assert status == "starting" and source == "handle" and url.endswith(f"/v1/predictions/{pid}")
    assert pid in got["listed"]
    assert got["canceled"] == "canceled" and got["got"] == "canceled"
    status, problem = got["invalid"]
    assert status == 422 and problem["invalid_fields"][0]["field"] == "repeat", problem
    assert got["unauthenticated"] == 401 and got["not_found"] == 404
    assert got["model_error"] == ("failed", "boom")
    assert got["large_answer"] and got["large_input"] and got["transports"] == (False, True)

    # a normal record: the REST API and the CLI show it with its source
    with cluster.http("alice") as h:
        rec = h.get(f"/v1/predictions/{pid}").json()
        assert rec["source"] == "handle" and rec["status"] == "canceled"
        handle_only = h.get("/v1/predictions", params={"source": "handle"}).json()["results"]
        assert pid in [p["id"] for p in handle_only] and {p["source"] for p in handle_only} == {"handle"}
    with cluster.http("bob") as h:  # bob's token does not see alice's handle predictions
        assert h.get(f"/v1/predictions/{pid}").status_code == 404
    listed = vendo(cluster, "predictions", "list")
    assert listed.returncode == 0 and pid in listed.stdout and "handle" in listed.stdout
