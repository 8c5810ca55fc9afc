"""The prediction service: create, dispatch, wait, cancel, list, and the sweeps that make sure no
accepted prediction is lost or left non-terminal. The HTTP layer calls this; this calls the store,
the registry and the Serve app manager."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from router.apps import AppManager
from router.errors import InvalidRequest, ModelNotFound, PredictionNotFound, VersionNotFound
from router.files import Files
from router.refs import VERSION_ID, ModelRef, app_name, new_prediction_id
from router.registry import Registry
from router.status import Status
from router.store import PredictionStore, now_iso
from router.validation import validate_input
from router.webhooks import WebhookPolicy

log = logging.getLogger("vendo.service")

REPLICA_DIED = "The model replica died while running this prediction ({})"
HEARTBEAT_LOST = "The model replica stopped responding while running this prediction"
VERSION_DELETED = "Its version was deleted before it could run"
DISPATCH_ATTEMPTS = 3


def visible(model: dict[str, Any] | None, account: dict[str, str]) -> bool:
    return bool(model) and (model.get("visibility") == "public" or model.get("owner") == account["username"])


class PredictionService:
    def __init__(self, store: PredictionStore, registry: Registry, apps: AppManager, *,
                 lease_s: float = 30.0, files: Files | None = None, webhooks: WebhookPolicy | None = None,
                 max_queue_s: float = 1800.0):
        self.store = store
        self.files = files
        self.webhooks = webhooks or WebhookPolicy()
        self.registry = registry
        self.apps = apps
        self.lease_s = lease_s
        self.inflight: dict[str, asyncio.Task] = {}
        self.responses: dict[str, Any] = {}
        self.max_queue_s = max_queue_s
        self._queued_since: dict[str, float] = {}
        self._versions: dict[str, dict] = {}

    # resolution

    async def version(self, vid: str) -> dict[str, Any] | None:
        v = self._versions.get(vid)
        if v is None:
            v = await self.registry.get_version(vid)
            if v is not None:
                self._versions[vid] = v  # versions are immutable
        return v

    async def resolve(self, account: dict, *, version_field: str | None = None,
                      model_ref: ModelRef | None = None) -> tuple[dict, dict]:
        """(model, version) for a create body's `version` or a model path; 404 for what the caller
        may not see."""
        if version_field is not None:
            if not isinstance(version_field, str) or not version_field:
                raise InvalidRequest("version", "must be a version id or owner/name[:version]")
            if VERSION_ID.match(version_field):
                v = await self.version(version_field)
                if v is None:
                    raise VersionNotFound(version_field)
                owner, name = v["model"].split("/", 1)
                model, live = await self.registry.model_and_version(owner, name, v["id"])
                if not live:
                    self._versions.pop(v["id"], None)  # deleted (perhaps by another router replica)
                if not visible(model, account) or not live:
                    raise VersionNotFound(version_field)
                return model, v
            model_ref = ModelRef.parse(version_field)
        assert model_ref is not None
        if model_ref.version:  # a named version is checked against the registry, not the cache
            model, live = await self.registry.model_and_version(model_ref.owner, model_ref.name,
                                                                model_ref.version)
        else:
            model, live = await self.registry.get_model(model_ref.owner, model_ref.name), True
        if not visible(model, account):
            raise ModelNotFound(model_ref.model)
        vid = model_ref.version or model.get("latest_version")
        if not vid:
            raise VersionNotFound(f"{model_ref.model} has no versions")
        if not live:
            self._versions.pop(vid, None)
            raise VersionNotFound(str(model_ref))
        v = await self.version(vid)
        if v is None or v["model"] != model_ref.model:
            raise VersionNotFound(str(model_ref))
        return model, v

    # create and dispatch

    async def create(self, account: dict, model: dict, version: dict, body: dict[str, Any], *,
                     source: str = "api", deployment: str | None = None,
                     file_url_prefixes: tuple[str, ...] = (), deadline_s: float | None = None,
                     base: str | None = None) -> dict[str, Any]:
        """Validate the input, write the `starting` record and dispatch it; returns the record.
        Input URLs under `file_url_prefixes` must name the caller's uploaded files; `deadline_s`
        (Cancel-After) cancels the prediction that long after creation."""
        payload = validate_input(version["openapi_schema"], body.get("input", {}),
                                 file_url_prefixes=file_url_prefixes)
        if self.files is not None and file_url_prefixes:
            await self.files.check_inputs(account, payload, file_url_prefixes)
        hooks = await self.webhooks.record_fields(body)
        traits = version.get("traits") or {}
        ts = time.time()
        pid = new_prediction_id()
        record = {
            "id": pid, "account": account["username"], "model": version["model"], "version": version["id"],
            "status": Status.STARTING.value, "input": payload, "created_at": now_iso(ts), "created_ts": ts,
            "source": source, "iterator": bool(traits.get("is_iterator")), "deployment": deployment,
            "base_url": base, **hooks,  # webhooks render the prediction under the create's base
            "app": version.get("app") or app_name(version["id"]),  # a named deployment's own app
        }
        if deadline_s is not None:
            record.update(deadline=now_iso(ts + deadline_s), deadline_ts=ts + deadline_s)
        await self.store.create(record, ts + self.lease_s)
        self.dispatch(pid, version, payload, ts)
        asyncio.get_running_loop().create_task(self.registry.count_run(model["owner"], model["name"]))
        record["logs"] = ""
        return record

    def dispatch(self, pid: str, version: dict, payload: dict, created_ts: float) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(self._dispatch(pid, version, payload, created_ts))
        self.inflight[pid] = task
        self._queued_since[pid] = created_ts
        return task

    async def _dispatch(self, pid: str, version: dict, payload: dict, created_ts: float) -> None:
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
        from ray.serve.exceptions import DeploymentUnavailableError, RequestCancelledError

        app = version.get("app") or app_name(version["id"])
        # the retention rides along: a replica made under older settings still applies today's
        request = {"id": pid, "input": payload, "created_ts": created_ts,
                   "retention_s": self.store.retention_s}
        try:
            for attempt in range(DISPATCH_ATTEMPTS):
                try:
                    handle = await self.apps.handle(app, version)
                    await self.apps.touch(app)
                    resp = handle.predict.remote(request)
                    self.responses[pid] = resp
                    await resp
                    return
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
            await self.fail(pid, f"Could not reach the Serve application {app}")
        except Exception as e:  # noqa: BLE001 - the platform failed this prediction; say why
            log.exception("prediction %s: dispatch failed", pid)
            await self.fail(pid, f"Dispatch failed: {type(e).__name__}: {e}")
        finally:
            self.inflight.pop(pid, None)
            self.responses.pop(pid, None)
            self._queued_since.pop(pid, None)
            try:
                await self.apps.touch(app)
            except Exception:  # noqa: BLE001
                pass

    async def fail(self, pid: str, error: str) -> bool:
        ok, _ = await self.store.transition(pid, Status.FAILED, {"completed_at": now_iso()}, error=error)
        if ok:
            log.warning("prediction %s failed: %s", pid, error)
        return ok

    async def wait(self, pid: str, timeout_s: float) -> None:
        """Hold until the prediction is terminal or `timeout_s` passes."""
        task = self.inflight.get(pid)
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout_s)
            except asyncio.TimeoutError:
                pass
            return
        await self.store.wait_terminal(pid, timeout_s)

    # read and cancel

    async def get(self, account: dict, pid: str) -> dict[str, Any]:
        rec = await self.store.get(pid)
        if rec is None or rec.get("account") != account["username"]:
            raise PredictionNotFound(pid)
        return rec

    async def cancel(self, account: dict, pid: str) -> dict[str, Any]:
        rec = await self.get(account, pid)
        if Status(rec["status"]).is_terminal():
            return rec
        await self.cancel_now(pid)
        return await self.get(account, pid)

    async def cancel_now(self, pid: str) -> bool:
        """Cancel `pid` unless it is already terminal (a user's cancel, or its deadline)."""
        ok, prev = await self.store.transition(pid, Status.CANCELED, {"completed_at": now_iso()})
        if ok:
            await self.store.publish_cancel(pid)
            resp = self.responses.get(pid)
            if prev == Status.STARTING and resp is not None:
                resp.cancel()  # still queued here (cold start): drop it from the queue
        return ok

    async def list(self, account: dict, cursor: str | None, limit: int = 100) -> tuple[list[dict], str | None]:
        try:
            ids, nxt = await self.store.list_ids(account["username"], cursor, limit)
        except ValueError as e:
            raise InvalidRequest("cursor", str(e)) from e
        return await self.store.get_many(ids), nxt

    # keeping every accepted prediction moving

    async def renew_leases(self) -> None:
        """Keep the dispatch leases of what this router holds, and give up on predictions that
        waited `max_queue_s` without a replica taking them (no capacity): none waits forever."""
        now = time.time()
        await self.store.renew_leases(list(self.inflight), now + self.lease_s)
        old = [pid for pid, ts in self._queued_since.items() if now - ts > self.max_queue_s]
        for pid, status in zip(old, await self.store.statuses(old), strict=True):
            if status == Status.STARTING.value:
                resp = self.responses.get(pid)
                if resp is not None:
                    resp.cancel()
                await self.fail(pid, f"No capacity: no replica took it within {self.max_queue_s:g}s")
            else:
                self._queued_since.pop(pid, None)

    async def sweep(self) -> None:
        """Fail processing predictions whose replica stopped heartbeating; re-dispatch starting
        ones whose dispatching router lost its lease (they never ran, so that is safe)."""
        now = time.time()
        running, dispatch = await self.store.lapsed(now)
        for pid in running:
            await self.fail(pid, HEARTBEAT_LOST)
        for pid in dispatch:
            if pid in self.inflight or not await self.store.take_lease(pid, now + self.lease_s):
                continue
            rec = await self.store.get(pid)
            if rec is None or rec["status"] != Status.STARTING.value:
                continue
            version = await self.version(rec["version"])
            if version is None:
                await self.fail(pid, VERSION_DELETED)
                continue
            log.info("prediction %s: re-dispatching after a lapsed lease", pid)
            if rec.get("app"):
                version = {**version, "app": rec["app"]}
            self.dispatch(pid, version, rec["input"], float(rec.get("created_ts") or now))
