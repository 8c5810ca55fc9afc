"""S3Store against a real S3-protocol server over HTTP (moto's standalone server in a subprocess)."""

import calendar
import os
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.s3server import TEST_CREDENTIALS, s3_server
from vendo_core.settings import Settings
from vendo_core.storage import S3Store, open_store

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def endpoint():
    saved = {k: os.environ.get(k) for k in TEST_CREDENTIALS}
    os.environ.update(TEST_CREDENTIALS)
    try:
        with s3_server() as url:
            yield url
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def store(endpoint, request):
    bucket = "t-" + request.node.name.lower().replace("_", "-")[:50]
    return S3Store(bucket, "vendo/test", endpoint_url=endpoint, create_bucket=True)


def test_round_trips(store, tmp_path):
    store.put_bytes("predictions/p1/out.txt", b"hello", "text/plain")
    assert store.get_bytes("predictions/p1/out.txt") == b"hello"
    assert store.exists("predictions/p1/out.txt")
    assert not store.exists("predictions/p1/none.txt")
    head = store.client.head_object(Bucket=store.bucket, Key="vendo/test/predictions/p1/out.txt")
    assert head["ContentType"] == "text/plain"

    source = tmp_path / "blob.bin"
    source.write_bytes(os.urandom(200_000))
    store.put_file("predictions/p1/blob.bin", source, "application/octet-stream")
    store.download("predictions/p1/blob.bin", tmp_path / "deep" / "copy.bin")
    assert (tmp_path / "deep" / "copy.bin").read_bytes() == source.read_bytes()

    with pytest.raises(FileNotFoundError):
        store.get_bytes("predictions/p1/none.txt")
    with pytest.raises(FileNotFoundError):
        store.download("predictions/p1/none.txt", tmp_path / "none")
    with pytest.raises(ValueError):
        store.put_bytes("../escape", b"x")


def test_delete_prefix(store):
    for key in ["predictions/abc/a", "predictions/abc/sub/b", "predictions/abcd/c", "uploads/d"]:
        store.put_bytes(key, b"x")
    assert store.delete_prefix("predictions/abc/") == 2
    assert not store.exists("predictions/abc/a") and not store.exists("predictions/abc/sub/b")
    assert store.exists("predictions/abcd/c") and store.exists("uploads/d")
    assert store.delete_prefix("predictions/none/") == 0
    with pytest.raises(ValueError):
        store.delete_prefix("")


def test_delete_prefix_many(store):
    for i in range(1100):  # more than one page of listing and one delete_objects call
        store.put_bytes(f"predictions/many/{i:05d}", b"")
    assert store.delete_prefix("predictions/many/") == 1100
    assert not store.exists("predictions/many/00000")


def test_presigned_url(store):
    store.put_bytes("predictions/p2/out.png", b"\x89PNG data", "image/png")
    url = store.presigned_url("predictions/p2/out.png", 123)
    response = httpx.get(url, trust_env=False)
    assert response.status_code == 200
    assert response.content == b"\x89PNG data"
    assert response.headers["content-type"] == "image/png"

    parsed = urlparse(url)
    assert url.startswith(store.endpoint_url + "/")
    assert parsed.path == f"/{store.bucket}/vendo/test/predictions/p2/out.png"
    query = parse_qs(parsed.query)
    assert query["X-Amz-Expires"] == ["123"]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    signed_at = calendar.timegm(time.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ"))
    assert abs(signed_at - time.time()) < 120
    assert "X-Amz-Signature" in query


def test_missing_bucket_without_create(endpoint):
    store = S3Store("t-never-created", endpoint_url=endpoint)
    assert store.describe() == f"s3://t-never-created/ @ {endpoint}"
    with pytest.raises(ClientError) as info:
        store.put_bytes("a", b"x")
    assert info.value.response["Error"]["Code"] == "NoSuchBucket"


def test_threads_share_one_client(store):
    def work(n):
        for i in range(10):
            key = f"threads/{n}/{i}"
            store.put_bytes(key, f"{n}-{i}".encode())
            assert store.get_bytes(key) == f"{n}-{i}".encode()

    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(work, n) for n in range(8)]:
            future.result()
    assert store.delete_prefix("threads/") == 80


def test_open_store_s3(endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    store = open_store(Settings(storage_url="s3://t-open-store/pre"), create_bucket=True)
    assert isinstance(store, S3Store) and store.endpoint_url == endpoint
    store.put_bytes("x/y", b"z")
    assert store.client.get_object(Bucket="t-open-store", Key="pre/x/y")["Body"].read() == b"z"
    assert store.describe() == f"s3://t-open-store/pre @ {endpoint}"


def test_reads_stream_whole_or_by_range(store):
    data = bytes(range(256)) * 4096  # 1 MiB: several chunks
    store.put_bytes("predictions/p3/out.bin", data, "application/octet-stream")
    blob = store.read("predictions/p3/out.bin")
    assert blob.size == len(data) and blob.content_range is None and b"".join(blob.chunks) == data
    part = store.read("predictions/p3/out.bin", "bytes=10-19")
    assert part.size == 10 and part.content_range == f"bytes 10-19/{len(data)}"
    assert b"".join(part.chunks) == data[10:20]
    with pytest.raises(FileNotFoundError):
        store.read("predictions/p3/none")


def test_the_stand_in_refuses_double_authentication_as_s3_does(store):
    store.put_bytes("predictions/p4/out.txt", b"hi")
    url = store.presigned_url("predictions/p4/out.txt", 60)
    assert httpx.get(url, trust_env=False).content == b"hi"
    refused = httpx.get(url, headers={"Authorization": "Bearer r8_token"}, trust_env=False)
    assert refused.status_code == 400 and b"<Code>InvalidArgument</Code>" in refused.content
