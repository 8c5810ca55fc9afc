"""The model worker: the only process that runs a model's own code.

A replica (or the push-time introspection task) starts it as `python -m deployments.worker IN OUT`
with a scrubbed environment, its own HOME and TMPDIR, and, when vendo runs as root, an
unprivileged uid. It holds no credential: no Redis client, no storage keys, no Ray connection. It
speaks to its parent only through the two pipe descriptors IN and OUT, in JSON frames
(`deployments.protocol`):

    parent → worker
      {"op": "init", "mode": "predict"|"train"|"introspect", "project": DIR,
       "gpu_fraction": F, "allow_private_urls": B, "fetch_limits": [BYTES, SECONDS],
       "cwd": DIR, "env": {NAME: VALUE}}   first, once; cwd and env only to a prestarted worker
      {"op": "predict", "id": ID, "input": {...}, "files": {URL: LOCAL_PATH}, "out": DIR}
      {"op": "cancel", "id": ID}
    worker → parent
      {"ev": "log", "id": ID|null, "text": ...}          stdout/stderr written from Python
      {"ev": "ready", "traits": {...}} | {"ev": "setup_failed", "error": ...}
      {"ev": "item", "id": ID, "value": JSON, "files": {TOKEN: [NAME, FILENAME]}}
      {"ev": "done", "id": ID, "output": JSON, "files": {...}, "metrics": {...}}
      {"ev": "failed", "id": ID, "error": ..., "canceled": B}
      {"ev": "introspected", "openapi_schema": {...}, "traits": {...}} (introspect mode)

Output files are linked or copied into the prediction's OUT directory under a plain NAME and
stand in the JSON as TOKEN strings; the parent uploads them and puts the stored URL in place of
the token. When the parent closes IN (it stopped, or died), the worker exits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import os
import shutil
import signal
import sys
import threading
import traceback
import uuid
from typing import Any

from deployments import cog_runtime, logs
from deployments.cog_io import FetchLimits
from deployments.protocol import FdWriter, read_frame_sync
from vendo_core.errors import PackageInvalid


def cap_gpu_memory(fraction: float) -> None:
    """Ray splits GPUs for scheduling only; a fractional worker caps its own torch allocator."""
    if not (0 < fraction < 1):
        return
    try:
        import torch  # heavy and optional: only a fractional-GPU model that has torch needs it
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(fraction)


class _FrameSink:
    """A log sink (see `deployments.logs`) that sends each write to the parent at once."""

    def __init__(self, out: FdWriter, pid: str | None):
        self.out = out
        self.pid = pid

    def write(self, text: str) -> None:
        if text:
            self.out.send({"ev": "log", "id": self.pid, "text": text})


class _Outputs:
    """File outputs of one prediction: placed in its OUT directory, named by tokens in the JSON."""

    def __init__(self, out_dir: str):
        self.dir = out_dir
        self.pending: dict[str, list[str]] = {}
        self.count = 0  # files placed
        self.items = 0  # iterator items encoded

    def put(self, src: str | bytes, filename: str) -> str:
        self.count += 1
        name = str(self.count)
        dest = os.path.join(self.dir, name)
        if isinstance(src, (bytes, bytearray)):
            with open(dest, "wb") as f:
                f.write(src)
        else:
            try:
                os.link(src, dest)  # free when the model wrote it on the same filesystem
            except OSError:
                shutil.copyfile(src, dest)
        token = f"vendo-file:{uuid.uuid4().hex}"
        self.pending[token] = [name, filename]
        return token

    def encode(self, value: Any, index: int | None = None) -> tuple[Any, dict[str, list[str]]]:
        encoded = cog_runtime.encode_output(value, self.put, index=index)
        files, self.pending = self.pending, {}
        return encoded, files


class _Run:
    __slots__ = ("task", "thread_id", "canceled")

    def __init__(self) -> None:
        self.task: asyncio.Task | None = None
        self.thread_id: int | None = None
        self.canceled = False


class Worker:
    def __init__(self, out: FdWriter, init: dict[str, Any]):
        self.out = out
        self.init = init
        self.runs: dict[str, _Run] = {}
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="predict")
        limits = init.get("fetch_limits")
        self.fetch_limits = FetchLimits(*limits) if limits else FetchLimits()
        self.allow_private_urls = bool(init.get("allow_private_urls"))
        self.loop: asyncio.AbstractEventLoop | None = None

    # setup

    async def setup(self) -> bool:
        token = logs.bind(_FrameSink(self.out, None))
        try:
            self.predictor = await asyncio.to_thread(
                cog_runtime.load, self.init["project"], train=self.init.get("mode") == "train")
            await self.predictor.asetup(self.pool)
        except BaseException as e:  # noqa: BLE001 - reported to the parent, which fails predictions with it
            sys.stderr.write(traceback.format_exc())
            self.out.send({"ev": "setup_failed", "error": f"{type(e).__name__}: {e}"})
            return False
        finally:
            logs.unbind(token)
        p = self.predictor
        self.out.send({"ev": "ready", "traits": {"is_async": p.is_async, "is_iterator": p.is_iterator,
                                                 "concurrency_max": p.concurrency_max}})
        return True

    # requests

    def read_requests(self, fd: int) -> None:
        """Runs in a thread: hand each request to the loop; exit when the parent goes away."""
        assert self.loop is not None
        try:
            while (msg := read_frame_sync(fd)) is not None:
                op = msg.get("op")
                if op == "predict":
                    self.loop.call_soon_threadsafe(self._start, msg)
                elif op == "cancel":
                    self.loop.call_soon_threadsafe(self._cancel, str(msg.get("id")))
        finally:
            os._exit(0)  # the parent closed the pipe: nothing more will be asked of us

    def _start(self, msg: dict[str, Any]) -> None:
        pid = str(msg["id"])
        run = self.runs[pid] = _Run()
        run.task = asyncio.get_running_loop().create_task(self._run(pid, msg, run))

    def _cancel(self, pid: str) -> None:
        run = self.runs.get(pid)
        if run is None or run.canceled:
            return
        run.canceled = True
        if run.thread_id is not None:
            cog_runtime.raise_in_thread(run.thread_id)
        elif run.task is not None and self.predictor.is_async:
            run.task.cancel()

    async def _run(self, pid: str, msg: dict[str, Any], run: _Run) -> None:
        p = self.predictor
        loop = asyncio.get_running_loop()
        outputs = _Outputs(msg["out"])
        local = msg.get("files") or {}
        downloaded: list[str] = []
        token = logs.bind(_FrameSink(self.out, pid))
        try:
            with cog_runtime.metric_scope() as metrics:
                payload = msg.get("input") or {}
                if p.is_async:
                    if _fetches(payload):
                        kwargs = await loop.run_in_executor(self.pool, contextvars.copy_context().run,
                                                            self._prepare, payload, local.get, downloaded)
                    else:
                        kwargs = self._prepare(payload, local.get, downloaded)
                    if p.is_iterator:
                        async for item in p.call(kwargs):
                            self._emit(pid, outputs, item)
                        result, files = None, {}
                    else:
                        result, files = outputs.encode(await p.call(kwargs))
                else:
                    result, files = await loop.run_in_executor(
                        self.pool, contextvars.copy_context().run, self._sync_path,
                        pid, run, outputs, payload, local.get, downloaded)
            self.out.send({"ev": "done", "id": pid, "output": result, "files": files,
                           "metrics": _plain_metrics(metrics)})
        except BaseException as e:  # noqa: BLE001 - every outcome is reported
            canceled = run.canceled or isinstance(e, (asyncio.CancelledError, cog_runtime.CancelationException))
            if not canceled:
                sys.stderr.write(traceback.format_exc())
            self.out.send({"ev": "failed", "id": pid, "error": _describe(e), "canceled": canceled})
        finally:
            logs.unbind(token)
            self.runs.pop(pid, None)
            for f in downloaded:
                with contextlib.suppress(OSError):
                    os.unlink(f)

    def _prepare(self, payload: dict, resolve_url, downloaded: list) -> dict:
        return cog_runtime.prepare_input(self.predictor, payload, resolve_url,
                                         allow_private_urls=self.allow_private_urls,
                                         fetch_limits=self.fetch_limits, temp_files=downloaded)

    def _sync_path(self, pid: str, run: _Run, outputs: _Outputs, payload: dict, resolve_url,
                   downloaded: list) -> tuple[Any, dict]:
        """One thread hop for a sync predictor: inputs, the call, outputs (items sent as they come)."""
        run.thread_id = threading.get_ident()
        try:
            if run.canceled:
                raise cog_runtime.CancelationException()
            kwargs = self._prepare(payload, resolve_url, downloaded)
            result = self.predictor.call(kwargs)
            if not self.predictor.is_iterator:
                return outputs.encode(result)
            for item in result:
                self._emit(pid, outputs, item)
            return None, {}
        finally:
            run.thread_id = None

    def _emit(self, pid: str, outputs: _Outputs, item: Any) -> None:
        value, files = outputs.encode(item, outputs.items)
        outputs.items += 1
        self.out.send({"ev": "item", "id": pid, "value": value, "files": files})


def _plain_metrics(metrics: dict) -> dict:
    return {str(k): v for k, v in metrics.items()}


def _fetches(value: Any) -> bool:
    """Whether preparing this input may download or decode files (so it belongs in a thread)."""
    if isinstance(value, str):
        return value.startswith(("http://", "https://", "data:"))
    if isinstance(value, dict):
        return any(_fetches(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_fetches(v) for v in value)
    return False


def _describe(e: BaseException) -> str:
    text = str(e)
    if not isinstance(e, Exception):  # SystemExit(1) says "1": name it, as Cog does
        return f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text if text else type(e).__name__


def introspect(out: FdWriter, project: str) -> None:
    """Import the predictor and report its schema and traits (push time)."""
    try:
        schema, traits = cog_runtime.schema_and_traits(project)
    except PackageInvalid as e:
        out.send({"ev": "failed", "error": str(e), "package_invalid": True})
        return
    except BaseException as e:  # noqa: BLE001 - the model's own import error is the push's answer
        out.send({"ev": "failed", "error": f"could not load the predictor: {type(e).__name__}: {e}",
                  "package_invalid": True})
        return
    out.send({"ev": "introspected", "openapi_schema": schema, "traits": traits})


def _stray_alarm(signum: int, frame: Any) -> None:
    """SIGALRM with no handler of the model's own: said and ignored, where its default would kill
    the worker (and fail whatever prediction runs). Workers were seen dying of one while idle; the
    interval timer's state says whether this process armed it (a repeating one shows its period)."""
    os.write(2, f"vendo worker: a SIGALRM no handler expected was ignored (interval timer: "
                f"{signal.getitimer(signal.ITIMER_REAL)})\n".encode())


def _move_to(cwd: str) -> None:
    """Work in `cwd`, as a worker started there would: `python -m` put the folder it started in
    first on the import path."""
    started_in = os.getcwd()
    os.chdir(cwd)
    if sys.path and sys.path[0] == started_in:
        sys.path[0] = cwd


def main(argv: list[str]) -> int:
    fd_in, fd_out = int(argv[1]), int(argv[2])
    # a handler, not SIG_IGN: the model's own subprocesses get the default back; a model that
    # installs its own handler replaces this one
    signal.signal(signal.SIGALRM, _stray_alarm)
    # the model's own subprocesses must not inherit the pipes to the parent
    os.set_inheritable(fd_in, False)
    os.set_inheritable(fd_out, False)
    out = FdWriter(fd_out)
    init = read_frame_sync(fd_in)
    if init is None or init.get("op") != "init":
        return 2
    if init.get("cwd"):  # a prestarted worker: its project's environment and folder come now
        os.environ.update(init.get("env") or {})
        _move_to(init["cwd"])
    logs.install()
    if init.get("mode") == "introspect":
        introspect(out, init["project"])
        return 0
    cap_gpu_memory(float(init.get("gpu_fraction") or 0))
    worker = Worker(out, init)
    loop = worker.loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(worker.setup())
    threading.Thread(target=worker.read_requests, args=(fd_in,), name="vendo-requests", daemon=True).start()
    loop.run_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
