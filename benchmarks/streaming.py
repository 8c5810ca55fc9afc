"""Part 5, streaming: the model yields `time.time()` of each yield as its item; the client reads
`GET …/stream` (SSE) and notes, for every `output` event, how long after its yield it arrived (the
model and the client share this machine's clock). The model waits `lead_s` before its first yield
so the client is attached by then; a sample where it was not is dropped and counted."""

from __future__ import annotations

import time
from typing import Any

from benchmarks import load
from benchmarks.plan import Plan
from benchmarks.stats import Figure, percentile

LEAD_S, GAP_S = 0.2, 0.02


async def one(http, stack, vid: str, items: int) -> dict[str, Any]:
    """One streamed prediction: per-item delivery latencies (s) and whether the client was attached
    before the first yield."""
    r = await http.post(f"{stack.url}/v1/predictions", headers=stack.headers,
                        json={"version": vid, "stream": True,
                              "input": {"count": items, "lead_s": LEAD_S, "gap_s": GAP_S}})
    if r.status_code != 201:
        raise RuntimeError(f"stream create: {r.status_code} {r.text[:200]}")
    stream_url = r.json()["urls"]["stream"]
    lat: list[float] = []
    attached = None
    event = None
    async with http.stream("GET", stream_url, headers={**stack.headers, "Accept": "text/event-stream"}) as s:
        attached = time.time()
        async for line in s.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "output":
                lat.append(time.time() - float(line[5:].strip()))
            elif line.startswith("data:") and event in ("error", "done"):
                break
    if len(lat) != items:
        raise RuntimeError(f"stream delivered {len(lat)} of {items} items")
    first_yield = time.time() - lat[0]  # approximately; only used to check the attach time
    return {"latencies_s": lat, "attached_before_first_yield": attached is not None and attached < first_yield}


async def run(stack, plan: Plan) -> dict[str, Any]:
    vid = stack.versions["stream"]
    firsts: list[list[float]] = []
    alls: list[list[float]] = []
    dropped = 0
    async with load.client(1) as http:
        await one(http, stack, vid, 2)  # warm: replica up, connections open
        for _ in range(plan.trials):
            f: list[float] = []
            a: list[float] = []
            for _ in range(plan.stream_predictions):
                res = await one(http, stack, vid, plan.stream_items)
                if not res["attached_before_first_yield"]:
                    dropped += 1
                    continue
                f.append(res["latencies_s"][0])
                a.extend(res["latencies_s"])
            firsts.append(f)
            alls.append(a)
    return {
        "first_token_ms": Figure.of([percentile(f, 50) * 1e3 for f in firsts if f], "ms").to_json(),
        "first_token_max_ms": Figure.of([max(f) * 1e3 for f in firsts if f], "ms").to_json(),
        "every_token_p50_ms": Figure.of([percentile(a, 50) * 1e3 for a in alls if a], "ms").to_json(),
        "every_token_p99_ms": Figure.of([percentile(a, 99) * 1e3 for a in alls if a], "ms").to_json(),
        "dropped_samples": dropped,
        "items_per_prediction": plan.stream_items,
        "lead_s": LEAD_S,
        "gap_s": GAP_S,
    }
