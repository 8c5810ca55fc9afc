"""Part 2, the async path on the no-op model: create (201 at once) then poll `GET` every few ms until
terminal; and create with a `completed` webhook, timed until the webhook reaches a receiver on this
machine. Latency at concurrency 1 and throughput at 16 and 64, as for the sync path."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import time
from typing import Any

import httpx

from benchmarks import load
from benchmarks.overhead import TEXT, Failed, figures
from benchmarks.plan import Plan
from benchmarks.webhook_sink import WebhookSink

TERMINAL = ("succeeded", "failed", "canceled")
NOT_LANDED = "not measured: webhooks not yet landed"


def webhooks_present(settings) -> bool:
    """Whether this tree delivers webhooks (router/webhook_delivery.py and its settings)."""
    return (importlib.util.find_spec("router.webhook_delivery") is not None
            and hasattr(settings, "allow_private_webhooks"))


def create_then_poll(url: str, headers: dict[str, str], vid: str, poll_s: float, polls: list[int]) -> load.Send:
    target = load.check_loopback(f"{url}/v1/predictions")
    body = {"version": vid, "input": {"text": TEXT}}

    async def send(http: httpx.AsyncClient) -> None:
        r = await http.post(target, json=body, headers=headers)
        if r.status_code != 201:
            raise Failed(f"create answered {r.status_code}: {r.text[:200]}")
        get = r.json()["urls"]["get"]
        n = 0
        while True:
            await asyncio.sleep(poll_s)
            n += 1
            g = await http.get(get, headers=headers)
            status = g.json().get("status")
            if status in TERMINAL:
                polls.append(n)
                if status != "succeeded" or g.json().get("output") != TEXT:
                    raise Failed(f"prediction ended {status}")
                return

    return send


def create_with_webhook(url: str, headers: dict[str, str], vid: str, sink: WebhookSink) -> load.Send:
    target = load.check_loopback(f"{url}/v1/predictions")
    counter = itertools.count()

    async def send(http: httpx.AsyncClient) -> None:
        hook, fut = sink.expect(f"/hook/{next(counter)}")
        body = {"version": vid, "input": {"text": TEXT}, "webhook": hook, "webhook_events_filter": ["completed"]}
        r = await http.post(target, json=body, headers=headers)
        if r.status_code != 201:
            raise Failed(f"create answered {r.status_code}: {r.text[:200]}")
        _, doc = await asyncio.wait_for(fut, 10.0)
        if doc.get("status") != "succeeded":
            raise Failed(f"webhook says {doc.get('status')}")

    return send


async def _one_shape(send: load.Send, plan: Plan) -> dict[str, list[load.Run]]:
    runs: dict[str, list[load.Run]] = {}
    for _ in range(plan.trials):
        async with load.Pool(1) as pool:
            await load.warm(pool, send, plan.warm_requests)
            runs.setdefault("c1", []).append(await load.closed_loop(
                pool, send, max_requests=plan.latency_requests, max_s=plan.latency_max_s))
        for c in plan.concurrencies:
            async with load.Pool(c) as pool:
                await load.warm(pool, send, c)
                runs.setdefault(f"c{c}", []).append(await load.closed_loop(
                    pool, send, max_requests=plan.throughput_requests, max_s=plan.throughput_max_s))
    return runs


async def run(stack, plan: Plan) -> dict[str, Any]:
    vid = stack.versions["noop"]
    polls: list[int] = []
    poll_runs = await _one_shape(create_then_poll(stack.url, stack.headers, vid, plan.poll_interval_s, polls), plan)
    out: dict[str, Any] = {
        "poll": {
            "poll_interval_ms": plan.poll_interval_s * 1e3,
            "figures": {k: f.to_json() for k, f in figures(poll_runs, plan).items()},
            "mean_polls_per_prediction": round(sum(polls) / len(polls), 2) if polls else None,
            "runs": {k: [r.summary() for r in rs] for k, rs in poll_runs.items()},
        }
    }
    if not webhooks_present(stack.settings):
        out["webhook"] = {"measured": False, "note": NOT_LANDED}
        return out
    t0 = time.perf_counter()
    async with WebhookSink() as sink:
        send = create_with_webhook(stack.url, stack.headers, vid, sink)
        try:  # one probe first: a tree whose delivery is half-built must not stall the run
            async with load.client(1) as http:
                await send(http)
        except Exception as e:  # noqa: BLE001 - reported, not fatal
            out["webhook"] = {"measured": False, "note": f"not measured: the webhook probe failed ({e!r:.200})"}
            return out
        hook_runs = await _one_shape(send, plan)
    out["webhook"] = {
        "measured": True,
        "figures": {k: f.to_json() for k, f in figures(hook_runs, plan).items()},
        "deliveries": sink.deliveries,
        "seconds": round(time.perf_counter() - t0, 1),
        "runs": {k: [r.summary() for r in rs] for k, rs in hook_runs.items()},
    }
    return out
