"""Part 10, the working set on a full cluster: room for four `cpu` replicas (the rest of the
logical CPUs held by a placement group, as other work would hold them) and eight versions of the
no-op model used one after the other, each warm replica kept (a 600 s downscale delay). From the
fifth on, a version's first prediction can only run once an idle replica of another gives its
room back: vendo evicts the least recently used. Goal: each first prediction's time to result at
most a cold start plus one second, the cold start measured in the same run on the empty cluster
(the first four are just that)."""

from __future__ import annotations

import statistics
import time
from typing import Any

import httpx

from benchmarks import stack as stk
from benchmarks.plan import Plan

VERSIONS, ROOM = 8, 4


def _first(st, vid: str) -> float:
    t0 = time.perf_counter()
    r = httpx.post(f"{st.url}/v1/predictions", json={"version": vid, "input": {"text": "x"}},
                   headers={**st.headers, "Prefer": "wait=60"}, timeout=120, trust_env=False)
    took = time.perf_counter() - t0
    if r.status_code != 201 or r.json().get("status") != "succeeded":
        raise RuntimeError(f"first prediction of {vid[:12]}: {r.status_code} {r.text[:200]} after {took:.1f}s")
    return took


def run(st, plan: Plan) -> dict[str, Any]:
    import ray
    from ray import serve
    from ray.util.placement_group import placement_group, remove_placement_group

    from vendo_core.hardware import hardware

    sku = hardware(str(st.settings.hardware_config) if st.settings.hardware_config else None).get("cpu")
    if st.settings.autoscale_downscale_delay_s < 600:  # warm replicas must stay: only eviction makes room
        raise RuntimeError("the working-set part needs the stack's long downscale delay")
    vids = [st.push(stk.MODELS / "noop", f"ws-{i}", salt=f"ws-{i}") for i in range(VERSIONS)]
    free = ray.available_resources()
    hold = {"CPU": free.get("CPU", 0) - ROOM * sku.num_cpus}
    if sku.memory:
        hold["memory"] = max(0.0, free.get("memory", 0) - ROOM * sku.memory - 1)
    pg = placement_group([{k: v for k, v in hold.items() if v > 0}], strategy="STRICT_PACK")
    ray.get(pg.ready(), timeout=60)
    try:
        times = [_first(st, vid) for vid in vids]
    finally:
        remove_placement_group(pg)
        for vid in vids:
            if st.app_of(vid) in serve.status().applications:
                serve.delete(st.app_of(vid))
    cold = statistics.median(times[:ROOM])
    worst = max(times[ROOM:])
    return {"versions": VERSIONS, "room": ROOM, "first_s": [round(t, 3) for t in times],
            "cold_start_s": round(cold, 3), "worst_after_full_s": round(worst, 3),
            "margin_s": round(worst - cold, 3)}

