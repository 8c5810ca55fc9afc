"""The streaming upload parser, fed exactly what the replicate client (httpx) sends."""

from __future__ import annotations

import asyncio
import hashlib
import json

import httpx
import pytest

from router.multipart import read_upload
from vendo_core.errors import InvalidRequest, PayloadTooLarge


def _encoded(files, data=None) -> tuple[str, bytes]:
    req = httpx.Request("POST", "http://x/v1/files", files=files, data=data)
    return req.headers["content-type"], req.read()


async def _chunks(body: bytes, size: int, seen: list[int]):
    for i in range(0, len(body), size):
        seen.append(i)
        yield body[i:i + size]


def _parse(ctype: str, body: bytes, limit: int = 10**9, chunk: int = 7, seen: list[int] | None = None):
    return asyncio.run(read_upload(ctype, _chunks(body, chunk, [] if seen is None else seen), limit))


def test_client_upload_with_metadata():
    payload = bytes(range(256)) * 50
    ctype, body = _encoded({"content": ("pic.png", payload, "image/png")},
                           {"metadata": json.dumps({"a": 1})})
    up = _parse(ctype, body)
    try:
        assert up.path.read_bytes() == payload
        assert (up.filename, up.content_type, up.size) == ("pic.png", "image/png", len(payload))
        assert up.sha256 == hashlib.sha256(payload).hexdigest()
        assert up.md5 == hashlib.md5(payload).hexdigest()
        assert json.loads(up.fields["metadata"]) == {"a": 1}
    finally:
        up.discard()
    assert not up.path.exists()


def test_form_fields_override_filename_and_type():
    ctype, body = _encoded({"content": ("blob", b"hi", "application/octet-stream")},
                           {"filename": "x.txt", "type": "text/plain"})
    up = _parse(ctype, body)
    up.discard()
    assert (up.filename, up.content_type, up.size) == ("x.txt", "text/plain", 2)


@pytest.mark.parametrize("field, value", [("type", "text/plain\r\nX-Evil: 1"), ("type", "nonsense")])
def test_bad_media_type_is_refused(field, value):
    ctype, body = _encoded({"content": ("a.txt", b"a", "text/plain")}, {field: value})
    with pytest.raises(InvalidRequest) as e:
        _parse(ctype, body)
    assert e.value.field == field


def test_media_type_with_parameters():
    ctype, body = _encoded({"content": ("a.txt", b"a", "text/plain; charset=utf-8")})
    up = _parse(ctype, body)
    up.discard()
    assert up.content_type == "text/plain; charset=utf-8"


def test_empty_file():
    ctype, body = _encoded({"content": ("empty.txt", b"", "text/plain")})
    up = _parse(ctype, body)
    up.discard()
    assert up.size == 0 and up.md5 == hashlib.md5(b"").hexdigest()


def test_oversize_stops_reading_early():
    ctype, body = _encoded({"content": ("big.bin", b"x" * 100_000, "application/octet-stream")})
    seen: list[int] = []
    with pytest.raises(PayloadTooLarge):
        _parse(ctype, body, limit=1000, chunk=100, seen=seen)
    assert max(seen) < 1100  # refused on the chunk that crossed the limit, not at the end


@pytest.mark.parametrize("ctype", [None, "application/json", "multipart/form-data"])
def test_not_multipart_names_the_header(ctype):
    with pytest.raises(InvalidRequest) as e:
        _parse(ctype, b"{}")
    assert e.value.field == "Content-Type"


def test_missing_content_part():
    ctype, body = _encoded({"other": ("a.txt", b"a", "text/plain")})
    with pytest.raises(InvalidRequest) as e:
        _parse(ctype, body)
    assert e.value.field == "content"


def test_truncated_body():
    ctype, body = _encoded({"content": ("a.txt", b"abc" * 100, "text/plain")})
    with pytest.raises(InvalidRequest) as e:
        _parse(ctype, body[:-30])
    assert e.value.field == "body"
