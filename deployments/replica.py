"""The per-version model deployment. A replica is vendo code: it holds the Redis client, the
storage credentials and its Ray worker, and it never runs the model's own code. That runs in the
replica's model worker process (`deployments.worker`, started by `deployments.supervisor`), which
gets the project, the inputs and a scrubbed environment, and answers in JSON frames.

A replica runs a prediction only after its own `starting → processing` compare-and-set succeeds,
so a duplicate dispatch is dropped, never run twice. Cancellation arrives on a Redis channel and
is passed to the worker (Cog's `CancelationException` in a sync predictor's thread, the task
cancelled for an async one); a worker that ignores it is killed after a grace period and started
again.

Serve's deployment class is `deployments.deployment.ModelReplica`: it starts the worker's
interpreter before this module (and redis-py, the store and the storage client with it) is
imported, and hands both to `Replica`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from deployments import logs
from deployments.run import Runner, Running
from deployments.supervisor import ModelWorker, WorkerFailed, share_tree
from vendo_core import logctx, metrics
from vendo_core.billing import ReplicaMeter, bill_replica_time
from vendo_core.errors import NotFound
from vendo_core.files import Files
from vendo_core.finetune import NO_WEIGHTS, finetune_version, training_output, weights_of
from vendo_core.grpcmsg import fits_grpc
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
WEIGHTS_LINK_S = 30 * 24 * 3600  # a fine-tune's COG_WEIGHTS link: its worker may be set up again later


class Loaded:
    """A set-up model worker and how predictions run on it: the replica's own version, or one of
    the fine-tunes it holds for its base (Serve's multiplexing unloads the least recently used)."""

    def __init__(self, version_id: str, worker: ModelWorker, runner: Runner, concurrency: int):
        self.version_id = version_id
        self.worker = worker
        self.runner = runner
        self.slots = asyncio.Semaphore(concurrency)
        self.running = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._loop = asyncio.get_running_loop()
        self._closing = False
        self.on_close: Callable[[], Any] | None = None

    @property
    def setup_window(self) -> tuple[float, float]:
        return self.worker.setup_window

    @contextlib.asynccontextmanager
    async def use(self):
        async with self.slots:
            self.running += 1
            self._idle.clear()
            try:
                yield self
            finally:
                self.running -= 1
                if not self.running:
                    self._idle.set()

    def __del__(self) -> None:
        """Serve's multiplexer unloading it (from a thread): predictions still running on it
        finish first, then its worker stops."""
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(RuntimeError):  # the loop is gone: so is the worker
            self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self._close_when_idle()))

    async def _close_when_idle(self) -> None:
        await self._idle.wait()
        await self.worker.close()
        if self.on_close is not None:
            self.on_close()
        log.info("unloaded fine-tune %s", self.version_id)


class FinetuneUnavailable(Exception):
    """A fine-tune this replica cannot run (not of its base, deleted, or its setup failed)."""


def package_dir(cache_root: Path, version_id: str, store, package_key: str,
                limits: UnpackLimits | None = None) -> Path:
    """Fetch and unpack a version's package once per node (atomic rename, so replicas may race).
    The tree is readable, not writable, by the model's worker."""
    dest = cache_root / version_id
    if (dest / "cog.yaml").exists():
        return dest
    cache_root.mkdir(parents=True, exist_ok=True)
    os.chmod(cache_root, 0o755)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version_id[:12]}-", dir=cache_root))
    try:
        unpack_package(store.get_bytes(package_key), tmp, limits=limits)
        share_tree(tmp)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not (dest / "cog.yaml").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def wait_breakdown(created: float | None, started: float, setup_window: tuple[float, float]) -> dict[str, float]:
    """Where a prediction's wait between its creation and its start went, given the (start, end)
    of the setup of the replica that runs it: `boot_time` (a replica being started for it:
    scheduling, process start and the package, up to its setup), then `setup_time` (the part of
    that setup it waited through), and `queue_time` (the rest: a free slot, and the hops). The
    three add up to the wait; a replica set up before the prediction came adds no boot or setup."""
    if not created:
        return {}
    wait = max(0.0, started - created)
    setup_start, setup_done = setup_window
    boot = min(wait, max(0.0, min(started, setup_start) - created))
    setup = min(wait - boot, max(0.0, min(started, setup_done) - max(created, setup_start)))
    return {"queue_time": round(wait - boot - setup, 6), "boot_time": round(boot, 6),
            "setup_time": round(setup, 6)}


def _retrieved(task: asyncio.Task) -> None:
    """Mark a shielded run's outcome seen (its caller may be gone): no "never retrieved" noise."""
    if not task.cancelled():
        task.exception()


class TrainingFailed(Exception):
    """A training ran, but what it returned cannot become a version."""


class Replica:
    """The platform side of a model replica: `open()` fetches the package and runs the worker's
    setup(), `predict` runs one prediction. Made by `deployments.deployment.ModelReplica`."""

    def __init__(self, version: dict[str, Any], settings: Settings, redis_url: str, born: float):
        self.meter = ReplicaMeter(born)  # setup() is the owner's time too
        self.version_id = version["id"]
        self.mode = version.get("mode") or "predict"  # "train": this app runs the version's trainings
        self.billing = {k: version.get(k) for k in ("model", "deployment", "hardware", "price_nanos")}
        self.settings = settings
        self.keys = Keys(self.settings.redis_prefix)
        self.redis = connect(redis_url)
        self.store = PredictionStore(self.redis, self.keys, self.settings.prediction_ttl_s,
                                     retention_s=self.settings.retention_s,
                                     max_log_bytes=self.settings.max_log_bytes,
                                     billing_period=self.settings.billing_period)
        self.objects = open_store(self.settings)
        self.files = Files(self.redis, self.keys, self.objects)
        self.registry = Registry(self.redis, self.keys)
        self.running: dict[str, Running] = {}
        self.concurrency = int(version.get("concurrency") or 1)
        # fine-tunes of this version, loaded on demand (`predict` with a `finetune`)
        n = max(1, int(self.settings.finetunes_per_replica))
        from ray import serve  # heavy: kept out of what unit tests of this module import

        async def load_finetune(version_id: str) -> Loaded:
            return await self._load_finetune(version_id)

        self.load_finetune = serve.multiplexed(max_num_models_per_replica=n)(load_finetune)

    async def open(self, version: dict[str, Any], worker: ModelWorker) -> None:
        """Fetch the version's package and run setup() in `worker` (made, and maybe prestarted,
        for this version's mode and hardware)."""
        self.worker = worker
        self.options = worker.options
        worker.extra_env = self._weights_env(version.get("weights_key"))
        worker.on_setup = self._record_setup
        try:
            cache = self.settings.package_cache_dir or Path(tempfile.gettempdir()) / "vendo-packages"
            project = await asyncio.to_thread(package_dir, Path(cache), self.version_id, self.objects,
                                              version["package_key"], UnpackLimits.of(self.settings))
        except Exception as e:  # noqa: BLE001 - a package that cannot be unpacked fails predictions
            project = Path(tempfile.gettempdir())
            worker.project = project
            worker.fail(f"{type(e).__name__}: {e}")
            await self._record_setup({"setup_status": "failed", "setup_error": worker.setup_error,
                                      "setup_logs": "", "setup_time": 0.0,
                                      "setup_completed_at": round(time.time(), 6)})
        else:
            worker.project = project
            await worker.start()
        self.project = project
        self.runner = Runner(self.worker, self.store, self.files, self.objects, durable=self.mode == "train")
        self.base = Loaded(self.version_id, self.worker, self.runner, self.concurrency)
        self.finetunes: dict[int, Loaded] = {}  # loaded ones, to stop with the replica
        self._bg = [asyncio.get_running_loop().create_task(self._heartbeat_loop()),
                    asyncio.get_running_loop().create_task(self._cancel_listener())]

    async def _record_setup(self, record: dict[str, Any], version_id: str | None = None,
                            model: str | None = None) -> None:
        took = float(record.get("setup_time") or 0.0)
        version_id = version_id or self.version_id
        if self.mode == "train":
            return  # a training app's setup says nothing of how the version's predictions start
        labels = (model or self.billing.get("model") or "", version_id)
        outcome = "failed" if record.get("setup_status") == "failed" else "succeeded"
        await self.registry.record_setup(version_id, record, replica=str(os.getpid()), counts=[
            metrics.inc("replica_setups", *labels, outcome), *metrics.observe("replica_setup_seconds", took, *labels)])

    def _weights_env(self, weights_key: str | None) -> dict[str, str]:
        """A fine-tune's `COG_WEIGHTS`: a signed link to its weights, fetched by the model's own
        setup() (the worker holds no storage credential), as Replicate hands a URL."""
        if not weights_key:
            return {}
        return {"COG_WEIGHTS": self.objects.url(weights_key, self.settings.self_url, WEIGHTS_LINK_S)}

    async def _load_finetune(self, version_id: str) -> Loaded:
        """Set up a worker for fine-tune `version_id` of this replica's version (Serve calls this
        through `load_finetune`, once per fine-tune it routes here, and unloads the least recently
        used past `finetunes_per_replica`)."""
        v = await self.registry.get_version(version_id)
        if v is None or v.base_version != self.version_id or not v.weights_key:
            raise FinetuneUnavailable(f"version {version_id} is not a fine-tune of {self.version_id}")
        worker = ModelWorker(self.project, self.options, env=self._weights_env(v.weights_key),
                             on_setup=lambda rec: self._record_setup(rec, v.id, v.model))
        await worker.start()
        if worker.setup_error:
            await worker.close()
            raise FinetuneUnavailable(f"setup failed: {worker.setup_error}")
        loaded = Loaded(v.id, worker, Runner(worker, self.store, self.files, self.objects), self.concurrency)
        loaded.on_close = lambda: self.finetunes.pop(id(loaded), None)
        self.finetunes[id(loaded)] = loaded
        log.info("loaded fine-tune %s (%s) on the replica of %s", v.id, v.model, self.version_id)
        return loaded

    @property
    def setup_error(self) -> str | None:
        return self.worker.setup_error

    # background work

    async def _bill_owner(self) -> None:
        """Add the setup and idle time since the last call to the owner's usage: a deployment's
        owner, or a private model's (a public model's replica time is the platform's)."""
        b = self.billing
        ms = self.meter.take(time.time())
        if not ms or not b.get("model") or b.get("price_nanos") is None:
            return
        if b.get("deployment"):
            owner = b["deployment"].split("/", 1)[0]
        else:
            model_owner, _, name = b["model"].partition("/")
            model = await self.registry.get_model(model_owner, name)
            owner = model_owner if model is not None and model.visibility == "private" else None
        if owner:
            await bill_replica_time(self.redis, self.keys, owner, b["model"], b.get("hardware") or "",
                                    int(b["price_nanos"]), ms, time.time(), self.settings.billing_period)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            try:
                await self._bill_owner()
            except Exception:  # noqa: BLE001 - what was taken is lost (one beat's worth); go on
                log.exception("billing the replica's idle time failed")
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
        (run.worker or self.worker).cancel(pid)

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

    async def close(self) -> None:
        """Serve's graceful shutdown: bill the last idle stretch, stop the worker, remove its folders."""
        with contextlib.suppress(Exception):
            await self._bill_owner()
        for loaded in list(self.finetunes.values()):
            await loaded.worker.close()
        await self.worker.close()

    # one prediction

    async def predict(self, request: dict[str, Any]) -> dict[str, Any]:
        """Run prediction (or training) `request["id"]` on `request["input"]`, on this replica's
        version or, with `request["finetune"]`, on that fine-tune of it; returns its terminal
        status, and the fields it wrote when the answer can stand for a read of the record.

        The run is shielded from its caller: a router replica that goes away (restarted, or
        drained) takes its calls with it (over gRPC the call is cancelled), and that must not end
        a prediction. Only its cancel, its deadline or its run's limit end it (the cancel channel);
        one canceled before it started finds its status moved and does not start."""
        task = asyncio.get_running_loop().create_task(self._run_request(request))
        task.add_done_callback(_retrieved)
        return await asyncio.shield(task)

    async def _run_request(self, request: dict[str, Any]) -> dict[str, Any]:
        finetune = request.get("finetune")
        with logctx.about(request["id"], model=request.get("model") or self.billing.get("model"),
                          version=finetune or self.version_id, account=request.get("account")):
            target = self.base
            if finetune:
                try:
                    target = await self.load_finetune(finetune)
                except FinetuneUnavailable as e:
                    await self.store.transition(request["id"], Status.FAILED, {"completed_at": now_iso()},
                                                error=str(e), retention_s=request.get("retention_s"))
                    return {"status": "failed"}
            return await self._predict(request, target)

    async def _predict(self, request: dict[str, Any], target: Loaded) -> dict[str, Any]:
        pid = request["id"]
        async with target.use():  # the model's slot: held while the worker runs it
            worker = target.worker
            await worker.ready.wait()  # a worker being restarted is set up again first
            if worker.setup_error:
                await self.store.transition(pid, Status.FAILED, {"completed_at": now_iso()},
                                            error=f"setup failed: {worker.setup_error}",
                                            retention_s=request.get("retention_s"))
                return {"status": "failed"}
            started = time.time()
            waited = wait_breakdown(request.get("created_ts"), started, target.setup_window)
            counts = []
            if waited.get("boot_time"):
                labels = (request.get("model") or self.billing.get("model") or "", target.version_id)
                counts = [metrics.inc("cold_starts", *labels),
                          *metrics.observe("cold_start_seconds", waited["boot_time"] + waited["setup_time"], *labels)]
            ok, prev = await self.store.transition(
                pid, Status.PROCESSING, {"started_at": (started_at := now_iso(started)), "started_ts": round(started, 6)},
                heartbeat_deadline=started + 3 * self.settings.heartbeat_s, counts=counts)
            if not ok:
                log.info("prediction %s: not started, status was %s", pid, prev)
                return {"status": prev.value if prev else None}
            run = Running(logs.LogSink(), worker)
            self.running[pid] = run
            self.meter.start(started)
            loop = asyncio.get_running_loop()
            flusher = loop.create_task(self._flush_logs(pid, run.sink))
            # no prediction outlives max_prediction_s: graceful shutdowns are sized on it
            watchdog = loop.call_later(self.settings.max_prediction_s, self._interrupt, pid, True)
            status, fields, error = Status.SUCCEEDED, {}, None
            try:
                output, measured = await target.runner(pid, request["input"], run, request.get("weights"))
                if self.mode == "train":
                    output = await self._finish_training(pid, request, output)
                fields["output"] = output
            except BaseException as e:  # noqa: BLE001 - every outcome becomes a terminal status
                measured = {}
                if run.timed_out:
                    status = Status.FAILED
                    error = f"Prediction ran longer than the {self.settings.max_prediction_s:g}s limit"
                elif run.canceled or isinstance(e, asyncio.CancelledError):
                    status = Status.CANCELED
                elif isinstance(e, TrainingFailed):
                    status, error = Status.FAILED, str(e)
                elif isinstance(e, WorkerFailed):
                    status, error = Status.FAILED, e.error
                    if e.crashed:
                        run.sink.write(f"{e.error}\n")
                else:
                    log.exception("prediction %s failed in the replica", pid)
                    status, error = Status.FAILED, f"{type(e).__name__}: {e}"
            finally:
                watchdog.cancel()
                flusher.cancel()
                self.running.pop(pid, None)
                self.meter.stop(time.time())
        # the slot is free: the next prediction starts on the worker while this one's end is written
        rest = run.sink.drain()
        if rest:
            await self.store.append_logs(pid, rest)
        done = time.time()
        measured = {**measured, **waited, "predict_time": round(done - started, 6)}
        created = request.get("created_ts")
        if created:
            measured["total_time"] = round(done - float(created), 6)
        fields.update(completed_at=now_iso(done), metrics=measured)
        if status != Status.SUCCEEDED:
            fields.pop("output", None)
        ok, _ = await self.store.transition(pid, status, fields, error=error, retention_s=request.get("retention_s"))
        # one line per prediction that did not succeed; a success is Serve's access line already
        log.log(logging.DEBUG if status == Status.SUCCEEDED else logging.INFO,
                "prediction %s: %s after %.3fs (waited %.3fs)", pid, status.value, measured["predict_time"],
                started - float(created) if created else 0.0)
        result: dict[str, Any] = {"status": status.value}
        whole = run.sink.whole()
        if ok and whole is not None and len(whole.encode()) <= self.settings.max_log_bytes:
            # what it just wrote, so a caller waiting on it needs no read back; not past what one
            # gRPC message takes (the router reads a large output back instead)
            record = {**fields, "status": status.value, "error": error, "logs": whole, "started_at": started_at}
            if fits_grpc(record):
                result["record"] = record
        return result

    async def _finish_training(self, pid: str, request: dict[str, Any], output: Any) -> dict[str, str]:
        """A succeeded training's weights become a new version of its destination (the base
        version's package and schema plus those weights); its output names both, as Replicate's."""
        key = weights_of(output)
        if key is None:
            raise TrainingFailed(NO_WEIGHTS)
        destination = str(request.get("destination") or "")
        base = await self.registry.get_version(self.version_id)
        if base is None:
            raise TrainingFailed(f"version {self.version_id} was deleted while it trained")
        record = finetune_version(base, destination, key, pid)
        try:
            version, created = await self.registry.add_version(record)
        except NotFound:
            raise TrainingFailed(f"the destination model {destination} was deleted while it trained") from None
        log.info("training %s: %s version %s of %s", pid, "created" if created else "found", version.id,
                 destination)
        return training_output(destination, version.id, key)

    async def _flush_logs(self, pid: str, sink: logs.LogSink) -> None:
        while True:
            await asyncio.sleep(LOG_FLUSH_S)
            text = sink.drain()
            if text:
                await self.store.append_logs(pid, text)
