"""Part 1, overhead: the no-op model through vendo (`Prefer: wait`), through bare Ray Serve doing
the same hops, and through Cog's own HTTP server; p50/p99 latency at concurrency 1 and throughput at
16 and 64. Serve's ingress is cluster-wide, so bare Serve's baseline (its default ingress, the
Python proxy) is measured on a cluster of its own, just before vendo's; on vendo's cluster, trials
run round-robin over vendo, Cog's server and bare Serve on vendo's ingress, so drift on the shared
cores hits all of them."""

from __future__ import annotations

from typing import Any

import httpx

from benchmarks import load
from benchmarks.plan import Plan
from benchmarks.stats import Figure, ratio

TEXT = "benchmark"


class Failed(RuntimeError):
    pass


def vendo_sync(url: str, headers: dict[str, str], vid: str, payload: dict | None = None,
               check=None) -> load.Send:
    """A `Prefer: wait` create that must come back `succeeded` (with `check(body)` true)."""
    target = load.check_loopback(f"{url}/v1/predictions")
    body = {"version": vid, "input": payload if payload is not None else {"text": TEXT}}
    hdrs = {**headers, "Prefer": "wait"}

    async def send(http: httpx.AsyncClient) -> None:
        r = await http.post(target, json=body, headers=hdrs)
        if r.status_code != 201:
            raise Failed(f"vendo answered {r.status_code}: {r.text[:200]}")
        out = r.json()
        if out.get("status") != "succeeded":
            raise Failed(f"vendo prediction {out.get('id')} is {out.get('status')}: {out.get('error')}")
        if check is None and out.get("output") != TEXT:
            raise Failed(f"vendo returned {out.get('output')!r}")
        if check is not None and not check(out):
            raise Failed(f"vendo returned {out.get('output')!r}")

    return send


def plain_sync(url: str, who: str, payload: dict | None = None) -> load.Send:
    """POST {input} to a bare Serve ingress or to coglet; 200 with `output` equal to the input text."""
    target = load.check_loopback(f"{url}/predictions")
    body = {"input": payload if payload is not None else {"text": TEXT}}

    async def send(http: httpx.AsyncClient) -> None:
        r = await http.post(target, json=body)
        if r.status_code != 200:
            raise Failed(f"{who} answered {r.status_code}: {r.text[:200]}")
        out = r.json()
        if out.get("status") != "succeeded" or (payload is None and out.get("output") != TEXT):
            raise Failed(f"{who} returned {str(out)[:200]}")

    return send


async def measure(senders: dict[str, load.Send], plan: Plan, *, rotate: bool = True) -> dict[str, dict[str, list[load.Run]]]:
    """For each trial and each target: latency at concurrency 1, then throughput at each of
    `plan.concurrencies`; each run on a fresh, warmed connection pool."""
    names = list(senders)
    runs: dict[str, dict[str, list[load.Run]]] = {n: {} for n in names}
    for trial in range(plan.trials):
        order = names[trial % len(names):] + names[:trial % len(names)] if rotate else names
        for name in order:
            send = senders[name]
            async with load.Pool(1) as pool:
                await load.warm(pool, send, plan.warm_requests)
                run = await load.closed_loop(pool, send, max_requests=plan.latency_requests,
                                             max_s=plan.latency_max_s)
            runs[name].setdefault("c1", []).append(run)
            for c in plan.concurrencies:
                async with load.Pool(c) as pool:
                    await load.warm(pool, send, c)
                    run = await load.closed_loop(pool, send, max_requests=plan.throughput_requests,
                                                 max_s=plan.throughput_max_s)
                runs[name].setdefault(f"c{c}", []).append(run)
    return runs


def figures(runs: dict[str, list[load.Run]], plan: Plan) -> dict[str, Figure]:
    """p50/p99 at concurrency 1 (ms) and throughput at each concurrency (predictions/s)."""
    out = {
        "p50_ms": Figure.of([r.p(50) * 1e3 for r in runs["c1"]], "ms"),
        "p99_ms": Figure.of([r.p(99) * 1e3 for r in runs["c1"]], "ms"),
    }
    for c in plan.concurrencies:
        out[f"throughput_c{c}"] = Figure.of([r.throughput for r in runs[f"c{c}"]], "/s")
    return out


RATIOS = {"vendo/bare": "bare", "vendo/cog": "cog", "vendo/bare_same_ingress": "bare_same_ingress"}


def result(runs: dict[str, dict[str, list[load.Run]]], plan: Plan) -> dict[str, Any]:
    """Figures per target and vendo's ratios to each baseline, from runs measured on either of the
    bench's clusters: bare Serve's default ingress ("bare") on a cluster of its own, vendo, Cog's
    server and bare Serve on vendo's ingress ("bare_same_ingress") on vendo's."""
    figs = {name: figures(by, plan) for name, by in runs.items()}
    ratios: dict[str, dict[str, Figure]] = {}
    for label, base in RATIOS.items():
        if "vendo" in figs and base in figs:
            ratios[label] = {key: ratio(figs["vendo"][key], figs[base][key]) for key in figs["vendo"]}
    return {
        "figures": {n: {k: f.to_json() for k, f in fs.items()} for n, fs in figs.items()},
        "ratios": {n: {k: f.to_json() for k, f in fs.items()} for n, fs in ratios.items()},
        "runs": {n: {k: [r.summary() for r in rs] for k, rs in by.items()} for n, by in runs.items()},
    }


async def run_bare(stack, plan: Plan) -> dict[str, dict[str, list[load.Run]]]:
    """Bare Serve's two hops (its app at `stack.bare_url`) on this stack's ingress."""
    return await measure({"bare": plain_sync(stack.bare_url, "bare Serve")}, plan)


async def run_vendo(stack, cog_url: str, plan: Plan, *, bare_same_ingress: bool) -> dict[str, dict[str, list[load.Run]]]:
    """vendo and Cog's server, and bare Serve on vendo's own ingress when it differs from the
    baseline's (what vendo costs over bare Serve on the same ingress)."""
    senders = {"vendo": vendo_sync(stack.url, stack.headers, stack.versions["noop"]),
               "cog": plain_sync(cog_url, "coglet")}
    if bare_same_ingress:
        senders["bare_same_ingress"] = plain_sync(stack.bare_url, "bare Serve")
    return await measure(senders, plan)
