import os
import stat
import time
from urllib.parse import parse_qs, unquote, urlparse

import pytest

from vendo_core.settings import Settings
from vendo_core.signing import LinkSigner, load_signing_key
from vendo_core.storage import FileStore, S3Store, check_key, open_store

KEY = b"k" * 32


@pytest.fixture
def store(tmp_path):
    return FileStore(tmp_path / "files", LinkSigner(KEY))


def _parts(url):
    parsed = urlparse(url)
    query = parse_qs(parsed.query)
    return parsed, unquote(parsed.path.removeprefix("/v1/storage/")), query["expires"][0], query["sig"][0]


def test_round_trips(store, tmp_path):
    store.put_bytes("predictions/abc/out.txt", b"hello", "text/plain")
    assert store.get_bytes("predictions/abc/out.txt") == b"hello"
    assert store.exists("predictions/abc/out.txt")
    assert not store.exists("predictions/abc/other.txt")

    source = tmp_path / "src.bin"
    source.write_bytes(os.urandom(1000))
    store.put_file("predictions/abc/blob.bin", source)
    store.download("predictions/abc/blob.bin", tmp_path / "deep" / "copy.bin")
    assert (tmp_path / "deep" / "copy.bin").read_bytes() == source.read_bytes()
    assert store.open("predictions/abc/blob.bin").read_bytes() == source.read_bytes()

    store.put_bytes("predictions/abc/out.txt", b"replaced")
    assert store.get_bytes("predictions/abc/out.txt") == b"replaced"
    assert not [p for p in store.root.rglob(".tmp-*")]


def test_missing_key_is_file_not_found(store, tmp_path):
    with pytest.raises(FileNotFoundError):
        store.get_bytes("nope")
    with pytest.raises(FileNotFoundError):
        store.download("nope", tmp_path / "x")
    with pytest.raises(FileNotFoundError):
        store.open("nope")


@pytest.mark.parametrize(
    "key", ["", "/etc/passwd", "../x", "a/../../x", "a/./b", "a//b", "a/", "..", "a\\b", "a\0b"]
)
def test_unsafe_keys_refused(store, key):
    with pytest.raises(ValueError):
        store.put_bytes(key, b"x")
    with pytest.raises(ValueError):
        store.get_bytes(key)
    with pytest.raises(ValueError):
        check_key(key)


def test_symlink_out_of_root_refused(store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    (store.root / "link").symlink_to(outside)
    with pytest.raises(ValueError):
        store.get_bytes("link/secret")


def test_signed_url_verifies(store):
    store.put_bytes("predictions/p1/out put.png", b"png")
    url = store.url("predictions/p1/out put.png", "http://host:8000/", 60)
    _, key, expires, sig = _parts(url)
    assert url.startswith("http://host:8000/v1/storage/predictions/p1/out%20put.png?")
    assert key == "predictions/p1/out put.png"
    assert abs(int(expires) - (time.time() + 60)) < 5
    assert len(sig) == 43  # a whole HMAC-SHA256, urlsafe base64 without padding
    assert store.verify(key, expires, sig)
    assert store.verify(key, int(expires), sig, now=int(expires))


def test_signed_url_expired(store):
    _, key, expires, sig = _parts(store.url("a/b", "http://h", 10))
    assert not store.verify(key, expires, sig, now=int(expires) + 1)
    _, key, expires, sig = _parts(store.url("a/b", "http://h", 0))
    assert not store.verify(key, expires, sig, now=time.time() + 1)


def test_signed_url_tampered(store):
    _, key, expires, sig = _parts(store.url("a/b", "http://h", 60))
    assert not store.verify("a/c", expires, sig)
    assert not store.verify(key, str(int(expires) + 1000), sig)
    assert not store.verify(key, expires, sig[:-1] + ("0" if sig[-1] != "0" else "1"))
    assert not store.verify(key, expires, "")
    assert not store.verify(key, "soon", sig)
    assert not store.verify(key, expires, "é" + sig[1:])  # non-ASCII: refused, not a TypeError
    assert not store.verify(key, expires, "\udcff" + sig[1:])  # a lone surrogate too
    assert not store.verify("../a/b", expires, sig)
    other = FileStore(store.root, LinkSigner(b"x" * 32))
    assert not other.verify(key, expires, sig)


def test_delete_prefix(store):
    for key in [
        "predictions/abc/a.txt",
        "predictions/abc/sub/b.txt",
        "predictions/abcd/c.txt",
        "predictions/xyz/d.txt",
        "uploads/e.txt",
    ]:
        store.put_bytes(key, b"x")
    assert store.delete_prefix("predictions/abc/") == 2
    assert not store.exists("predictions/abc/a.txt")
    assert not (store.root / "predictions" / "abc").exists()
    assert store.exists("predictions/abcd/c.txt")
    assert store.delete_prefix("predictions/ab") == 1  # S3 semantics: a string prefix
    assert store.exists("predictions/xyz/d.txt") and store.exists("uploads/e.txt")
    assert store.delete_prefix("predictions/none/") == 0
    assert store.delete_prefix("nothing/here/") == 0
    for bad in ["", "/", "../"]:
        with pytest.raises(ValueError):
            store.delete_prefix(bad)


def test_describe(store):
    assert store.describe() == store.root.as_uri()
    assert store.describe().startswith("file:///")


def test_open_store_default_and_signing_key(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    store = open_store(settings)
    assert isinstance(store, FileStore)
    assert store.root == (tmp_path / "data" / "files").resolve()
    key_file = tmp_path / "data" / "signing.key"
    assert len(key_file.read_bytes()) == 32
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # The key persists: a link made by one store verifies in another.
    _, key, expires, sig = _parts(store.url("a/b", "http://h", 60))
    assert open_store(settings).verify(key, expires, sig)
    assert load_signing_key(tmp_path / "data") == key_file.read_bytes()


def test_open_store_configured(tmp_path):
    settings = Settings(data_dir=tmp_path, storage_url=f"file://{tmp_path}/elsewhere", signing_key="s3cret")
    store = open_store(settings)
    assert isinstance(store, FileStore) and store.root == (tmp_path / "elsewhere").resolve()
    assert not (tmp_path / "signing.key").exists()
    _, key, expires, sig = _parts(store.url("a/b", "http://h", 60))
    assert FileStore(tmp_path / "x", LinkSigner(b"s3cret")).verify(key, expires, sig)

    s3 = open_store(
        Settings(
            data_dir=tmp_path, storage_url="s3://bucket/some/prefix/", s3_endpoint_url="http://127.0.0.1:1"
        )
    )
    assert isinstance(s3, S3Store)
    assert (s3.bucket, s3.prefix) == ("bucket", "some/prefix")
    assert s3.describe() == "s3://bucket/some/prefix @ http://127.0.0.1:1"

    for bad in ["http://x/y", "file://host/path", "ftp:///x"]:
        with pytest.raises(ValueError):
            open_store(Settings(data_dir=tmp_path, storage_url=bad))


def test_s3_links_are_vendos_own_unless_presigned_is_asked_for(tmp_path, monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(k, v)
    settings = Settings(data_dir=tmp_path, storage_url="s3://bucket/pre", s3_endpoint_url="http://127.0.0.1:1",
                        signing_key="k3y")
    s3 = open_store(settings)
    url = s3.url("predictions/p1/out.png", "http://vendo:8000", 60)
    _, key, expires, sig = _parts(url)
    assert url.startswith("http://vendo:8000/v1/storage/predictions/p1/out.png?")
    assert s3.verify(key, expires, sig) and not s3.verify("predictions/p1/other.png", expires, sig)
    presigned = open_store(settings.model_copy(update={"s3_presigned_urls": True}))
    url = presigned.url("predictions/p1/out.png", "http://vendo:8000", 60)
    assert url.startswith("http://127.0.0.1:1/bucket/pre/predictions/p1/out.png?") and "X-Amz-Signature=" in url
    assert not presigned.verify(key, expires, "anything")


def test_file_store_reads_as_a_stream(store):
    store.put_bytes("a/big.bin", b"x" * 600_000)
    blob = store.read("a/big.bin")
    assert blob.size == 600_000 and b"".join(blob.chunks) == b"x" * 600_000
    assert store.local_path("a/big.bin") == store.root / "a" / "big.bin"
    with pytest.raises(FileNotFoundError):
        store.read("a/none")
