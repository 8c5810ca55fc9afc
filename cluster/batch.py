"""Batch predictions as a Ray job:

    ray job submit --address http://HEAD:8265 --working-dir . \\
        --runtime-env-json '{"env_vars": {"VENDO_API_TOKEN": "r8_…"}}' \\
        -- python -m cluster.batch --model owner/name[:version] --input inputs.jsonl \\
           --output results.jsonl [--concurrency N] [--batch-id ID]

Each input line (a JSON object of inputs, or `{"input": {...}}`; JSONL or Parquet, a local path or
`s3://`) becomes one prediction through the router's handle (`source` "batch"), at most
`--concurrency` at once. Ray Data reads the input, so read tasks spread over the cluster and the
driver holds a bounded window of lines, never the whole file. Results are written in input order,
one JSON line per input line: `index`, `id`, `status`, `output` or `error`; a line that fails is
written as failed and the batch goes on.

Progress goes to the job's log at a steady cadence (`ray job logs --follow`), and to the batch's
record (`vendo batches list|get`, `GET /v1/batches/{id}`). Submitting the same batch again (same
`--batch-id`, which defaults to a digest of model, input and output) skips the lines the earlier
run's results file shows succeeded. `ray job stop` (SIGTERM) cancels the predictions in flight
and marks the batch canceled."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cluster.handle import ROUTER_APP, TERMINAL, Vendo

WAIT_S = 300.0
# a line's create holds this long for its prediction to finish, so a short one takes one call to the
# router instead of two; a stop waits this long at most for the creates in flight to say their ids
FIRST_WAIT_S = 1.0
BATCH_ROWS = 256
READ_TASKS = 4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m cluster.batch", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="owner/name[:version] (or a version id)")
    p.add_argument("--input", required=True, help="JSONL or Parquet: a local path or s3://bucket/key")
    p.add_argument("--output", required=True, help="results JSONL: a local path or s3://bucket/key")
    p.add_argument("--concurrency", type=int, default=16, help="predictions in flight at once (default 16)")
    p.add_argument("--batch-id", default=None, help="resubmit with the same id to skip done lines")
    p.add_argument("--token", default=None, help="API token (default: VENDO_API_TOKEN)")
    p.add_argument("--progress-s", type=float, default=10.0, help="seconds between progress lines")
    p.add_argument("--address", default=None, help="Ray address when not run as a job (default: auto)")
    args = p.parse_args(argv)
    if args.concurrency < 1:
        p.error("--concurrency must be at least 1")
    return args


def default_batch_id(model: str, input: str, output: str) -> str:
    return "b-" + hashlib.sha256(f"{model}\n{input}\n{output}".encode()).hexdigest()[:16]


# input and output, local or on S3


def _s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


def _s3_client():
    import boto3  # only for s3:// paths

    return boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)


def read_dataset(uri: str):
    """A Ray Dataset of the input's rows, in order (Parquet by suffix, else JSON lines): read tasks
    (one per file, at most READ_TASKS at once) run on the cluster's nodes; the driver streams the
    blocks."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False  # the job's log gets this module's own progress lines
    ctx.read_op_min_num_blocks = 2  # blocks by size, not split to a count the driver never needs
    kw: dict[str, Any] = {"concurrency": READ_TASKS}
    if uri.startswith("s3://") and os.environ.get("AWS_ENDPOINT_URL"):
        import pyarrow.fs

        kw["filesystem"] = pyarrow.fs.S3FileSystem(endpoint_override=os.environ["AWS_ENDPOINT_URL"])
        uri = uri[len("s3://"):]
    if uri.endswith(".parquet"):
        return ray.data.read_parquet(uri, **kw)
    return ray.data.read_json(uri, lines=True, **kw)


def count_lines(uri: str, ds) -> int | None:
    """How many lines the input has, for progress: Parquet's metadata, a local file's non-empty
    lines (read once, streaming), unknown for JSON lines on S3."""
    if uri.endswith(".parquet"):
        return ds.count()
    if uri.startswith("s3://"):
        return None
    with open(uri, "rb") as f:
        return sum(1 for line in f if line.strip())


def previous_results(uri: str) -> dict[int, dict]:
    """The succeeded lines of an earlier run's results, by index (nothing if there are none)."""
    try:
        if uri.startswith("s3://"):
            bucket, key = _s3(uri)
            text = _s3_client().get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        else:
            text = Path(uri).read_text()
    except Exception:  # noqa: BLE001 - no earlier run (or nothing readable): run every line
        return {}
    done = {}
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get("status") == "succeeded" and isinstance(row.get("index"), int):
            done[row["index"]] = row
    return done


class Output:
    """Results written in input order to a temporary file beside the output, put in place at the end
    (an S3 output is uploaded then)."""

    def __init__(self, uri: str):
        self.uri = uri
        where = None if uri.startswith("s3://") else (Path(uri).resolve().parent)
        if where is not None:
            where.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix=".batch-", suffix=".jsonl", dir=where)
        self.f = os.fdopen(fd, "w")

    def write(self, row: dict) -> None:
        self.f.write(json.dumps(row, separators=(",", ":")) + "\n")

    def close(self) -> None:
        self.f.close()
        if self.uri.startswith("s3://"):
            bucket, key = _s3(self.uri)
            _s3_client().upload_file(self.tmp, bucket, key)
            os.unlink(self.tmp)
        else:
            os.replace(self.tmp, self.uri)


def line_input(row: dict) -> dict:
    """A line's inputs: the object itself, or its `input` object; absent fields (None, which Ray
    Data gives lines that lack a column others have) are left out."""
    row = {k: v for k, v in row.items() if v is not None}
    if set(row) == {"input"} and isinstance(row["input"], dict):
        return {k: v for k, v in row["input"].items() if v is not None}
    return row


# the run


class Batch:
    def __init__(self, args: argparse.Namespace, vendo: Vendo, batch_id: str):
        self.args = args
        self.vendo = vendo
        self.id = batch_id
        self.total: int | None = None
        self.done = self.succeeded = self.failed = self.skipped = 0
        self.live: set[str] = set()
        self.creating = 0  # create calls in flight: their predictions' ids are not known yet
        self.created = asyncio.Event()  # set when the last create in flight has returned
        self.created.set()
        self.stopping = False
        self.started = time.monotonic()
        self.first_at: float | None = None  # the first prediction's create: rates count from here
        self.last_line = 0.0

    async def report(self, **fields: Any) -> None:
        counts = {"done": self.done, "succeeded": self.succeeded, "failed": self.failed, "skipped": self.skipped}
        await self.vendo.handle.batch_report.remote(self.vendo.token, self.id, {**counts, **fields})

    def progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_line < self.args.progress_s:
            return
        self.last_line = now
        ran = self.done - self.skipped
        rate = ran / max(now - (self.first_at or self.started), 1e-9)
        left = (self.total - self.done) if self.total is not None else None
        eta = f"{left / rate:.0f}s" if left is not None and rate > 0 else "?"
        total = self.total if self.total is not None else "?"
        print(f"batch {self.id}: {self.done}/{total} done, {self.failed} failed, {self.skipped} skipped, "
              f"{rate:.1f}/s, ETA {eta}", flush=True)

    async def one(self, index: int, row: dict) -> dict:
        """One line's prediction, to its end; whatever happens, a result row."""
        vendo, inputs = self.vendo, line_input(row)
        pid = None
        if self.stopping:  # a line that had waited for a slot: not started (a resubmission runs it)
            return {"index": index, "id": None, "status": "canceled", "error": "the batch was stopped"}
        if self.first_at is None:
            self.first_at = time.monotonic()
        try:
            # a short wait in the create itself: a stop waits out the creates in flight (see `stop`)
            self.creating += 1
            self.created.clear()
            try:
                p = await vendo.call("create", self.args.model, inputs, source="batch", wait_s=FIRST_WAIT_S)
            finally:
                self.creating -= 1
                if not self.creating:
                    self.created.set()
            pid = p["id"]
            self.live.add(pid)
            while p["status"] not in TERMINAL:
                p = await vendo.call("wait", pid, WAIT_S)
        except Exception as e:  # noqa: BLE001 - a line that fails is written as failed; the batch goes on
            cause = getattr(e, "cause", None) or e
            return {"index": index, "id": pid, "status": "failed", "error": str(cause)[:2000]}
        finally:
            self.live.discard(pid)
        out = {"index": index, "id": p["id"], "status": p["status"]}
        if p["status"] == "succeeded":
            out["output"] = p.get("output")
        else:
            out["error"] = p.get("error") or p["status"]
        return out

    async def run(self, rows: Iterator[dict], earlier: dict[int, dict], output: Output) -> None:
        window = max(4 * self.args.concurrency, 64)  # lines read ahead of the oldest unwritten one
        slots = asyncio.Semaphore(self.args.concurrency)
        pending: dict[int, asyncio.Future] = {}
        next_to_write = 0
        loop = asyncio.get_running_loop()

        async def run_line(i: int, row: dict) -> dict:
            async with slots:
                return await self.one(i, row)

        def take(result: dict) -> None:
            self.done += 1
            if result.get("skipped"):
                self.skipped += 1
            elif result["status"] == "succeeded":
                self.succeeded += 1
            else:
                self.failed += 1
            result.pop("skipped", None)
            output.write(result)

        async def drain(until_below: int) -> None:
            nonlocal next_to_write
            while pending and (len(pending) >= until_below or pending[next_to_write].done()):
                take(await pending.pop(next_to_write))
                next_to_write += 1
                self.progress()
                if self.done % 500 == 0:
                    await self.report()

        index = 0
        it = iter(rows)
        while not self.stopping:
            row = await loop.run_in_executor(None, next, it, None)
            if row is None:
                break
            if index in earlier:
                fut = loop.create_future()
                fut.set_result({**earlier[index], "skipped": True})
            else:
                fut = asyncio.ensure_future(run_line(index, row))
            pending[index] = fut
            index += 1
            await drain(window)
        await drain(1)

    async def stop(self) -> None:
        """Stop taking lines, let the creates in flight return their ids (within FIRST_WAIT_S),
        and cancel every prediction of this batch that is not finished."""
        self.stopping = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.created.wait(), FIRST_WAIT_S + 30)
        print(f"batch {self.id}: stopping; canceling {len(self.live)} predictions in flight", flush=True)
        await self.cancel_live()

    async def cancel_live(self) -> None:
        await asyncio.gather(*(self.vendo.handle.cancel.remote(self.vendo.token, pid) for pid in list(self.live)),
                             return_exceptions=True)


def _rows(ds) -> Iterator[dict]:
    # Arrow, not pandas: a line's missing field is None (pandas makes it NaN) and values are Python's
    for batch in ds.iter_batches(batch_size=BATCH_ROWS, batch_format="pyarrow"):
        yield from batch.to_pylist()


async def _main(args: argparse.Namespace) -> int:
    vendo = Vendo(args.token, app=ROUTER_APP)
    if not vendo.token:
        print("no API token: pass --token or set VENDO_API_TOKEN", file=sys.stderr)
        return 2
    batch_id = args.batch_id or default_batch_id(args.model, args.input, args.output)
    b = Batch(args, vendo, batch_id)
    import ray

    job_id = ray.get_runtime_context().get_job_id()
    await b.report(model=args.model, input=args.input, output=args.output, status="running",
                   concurrency=args.concurrency, job_id=os.environ.get("RAY_JOB_SUBMISSION_ID") or job_id,
                   total=None, error=None)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # `ray job stop` sends SIGTERM to the driver
        loop.add_signal_handler(sig, stop.set)
    earlier = previous_results(args.output)
    ds = read_dataset(args.input)
    b.total = await loop.run_in_executor(None, count_lines, args.input, ds)
    await b.report(total=b.total)
    print(f"batch {batch_id}: {b.total} lines of {args.input} on {args.model}, {args.concurrency} at once"
          + (f", {len(earlier)} done before" if earlier else ""), flush=True)
    output = Output(args.output)
    work = asyncio.ensure_future(b.run(_rows(ds), earlier, output))
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if stopped.done() and not work.done():
        await b.stop()
        work.cancel()
        output.close()
        await b.report(status="canceled")
        return 130
    stopped.cancel()
    try:
        await work
    except Exception as e:  # noqa: BLE001 - the batch itself failed (not a line): say so on its record
        output.close()
        await b.report(status="failed", error=f"{type(e).__name__}: {e}"[:2000])
        raise
    output.close()
    b.progress(force=True)
    await b.report(status="succeeded")
    ran_s = time.monotonic() - (b.first_at or b.started)
    print(f"batch {batch_id}: finished: {b.succeeded} succeeded, {b.failed} failed, {b.skipped} skipped; "
          f"results in {args.output}; {b.done - b.skipped} predictions in {ran_s:.2f}s", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import ray

    if not ray.is_initialized():
        ray.init(address=args.address or os.environ.get("RAY_ADDRESS") or "auto", logging_level="WARNING",
                 log_to_driver=False)
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
