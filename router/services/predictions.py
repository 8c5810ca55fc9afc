"""The prediction service: create, dispatch, wait, cancel, list, and the sweeps that make sure no
accepted prediction is lost or left non-terminal. The HTTP layer calls this; this calls the store,
the registry and the Serve app manager."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from router.apps import AppManager, AppSpec
from router.queueing import FairQueue
from router.services.deployments import DeploymentService
from router.services.resolve import Resolver
from router.validation import validate_input
from router.webhooks import WebhookPolicy
from vendo_core import logctx
from vendo_core.billing import Usage, period_of, usd
from vendo_core.errors import (
    DestinationNotFound,
    InvalidRequest,
    NotFound,
    PredictionNotFound,
    SpendLimitReached,
    TooManyQueued,
    TrainingNotFound,
    VersionNotFound,
)
from vendo_core.files import Files
from vendo_core.hardware import HardwareConfig
from vendo_core.ids import OPAQUE_ID, ModelRef, new_prediction_id
from vendo_core.records import SOURCES, Account, Model, Prediction, Version
from vendo_core.status import Status
from vendo_core.store import PredictionStore, now_iso

log = logging.getLogger("vendo.service")

REPLICA_DIED = "The model replica died while running this prediction ({})"
HEARTBEAT_LOST = "The model replica stopped responding while running this prediction"
VERSION_DELETED = "Its version was deleted before it could run"
DISPATCH_ATTEMPTS = 3


@dataclass
class Flight:
    """A prediction this router dispatched and has not seen end: its dispatch task, where it was
    sent, since when it waits, and Serve's response once it left the router's queue."""

    task: asyncio.Task
    spec: AppSpec
    since: float
    response: Any = None


class PredictionService:
    def __init__(self, store: PredictionStore, resolver: Resolver, apps: AppManager, *,
                 deployments: DeploymentService | None = None, lease_s: float = 30.0,
                 files: Files | None = None, webhooks: WebhookPolicy | None = None,
                 max_queue_s: float = 1800.0, max_queued: int = 0,
                 skus: Callable[[], HardwareConfig] | None = None, usage: Usage | None = None,
                 max_replicas: int = 1):
        self.store = store
        self.skus = skus
        self.usage = usage
        self.resolver = resolver
        self.registry = resolver.registry
        self.deployments = deployments
        self.files = files
        self.webhooks = webhooks or WebhookPolicy()
        self.apps = apps
        self.lease_s = lease_s
        self.inflight: dict[str, Flight] = {}
        self.max_queue_s = max_queue_s
        self.max_queued = max_queued
        self.max_replicas = max_replicas  # an app's autoscaling ceiling where nothing sets its own
        self.queues: dict[str, FairQueue] = {}  # per Serve app
        self.router: int | None = None  # this router's number: its lease covers what it dispatches
        self._joining: asyncio.Lock | None = None

    # create and dispatch

    async def create(self, account: Account, body: dict[str, Any], *, version: Any = None,
                     model: ModelRef | None = None, deployment: ModelRef | None = None,
                     source: str = "api", file_url_prefixes: tuple[str, ...] = (),
                     deadline_s: float | None = None, wait_s: float | None = None,
                     base: str | None = None) -> Prediction:
        """The one way a prediction is made, whatever the door: resolve the target (a create
        body's `version`, a model's latest version, or a named deployment), validate the input,
        write the `starting` record and dispatch it. With `wait_s`, hold until it is terminal or
        that long passes. Returns the record. Input URLs under `file_url_prefixes` must name the
        caller's uploaded files; `deadline_s` (Cancel-After) cancels it that long after creation."""
        dep_name = None
        if deployment is not None:
            if self.deployments is None:
                raise NotFound("Deployment", str(deployment))
            d, spec = await self.deployments.target(account, deployment.owner, deployment.name)
            model_ref = ModelRef.parse(d.model, field="model")
            model_rec = await self.registry.get_model(model_ref.owner, model_ref.name)
            dep_name = d.ref
            version_rec = spec.version
        else:
            if model is not None:
                model_rec, version_rec = await self.resolver.resolve(account, model_ref=model)
            elif version is None:
                raise InvalidRequest("version", "is required")
            else:
                model_rec, version_rec = await self.resolver.resolve(account, version_field=version)
            spec = await self.spec_for(version_rec)
        rec = await self._create(account, model_rec, version_rec, spec, body, source=source, deployment=dep_name,
                                 file_url_prefixes=file_url_prefixes, deadline_s=deadline_s, base=base)
        if wait_s is not None:
            answer = await self.wait(rec.id, wait_s)
            if isinstance(answer, dict) and isinstance(answer.get("record"), dict):
                return rec.finished(answer["record"])  # what the replica wrote: no read back
            rec = await self.store.get(rec.id) or rec
        return rec

    async def spec_for(self, version: Version) -> AppSpec:
        """Where a prediction on `version` runs: its own app, or, for a fine-tune, its base
        version's (the fine-tune's weights loaded there), not an app per fine-tune. A fine-tune
        whose base version was deleted runs on an app of its own (it holds the same package)."""
        if not version.base_version:
            return AppSpec.of(version)
        base = await self.resolver.version(version.base_version)
        if base is None:
            return AppSpec.of(version)
        return AppSpec.finetune_of(AppSpec.of(base), version)

    async def create_training(self, account: Account, ref: ModelRef, body: dict[str, Any], *,
                              source: str = "api", file_url_prefixes: tuple[str, ...] = (),
                              deadline_s: float | None = None, base: str | None = None) -> Prediction:
        """A training of version `ref` (owner/name:version) toward the body's `destination`: its
        input checked against the version's `TrainingInput`, then run and kept as a prediction is,
        on the version's training app. The destination must be a model the caller owns."""
        model_rec, version_rec = await self.resolver.resolve(account, model_ref=ref)
        dest = body.get("destination")
        if not isinstance(dest, str) or not dest:
            raise InvalidRequest("destination", "is required: the model (owner/name) the trained version goes to")
        dest_ref = ModelRef.parse(dest, field="destination")
        if dest_ref.version:
            raise InvalidRequest("destination", "must name a model (owner/name), not a version")
        dest_model = await self.registry.get_model(dest_ref.owner, dest_ref.name)
        if dest_model is None or not account.acts_for(dest_model.owner):
            raise DestinationNotFound(dest_ref.model)
        if not version_rec.trainable:
            raise InvalidRequest("version", f"{version_rec.model}:{version_rec.id} cannot be trained: its "
                                 "cog.yaml has no `train` target")
        return await self._create(account, model_rec, version_rec, AppSpec.training(version_rec), body,
                                  source=source, deployment=None, file_url_prefixes=file_url_prefixes,
                                  deadline_s=deadline_s, base=base, destination=dest_model.ref)

    async def _create(self, account: Account, model: Model, version: Version, spec: AppSpec,
                      body: dict[str, Any], *, source: str, deployment: str | None,
                      file_url_prefixes: tuple[str, ...], deadline_s: float | None, base: str | None,
                      destination: str | None = None) -> Prediction:
        training = spec.mode == "train"
        payload = validate_input(version.openapi_schema, body.get("input", {}),
                                 component="TrainingInput" if training else "Input",
                                 file_url_prefixes=file_url_prefixes)
        if self.max_queued and await self.store.queued(account.username, self.max_queued) >= self.max_queued:
            raise TooManyQueued(account.username, self.max_queued)
        ts = time.time()
        if account.limit_nanos is not None and self.usage is not None:  # one round trip, only then
            spent = await self.usage.spent(account.username, ts)
            if spent >= account.limit_nanos:
                raise SpendLimitReached(account.username, f"{usd(spent):.2f}", f"{usd(account.limit_nanos):.2f}",
                                        period_of(ts, self.usage.period))
        if self.files is not None and file_url_prefixes:
            await self.files.check_inputs(account, payload, file_url_prefixes)
        hooks = await self.webhooks.record_fields(body)
        record = Prediction(
            id=new_prediction_id(), account=account.username, model=version.model, version=version.id,
            status=Status.STARTING, input=payload, created_at=now_iso(ts), created_ts=ts, source=source,
            iterator=bool(version.traits.get("is_iterator")) and not training, deployment=deployment,
            app=spec.app, base_url=base, kind="training" if training else "prediction", destination=destination,
            **hooks)  # webhooks render the prediction under the create's base
        if self.skus is not None:  # what it runs on, and so what a second of it costs
            skus = self.skus()
            record.hardware = spec.hardware or version.hardware or skus.default
            sku = skus.skus.get(record.hardware)
            record.price_nanos = sku.price_nanos if sku is not None else None
        if deadline_s is not None:
            record.deadline, record.deadline_ts = now_iso(ts + deadline_s), ts + deadline_s
        count = None if training else (lambda pipe: self.registry.count_run_in(pipe, model.owner, model.name))
        await self.store.create(record, self.router or await self._join(), also=count)
        logctx.set_about(record.id, model=record.model, version=record.version, account=record.account)
        self.dispatch(record, spec)
        return record

    async def _join(self) -> int:
        """This router's number, taken (with its lease) at its first prediction."""
        self._joining = self._joining or asyncio.Lock()
        async with self._joining:
            if self.router is None:
                self.router = await self.store.join(time.time() + self.lease_s)
        return self.router

    def dispatch(self, record: Prediction, spec: AppSpec) -> asyncio.Task:
        # the retention rides along: a replica made under older settings still applies today's
        request = {"id": record.id, "input": record.input or {}, "created_ts": record.created_ts,
                   "account": record.account, "model": record.model, "retention_s": self.store.retention_s}
        if record.destination:
            request["destination"] = record.destination
        if spec.finetune:
            request["finetune"] = spec.finetune
        if spec.weights_input:
            request["weights"] = dict([spec.weights_input])
        task = asyncio.get_running_loop().create_task(self._dispatch(record.id, spec, request))
        self.inflight[record.id] = Flight(task, spec, record.created_ts)
        return task

    def queue(self, spec: AppSpec) -> FairQueue:
        """The router's queue in front of `spec.app`: as many slots as the app's replicas at their
        ceiling take calls, so Serve is never sent more than it can start at once."""
        slots = spec.most_replicas(self.max_replicas) * spec.slots
        q = self.queues.get(spec.app)
        if q is None:
            q = self.queues[spec.app] = FairQueue(slots)
        elif q.slots != slots:
            q.resize(slots)  # a deployment's new release changed its ceiling
        return q

    def waiting(self, before_ts: float) -> dict[str, AppSpec]:
        """{id: spec} of this router's predictions dispatched before `before_ts` and not known to
        have started (the working set's eviction looks at their status)."""
        return {pid: f.spec for pid, f in self.inflight.items() if f.since <= before_ts}

    def busy_apps(self) -> set[str]:
        return {f.spec.app for f in self.inflight.values()}

    def _drop_queued(self, pid: str) -> None:
        """Take a `starting` prediction out of whichever queue holds it: the router's (its dispatch
        then ends) or Serve's (the handle call is cancelled)."""
        f = self.inflight.get(pid)
        if f is None:
            return
        if f.response is not None:
            f.response.cancel()
        else:
            q = self.queues.get(f.spec.app)
            if q is not None:
                q.cancel(pid)

    async def _dispatch(self, pid: str, spec: AppSpec, request: dict[str, Any]) -> Any:
        """Send the prediction to its app (through the router's queue); returns the replica's
        answer (`ModelReplica.predict`), or None when it ended otherwise."""
        # heavy: kept out of what unit tests import
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
        from ray.serve.exceptions import DeploymentUnavailableError, RequestCancelledError

        app = spec.app
        queue, held = self.queue(spec), False
        try:
            try:
                await queue.acquire(request["account"], pid)
                held = True
            except asyncio.CancelledError:
                return  # canceled, or given up on, while it waited in the router's queue
            for attempt in range(DISPATCH_ATTEMPTS):
                try:
                    handle = self.apps.for_input(await self.apps.handle(spec), request["input"])
                    await self.apps.touch(app)
                    if spec.finetune:  # Serve routes it to a replica that has it loaded, if any
                        handle = handle.options(multiplexed_model_id=spec.finetune)
                    resp = handle.predict.remote(request)
                    self.inflight[pid].response = resp
                    return await resp
                except VersionNotFound:
                    await self.fail(pid, VERSION_DELETED)  # its app is torn down, not recreated
                    return
                except (DeploymentUnavailableError, KeyError):
                    # deleted under us (a cached handle, or a lookup racing the reaper): recreate
                    self.apps.forget(app)
                except (ActorDiedError, ActorUnavailableError, RayActorError) as e:
                    if await self.store.status(pid) == Status.STARTING and attempt + 1 < DISPATCH_ATTEMPTS:
                        continue  # it never ran: safe to send again
                    await self.fail(pid, REPLICA_DIED.format(type(e).__name__))
                    return
                except (asyncio.CancelledError, RequestCancelledError):
                    return
                except ValueError as e:
                    # Ray's process-wide cloudpickle by-value table, raced by an app being built in
                    # another thread: the call never left, so sending it again is safe
                    if "pickle by value" not in str(e) or attempt + 1 >= DISPATCH_ATTEMPTS:
                        raise
                    log.warning("prediction %s: dispatch raced a Serve app build; sending it again", pid)
            await self.fail(pid, f"Could not reach the Serve application {app}")
        except Exception as e:  # noqa: BLE001 - the platform failed this prediction; say why
            log.exception("prediction %s: dispatch failed", pid)
            await self.fail(pid, f"Dispatch failed: {type(e).__name__}: {e}")
        finally:
            if held:
                queue.release()
            if not queue.used and not queue.queued and self.queues.get(app) is queue:
                del self.queues[app]  # nothing held or waiting: one entry per app in use, not ever used
            self.inflight.pop(pid, None)
            try:
                await self.apps.touch(app)
            except Exception:  # noqa: BLE001
                pass

    async def fail(self, pid: str, error: str) -> bool:
        ok, _ = await self.store.transition(pid, Status.FAILED, {"completed_at": now_iso()}, error=error)
        if ok:
            log.warning("prediction %s failed: %s", pid, error)
        return ok

    async def wait(self, pid: str, timeout_s: float) -> Any:
        """Hold until the prediction is terminal or `timeout_s` passes. Returns the replica's
        answer when this router dispatched it and it ended there, else None."""
        f = self.inflight.get(pid)
        if f is not None:
            try:
                return await asyncio.wait_for(asyncio.shield(f.task), timeout_s)
            except asyncio.TimeoutError:
                return None
        await self.store.wait_terminal(pid, timeout_s)
        return None

    # read and cancel

    async def get(self, account: Account, pid: str) -> Prediction:
        if not OPAQUE_ID.match(pid):
            raise PredictionNotFound(pid)
        rec = await self.store.get(pid)
        if rec is None or not account.acts_for(rec.account):
            raise PredictionNotFound(pid)
        return rec

    async def get_training(self, account: Account, tid: str) -> Prediction:
        """The caller's training (or its organization's); 404 for anything else."""
        rec = await self.store.get(tid) if OPAQUE_ID.match(tid) else None
        if rec is None or rec.kind != "training" or not account.acts_for(rec.account):
            raise TrainingNotFound(tid)
        return rec

    async def cancel_training(self, account: Account, tid: str) -> Prediction:
        rec = await self.get_training(account, tid)
        if not rec.done:
            with logctx.about(tid, model=rec.model, version=rec.version, account=rec.account):
                await self.cancel_now(tid)
        return await self.get_training(account, tid)

    async def events(self, pid: str, last_id: str, block_ms: int | None) -> list[tuple[str, str, str]]:
        """A prediction's events after `last_id` (output, logs, error, done), waiting up to
        `block_ms` for the first; the caller has already been shown the prediction."""
        return await self.store.read_events(pid, last_id, block_ms)

    async def get_visible(self, account: Account | None, pid: str) -> tuple[Prediction, bool]:
        """(the record, whether the caller owns it): the caller's own (or its organization's), or
        one its owner shared, for anyone, a caller without a token included. 404 otherwise."""
        if not OPAQUE_ID.match(pid):
            raise PredictionNotFound(pid)
        rec = await self.store.get(pid)
        if rec is not None and account is not None and account.acts_for(rec.account):
            return rec, True
        if rec is not None and rec.shared:
            return rec, False
        raise PredictionNotFound(pid)

    async def get_readable(self, account: Account | None, pid: str, base: str,
                           expiry_s: int) -> tuple[Prediction, bool]:
        """As `get_visible`, shaped for its reader: to anyone but its owner, a shared prediction's
        input files are signed links and where its webhooks go is left out."""
        rec, own = await self.get_visible(account, pid)
        if not own:
            rec.webhook = None
            if rec.input and self.files is not None:
                rec.input = await self.files.signed_inputs(rec.input, rec.account, base, expiry_s)
        return rec, own

    async def share(self, account: Account, pid: str, shared: bool = True) -> Prediction:
        """Make the caller's prediction readable by anyone with its id (or private again)."""
        rec = await self.get(account, pid)
        if not await self.store.set_shared(pid, shared):
            raise PredictionNotFound(pid)
        rec.shared = shared
        return rec

    async def cancel(self, account: Account, pid: str) -> Prediction:
        rec = await self.get(account, pid)
        if rec.done:
            return rec
        logctx.set_about(pid, model=rec.model, version=rec.version, account=rec.account)
        await self.cancel_now(pid)
        return await self.get(account, pid)

    async def cancel_now(self, pid: str) -> bool:
        """Cancel `pid` unless it is already terminal (a user's cancel, or its deadline)."""
        ok, prev = await self.store.transition(pid, Status.CANCELED, {"completed_at": now_iso()})
        if ok:
            log.info("prediction %s: canceled while %s", pid, prev.value if prev else "unknown")
            await self.store.publish_cancel(pid)
            if prev == Status.STARTING:
                self._drop_queued(pid)
        return ok

    async def list(self, account: Account, cursor: str | None, limit: int = 100, *,
                   created_after: float | None = None, created_before: float | None = None,
                   source: str | None = None, kind: str = "prediction") -> tuple[list[Prediction], str | None]:
        """The caller's predictions, or trainings (and its organizations'), newest first,
        optionally only those created strictly between two times or from one source (`api`,
        `web`, `handle`, `batch`)."""
        if source is not None and source not in SOURCES:
            raise InvalidRequest("source", f"must be one of {list(SOURCES)}")
        owners = [account.username, *account.orgs] if account.orgs else account.username
        try:
            ids, nxt = await self.store.list_ids(owners, cursor, limit, after_ts=created_after,
                                                 before_ts=created_before, kind=kind)
        except ValueError as e:
            raise InvalidRequest("cursor", str(e)) from e
        recs = await self.store.get_many(ids)
        return [r for r in recs if r.source == source] if source else recs, nxt

    # keeping every accepted prediction moving

    async def renew_leases(self) -> None:
        """Keep this router's lease (one write, however many predictions it holds), and give up on
        predictions that waited `max_queue_s` without a replica taking them (no capacity): none
        waits forever."""
        now = time.time()
        if self.router is not None:
            await self.store.renew(self.router, now + self.lease_s)
        old = [pid for pid, f in self.inflight.items() if now - f.since > self.max_queue_s]
        for pid, status in zip(old, await self.store.statuses(old), strict=True):
            if status == Status.STARTING.value:
                self._drop_queued(pid)
                await self.fail(pid, f"No capacity: no replica took it within {self.max_queue_s:g}s")
            elif pid in self.inflight:
                self.inflight[pid].since = float("inf")  # it started: never given up on

    async def sweep(self) -> None:
        """Fail processing predictions whose replica stopped heartbeating; re-dispatch starting
        ones whose dispatching router lost its lease (they never ran, so that is safe)."""
        now = time.time()
        running, dispatch = await self.store.lapsed(now)
        for pid in running:
            with logctx.about(pid):
                await self.fail(pid, HEARTBEAT_LOST)
        for pid in dispatch:
            if pid in self.inflight or not await self.store.take_lease(pid, self.router or await self._join()):
                continue
            rec = await self.store.get(pid)
            if rec is None:
                await self.store.forget_lost(pid)  # expired: never again a lapsed lease to take
                continue
            if rec.status != Status.STARTING:
                continue
            version = await self.resolver.version(rec.version)
            if version is None:
                await self.fail(pid, VERSION_DELETED)
                continue
            spec = await self.respec(rec, version)
            with logctx.about(pid, model=rec.model, version=rec.version, account=rec.account):
                log.info("prediction %s: re-dispatching after a lapsed lease", pid)
                self.dispatch(rec, spec)

    async def respec(self, rec: Prediction, version: Version) -> AppSpec:
        """Where an accepted prediction (or training) is sent again: where it was first sent."""
        if rec.kind == "training":
            return AppSpec.training(version)
        if rec.deployment:  # a named deployment's app runs its version itself
            return AppSpec.of(version, rec.app)
        return await self.spec_for(version)
