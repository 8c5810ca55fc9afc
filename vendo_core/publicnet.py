"""HTTP transports that connect only to public addresses, checked in the connect itself.

Checking a URL and then letting an HTTP client resolve it again leaves a window: a name can answer
with a public address to the check and a private one to the connect (DNS rebinding). These
transports resolve once, in the connect, check every address with `netpolicy`'s one rule, and
connect to the checked address; TLS still verifies the certificate against the host name. (Its own
module: httpx costs a model worker's start ~0.15 s, and only downloads and webhooks need it.)"""

from __future__ import annotations

import httpcore
import httpx

from vendo_core.netpolicy import public_addresses, public_addresses_sync


class _PublicOnlyAsync(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        last: Exception | None = None
        for ip in await public_addresses(host, port):
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
        for ip in public_addresses_sync(host, port):
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
