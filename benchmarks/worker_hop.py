"""What the model worker process costs one prediction, without Ray or HTTP around it.

Runs the no-op model two ways in one process, interleaved: in-process (the predictor called on the
replica's own loop, as replicas did before the worker existed) and through a `ModelWorker` (a JSON
frame to the child process, the call there, a frame back). Prints p50/p99 of each and the
difference, which is the worker's cost per prediction.

    python -m benchmarks.worker_hop [--n 2000] [--trials 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path

from deployments import cog_runtime
from deployments.supervisor import ModelWorker, WorkerOptions

NOOP = Path(__file__).resolve().parent / "models" / "noop"


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def _trial(worker: ModelWorker, loaded, n: int) -> tuple[list[float], list[float]]:
    out, fd = worker.root.output_dir("bench")
    inproc, hop = [], []

    async def ignore(_msg):
        return None

    try:
        for i in range(n):
            t = time.perf_counter()
            kwargs = cog_runtime.prepare_input(loaded, {"text": "x"})
            await loaded.call(kwargs)
            inproc.append(time.perf_counter() - t)
            t = time.perf_counter()
            await worker.predict(f"p{i}", {"text": "x"}, {}, out, ignore)
            hop.append(time.perf_counter() - t)
    finally:
        os.close(fd)
    return inproc, hop


async def main(n: int, trials: int) -> None:
    worker = ModelWorker(NOOP, WorkerOptions())
    await worker.start()
    assert worker.setup_error is None, worker.setup_error
    loaded = cog_runtime.load(NOOP, chdir=False)
    try:
        rows = []
        for k in range(trials):
            inproc, hop = await _trial(worker, loaded, n)
            rows.append((statistics.median(inproc), _pct(inproc, 0.99), statistics.median(hop), _pct(hop, 0.99)))
            print(f"trial {k + 1}: in-process p50 {rows[-1][0] * 1e3:.3f} ms, worker p50 {rows[-1][2] * 1e3:.3f} ms")
    finally:
        await worker.close()
    med = [statistics.median(r[i] for r in rows) for i in range(4)]
    print(f"\nno-op model, {n} predictions x {trials} trials (isolation: {worker.isolation.level})")
    print("| | p50 | p99 |\n|---|---|---|")
    print(f"| in-process call | {med[0] * 1e3:.3f} ms | {med[1] * 1e3:.3f} ms |")
    print(f"| through the worker | {med[2] * 1e3:.3f} ms | {med[3] * 1e3:.3f} ms |")
    print(f"| worker's cost | {(med[2] - med[0]) * 1e3:.3f} ms | {(med[3] - med[1]) * 1e3:.3f} ms |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--trials", type=int, default=3)
    args = ap.parse_args()
    asyncio.run(main(args.n, args.trials))
