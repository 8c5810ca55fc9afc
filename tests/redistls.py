"""A Redis like a managed one, for tests: TLS only (a certificate of its own CA), an ACL user with
a password, the default user off: `rediss://vendo:PASSWORD@127.0.0.1:PORT/0?ssl_ca_certs=CA`.
The server is the embedded one's binary (Valkey), which is built without TLS, so TLS is terminated
in front of it by a small proxy in its own process (`python -m tests.redistls`), as a managed
service's endpoint does; the ACL is Valkey's own."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import secrets
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _self_signed(dest: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vendo test redis")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = dest / "redis.crt", dest / "redis.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def tls_redis(timeout_s: float = 30.0) -> Iterator[tuple[str, str]]:
    """Start the server; yield (its rediss:// URL, the password); stop it."""
    from cluster.embedded import redis_server_binary

    work = Path(tempfile.mkdtemp(prefix="vendo-tls-redis-"))
    cert, key = _self_signed(work)
    inner, port = _free_port(), _free_port()
    password = secrets.token_hex(16)
    (work / "valkey.conf").write_text(
        f"bind 127.0.0.1\nport {inner}\nuser default off\nuser vendo on >{password} ~* &* +@all\n"
        f"save \"\"\nappendonly no\ndir {work}\n")
    procs = [subprocess.Popen([redis_server_binary(), str(work / "valkey.conf")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True),
             subprocess.Popen([sys.executable, "-m", "tests.redistls", str(port), str(inner), str(cert), str(key)],
                              cwd=Path(__file__).resolve().parents[1], start_new_session=True)]
    url = f"rediss://vendo:{password}@127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                redis.Redis.from_url(url, socket_connect_timeout=1).ping()
                break
            except redis.ConnectionError:
                if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                    raise RuntimeError(f"the TLS Redis did not start: {[p.poll() for p in procs]}") from None
                time.sleep(0.1)
        yield url, password
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


async def _proxy(port: int, inner: int, cert: str, key: str) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def serve(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", inner)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))

    server = await asyncio.start_server(serve, "127.0.0.1", port, ssl=context)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_proxy(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]))
