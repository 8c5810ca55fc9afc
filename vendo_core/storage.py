"""The object store behind one small interface: S3 (any S3-compatible endpoint) or a local directory.

Keys are relative, "/"-separated paths (`predictions/{id}/out.png`); the prediction stores keys, and
URLs are made when read: HMAC-signed expiring links that vendo's own delivery path serves from either
store (`/v1/storage/…`), or, for S3 where configured, S3's presigned GET URLs. vendo's links are the
default because a client that sends its API token with every request (the official client's
`FileOutput.read()`) cannot read a presigned URL: S3 refuses a request authenticated twice.
A missing key raises FileNotFoundError from every store.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urlparse

from vendo_core.signing import LinkSigner, signer_for

if TYPE_CHECKING:
    from botocore.exceptions import ClientError


def check_key(key: str) -> str:
    """Return `key` if it is a safe relative key; raise ValueError otherwise."""
    if not isinstance(key, str) or not key or key.startswith("/") or "\\" in key or "\0" in key:
        raise ValueError(f"invalid storage key: {key!r}")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"invalid storage key: {key!r}")
    return key


def _check_prefix(prefix: str) -> str:
    # Deleting everything is never what a caller means: refuse the empty prefix.
    if not isinstance(prefix, str) or not prefix:
        raise ValueError("delete_prefix needs a non-empty prefix")
    check_key(prefix.rstrip("/") or "/")
    return prefix


@dataclass
class Blob:
    """An object being read: its bytes as chunks, and what an HTTP answer says about them.
    `content_range` is set when a byte range was asked for and honoured (status 206)."""

    chunks: Iterator[bytes]
    size: int
    content_type: str | None = None
    content_range: str | None = None
    close: object = None  # a callable that releases the connection early


class ObjectStore(ABC):
    """What the rest of vendo sees of storage. Keys never begin with "/". Links are vendo's own,
    signed with `signer` (see the module's docstring)."""

    signer: LinkSigner | None = None

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None: ...

    @abstractmethod
    def put_file(self, key: str, path: str | Path, content_type: str | None = None) -> None: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def download(self, key: str, dest: str | Path) -> None: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with `prefix` (non-empty); return how many."""

    def url(self, key: str, base_url: str, expiry_s: int) -> str:
        """An absolute GET URL for `key` that stops working after `expiry_s` seconds:
        `{base_url}/v1/storage/{key}?expires=…&sig=…`, served by vendo's delivery path."""
        check_key(key)
        if self.signer is None:
            raise ValueError(f"{self!r} has no link signer")
        expires = int(time.time()) + int(expiry_s)
        sig = self.signer.sign(key, expires)
        return f"{base_url.rstrip('/')}/v1/storage/{quote(key, safe='/')}?expires={expires}&sig={sig}"

    def verify(self, key: str, expires: int | str, sig: str, now: float | None = None) -> bool:
        """Whether `sig` is this store's signature of `key` until `expires`, and that is not past."""
        try:
            check_key(key)
        except ValueError:
            return False
        return self.signer is not None and self.signer.verify(sig, expires, key, now=now)

    def local_path(self, key: str) -> Path | None:
        """The file holding `key` where the store is a local directory (served with sendfile and
        ranges), else None. FileNotFoundError when a local store has no such key."""
        return None

    @abstractmethod
    def read(self, key: str, byte_range: str | None = None) -> Blob:
        """`key`'s bytes as a stream; `byte_range` is an HTTP Range header value."""

    @abstractmethod
    def describe(self) -> str: ...

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


class FileStore(ObjectStore):
    """Objects as files under `root`; links are `{base_url}/v1/storage/{key}?expires=…&sig=…`."""

    def __init__(self, root: str | Path, signer: LinkSigner):
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.signer = signer

    def _path(self, key: str) -> Path:
        path = self.root.joinpath(*check_key(key).split("/"))
        # A symlink inside the root must not lead out of it.
        if not path.resolve().is_relative_to(self.root):
            raise ValueError(f"invalid storage key: {key!r}")
        return path

    def _write(self, key: str, fill) -> None:
        """Write via a temporary file and a rename, so readers never see a partial object."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                fill(f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        self._write(key, lambda f: f.write(data))

    def put_file(self, key: str, path: str | Path, content_type: str | None = None) -> None:
        def fill(f):
            with open(path, "rb") as source:
                shutil.copyfileobj(source, f, 1024 * 1024)

        self._write(key, fill)

    def get_bytes(self, key: str) -> bytes:
        return self.open(key).read_bytes()

    def download(self, key: str, dest: str | Path) -> None:
        source = self.open(key)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def open(self, key: str) -> Path:
        """The file holding `key`, for the router to serve; FileNotFoundError if there is none."""
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(key)
        return path

    def delete_prefix(self, prefix: str) -> int:
        _check_prefix(prefix)
        head, _, tail = prefix.rpartition("/")
        start = self.root.joinpath(*head.split("/")) if head else self.root
        if not start.is_dir() or start.is_symlink() or not start.resolve().is_relative_to(self.root):
            return 0
        count = sum(_remove(Path(e.path)) for e in os.scandir(start) if e.name.startswith(tail))
        if not tail and start != self.root:
            try:
                start.rmdir()  # the prefix named a directory: drop it once empty
            except OSError:
                pass
        return count

    def local_path(self, key: str) -> Path:
        return self.open(key)

    def read(self, key: str, byte_range: str | None = None) -> Blob:
        path = self.open(key)
        f = path.open("rb")

        def chunks() -> Iterator[bytes]:
            with f:
                while block := f.read(CHUNK):
                    yield block

        return Blob(chunks(), path.stat().st_size, close=f.close)

    def describe(self) -> str:
        return self.root.as_uri()


class S3Store(ObjectStore):
    """Objects in `bucket` under `prefix`; one boto3 client, shared by all threads. Links are
    vendo's signed ones, or S3's presigned URLs where `presigned` (or no signer is given)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        create_bucket: bool = False,
        client=None,
        signer: LinkSigner | None = None,
        presigned: bool = False,
    ):
        if not bucket:
            raise ValueError("S3Store needs a bucket")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        if client is None:
            import boto3  # here, not at the top: a replica on file storage never pays its import
            from botocore.config import Config

            config = Config(
                signature_version="s3v4",
                s3={"addressing_style": "path" if self.endpoint_url else "auto"},
                retries={"max_attempts": 5, "mode": "standard"},
                max_pool_connections=32,
            )
            # A private session, used once: sessions are not thread-safe; the client made here is.
            session = boto3.session.Session()
            region = region_name or session.region_name or "us-east-1"
            client = session.client("s3", endpoint_url=self.endpoint_url, region_name=region, config=config)
        self.client = client
        self.signer = signer
        self.presigned = presigned or signer is None
        self._bucket_ready = not create_bucket
        self._lock = threading.Lock()

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _ready(self) -> None:
        if self._bucket_ready:
            return
        from botocore.exceptions import ClientError

        with self._lock:
            if self._bucket_ready:
                return
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as e:
                if _code(e) not in ("404", "NoSuchBucket", "NotFound"):
                    raise
                region = self.client.meta.region_name
                kwargs = {"Bucket": self.bucket}
                if region and region != "us-east-1":
                    kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
                try:
                    self.client.create_bucket(**kwargs)
                except ClientError as e2:
                    if _code(e2) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
            self._bucket_ready = True

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        self._ready()
        extra = {"ContentType": content_type} if content_type else {}
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra)

    def put_file(self, key: str, path: str | Path, content_type: str | None = None) -> None:
        self._ready()
        extra = {"ContentType": content_type} if content_type else None
        self.client.upload_file(str(path), self.bucket, self._key(key), ExtraArgs=extra)

    def get_bytes(self, key: str) -> bytes:
        self._ready()
        with _not_found(key):
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        with response["Body"] as body:
            return body.read()

    def download(self, key: str, dest: str | Path) -> None:
        self._ready()
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with _not_found(key):
            self.client.download_file(self.bucket, self._key(key), str(dest))

    def exists(self, key: str) -> bool:
        self._ready()
        try:
            with _not_found(key):
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except FileNotFoundError:
            return False
        return True

    def delete_prefix(self, prefix: str) -> int:
        _check_prefix(prefix)
        self._ready()
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        count = 0
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            objects = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if not objects:
                continue
            response = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True}
            )
            if response.get("Errors"):
                first = response["Errors"][0]
                raise OSError(f"S3 delete failed for {first.get('Key')}: {first.get('Message')}")
            count += len(objects)
        return count

    def url(self, key: str, base_url: str, expiry_s: int) -> str:
        if not self.presigned:
            return super().url(key, base_url, expiry_s)
        return self.presigned_url(key, expiry_s)

    def presigned_url(self, key: str, expiry_s: int) -> str:
        """A presigned GET URL on the S3 endpoint."""
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=int(expiry_s)
        )

    def read(self, key: str, byte_range: str | None = None) -> Blob:
        self._ready()
        extra = {"Range": byte_range} if byte_range else {}
        from botocore.exceptions import ClientError

        with _not_found(key):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=self._key(key), **extra)
            except ClientError as e:
                if not byte_range or _code(e) != "InvalidRange":
                    raise
                response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))  # whole
        body = response["Body"]

        def chunks() -> Iterator[bytes]:
            with body:
                yield from body.iter_chunks(CHUNK)

        return Blob(chunks(), int(response["ContentLength"]), response.get("ContentType"),
                    response.get("ContentRange"), close=body.close)

    def describe(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}"
        return f"{where} @ {self.endpoint_url}" if self.endpoint_url else where


CHUNK = 256 * 1024


def _remove(path: Path) -> int:
    """Delete a file, link or directory tree (links not followed); return how many files went."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return 1
    count = sum(_remove(Path(e.path)) for e in os.scandir(path))
    path.rmdir()
    return count


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


@contextmanager
def _not_found(key: str):
    """Turn S3's "no such key" answers into FileNotFoundError."""
    from botocore.exceptions import ClientError

    try:
        yield
    except ClientError as e:
        if _code(e) in ("404", "NoSuchKey", "NotFound"):
            raise FileNotFoundError(key) from e
        raise


def open_store(settings, *, create_bucket: bool | None = None, signer: LinkSigner | None = None) -> ObjectStore:
    """The store that `settings.storage_url` names (default: files under the data directory)."""
    data_dir = settings.resolved_data_dir()
    url = settings.storage_url
    if url and url.startswith("s3://"):
        parsed = urlparse(url)
        if create_bucket is None:
            create_bucket = bool(getattr(settings, "s3_create_bucket", False))
        return S3Store(
            parsed.netloc,
            unquote(parsed.path),
            endpoint_url=settings.s3_endpoint_url,
            create_bucket=create_bucket,
            signer=signer or signer_for(settings),
            presigned=bool(getattr(settings, "s3_presigned_urls", False)),
        )
    if url and url.startswith("file://"):
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost") or not parsed.path:
            raise ValueError(f"storage_url must be file:///absolute/path, got {url!r}")
        root = Path(unquote(parsed.path))
    elif url:
        raise ValueError(f"storage_url must start with s3:// or file://, got {url!r}")
    else:
        root = data_dir / "files"
    return FileStore(root, signer or signer_for(settings))
