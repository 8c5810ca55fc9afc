"""The one network policy for URLs that users give vendo (webhooks, file inputs): an address is
public only when it is globally routable. Everything else (loopback, private, link-local, reserved,
multicast, unspecified, shared or documentation ranges) is refused unless an operator allows
private addresses."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import urllib.parse

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


def _check(host: str, ips: list[IPAddress]) -> list[str]:
    if not ips:
        raise OSError(f"{host} has no addresses")
    for ip in ips:
        if not is_public(ip):
            raise NonPublicAddress(f"host {host!r} resolves to the non-public address {ip}")
    return [str(ip) for ip in ips]


def _literal(host: str) -> list[IPAddress] | None:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        return None


def _of(infos: list) -> list[IPAddress]:
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


async def public_addresses(host: str, port: int) -> list[str]:
    """Resolve `host` once; its addresses if every one is public, else NonPublicAddress (OSError
    when it does not resolve). The connect-time transports (`publicnet`) connect to these."""
    ips = _literal(host) or _of(await asyncio.get_running_loop().getaddrinfo(host, port, proto=socket.IPPROTO_TCP))
    return _check(host, ips)


def public_addresses_sync(host: str, port: int) -> list[str]:
    """`public_addresses` for code that runs in a thread."""
    return _check(host, _literal(host) or _of(socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)))


async def check_public(url: str) -> None:
    """Raise NonPublicAddress (or OSError when it does not resolve) unless every address the URL's
    host resolves to is public."""
    await public_addresses(*_host_port(url))


def check_public_sync(url: str) -> None:
    """`check_public` for code that runs in a thread (a worker downloading a file input)."""
    public_addresses_sync(*_host_port(url))
