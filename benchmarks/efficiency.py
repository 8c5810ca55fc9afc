"""Part 4, efficiency: a model that waits 50 ms per prediction without using the CPU (a sync
`time.sleep`, one slot per replica, as a GPU-bound model is), pushed with `max_replicas` n for n in
1, 2, 4 (a separate version each) and warmed under load until n replicas run. Then a closed loop
with 4n clients (always a queue in front of every replica) measures achieved throughput; efficiency
is that over the ideal n / 0.05 s. The same is measured on bare Serve with the same options."""

from __future__ import annotations

import asyncio
from typing import Any

from benchmarks import load
from benchmarks import stack as stk
from benchmarks.overhead import plain_sync, vendo_sync
from benchmarks.plan import Plan
from benchmarks.stats import Figure

WAIT_S = 0.05
PAYLOAD = {"wait_s": WAIT_S}


def _ok(body: dict) -> bool:
    return body.get("output") == "ok"


async def _saturate(app: str, send: load.Send, n: int, plan: Plan) -> list[load.Run]:
    """Warm `app` to n running replicas under load, then run the trials."""
    c = 4 * n
    async with load.Pool(c) as pool:
        await send(pool.clients[0])  # fails fast on a broken path (the first call also pays the cold start)
        warm = asyncio.create_task(load.closed_loop(pool, send, max_requests=10**9, max_s=120.0))
        try:
            await asyncio.to_thread(stk.wait_replicas, app, lambda cnt: cnt.get("running", 0) >= n, 120,
                                    f"{n} running replicas", 0.25)
        finally:
            warm.cancel()
            await asyncio.gather(warm, return_exceptions=True)
    runs = []
    for _ in range(plan.trials):
        async with load.Pool(c) as pool:
            await load.warm(pool, send, c)
            runs.append(await load.closed_loop(pool, send, max_requests=10**6, max_s=plan.efficiency_max_s))
    return runs


def _figures(runs: list[load.Run], n: int) -> dict[str, Any]:
    ideal = n / WAIT_S
    return {
        "throughput": Figure.of([r.throughput for r in runs], "/s").to_json(),
        "efficiency": Figure.of([r.throughput / ideal for r in runs], "").to_json(),
        "ideal_per_s": ideal,
        "runs": [r.summary() for r in runs],
    }


async def run(stack, plan: Plan, who: str = "vendo") -> dict[str, Any]:
    """Efficiency at each of `plan.efficiency_replicas` for vendo or for bare Serve ("vendo" or
    "bare"); bare Serve's baseline runs on a cluster of its own, on Serve's default ingress."""
    from ray import serve

    from router.serve_apps import autoscaling
    from vendo_core.hardware import hardware

    out: dict[str, Any] = {}
    skus = hardware(str(stack.settings.hardware_config) if stack.settings.hardware_config else None)
    for n in plan.efficiency_replicas:
        if who == "vendo":
            vid = await asyncio.to_thread(stack.push, stk.MODELS / "sleep", f"sleep-{n}", max_replicas=n,
                                          salt=f"max_replicas={n}")
            app = stack.app_of(vid)
            send = vendo_sync(stack.url, stack.headers, vid, PAYLOAD, check=_ok)
        else:
            app, prefix = f"bare-sleep-{n}", f"/bare-sleep-{n}"
            await asyncio.to_thread(
                stk.deploy_bare, app, prefix, stk.MODELS / "sleep", max_ongoing_requests=1,
                autoscaling_config=autoscaling(stack.settings, n),
                ray_actor_options=skus.get(None).ray_actor_options())
            send = plain_sync(stack.url + prefix, "bare Serve", PAYLOAD)
        try:
            out[str(n)] = _figures(await _saturate(app, send, n, plan), n)
        finally:
            await asyncio.to_thread(serve.delete, app)  # frees its replicas (CPU and memory)
    return out
