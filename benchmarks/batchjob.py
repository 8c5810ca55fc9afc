"""Part 7, batch jobs: the same no-op predictions sent by `python -m cluster.batch` (what `ray job
submit` runs; Ray Data reads the lines, the router's handle takes them) and over HTTP with
`Prefer: wait` by a closed loop of the same concurrency. The batch's rate counts from its first
prediction to its last result (Ray Data's read and the job's start are before it); the ratio is
batch / HTTP, measured in the same run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import load
from benchmarks.overhead import TEXT, vendo_sync
from benchmarks.plan import Plan
from benchmarks.stack import TOKEN
from benchmarks.stats import Figure

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 16
_DONE = re.compile(r"(\d+) predictions in ([0-9.]+)s")


def run_batch(stack, vid: str, lines: int, concurrency: int) -> float:
    """One batch job of `lines` no-op predictions; predictions per second."""
    with tempfile.TemporaryDirectory(prefix="vendo-bench-batch-") as tmp:
        src, dst = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        src.write_text("".join(json.dumps({"text": TEXT}) + "\n" for _ in range(lines)))
        env = dict(os.environ, VENDO_API_TOKEN=TOKEN, RAY_ADDRESS="auto")
        proc = subprocess.run(
            [sys.executable, "-m", "cluster.batch", "--model", vid, "--input", str(src), "--output", str(dst),
             "--concurrency", str(concurrency), "--batch-id", f"bench-{time.time_ns()}", "--progress-s", "30"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
        m = _DONE.search(proc.stdout)
        if proc.returncode != 0 or not m:
            raise RuntimeError(f"batch failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-800:]}")
        rows = dst.read_text().splitlines()
        if len(rows) != lines or any(json.loads(r)["status"] != "succeeded" for r in rows):
            raise RuntimeError("the batch's results are not all succeeded")
        return int(m.group(1)) / float(m.group(2))


async def run(stack, plan: Plan) -> dict[str, Any]:
    vid = stack.versions["noop"]
    send = vendo_sync(stack.url, stack.headers, vid)
    http, batch = [], []
    for _ in range(plan.trials):  # alternated, so drift on the shared cores hits both
        async with load.Pool(CONCURRENCY) as pool:
            await load.warm(pool, send, CONCURRENCY)
            r = await load.closed_loop(pool, send, max_requests=plan.batch_lines, max_s=600.0)
        http.append(r.throughput)
        batch.append(run_batch(stack, vid, plan.batch_lines, CONCURRENCY))
    ratios = [b / h for b, h in zip(batch, http, strict=True)]
    return {"lines": plan.batch_lines, "concurrency": CONCURRENCY,
            "figures": {"http_per_s": Figure.of(http, "/s").to_json(), "batch_per_s": Figure.of(batch, "/s").to_json()},
            "ratio": Figure.of(ratios, "×").to_json()}
