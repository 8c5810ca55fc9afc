"""Part 6, files: the model writes a 10 MB PNG on every prediction and either returns it as a file
(vendo uploads it to storage and the answer carries an expiring URL) or returns nothing. The
difference in `Prefer: wait` latency is what the upload and the URL add; beside it, in the same run,
the time to write the same bytes to the same storage directly (`ObjectStore.put_bytes`), and the
time to fetch the file through its expiring URL against reading it from disk."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from benchmarks import load
from benchmarks.overhead import vendo_sync
from benchmarks.plan import Plan
from benchmarks.stats import Figure, percentile


async def _timed(send, http, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await send(http)
        out.append(time.perf_counter() - t)
    return out


async def run(stack, plan: Plan) -> dict[str, Any]:
    from vendo_core.storage import open_store

    vid = stack.versions["file"]
    urls: list[str] = []

    def keep_url(body: dict) -> bool:
        out = body.get("output")
        if isinstance(out, list) and len(out) == 1 and isinstance(out[0], str):
            urls.append(out[0])
            return True
        return False

    as_file = vendo_sync(stack.url, stack.headers, vid, {"as_file": True}, check=keep_url)
    no_file = vendo_sync(stack.url, stack.headers, vid, {"as_file": False}, check=lambda b: b.get("output") == [])
    objects = open_store(stack.settings)  # the same file:// store the replica writes to
    rows: dict[str, list[float]] = {"file": [], "none": [], "put_bytes": [], "download": [], "read_disk": []}
    async with load.client(1) as http:
        await _timed(as_file, http, 2)
        await _timed(no_file, http, 2)
        r = await http.get(urls[-1])
        data = r.content
        if r.status_code != 200 or not data.startswith(b"\x89PNG"):
            raise RuntimeError(f"download of the output failed: {r.status_code}")
        trials: dict[str, list[float]] = {k: [] for k in rows}
        for trial in range(plan.trials):
            n = plan.file_predictions
            f = await _timed(as_file, http, n)
            z = await _timed(no_file, http, n)
            puts, reads, downs = [], [], []
            for i in range(n):
                key = f"bench/direct/{trial}-{i}.png"
                t = time.perf_counter()
                await asyncio.to_thread(objects.put_bytes, key, data, "image/png")
                puts.append(time.perf_counter() - t)
                path = Path(objects.open(key)) if hasattr(objects, "open") else None
                if path is not None:
                    t = time.perf_counter()
                    await asyncio.to_thread(path.read_bytes)
                    reads.append(time.perf_counter() - t)
                t = time.perf_counter()
                got = await http.get(urls[-1 - i])
                downs.append(time.perf_counter() - t)
                if len(got.content) != len(data):
                    raise RuntimeError("downloaded file has the wrong size")
            for k, xs in (("file", f), ("none", z), ("put_bytes", puts), ("download", downs), ("read_disk", reads)):
                rows[k].extend(xs)
                trials[k].append(percentile(xs, 50) * 1e3 if xs else float("nan"))
    added = [a - b for a, b in zip(trials["file"], trials["none"], strict=False)]
    excess = [a - p for a, p in zip(added, trials["put_bytes"], strict=False)]
    figs = {k: Figure.of(v, "ms") for k, v in trials.items()}
    figs["added_by_upload_and_url"] = Figure.of(added, "ms")
    figs["added_beyond_put_bytes"] = Figure.of(excess, "ms")
    return {"bytes": len(data), "storage": objects.describe(),
            "figures": {k: f.to_json() for k, f in figs.items()}}
