"""The Files API and file inputs with the official client, and the upload size limit."""

from __future__ import annotations

import hashlib
import io
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest
from replicate.exceptions import ReplicateError

from tests.integration.conftest import FIXTURES

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def read_file(cluster) -> str:
    return cluster.push(FIXTURES / "read_file", "alice/read-file")


def _report(data: bytes, name: str) -> str:
    return f"{name} {len(data)} {hashlib.sha256(data).hexdigest()}"


def test_create_get_list_delete(cluster, tmp_path):
    c = cluster.client()
    data = b"hello files\n" * 100
    src = tmp_path / "notes.txt"
    src.write_bytes(data)
    f = c.files.create(src, metadata={"purpose": "test", "n": 1})
    assert (f.name, f.content_type, f.size) == ("notes.txt", "text/plain", len(data))
    assert f.etag == hashlib.md5(data).hexdigest()
    assert f.checksums == {"sha256": hashlib.sha256(data).hexdigest(), "md5": f.etag}
    assert f.metadata == {"purpose": "test", "n": 1}
    assert f.urls["get"] == f"{cluster.url}/v1/files/{f.id}"
    assert f.created_at < f.expires_at

    g = c.files.get(f.id)
    assert (g.id, g.name, g.size, g.checksums, g.metadata) == (f.id, f.name, f.size, f.checksums, f.metadata)
    # a handle with explicit name and type, no metadata
    h = c.files.create(io.BytesIO(b"\x00\x01"), filename="raw.bin", content_type="application/x-raw")
    assert (h.name, h.content_type, h.size, h.metadata) == ("raw.bin", "application/x-raw", 2, {})
    listed = [x.id for x in c.files.list()]
    assert listed.index(h.id) < listed.index(f.id)  # newest first

    # the bytes come from the signed download link, with no token
    r = httpx.get(g.urls["download"])
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-type"].startswith("text/plain")
    tampered = g.urls["download"].replace("signature=", "signature=A")
    assert httpx.get(tampered).status_code == 404
    other_owner = g.urls["download"].replace("owner=alice", "owner=bob")
    assert httpx.get(other_owner).status_code == 404

    # nobody else sees it
    bob = cluster.client("bob")
    for call in (lambda: bob.files.get(f.id), lambda: bob.files.delete(f.id)):
        with pytest.raises(ReplicateError) as e:
            call()
        assert e.value.status == 404
    assert f.id not in [x.id for x in bob.files.list()]

    assert c.files.delete(f.id) is True
    with pytest.raises(ReplicateError) as e:
        c.files.get(f.id)
    assert e.value.status == 404
    assert httpx.get(g.urls["download"]).status_code == 404
    assert f.id not in [x.id for x in c.files.list()]
    assert c.files.delete(h.id) is True


def test_upload_form_fields_and_errors(cluster):
    with cluster.http() as h:
        r = h.post("/v1/files", files={"content": ("blob", b"abc", "application/octet-stream")},
                   data={"filename": "named.txt", "type": "text/plain"})
        assert r.status_code == 201, r.text
        body = r.json()
        assert (body["name"], body["content_type"], body["size"]) == ("named.txt", "text/plain", 3)
        assert h.delete(f"/v1/files/{body['id']}").status_code == 204

        r = h.post("/v1/files", files={"content": ("a.txt", b"a", "text/plain")}, data={"metadata": "[1]"})
        assert r.status_code == 422 and r.json()["invalid_fields"][0]["field"] == "metadata"
        r = h.post("/v1/files", files={"other": ("a.txt", b"a", "text/plain")})
        assert r.status_code == 422 and r.json()["invalid_fields"][0]["field"] == "content"
        r = h.post("/v1/files", json={"content": "a"})
        assert r.status_code == 422 and r.json()["invalid_fields"][0]["field"] == "Content-Type"
    assert httpx.post(f"{cluster.url}/v1/files", files={"content": ("a", b"a")}).status_code == 401


def test_run_with_a_local_file(cluster, read_file, tmp_path):
    c = cluster.client()
    data = bytes(range(256)) * 1000
    src = tmp_path / "input.bin"
    src.write_bytes(data)
    with open(src, "rb") as handle:
        out = c.run(f"alice/read-file:{read_file}", input={"document": handle})
    assert httpx.get(str(out)).text == _report(data, "input.bin")
    # a Path works the same; the input echoes our own file URL
    out = c.run("alice/read-file", input={"document": src})
    assert httpx.get(str(out)).text == _report(data, "input.bin")
    p = c.predictions.list().results[0]
    assert p.input["document"].startswith(f"{cluster.url}/v1/files/")


def test_file_inputs_must_be_the_callers(cluster, read_file):
    alice, bob = cluster.client("alice"), cluster.client("bob")
    theirs = bob.files.create(io.BytesIO(b"bob's"), filename="b.txt")
    with pytest.raises(ReplicateError) as e:
        alice.predictions.create(version=read_file, input={"document": theirs.urls["get"]})
    assert e.value.status == 422 and "document" in e.value.detail
    with pytest.raises(ReplicateError) as e:
        alice.predictions.create(version=read_file,
                                 input={"document": f"{cluster.url}/v1/files/{'a' * 26}"})
    assert e.value.status == 422 and "document" in e.value.detail
    bob.files.delete(theirs.id)


def _raw_request(url: str, head: str, parts: list[bytes]) -> bytes:
    """Send a request's head and some body, never the rest; return what the server answers."""
    u = urlsplit(url)
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        s.sendall(head.encode())
        for part in parts:
            s.sendall(part)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _length(answer):
            more = s.recv(65536)
            if not more:
                break
            answer += more
        return answer


def _length(answer: bytes) -> int:
    for line in answer.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def test_oversize_upload_is_413_without_reading_the_body(cluster):
    limit = 4096
    cluster.deploy_router(max_upload_bytes=limit)
    try:
        token = cluster.tokens["alice"]
        boundary = "vendoboundary"
        start = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"content\"; filename=\"big.bin\"\r\n"
                 f"Content-Type: application/octet-stream\r\n\r\n").encode()
        base = (f"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n")
        # a declared length over the limit: refused from the headers alone
        t0 = time.monotonic()
        answer = _raw_request(cluster.url, base + "Content-Length: 50000000\r\n\r\n", [start])
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert time.monotonic() - t0 < 10
        # chunked, no length: refused once the running count passes the limit, body never finished
        chunks = [start] + [b"x" * 1000] * 6
        framed = [f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks]
        answer = _raw_request(cluster.url, base + "Transfer-Encoding: chunked\r\n\r\n", framed)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"4096" in answer

        c = cluster.client()
        with pytest.raises(ReplicateError) as e:
            c.files.create(io.BytesIO(b"y" * 20_000), filename="big.bin")
        assert e.value.status == 413
        small = c.files.create(io.BytesIO(b"y" * 1000), filename="small.bin")
        assert small.size == 1000
        c.files.delete(small.id)
    finally:
        cluster.deploy_router()


def test_downloads_are_never_sniffed_and_only_media_is_inline(cluster):
    """An uploaded page can never run as the platform's origin: every download says nosniff, and
    only images, audio and video are shown inline (not SVG, which can carry script)."""
    c = cluster.client()
    cases = [("page.html", "text/html", "attachment"), ("pic.svg", "image/svg+xml", "attachment"),
             ("pic.png", "image/png", "inline"), ("clip.mp4", "video/mp4", "inline"),
             ("notes.txt", "text/plain", "attachment")]
    for name, ctype, disposition in cases:
        f = c.files.create(io.BytesIO(b"<script>alert(1)</script>"), filename=name, content_type=ctype)
        r = httpx.get(f.urls["download"])
        assert r.status_code == 200
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["content-disposition"].startswith(disposition), (name, r.headers["content-disposition"])


def test_a_shared_prediction_opens_without_a_token_with_its_files(cluster, read_file):
    """Replicate's Share button: a shared prediction (input file and output included) is readable
    by anyone with its id, without a token; unshared, or never shared, it is a 404 to them."""
    alice = cluster.client()
    uploaded = alice.files.create(io.BytesIO(b"shared bytes"), filename="s.txt")
    with cluster.http() as h:
        p = h.post("/v1/predictions", headers={"Prefer": "wait=60"},
                   json={"version": read_file, "input": {"document": uploaded.urls["get"]},
                         "webhook": "https://example.com/hook"}).json()
    assert p["status"] == "succeeded", p.get("error")
    get = f"{cluster.url}/v1/predictions/{p['id']}"
    assert httpx.get(get).status_code == 404  # not shared: no token, no prediction
    with cluster.http("bob") as h:
        assert h.get(get).status_code == 404
        assert h.post(f"{get}/share").status_code == 404  # only its owner shares it

    with cluster.http() as h:
        shared = h.post(f"{get}/share").json()
    assert shared["shared"] is True and shared["webhook"] == "https://example.com/hook"
    anon = httpx.get(get)
    assert anon.status_code == 200
    seen = anon.json()
    assert seen["output"] == shared["output"] or httpx.get(seen["output"]).text == httpx.get(shared["output"]).text
    assert "webhook" not in seen  # where its owner's webhooks go stays the owner's
    assert httpx.get(seen["input"]["document"]).content == b"shared bytes"  # a signed link, no token
    assert httpx.get(seen["output"]).text == _report(b"shared bytes", "s.txt")
    with cluster.http("bob") as h:
        assert h.get(get).status_code == 200
        assert h.post(f"{get}/cancel").status_code == 404  # reading is all it allows
        assert h.get(f"/v1/files/{uploaded.id}").status_code == 404  # nothing else of alice's
    assert httpx.get(get, headers={"Authorization": "Bearer wrong"}).status_code == 401

    with cluster.http() as h:
        assert "shared" not in h.post(f"{get}/unshare").json()
    assert httpx.get(get).status_code == 404
