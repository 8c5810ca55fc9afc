"""Retention and file expiry with short settings (a router redeploy, restored afterwards): a finished
prediction's input, output and files go and it shows `data_removed`, the record stays; an uploaded
file disappears after its expiry, with its download link."""

from __future__ import annotations

import io
import time

import boto3
import httpx
import pytest
import redis

from tests.integration.conftest import FIXTURES
from tests.integration.test_lifecycle import wait_for
from vendo_core.keys import Keys
from vendo_core.store import parse_iso

pytestmark = pytest.mark.integration

RETENTION_S = 3
FILE_EXPIRY_S = 30  # outlasts a cold start, the prediction and the retention sweep on a slow machine


@pytest.fixture(scope="module")
def short_lived(cluster):
    vid = cluster.push(FIXTURES / "read_file", "alice/read-file")
    cluster.deploy_router(retention_s=RETENTION_S, file_expiry_s=FILE_EXPIRY_S)
    try:
        yield vid
    finally:
        cluster.deploy_router()


def _poll(fn, timeout_s: float = 30):
    return wait_for(fn, timeout_s, "the retention sweep")


def _stored_keys(cluster, prefix: str) -> list[str]:
    s3 = boto3.client("s3", endpoint_url=cluster.settings.s3_endpoint_url)
    full = f"outputs/{prefix}"
    return [o["Key"] for o in s3.list_objects_v2(Bucket="vendo-test", Prefix=full).get("Contents", [])]


def test_data_removed_after_retention(cluster, short_lived):
    c = cluster.client()
    upload = c.files.create(io.BytesIO(b"keep me briefly"), filename="in.txt")
    p = c.predictions.create(version=short_lived, input={"document": upload.urls["get"]})
    p.wait()
    assert p.status == "succeeded", p.error
    url = p.output
    assert httpx.get(url).text.startswith("in.txt 15 ")
    assert _stored_keys(cluster, f"predictions/{p.id}/")
    r = redis.Redis.from_url(cluster.redis_url, decode_responses=True)
    keys = Keys(cluster.settings.redis_prefix)
    assert r.zscore(keys.retention(), p.id) is not None  # scheduled with the terminal write

    with cluster.http() as h:
        gone = _poll(lambda: (q := h.get(f"/v1/predictions/{p.id}").json())["data_removed"] and q)
    assert gone["status"] == "succeeded" and gone["output"] is None
    assert gone["input"] == {} and gone["logs"] == ""
    assert gone["completed_at"] == p.completed_at and gone["metrics"] == p.metrics
    assert time.time() - parse_iso(p.completed_at) >= RETENTION_S
    assert c.predictions.get(p.id).output is None  # and the client still reads the record
    # the file URL handed out before no longer works; nothing of it is left in storage
    assert httpx.get(url).status_code == 404
    assert _stored_keys(cluster, f"predictions/{p.id}/") == []
    assert r.zscore(keys.retention(), p.id) is None
    # a late stream reader still gets a finished stream
    with cluster.http() as h:
        body = h.get(f"/v1/predictions/{p.id}/stream", headers={"Accept": "text/event-stream"}).text
    assert "event: done" in body and "event: output" not in body
    # the uploaded file has its own expiry: still there
    assert c.files.get(upload.id).id == upload.id


def test_uploaded_file_expires(cluster, short_lived):
    c = cluster.client()
    f = c.files.create(io.BytesIO(b"short-lived"), filename="tmp.txt")
    link = c.files.get(f.id).urls["download"]
    assert httpx.get(link).content == b"short-lived"
    assert _stored_keys(cluster, f"files/{f.id}")

    def expired() -> bool:
        with cluster.http() as h:
            return h.get(f"/v1/files/{f.id}").status_code == 404

    _poll(expired, timeout_s=FILE_EXPIRY_S + 20)
    assert httpx.get(link).status_code == 404
    assert f.id not in [x.id for x in c.files.list()]
    _poll(lambda: not _stored_keys(cluster, f"files/{f.id}"), timeout_s=20)  # the sweep deleted the bytes
