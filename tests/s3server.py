"""A real S3-protocol server over HTTP for tests: moto's standalone server in a subprocess.

moto does not enforce presigned-URL expiry; tests of expiry assert on the signed parameters. It
does not refuse a request authenticated twice either, as S3 does: `tests/s3strict.py` adds that.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# moto accepts any credentials; these keep boto3 from looking for real ones.
TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def s3_server(start_timeout_s: float = 30.0) -> Iterator[str]:
    """Start moto's S3 server (strict about double authentication) on a free 127.0.0.1 port;
    yield its endpoint URL; stop it."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, **TEST_CREDENTIALS}
    env.pop("MOTO_PORT", None)
    # A file, not a pipe, for its output: werkzeug logs every request and a full pipe would stall it.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.s3strict", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            cwd=ROOT,  # `-m tests.s3strict` from the project's root
        )
        try:
            deadline = time.monotonic() + start_timeout_s
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    err = log.read().decode(errors="replace")[-2000:]
                    raise RuntimeError(f"moto server exited with {proc.returncode}: {err}")
                try:
                    httpx.get(f"{endpoint}/moto-api/", timeout=1.0, trust_env=False)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"moto server did not answer on {endpoint}") from None
                    time.sleep(0.1)
            yield endpoint
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
