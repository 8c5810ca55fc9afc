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


def check_addresses(host: str, ips: list[IPAddress]) -> None:
    if not ips:
        raise OSError(f"{host} has no addresses")
    for ip in ips:
        if not is_public(ip):
            raise NonPublicAddress(f"host {host!r} resolves to the non-public address {ip}")


def addresses_of(infos: list) -> list[IPAddress]:
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


async def check_public(url: str) -> None:
    """Resolve the URL's host; raise NonPublicAddress (or OSError when it does not resolve) unless
    every address it resolves to is public."""
    host, port = _host_port(url)
    try:
        ips = [ipaddress.ip_address(host)]
    except ValueError:
        ips = addresses_of(await asyncio.get_running_loop().getaddrinfo(host, port, proto=socket.IPPROTO_TCP))
    check_addresses(host, ips)


def check_public_sync(url: str) -> None:
    """`check_public` for code that runs in a thread (a replica downloading a file input)."""
    host, port = _host_port(url)
    try:
        ips = [ipaddress.ip_address(host)]
    except ValueError:
        ips = addresses_of(socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP))
    check_addresses(host, ips)
