"""Part 8, the catalogue's scale: routing p50 and what the Serve controller and the router hold
with 10 registered versions of a model and with 10,000 of them, 3 in use either way. A version
costs Serve nothing until it is used (no app, no replica, nothing the controller tracks), and a
prediction resolves its version by id (one hash read), so both should be flat. The versions are
registered through the registry (as a push registers them; pushing 10,000 packages would measure
uploads instead), all pointing at the no-op's package, so any of them could be run.

The figures are taken in the order 10, 10,000, 10 again (the clones deleted through the registry, as
`DELETE .../versions/{id}` deletes them), and each trial's ratio is the 10,000 figure over the mean
of the two 10-version figures around it: a stack that gets faster or slower over the minutes of
the part (warm-up, the other parts' leftovers, a shared VM) moves both sides alike."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from benchmarks import load
from benchmarks.overhead import TEXT, Failed
from benchmarks.plan import Plan
from benchmarks.profile import actor_pids, cpu_s
from benchmarks.stack import MODELS, USER
from benchmarks.stats import Figure

MODEL = "catalogue"
USED = 3


def _rss_mib(pid: int | None) -> float:
    import psutil

    try:
        return psutil.Process(pid).memory_info().rss / 2**20 if pid else float("nan")
    except psutil.Error:
        return float("nan")


async def register(stack, base_vid: str, upto: int, have: list[str]) -> list[str]:
    """Clones of `base_vid` as versions of bench/catalogue until `upto` exist; returns all ids."""
    from vendo_core.keys import Keys
    from vendo_core.redisconn import connect
    from vendo_core.registry import Registry

    r = connect(stack.redis_url)
    try:
        reg = Registry(r, Keys(stack.settings.redis_prefix))
        base = await reg.get_version(base_vid)
        clean = {f: None for f in ("created_at", "setup_status", "setup_error", "setup_logs", "setup_time",
                                   "setup_completed_at")}
        have = list(have)
        for i in range(len(have), upto):  # one at a time: concurrent ones only retry on the model's WATCH
            vid = hashlib.sha256(f"{USER}/{MODEL} clone {i}".encode()).hexdigest()
            await reg.add_version(base.model_copy(update={**clean, "id": vid}))
            have.append(vid)
        return have
    finally:
        await r.aclose()


async def unregister(stack, vids: list[str]) -> None:
    """Delete the versions `vids` of bench/catalogue through the registry."""
    from vendo_core.keys import Keys
    from vendo_core.redisconn import connect
    from vendo_core.registry import Registry

    r = connect(stack.redis_url)
    try:
        reg = Registry(r, Keys(stack.settings.redis_prefix))
        for vid in vids:
            await reg.delete_version(USER, MODEL, vid)
    finally:
        await r.aclose()


def round_robin(url: str, headers: dict[str, str], vids: list[str]) -> load.Send:
    target = load.check_loopback(f"{url}/v1/predictions")
    hdrs = {**headers, "Prefer": "wait"}
    turn = 0

    async def send(http) -> None:
        nonlocal turn
        vid = vids[turn % len(vids)]
        turn += 1
        r = await http.post(target, json={"version": vid, "input": {"text": TEXT}}, headers=hdrs)
        if r.status_code != 201 or r.json().get("status") != "succeeded":
            raise Failed(f"vendo answered {r.status_code}: {r.text[:200]}")

    return send


async def measure(stack, vids: list[str], plan: Plan) -> dict[str, list[float]]:
    send = round_robin(stack.url, stack.headers, vids)
    out: dict[str, list[float]] = {"p50_ms": [], "controller_cpu_pct": [], "router_cpu_pct": []}
    async with load.Pool(1) as pool:
        await load.warm(pool, send, plan.warm_requests)
        for _ in range(plan.trials):
            pids = actor_pids()
            before, t0 = cpu_s(pids), time.monotonic()
            run = await load.closed_loop(pool, send, max_requests=plan.latency_requests, max_s=plan.latency_max_s)
            after, wall = cpu_s(pids), time.monotonic() - t0
            out["p50_ms"].append(run.p(50) * 1e3)
            for role in ("controller", "router"):
                out[f"{role}_cpu_pct"].append(100 * (after.get(role, 0) - before.get(role, 0)) / wall)
    pids = actor_pids()
    out["controller_rss_mib"] = [_rss_mib(pids.get("controller"))]
    out["router_rss_mib"] = [_rss_mib(pids.get("router"))]
    return out


async def run(stack, plan: Plan) -> dict[str, Any]:
    from ray import serve

    base = stack.push(MODELS / "noop", MODEL)
    small = await register(stack, base, 10, [base])
    used = small[:USED]
    few = await measure(stack, used, plan)
    t0 = time.monotonic()
    every = await register(stack, base, plan.catalogue_versions, small)
    register_s = time.monotonic() - t0
    many = await measure(stack, used, plan)
    t0 = time.monotonic()
    await unregister(stack, every[len(small):])
    unregister_s = time.monotonic() - t0
    again = await measure(stack, used, plan)
    for vid in used:
        serve.delete(stack.app_of(vid))
    figures = {f"{k}_{n}": Figure.of(v, unit).to_json()
               for n, got in ((10, few), (len(every), many), ("10_after", again)) for k, v in got.items()
               for unit in ["ms" if k.endswith("_ms") else "MiB" if k.endswith("mib") else "%"]}
    ratio = Figure.of([b / ((a + c) / 2) for a, b, c in zip(few["p50_ms"], many["p50_ms"], again["p50_ms"], strict=True)],
                      "×").to_json()
    return {"versions": len(every), "used": USED, "register_s": round(register_s, 1),
            "unregister_s": round(unregister_s, 1), "figures": figures, "p50_ratio": ratio,
            "controller_rss_ratio": many["controller_rss_mib"][0] / few["controller_rss_mib"][0]}
