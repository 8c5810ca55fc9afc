"""Experiments behind the plans for missed goals; not part of `make bench`.

    python -m benchmarks.experiments efficiency [--out DIR]

`efficiency`: why a 50 ms, one-slot model reaches only part of its ideal throughput on Serve, and
what recovers it. With `max_ongoing_requests: 1` every replica is full whenever a request waits, and
Serve's request router then retries with exponential backoff (25 ms doubling to 500 ms,
`RAY_SERVE_ROUTER_RETRY_*`) rather than being woken when a slot frees, so a replica sits idle
between predictions. Measured here, on bare Serve and on vendo, for 1 and 4 replicas:

- as configured today;
- with one request queued inside each replica (`max_ongoing_requests: 2` and a semaphore of 1 in
  the replica: the next request is already there when the slot frees) — bare Serve only, since it
  needs a change to vendo's replica;
- with the router's retry backoff cut to 1 ms doubling to 10 ms (environment of every Ray process),
  which needs no code change in vendo."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import stack as stk
from benchmarks.efficiency import PAYLOAD, _figures, _ok, _saturate
from benchmarks.overhead import plain_sync, vendo_sync
from benchmarks.plan import Plan
from benchmarks.stats import Figure

RESULTS = Path(__file__).resolve().parent / "results"
FAST_BACKOFF = {"RAY_SERVE_ROUTER_RETRY_INITIAL_BACKOFF_S": "0.001", "RAY_SERVE_ROUTER_RETRY_MAX_BACKOFF_S": "0.01"}


def log(msg: str) -> None:
    print(f"[experiments {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


async def _bare(st, n: int, plan: Plan, *, max_ongoing: int = 1, slots: int | None = None) -> dict[str, Any]:
    from ray import serve

    from router.serve_apps import autoscaling
    from vendo_core.hardware import hardware

    name, prefix = f"bare-x-{n}-{max_ongoing}", f"/bare-x-{n}-{max_ongoing}"
    await asyncio.to_thread(stk.deploy_bare, name, prefix, stk.MODELS / "sleep", max_ongoing_requests=max_ongoing,
                            autoscaling_config=autoscaling(st.settings, n),
                            ray_actor_options=hardware(None).get(None).ray_actor_options(), slots=slots)
    try:
        return _figures(await _saturate(name, plain_sync(st.url + prefix, "bare Serve", PAYLOAD), n, plan), n)
    finally:
        await asyncio.to_thread(serve.delete, name)


async def _vendo(st, n: int, plan: Plan, tag: str) -> dict[str, Any]:
    from ray import serve

    vid = await asyncio.to_thread(st.push, stk.MODELS / "sleep", f"sleep-x-{n}-{tag}", max_replicas=n,
                                  salt=f"experiment {tag} {n}")
    app = st.app_of(vid)
    try:
        return _figures(await _saturate(app, vendo_sync(st.url, st.headers, vid, PAYLOAD, check=_ok), n, plan), n)
    finally:
        await asyncio.to_thread(serve.delete, app)


def efficiency(plan: Plan, lock_held: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with stk.ray_lock(lock_held):
        with stk.stack() as st:
            for n in (1, 4):
                log(f"as configured, n={n}")
                out[f"bare default n={n}"] = asyncio.run(_bare(st, n, plan))
                out[f"vendo default n={n}"] = asyncio.run(_vendo(st, n, plan, "default"))
                log(f"one request queued in the replica, n={n}")
                out[f"bare max_ongoing_requests=2, 1 slot, n={n}"] = asyncio.run(_bare(st, n, plan, max_ongoing=2, slots=1))
        saved = {k: os.environ.get(k) for k in FAST_BACKOFF}
        os.environ.update(FAST_BACKOFF)  # inherited by the raylet, so by every Ray worker
        try:
            with stk.stack() as st:
                for n in (1, 4):
                    log(f"fast router backoff, n={n}")
                    out[f"bare fast backoff n={n}"] = asyncio.run(_bare(st, n, plan))
                    out[f"vendo fast backoff n={n}"] = asyncio.run(_vendo(st, n, plan, "fast"))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return out


def markdown(res: dict[str, Any]) -> str:
    lines = ["# Efficiency experiments (50 ms per prediction, one slot per replica, 4 clients per replica)", "",
             "| variant | throughput | efficiency |", "|---|---|---|"]
    for k, d in res.items():
        lines.append(f"| {k} | {Figure.from_json(d['throughput']).text()} | {Figure.from_json(d['efficiency']).text(2)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.experiments", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", choices=["efficiency"])
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--lock-held", action="store_true")
    args = ap.parse_args(argv)
    res = efficiency(Plan(), args.lock_held)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "experiments-efficiency.json").write_text(json.dumps(res, indent=1) + "\n")
    (args.out / "experiments-efficiency.md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
