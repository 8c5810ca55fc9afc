"""One run of a prediction inside a replica: stage its inputs (the platform's own files copied
from storage, URLs downloaded under the network policy), call the predictor (one thread hop for a
sync one, none for an async one unless it moves files), and encode its outputs (files uploaded
under the prediction's folder, iterator items appended to its event stream as they come)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import mimetypes
import os
import shutil
import tempfile
import threading
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from deployments import cog_runtime, logs
from deployments.cog_io import FetchLimits
from vendo_core.files import Files, file_id_of, file_urls_in, stored_ref
from vendo_core.keys import prediction_files
from vendo_core.storage import ObjectStore
from vendo_core.store import PredictionStore


class Running:
    """What the replica knows of one running prediction: its log sink, where it runs (thread or
    task) and whether it was asked to stop."""

    __slots__ = ("sink", "thread_id", "task", "canceled", "timed_out")

    def __init__(self, sink: logs.LogSink):
        self.sink = sink
        self.thread_id: int | None = None
        self.task: asyncio.Task | None = None
        self.canceled = False
        self.timed_out = False



class Runner:
    """Runs predictions of one loaded predictor; the replica owns state changes and cancellation."""

    def __init__(self, predictor: cog_runtime.LoadedPredictor, pool: Executor, store: PredictionStore,
                 files: Files, objects: ObjectStore, *, allow_private_urls: bool = False,
                 fetch_limits: FetchLimits = FetchLimits()):
        self.predictor = predictor
        self.pool = pool
        self.store = store
        self.files = files
        self.objects = objects
        self.allow_private_urls = allow_private_urls
        self.fetch_limits = fetch_limits

    async def __call__(self, pid: str, payload: dict[str, Any], run: Running) -> tuple[Any, dict]:
        """Run prediction `pid` on `payload`: stage its inputs, call the predictor, encode (and
        upload) its outputs, streaming iterator items as they come. Returns (output, metrics)."""
        p = self.predictor
        loop = asyncio.get_running_loop()
        token = logs.bind(run.sink)
        inputs_dir: list[Path] = []  # made only when the input names our own files
        downloaded: list[str] = []  # http(s)/data: inputs fetched to temp files
        try:
            local = await self._local_files(pid, payload, inputs_dir)
            with cog_runtime.metric_scope() as metrics:
                if p.is_async:
                    # thread hops cost more than the work unless it downloads or uploads files
                    if _fetches(payload):
                        kwargs = await loop.run_in_executor(self.pool, contextvars.copy_context().run,
                                                            self._prepare, payload, local.get, downloaded)
                    else:
                        kwargs = self._prepare(payload, local.get, downloaded)
                    run.task = asyncio.current_task()
                    if p.is_iterator:
                        out = []
                        async for item in p.call(kwargs):
                            await self._emit(pid, run, out, item)
                        result = out
                    else:
                        result = await p.call(kwargs)
                        if _plain(result):
                            result = self._encode(pid, result)
                        else:
                            result = await loop.run_in_executor(self.pool, self._encode, pid, result)
                else:
                    # one thread hop for a sync predictor: inputs, the predictor, outputs
                    result = await loop.run_in_executor(
                        self.pool, contextvars.copy_context().run, self._sync_path,
                        pid, run, payload, local.get, downloaded, loop)
            return result, dict(metrics)
        finally:
            logs.unbind(token)
            for d in inputs_dir:
                shutil.rmtree(d, ignore_errors=True)
            for f in downloaded:
                with contextlib.suppress(OSError):
                    os.unlink(f)

    async def _local_files(self, pid: str, payload: dict[str, Any], dirs: list[Path]) -> dict[str, str]:
        """The platform's own file URLs in the input, copied from storage (never fetched over HTTP)."""
        if not any(file_id_of(u) for v in payload.values() for u in file_urls_in(v)):
            return {}
        owner = await self.files.prediction_owner(pid)
        if not owner:
            return {}
        dirs.append(Path(tempfile.mkdtemp(prefix=f"vendo-inputs-{pid[:12]}-")))
        return await self.files.localize(owner, payload, dirs[0])

    def _prepare(self, payload: dict[str, Any], resolve_url=None, downloaded: list | None = None) -> dict:
        return cog_runtime.prepare_input(self.predictor, payload, resolve_url,
                                         allow_private_urls=self.allow_private_urls,
                                         fetch_limits=self.fetch_limits,
                                         temp_files=downloaded)

    def _sync_path(self, pid: str, run: Running, payload: dict, resolve_url, downloaded: list,
                   loop: asyncio.AbstractEventLoop) -> Any:
        kwargs = self._prepare(payload, resolve_url, downloaded)
        result = self._call_sync(pid, run, kwargs, loop)
        return result if self.predictor.is_iterator else self._encode(pid, result)

    def _call_sync(self, pid: str, run: Running, kwargs: dict, loop: asyncio.AbstractEventLoop) -> Any:
        """Runs in a worker thread; iterator items are encoded here and shipped to the loop."""
        run.thread_id = threading.get_ident()
        try:
            if run.canceled:
                raise asyncio.CancelledError()
            result = self.predictor.call(kwargs)
            if not self.predictor.is_iterator:
                return result
            out: list = []
            for item in result:
                asyncio.run_coroutine_threadsafe(self._emit(pid, run, out, item), loop).result()
            return out
        finally:
            run.thread_id = None

    async def _emit(self, pid: str, run: Running, out: list, item: Any) -> None:
        encoded = await asyncio.to_thread(self._encode, pid, item, len(out))
        out.append(encoded)
        text = encoded if isinstance(encoded, str) else _compact(encoded)
        await self.store.append_output(pid, encoded, text, logs=run.sink.drain())

    def _encode(self, pid: str, value: Any, index: int | None = None) -> Any:
        def put_file(src, filename: str) -> str:
            key = prediction_files(pid) + filename
            ctype = mimetypes.guess_type(filename)[0]
            if isinstance(src, (bytes, bytearray)):
                self.objects.put_bytes(key, bytes(src), ctype)
            else:
                self.objects.put_file(key, src, ctype)
            return stored_ref(key)

        return cog_runtime.encode_output(value, put_file, index=index)


def _fetches(value: Any) -> bool:
    """Whether preparing this input may download or decode files (so it belongs in a thread)."""
    if isinstance(value, str):
        return value.startswith(("http://", "https://", "data:"))
    if isinstance(value, dict):
        return any(_fetches(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_fetches(v) for v in value)
    return False


def _plain(value: Any) -> bool:
    """JSON-native output: encoding it uploads nothing."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return False


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
