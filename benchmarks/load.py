"""A closed-loop asyncio load generator over httpx: `concurrency` workers, each sending its next
request when the last one finished, until a request count or a time limit is reached. Only
loopback targets are allowed (the benchmark never sends traffic anywhere else).

Each worker has its own single-connection client: one httpx pool shared by 64 workers spends its
time in the pool's own bookkeeping (measured here against coglet: 87 requests/s through one shared
pool at concurrency 64, 790/s with a client per worker), which would make the generator, not the
target, the bottleneck."""

from __future__ import annotations

import asyncio
import ipaddress
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import httpx

from benchmarks.stats import percentile

Send = Callable[[httpx.AsyncClient], Awaitable[None]]  # one request; raises when it did not succeed


def check_loopback(url: str) -> str:
    """`url` if its host is a loopback address or localhost; raises ValueError otherwise."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if host != "localhost":
        try:
            if not ipaddress.ip_address(host).is_loopback:
                raise ValueError
        except ValueError:
            raise ValueError(f"benchmarks only send traffic to loopback addresses, not {url!r}") from None
    return url


def client(connections: int = 1, timeout_s: float = 70.0) -> httpx.AsyncClient:
    """A client with up to `connections` pooled connections and no proxies from the environment."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(limits=limits, timeout=timeout_s, trust_env=False,
                             event_hooks={"request": [_only_loopback]})


async def _only_loopback(request: httpx.Request) -> None:
    check_loopback(str(request.url))


class Pool:
    """One single-connection client per worker; an async context manager."""

    def __init__(self, concurrency: int):
        self.clients = [client(1) for _ in range(concurrency)]

    async def __aenter__(self) -> Pool:
        return self

    async def __aexit__(self, *exc) -> None:
        for c in self.clients:
            await c.aclose()


@dataclass
class Run:
    """What one closed-loop run measured."""

    concurrency: int
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    elapsed_s: float = 0.0

    @property
    def ok(self) -> int:
        return len(self.latencies_s)

    @property
    def throughput(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def p(self, q: float) -> float:
        return percentile(self.latencies_s, q)

    def summary(self) -> dict:
        return {"concurrency": self.concurrency, "ok": self.ok, "errors": self.errors,
                "first_error": self.first_error, "elapsed_s": round(self.elapsed_s, 4),
                "throughput_per_s": round(self.throughput, 2), "p50_ms": round(self.p(50) * 1e3, 3),
                "p99_ms": round(self.p(99) * 1e3, 3)}


async def closed_loop(pool: Pool, send: Send, *, max_requests: int, max_s: float) -> Run:
    """Run `send` from one worker per client of `pool` until `max_requests` were started or `max_s`
    passed; requests in flight at the limit are waited for and counted. Latency is per request."""
    run = Run(len(pool.clients))
    started = 0
    t0 = time.perf_counter()
    deadline = t0 + max_s

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal started
        while started < max_requests and time.perf_counter() < deadline:
            started += 1
            t = time.perf_counter()
            try:
                await send(http)
            except Exception as e:  # noqa: BLE001 - a failed request is counted, not fatal
                run.errors += 1
                if run.first_error is None:
                    run.first_error = f"{type(e).__name__}: {e}"[:300]
                if run.errors > max(20, max_requests // 4):
                    raise RuntimeError(f"too many failed requests; first: {run.first_error}") from e
                continue
            run.latencies_s.append(time.perf_counter() - t)

    await asyncio.gather(*(worker(c) for c in pool.clients))
    run.elapsed_s = time.perf_counter() - t0
    return run


async def warm(pool: Pool, send: Send, requests: int) -> None:
    """Open the pool's connections and warm every path, unmeasured; failures are raised."""
    run = await closed_loop(pool, send, max_requests=max(requests, len(pool.clients)), max_s=120.0)
    if run.errors and not run.ok:
        raise RuntimeError(f"warm-up failed: {run.first_error}")
