"""The one network policy for URLs that users give vendo (webhooks, file inputs): an address is
public only when it is globally routable. Everything else (loopback, private, link-local, reserved,
multicast, unspecified, shared or documentation ranges) is refused unless an operator allows
private addresses."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import urllib.parse

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class NonPublicAddress(ValueError):
    """A URL whose host resolves to an address that is not public."""


def is_public(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved
                or ip.is_multicast or ip.is_unspecified) and ip.is_global


def _host_port(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def _check(host: str, ips: list[IPAddress]) -> None:
    if not ips:
        raise OSError(f"{host} has no addresses")
    for ip in ips:
        if not is_public(ip):
            raise NonPublicAddress(f"host {host!r} resolves to the non-public address {ip}")


def _parse(infos: list) -> list[IPAddress]:
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


async def check_public(url: str) -> None:
    """Resolve the URL's host; raise NonPublicAddress (or OSError when it does not resolve) unless
    every address it resolves to is public."""
    host, port = _host_port(url)
    try:
        ips = [ipaddress.ip_address(host)]
    except ValueError:
        ips = _parse(await asyncio.get_running_loop().getaddrinfo(host, port, proto=socket.IPPROTO_TCP))
    _check(host, ips)


def check_public_sync(url: str) -> None:
    """`check_public` for code that runs in a thread (a replica downloading a file input)."""
    host, port = _host_port(url)
    try:
        ips = [ipaddress.ip_address(host)]
    except ValueError:
        ips = _parse(socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP))
    _check(host, ips)


# ---------------------------------------------------------------------------------------------
# Connecting only to checked addresses
# ---------------------------------------------------------------------------------------------
# Checking a URL and then letting an HTTP client resolve it again leaves a window: a name can
# answer with a public address to the check and a private one to the connect (DNS rebinding).
# These transports resolve once, in the connect itself, check every address, and connect to the
# checked address; TLS still verifies the certificate against the host name.


def _public_addresses(host: str, port: int) -> list[str]:
    try:
        ips = [ipaddress.ip_address(host)]
    except ValueError:
        ips = _parse(socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP))
    _check(host, ips)
    return [str(ip) for ip in ips]


async def _public_addresses_async(host: str, port: int) -> list[str]:
    try:
        ips = [ipaddress.ip_address(host)]
    except ValueError:
        ips = _parse(await asyncio.get_running_loop().getaddrinfo(host, port, proto=socket.IPPROTO_TCP))
    _check(host, ips)
    return [str(ip) for ip in ips]


class _PublicOnlyAsync(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        last: Exception | None = None
        for ip in await _public_addresses_async(host, port):
            try:
                return await self.inner.connect_tcp(ip, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout, OSError) as e:
                last = e
        raise last or httpcore.ConnectError(f"cannot connect to {host}")

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise httpcore.ConnectError("unix sockets are not URLs users may give")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class _PublicOnlySync(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self.inner = httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        last: Exception | None = None
        for ip in _public_addresses(host, port):
            try:
                return self.inner.connect_tcp(ip, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout, OSError) as e:
                last = e
        raise last or httpcore.ConnectError(f"cannot connect to {host}")

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise httpcore.ConnectError("unix sockets are not URLs users may give")

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


class PublicOnlyAsyncTransport(httpx.AsyncHTTPTransport):
    """An httpx transport that connects only to public addresses (raises NonPublicAddress)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._pool = httpcore.AsyncConnectionPool(ssl_context=httpx.create_ssl_context(),
                                                  network_backend=_PublicOnlyAsync())


class PublicOnlyTransport(httpx.HTTPTransport):
    """The blocking `PublicOnlyAsyncTransport` (downloads run in a thread)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._pool = httpcore.ConnectionPool(ssl_context=httpx.create_ssl_context(),
                                             network_backend=_PublicOnlySync())
