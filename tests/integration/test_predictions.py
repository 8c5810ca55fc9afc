"""The Replicate API end to end with the official client against a real cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest
import replicate
from replicate.exceptions import ModelError, ReplicateError

pytestmark = pytest.mark.integration


def test_run_by_version_and_by_name(cluster, examples):
    c = cluster.client()
    vid = examples["hello-world"]
    assert c.run(f"alice/hello-world:{vid}", input={"text": "vendo"}) == "hello vendo"
    assert c.run("alice/hello-world", input={"text": "ray", "repeat": 2}).count("ray") == 2


def test_inputs_and_outputs_larger_than_a_grpc_message_get_through(cluster, examples):
    """The router calls model replicas over Serve's gRPC transport, whose default message cap
    (4 MiB) is under vendo's body limit: a 6 MiB input must still arrive whole (it goes by Ray's
    actor call), and a 2 MiB input's 8 MiB answer (over gRPC) come back whole."""
    c = cluster.client()
    model = f"alice/hello-world:{examples['hello-world']}"
    text = "x" * (6 * 2**20)
    assert c.run(model, input={"text": text}) == f"hello {text}"
    text = "y" * (2 * 2**20)
    assert c.run(model, input={"text": text, "repeat": 4}) == " ".join([f"hello {text}"] * 4)


def test_module_level_client_unchanged(cluster, examples):
    """`replicate.run` with REPLICATE_BASE_URL/REPLICATE_API_TOKEN only, as users configure it."""
    code = ("import replicate; print(replicate.run('alice/hello-world', input={'text': 'env'}))")
    env = dict(os.environ, REPLICATE_BASE_URL=cluster.url, REPLICATE_API_TOKEN=cluster.tokens["alice"])
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "hello env"


def test_streaming_yields_while_running(cluster, examples):
    c = cluster.client()
    seen = []
    t0 = time.monotonic()
    for event in c.stream(f"alice/stream:{examples['stream']}",
                          input={"prompt": "one two three", "max_tokens": 6, "delay": 0.3}):
        if event.event == event.EventType.OUTPUT:
            seen.append((time.monotonic() - t0, str(event)))
    assert len(seen) == 6
    # tokens arrive spread out over the run, not all at the end
    assert seen[-1][0] - seen[0][0] > 1.0


def test_iterator_run_returns_generator(cluster, examples):
    c = cluster.client()
    out = c.run(f"alice/stream:{examples['stream']}", input={"prompt": "a b", "max_tokens": 3, "delay": 0})
    assert not isinstance(out, (str, list))
    items = list(out)
    assert len(items) == 3 and all(isinstance(i, str) for i in items)


def test_image_outputs_are_downloadable_files(cluster, examples):
    """With an https endpoint the official client wraps output URLs in `FileOutput`, whose `read()`
    sends the client's `Authorization` header; the links are vendo's own (its delivery app at
    /v1/storage, streaming from S3), which ignore that header and check their own signature. The
    test stack's S3 refuses a request authenticated twice, as S3 does, so the presigned link that
    used to be given out fails the same read."""
    from replicate.helpers import FileOutput

    c = cluster.client()
    out = c.run(f"alice/image:{examples['image']}", input={"size": 16, "count": 2, "seed": 1})
    assert isinstance(out, list) and len(out) == 2
    for item in out:
        url = str(item)
        assert url.startswith(f"{cluster.url}/v1/storage/predictions/") and "sig=" in url
        body = FileOutput(url, c).read()  # exactly what the client does for an https output
        assert body[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"".join(FileOutput(url, c)) == body
        plain = httpx.get(url)  # and without any token: the link is the credential
        assert plain.status_code == 200 and plain.content == body
        assert plain.headers["content-type"] == "image/png" and plain.headers["x-content-type-options"] == "nosniff"
        ranged = httpx.get(url, headers={"Range": "bytes=0-7"})
        assert ranged.status_code == 206 and ranged.content == body[:8]
        assert ranged.headers["content-range"] == f"bytes 0-7/{len(body)}"
        assert httpx.get(url.replace("sig=", "sig=x")).status_code == 404

    from vendo_core.storage import open_store

    presigned = open_store(cluster.settings.model_copy(update={"s3_presigned_urls": True}))
    key = url.split("/v1/storage/", 1)[1].split("?", 1)[0]
    link = presigned.url(key, cluster.url, 60)
    assert httpx.get(link).content == body  # a presigned link alone is fine
    with pytest.raises(httpx.HTTPStatusError) as refused:
        FileOutput(link, c).read()  # but S3 refuses it with the client's bearer header
    assert refused.value.response.status_code == 400  # S3: "Only one auth mechanism allowed"


def test_create_then_wait_and_logs(cluster, examples):
    c = cluster.client()
    p = c.predictions.create(version=examples["slow"], input={"steps": 5, "step_s": 0.05})
    assert p.status == "starting"
    p.wait()
    assert p.status == "succeeded", p.error
    assert "5/5" in p.logs
    assert p.metrics["predict_time"] > 0
    assert p.progress is not None and p.progress.percentage == 1.0


def test_cancel_slow_model_within_two_seconds(cluster, examples):
    c = cluster.client()
    p = c.predictions.create(version=examples["slow"], input={"steps": 600, "step_s": 0.1})
    # wait until it really runs on the replica
    deadline = time.monotonic() + 60
    while p.status != "processing" and time.monotonic() < deadline:
        time.sleep(0.1)
        p.reload()
    assert p.status == "processing"
    t0 = time.monotonic()
    c.predictions.cancel(p.id)
    p.reload()
    assert p.status == "canceled"
    # the replica is free again: a new prediction on the same version succeeds promptly
    q = c.predictions.create(version=examples["slow"], input={"steps": 1, "step_s": 0})
    q.wait()
    assert q.status == "succeeded"
    assert time.monotonic() - t0 < 30
    assert p.completed_at is not None


def test_bad_input_is_422_with_field(cluster, examples):
    c = cluster.client()
    with pytest.raises(ReplicateError) as e:
        c.predictions.create(version=examples["hello-world"], input={"repeat": 99})
    assert e.value.status == 422
    assert "repeat" in str(e.value.detail)


def test_model_error_is_failed_prediction(cluster, examples):
    c = cluster.client()
    with pytest.raises(ReplicateError) as e:
        c.predictions.create(version=examples["image"], input={"size": 4})
    assert e.value.status == 422 and "size" in e.value.detail


def test_models_and_versions(cluster, examples):
    c = cluster.client()
    m = c.models.get("alice/hello-world")
    assert m.owner == "alice" and m.latest_version.id == examples["hello-world"]
    versions = m.versions.list()
    assert examples["hello-world"] in [v.id for v in versions]
    v = m.versions.get(examples["hello-world"])
    schema = v.openapi_schema["components"]["schemas"]
    assert schema["Input"]["properties"]["repeat"]["maximum"] == 10


def test_other_accounts_see_404(cluster, examples):
    alice, bob = cluster.client("alice"), cluster.client("bob")
    p = alice.predictions.create(version=examples["hello-world"], input={})
    with pytest.raises(ReplicateError) as e:
        bob.predictions.get(p.id)
    assert e.value.status == 404
    with pytest.raises(ReplicateError) as e:
        bob.predictions.cancel(p.id)
    assert e.value.status == 404
    assert p.id not in [q.id for q in bob.predictions.list().results]


def test_unauthenticated_is_401(cluster):
    r = httpx.get(f"{cluster.url}/v1/predictions")
    assert r.status_code == 401
    assert r.json()["title"] == "Unauthenticated"


def test_account(cluster):
    acct = cluster.client().accounts.current()
    assert acct.username == "alice" and acct.type == "user"


def test_list_and_paginate_over_100(cluster, examples):
    c = cluster.client("bob")
    # bob runs alice's public model; each create is cheap and they finish on their own
    ids = set()
    with cluster.http("bob") as h:
        for i in range(105):
            r = h.post("/v1/predictions", json={"version": examples["hello-world"], "input": {"text": str(i)}})
            assert r.status_code == 201
            ids.add(r.json()["id"])
    first = c.predictions.list()
    assert len(first.results) == 100 and first.next and first.next.startswith("http")
    seen = []
    for page in replicate.pagination.paginate(c.predictions.list):
        seen += [p.id for p in page]
    assert ids <= set(seen)
    assert len(seen) == len(set(seen))


def test_model_errors_fail_the_prediction(cluster):
    from tests.integration.conftest import FIXTURES

    vid = cluster.push(FIXTURES / "raises", "alice/raises")
    c = cluster.client()
    with pytest.raises(ModelError) as e:
        c.run(f"alice/raises:{vid}", input={})
    assert "boom" in str(e.value)
