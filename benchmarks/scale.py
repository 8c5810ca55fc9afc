"""Part 13, memory and scale: what holding work open costs the router, and what a finished
prediction costs Redis.

- Open predictions: async creates on the 5 s sleep model (one replica, two slots), so all but two
  wait in the router's queue; the router's resident memory (psutil, the Serve replica's process)
  is read before and after each step of `scale_open` more, and reported per 1,000. Two steps, so
  the second says whether the cost per prediction stays flat as the queue grows. All are
  canceled afterwards.
- Open SSE streams: two steps of `scale_streams` clients each hold `GET /v1/predictions/{id}/stream` open on one
  of those waiting predictions (the response has begun: the router holds the stream and its
  blocking Redis read); the router's and the ingress's (HAProxy, or Serve's proxy) memory per 1,000. A router replica takes at
  most 1,000 requests at once (its `max_ongoing_requests`), so the steps are smaller than 1,000.
- Redis bytes per finished prediction: `used_memory` (INFO) before and after `scale_finished` no-op
  predictions run to the end through the API (retention off, so everything a prediction leaves is
  still there: its hash, event stream, index entries), divided by their number.

Resident memory moves in allocator-sized steps and the first use of each path allocates for good,
so each measurement is taken after a warm-up of the same path, and the figures are per 1,000. The
open predictions' warm-up is a whole step: after the other parts, the router's heap has room they
freed, and a first step that fills it read 2.6–2.9 MiB per 1,000 in full runs against 5–6 when
the part ran alone (benchmarks/results/findings.md)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import httpx

from benchmarks import load
from benchmarks import stack as stk
from benchmarks.burst import _create_many
from benchmarks.overhead import Failed, vendo_sync
from benchmarks.plan import Plan

SLOW = {"wait_s": 5}


def _rss(pid: int) -> int:
    import psutil

    return psutil.Process(pid).memory_info().rss


def _pids() -> dict[str, int]:
    """The router's and the ingress's processes: HAProxy's where it carries the traffic (Serve's
    proxy actor still runs there, idle), else the proxy's."""
    from benchmarks.profile import actor_pids

    pids = actor_pids()
    if "haproxy" in pids:
        pids["ingress"], pids["ingress_kind"] = pids["haproxy"], "haproxy"
    elif "proxy" in pids:
        pids["ingress"], pids["ingress_kind"] = pids["proxy"], "proxy"
    for role in ("router", "ingress"):
        if role not in pids:
            raise Failed(f"no {role} process found")
    return pids


def _mib(b: float) -> float:
    return round(b / 2**20, 2)


async def _cancel_all(url: str, headers: dict[str, str], ids: list[str]) -> None:
    todo = iter(ids)

    async def worker(http: httpx.AsyncClient) -> None:
        for pid in todo:
            r = await http.post(f"{url}/v1/predictions/{pid}/cancel", headers=headers)
            if r.status_code != 200:
                raise Failed(f"cancel answered {r.status_code}: {r.text[:200]}")

    async with load.Pool(32) as pool:
        await asyncio.gather(*(worker(c) for c in pool.clients))


async def _open_predictions(st, vid: str, step: int, steps: int = 2) -> tuple[dict[str, Any], list[str]]:
    pids = _pids()
    # every path of a queued create warm, and a whole step first: the memory earlier parts freed in
    # the router is reused before any is added, so a first step that reuses it would read low
    warm = await _create_many(st.url, st.headers, vid, max(200, step), SLOW)
    base = _rss(pids["router"])
    held, per_step = list(warm), []
    for _ in range(steps):
        held += await _create_many(st.url, st.headers, vid, step, SLOW)
        now = _rss(pids["router"])
        per_step.append(_mib((now - base) * 1000 / step))
        base = now
    return {"open": len(held), "router_mib_per_1000": per_step}, held


async def _open_streams(st, ids: list[str], step: int, steps: int = 2) -> dict[str, Any]:
    pids = _pids()
    limits = httpx.Limits(max_connections=step * steps + 64, max_keepalive_connections=0)
    headers = {**st.headers, "Accept": "text/event-stream"}
    ids = iter(ids)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(120.0, connect=30.0),
                                 trust_env=False) as http, contextlib.AsyncExitStack() as open_streams:
        sem = asyncio.Semaphore(64)

        async def one() -> None:
            async with sem:
                pid = next(ids)
                r = await open_streams.enter_async_context(
                    http.stream("GET", f"{st.url}/v1/predictions/{pid}/stream", headers=headers))
                if r.status_code != 200:
                    raise Failed(f"stream answered {r.status_code}")

        await asyncio.gather(*(one() for _ in range(64)))  # warm
        base = {r: _rss(pids[r]) for r in ("router", "ingress")}
        per_step: dict[str, list[float]] = {"router": [], "ingress": []}
        for _ in range(steps):
            await asyncio.gather(*(one() for _ in range(step)))
            for role in per_step:
                now = _rss(pids[role])
                per_step[role].append(_mib((now - base[role]) * 1000 / step))
                base[role] = now
        opened = 64 + step * steps
        # the streams close with the client; the predictions are canceled by the caller
    return {"open": opened, "router_mib_per_1000": per_step["router"], "ingress": pids["ingress_kind"],
            "ingress_mib_per_1000": per_step["ingress"]}


async def _redis_bytes(st, vid: str, n: int) -> dict[str, Any]:
    import redis

    r = redis.Redis.from_url(st.redis_url)
    send = vendo_sync(st.url, st.headers, vid)
    async with load.Pool(16) as pool:
        await load.warm(pool, send, 64)
        before = r.info("memory")["used_memory"]
        run = await load.closed_loop(pool, send, max_requests=n, max_s=600.0)
    after = r.info("memory")["used_memory"]
    done = run.ok
    if not done:
        raise Failed(f"no prediction finished: {run.first_error}")
    return {"predictions": done, "bytes_per_prediction": round((after - before) / done)}


async def run(st, plan: Plan) -> dict[str, Any]:
    slow = st.push(stk.MODELS / "sleep", "scale-slow", visibility="public")
    noop = st.versions.get("noop") or st.push(stk.MODELS / "noop", "noop")
    t0 = time.monotonic()
    opened, ids = await _open_predictions(st, slow, plan.scale_open)
    try:
        streams = await _open_streams(st, ids, plan.scale_streams)
    finally:
        await _cancel_all(st.url, st.headers, ids)
    redis_bytes = await _redis_bytes(st, noop, plan.scale_finished)
    return {"open_predictions": opened, "open_streams": streams, "redis": redis_bytes,
            "took_s": round(time.monotonic() - t0, 1)}
