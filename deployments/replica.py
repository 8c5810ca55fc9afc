"""The per-version model deployment: one replica loads one Cog project in-process and runs its
predictions, writing their state, logs and outputs straight to Redis and storage.

A replica runs a prediction only after its own `starting → processing` compare-and-set succeeds,
so a duplicate dispatch is dropped, never run twice. Cancellation arrives on a Redis channel and
interrupts the predictor: `CancelationException` raised into a sync predictor's thread, or the
task cancelled for an async one."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from deployments import cog_runtime, logs
from deployments.cog_io import FetchLimits
from deployments.run import Runner, Running
from vendo_core.files import Files
from vendo_core.keys import Keys
from vendo_core.packaging import UnpackLimits, unpack_package
from vendo_core.redisconn import connect
from vendo_core.registry import Registry
from vendo_core.settings import Settings
from vendo_core.status import Status
from vendo_core.storage import open_store
from vendo_core.store import PredictionStore, now_iso

log = logging.getLogger("vendo.replica")

LOG_FLUSH_S = 0.1


def package_dir(cache_root: Path, version_id: str, store, package_key: str,
                limits: UnpackLimits | None = None) -> Path:
    """Fetch and unpack a version's package once per node (atomic rename, so replicas may race)."""
    dest = cache_root / version_id
    if (dest / "cog.yaml").exists():
        return dest
    cache_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version_id[:12]}-", dir=cache_root))
    try:
        unpack_package(store.get_bytes(package_key), tmp, limits=limits)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not (dest / "cog.yaml").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def cap_gpu_memory(num_gpus: float) -> None:
    """Ray splits GPUs for scheduling only; a fractional replica caps its own torch allocator."""
    if not (0 < num_gpus < 1):
        return
    try:
        import torch  # heavy and optional: only a fractional-GPU replica that has torch needs it
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(num_gpus)


class ModelReplica:
    """Serve deployment class; the constructor is setup(), `predict` runs one prediction."""

    async def __init__(self, version: dict[str, Any], settings: dict[str, Any], redis_url: str):
        self.version_id = version["id"]
        self.settings = Settings(**settings)
        self.keys = Keys(self.settings.redis_prefix)
        self.redis = connect(redis_url)
        self.store = PredictionStore(self.redis, self.keys, self.settings.prediction_ttl_s,
                                     retention_s=self.settings.retention_s,
                                     max_log_bytes=self.settings.max_log_bytes)
        self.objects = open_store(self.settings)
        self.files = Files(self.redis, self.keys, self.objects)
        self.running: dict[str, Running] = {}
        self.setup_error: str | None = None
        # the predictor's own slots; Serve admits one request more, which waits here
        self.slots = asyncio.Semaphore(int(version.get("concurrency") or 1))
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="predict")
        logs.install()
        cap_gpu_memory(float(version.get("num_gpus") or 0))

        sink = logs.LogSink()
        token = logs.bind(sink)
        started = time.time()
        try:
            cache = self.settings.package_cache_dir or Path(tempfile.gettempdir()) / "vendo-packages"
            project = await asyncio.to_thread(package_dir, Path(cache), self.version_id, self.objects,
                                              version["package_key"], UnpackLimits.of(self.settings))
            self.predictor = await asyncio.to_thread(cog_runtime.load, project)
            await self.predictor.asetup(self.pool)
            self.runner = Runner(self.predictor, self.pool, self.store, self.files, self.objects,
                                 allow_private_urls=self.settings.allow_private_urls,
                                 fetch_limits=FetchLimits(self.settings.max_input_download_bytes,
                                                          self.settings.input_download_timeout_s))
        except BaseException as e:  # noqa: BLE001 - a failed setup fails predictions, not the replica
            self.setup_error = f"{type(e).__name__}: {e}"
            sink.write(traceback.format_exc())
        finally:
            logs.unbind(token)
        self.setup_logs = sink.drain()
        await Registry(self.redis, self.keys).record_setup(self.version_id, {
            "setup_status": "failed" if self.setup_error else "succeeded",
            "setup_error": self.setup_error or "",
            "setup_logs": self.setup_logs[-20000:],
            "setup_time": round(time.time() - started, 3),
            "setup_completed_at": round(time.time(), 6),
        })
        self._bg = [asyncio.get_running_loop().create_task(self._heartbeat_loop()),
                    asyncio.get_running_loop().create_task(self._cancel_listener())]

    # background work

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            try:
                pids = list(self.running)
                await self.store.heartbeat(pids, time.time() + 3 * self.settings.heartbeat_s)
                # a cancel published while the listener was reconnecting is still seen here
                for pid, status in zip(pids, await self.store.statuses(pids), strict=True):
                    if status == Status.CANCELED.value:
                        self._interrupt(pid)
            except Exception:  # noqa: BLE001 - a missed beat is retried on the next tick
                log.exception("heartbeat failed")

    def _interrupt(self, pid: str, timed_out: bool = False) -> None:
        run = self.running.get(pid)
        if run is None or run.canceled or run.timed_out:
            return
        if timed_out:
            run.timed_out = True
            log.warning("prediction %s: over the %.0fs limit, stopping it", pid, self.settings.max_prediction_s)
        else:
            run.canceled = True
            log.info("prediction %s: cancel requested", pid)
        if run.task is not None:
            run.task.cancel()
        if run.thread_id is not None:
            cog_runtime.raise_in_thread(run.thread_id)

    async def _cancel_listener(self) -> None:
        while True:
            try:
                pubsub = self.redis.pubsub()
                await pubsub.subscribe(self.keys.cancel_channel())
                async for msg in pubsub.listen():
                    if msg.get("type") == "message":
                        self._interrupt(msg["data"])
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - resubscribe after a dropped connection
                log.exception("cancel listener failed; resubscribing")
                await asyncio.sleep(1)

    def check_health(self) -> None:
        # a failed setup keeps the replica up so predictions fail with its error, as Cog does
        return None

    # one prediction

    async def predict(self, request: dict[str, Any]) -> dict[str, Any]:
        """Run prediction `request["id"]` on `request["input"]`; returns its terminal status."""
        async with self.slots:
            return await self._predict(request)

    async def _predict(self, request: dict[str, Any]) -> dict[str, Any]:
        pid = request["id"]
        if self.setup_error:
            await self.store.transition(pid, Status.FAILED, {"completed_at": now_iso()},
                                        error=f"setup failed: {self.setup_error}",
                                        retention_s=request.get("retention_s"))
            return {"status": "failed"}
        started = time.time()
        ok, prev = await self.store.transition(
            pid, Status.PROCESSING, {"started_at": now_iso(started)},
            heartbeat_deadline=started + 3 * self.settings.heartbeat_s)
        if not ok:
            log.info("prediction %s: not started, status was %s", pid, prev)
            return {"status": prev.value if prev else None}
        run = Running(logs.LogSink())
        self.running[pid] = run
        loop = asyncio.get_running_loop()
        flusher = loop.create_task(self._flush_logs(pid, run.sink))
        # no prediction outlives max_prediction_s: graceful shutdowns are sized on it
        watchdog = loop.call_later(self.settings.max_prediction_s, self._interrupt, pid, True)
        status, fields, error = Status.SUCCEEDED, {}, None
        try:
            output, metrics = await self.runner(pid, request["input"], run)
            fields["output"] = output
        except BaseException as e:  # noqa: BLE001 - every outcome becomes a terminal status
            metrics = {}
            if run.timed_out:
                status = Status.FAILED
                error = f"Prediction ran longer than the {self.settings.max_prediction_s:g}s limit"
            elif run.canceled:
                status = Status.CANCELED
            elif isinstance(e, asyncio.CancelledError):
                status = Status.CANCELED
            else:
                status, error = Status.FAILED, _describe(e)
                run.sink.write(traceback.format_exc())
        finally:
            watchdog.cancel()
            flusher.cancel()
            self.running.pop(pid, None)
        rest = run.sink.drain()
        if rest:
            await self.store.append_logs(pid, rest)
        done = time.time()
        metrics = {**metrics, "predict_time": round(done - started, 6)}
        created = request.get("created_ts")
        if created:
            metrics["total_time"] = round(done - float(created), 6)
        fields.update(completed_at=now_iso(done), metrics=metrics)
        if status != Status.SUCCEEDED:
            fields.pop("output", None)
        await self.store.transition(pid, status, fields, error=error, retention_s=request.get("retention_s"))
        return {"status": status.value}

    async def _flush_logs(self, pid: str, sink: logs.LogSink) -> None:
        while True:
            await asyncio.sleep(LOG_FLUSH_S)
            text = sink.drain()
            if text:
                await self.store.append_logs(pid, text)

def _describe(e: BaseException) -> str:
    text = str(e)
    return text if text else type(e).__name__
