"""Part 11, bursts and fairness on the no-op model (one replica of 128 slots, as the other parts).

Burst: the sync baseline is a closed loop of `Prefer: wait` creates at concurrency 64 (as many
predictions as the burst); the burst is that many async creates, sent 64 at a time, then nothing
but a poll of the last one until it is terminal. Its drain rate is predictions over (last
`completed_at` − first `created_at`), read from the records themselves; time to terminal is each
record's `completed_at` − `created_at`. Goal: the burst drains at ≥ 0.9× the sync throughput.

Fairness, on the 50 ms sleep model (one slot per replica, so a queue builds): account A queues
`fair_queue` predictions on it (model A); while they wait, account B runs one prediction on the
no-op model (model B, warm, its own app) and then one on model A, each timed end to end (`Prefer:
wait`) and printed against the same prediction on the idle cluster. B's wait on model A should be
its round-robin share (a prediction or two of A's ahead of it), not A's whole queue."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from datetime import datetime
from typing import Any

import httpx

from benchmarks import load
from benchmarks import stack as stk
from benchmarks.overhead import TEXT, Failed, vendo_sync
from benchmarks.plan import Plan
from benchmarks.stats import percentile

CONCURRENCY = 64
OTHER, OTHER_TOKEN = "bench-other", "bench-other-token"
TERMINAL = ("succeeded", "failed", "canceled")


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def _create_many(url: str, headers: dict[str, str], vid: str, n: int,
                       payload: dict | None = None) -> list[str]:
    """`n` async creates, CONCURRENCY at a time; the ids in order of acceptance."""
    target = load.check_loopback(f"{url}/v1/predictions")
    body = {"version": vid, "input": {"text": TEXT} if payload is None else payload}
    ids: list[str] = []
    todo = itertools.count()

    async def worker(http: httpx.AsyncClient) -> None:
        while next(todo) < n:
            r = await http.post(target, json=body, headers=headers)
            if r.status_code != 201:
                raise Failed(f"create answered {r.status_code}: {r.text[:200]}")
            ids.append(r.json()["id"])

    async with load.Pool(CONCURRENCY) as pool:
        await asyncio.gather(*(worker(c) for c in pool.clients))
    return ids


async def _records(url: str, headers: dict[str, str], ids: list[str], timeout_s: float = 600.0) -> list[dict]:
    """Every prediction in `ids` once terminal: polls the last one, then reads them all back."""
    out: dict[str, dict] = {}
    sem = asyncio.Semaphore(CONCURRENCY)
    deadline = time.monotonic() + timeout_s
    async with load.client(CONCURRENCY) as http:
        while len(out) < len(ids):
            if time.monotonic() > deadline:
                raise Failed(f"{len(ids) - len(out)} predictions still not terminal after {timeout_s:.0f}s")
            rest = [p for p in ids if p not in out]
            last = (await http.get(f"{url}/v1/predictions/{rest[-1]}", headers=headers)).json()
            if last.get("status") not in TERMINAL:
                await asyncio.sleep(0.05)
                continue

            async def one(pid: str) -> None:
                async with sem:
                    doc = (await http.get(f"{url}/v1/predictions/{pid}", headers=headers)).json()
                if doc.get("status") in TERMINAL:
                    out[pid] = doc

            await asyncio.gather(*(one(p) for p in rest))
    return [out[p] for p in ids]


def _drain(docs: list[dict]) -> dict[str, Any]:
    created = [_ts(d["created_at"]) for d in docs]
    done = [_ts(d["completed_at"]) for d in docs]
    ttt = sorted(b - a for a, b in zip(created, done, strict=True))
    span = max(done) - min(created)
    bad = [d for d in docs if d.get("status") != "succeeded"]
    if bad:
        raise Failed(f"{len(bad)} burst predictions did not succeed; first: {bad[0].get('error')}")
    return {"docs": docs, "predictions": len(docs), "drain_s": round(span, 3), "drain_per_s": round(len(docs) / span, 1),
            "time_to_terminal_p50_ms": round(percentile(ttt, 50) * 1e3, 1),
            "time_to_terminal_p99_ms": round(percentile(ttt, 99) * 1e3, 1)}


async def _timed(send: load.Send, n: int) -> list[float]:
    out = []
    async with load.client(1) as http:
        for _ in range(n):
            t = time.perf_counter()
            await send(http)
            out.append(time.perf_counter() - t)
    return out


async def _one(url: str, headers: dict[str, str], vid: str, payload: dict) -> tuple[float, dict]:
    """One `Prefer: wait` create: (seconds to its answer, the succeeded prediction)."""
    async with load.client(1) as http:
        t = time.perf_counter()
        r = await http.post(f"{url}/v1/predictions", json={"version": vid, "input": payload},
                            headers={**headers, "Prefer": "wait"})
        took = time.perf_counter() - t
    if r.status_code != 201 or r.json().get("status") != "succeeded":
        raise Failed(f"create answered {r.status_code}: {r.text[:200]}")
    return took, r.json()


async def run(st, plan: Plan) -> dict[str, Any]:
    from cluster.up import _ensure_account

    n = plan.burst
    a = st.push(stk.MODELS / "noop", "burst-a", salt="burst-a", visibility="public")
    slow = st.push(stk.MODELS / "sleep", "burst-slow", visibility="public")
    await _ensure_account(st.settings, st.redis_url, OTHER, OTHER_TOKEN, roles=())
    other = {"Authorization": f"Bearer {OTHER_TOKEN}"}
    on_a = vendo_sync(st.url, other, slow, {}, check=lambda out: out.get("output") == "ok")
    on_b = vendo_sync(st.url, other, a)

    sync_send = vendo_sync(st.url, st.headers, a)
    async with load.Pool(CONCURRENCY) as pool:
        await load.warm(pool, sync_send, CONCURRENCY)  # model A's replica is up and every path warm
        sync = await load.closed_loop(pool, sync_send, max_requests=n, max_s=120.0)
    idle_b = await _timed(on_b, plan.fair_samples)
    idle_a = await _timed(on_a, 1 + plan.fair_samples)  # the first starts model A's replica

    t0 = time.perf_counter()
    ids = await _create_many(st.url, st.headers, a, n)
    accepted_s = time.perf_counter() - t0
    burst = _drain(await _records(st.url, st.headers, ids))
    burst.pop("docs")
    burst["all_accepted_s"] = round(accepted_s, 3)

    # fairness: A's predictions queued on the slow model, then B's two while they wait
    ids = await _create_many(st.url, st.headers, slow, plan.fair_queue, {})
    loaded_b = await _timed(on_b, 1)
    loaded_a, doc = await _one(st.url, other, slow, {})
    queue = _drain(await _records(st.url, st.headers, ids))
    ahead = sum(1 for d in queue["docs"] if _ts(d["started_at"]) < _ts(doc["started_at"]))
    ratio = burst["drain_per_s"] / sync.throughput if sync.throughput else 0.0
    return {
        "replicas": 1, "slots_per_replica": 128, "concurrency": CONCURRENCY,
        "sync": {**sync.summary(), "throughput_per_s": round(sync.throughput, 1)},
        "burst": burst, "drain_vs_sync": round(ratio, 3),
        "fairness": {
            "model_a": "sleep (50 ms, one slot)", "queued_by_a": plan.fair_queue,
            "a_queue_drained_s": queue["drain_s"],
            "b_on_model_b_ms": {"idle_p50": round(statistics.median(idle_b) * 1e3, 1),
                                "while_a_queued": round(loaded_b[0] * 1e3, 1)},
            "b_on_model_a_ms": {"idle_p50": round(statistics.median(idle_a[1:]) * 1e3, 1),
                                "while_a_queued": round(loaded_a * 1e3, 1),
                                "cold_start": round(idle_a[0] * 1e3, 1)},
            "a_predictions_started_before_b": ahead,
            "a_predictions_left_when_b_ran": plan.fair_queue - ahead,
        },
    }
