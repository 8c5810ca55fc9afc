"""Small in-memory fakes that subclass vendo's own interfaces (the prediction store, the registry,
the Serve app manager), so the services run in unit tests with no Redis and no Ray. Each keeps the
rule it stands in for: the store applies the same allowed transitions as the Lua script."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from router.apps import AppManager, AppSpec
from router.ratelimit import RateLimiter
from vendo_core.errors import Conflict, NotFound
from vendo_core.records import Account, Model, Prediction, Version
from vendo_core.registry import Registry, token_digest
from vendo_core.status import ALLOWED_FROM, Status
from vendo_core.store import PredictionStore, now_iso


class FakeStore(PredictionStore):
    def __init__(self, retention_s: float = 0):
        self.retention_s = retention_s
        self.records: dict[str, dict[str, Any]] = {}
        self.events: dict[str, list[tuple[str, str, str]]] = {}
        self.dispatch: dict[str, int] = {}  # pid -> the router dispatching it
        self.routers: dict[int, float] = {}  # router -> its lease deadline
        self.running: dict[str, float] = {}
        self.canceled: list[str] = []
        self._changed = asyncio.Condition()

    async def create(self, record: Prediction, router: int, also=None) -> None:
        if also is not None:
            also(None)
        self.records[record.id] = record.model_copy()
        self.events[record.id] = []
        self.dispatch[record.id] = router

    async def queued(self, username: str, limit: int) -> int:
        return sum(1 for r in self.records.values() if r.account == username and r.status == Status.STARTING)

    async def get(self, pid: str) -> Prediction | None:
        rec = self.records.get(pid)
        return None if rec is None else rec.model_copy()

    async def get_many(self, pids: list[str]) -> list[Prediction]:
        return [r for r in [await self.get(p) for p in pids] if r]

    async def status(self, pid: str) -> Status | None:
        rec = self.records.get(pid)
        return rec.status if rec else None

    async def statuses(self, pids: list[str]) -> list[str | None]:
        return [self.records[p].status.value if p in self.records else None for p in pids]

    async def transition(self, pid: str, target: Status, fields: dict[str, Any] | None = None, *,
                         heartbeat_deadline: float = 0.0, error: str | None = None,
                         done_reason: str | None = None, retention_s: float | None = None):
        rec = self.records.get(pid)
        prev = rec.status if rec else None
        if prev is None or prev not in ALLOWED_FROM[target]:
            return False, prev
        for k, v in (fields or {}).items():
            setattr(rec, k, v)
        rec.status = target
        if error and target == Status.FAILED:
            rec.error = error
        if target == Status.PROCESSING:
            self.running[pid] = heartbeat_deadline
            self.dispatch.pop(pid, None)
        if target.is_terminal():
            self.running.pop(pid, None)
            self.dispatch.pop(pid, None)
            self._append(pid, "done", "{}")
        async with self._changed:
            self._changed.notify_all()
        return True, prev

    def _append(self, pid: str, event: str, data: str) -> None:
        self.events[pid].append((f"{len(self.events[pid]) + 1}-0", event, data))

    async def join(self, deadline: float) -> int:
        n = len(self.routers) + 1
        self.routers[n] = deadline
        return n

    async def renew(self, router: int, deadline: float) -> None:
        self.routers[router] = deadline

    def _lapsed_router(self, router: int, now: float) -> bool:
        return self.routers.get(router, 0.0) <= now

    async def lapsed(self, now: float) -> tuple[list[str], list[str]]:
        return ([p for p, t in self.running.items() if t <= now],
                [p for p, r in self.dispatch.items() if self._lapsed_router(r, now)])

    async def forget_lost(self, pid: str) -> None:
        self.running.pop(pid, None)
        self.dispatch.pop(pid, None)

    async def take_lease(self, pid: str, router: int) -> bool:
        owner = self.dispatch.get(pid)
        if owner is None or owner == router or not self._lapsed_router(owner, time.time()):
            return False
        self.dispatch[pid] = router
        return True

    async def list_ids(self, username: str, cursor: str | None, limit: int, *, after_ts: float | None = None,
                       before_ts: float | None = None, kind: str = "prediction"):
        ids = sorted((r for r in self.records.values() if r.account == username and r.kind == kind
                      and (after_ts is None or r.created_ts > after_ts)
                      and (before_ts is None or r.created_ts < before_ts)),
                     key=lambda r: r.created_ts, reverse=True)
        return [r.id for r in ids[:limit]], None

    async def read_events(self, pid: str, last_id: str, block_ms: int | None):
        seen = int(last_id.split("-")[0])
        return self.events.get(pid, [])[seen:]

    async def wait_terminal(self, pid: str, timeout_s: float) -> bool:
        async def done() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: self.records[pid].done)
        try:
            await asyncio.wait_for(done(), timeout_s)
            return True
        except asyncio.TimeoutError:
            return False

    async def publish_cancel(self, pid: str) -> None:
        self.canceled.append(pid)

    async def set_shared(self, pid: str, shared: bool) -> bool:
        rec = self.records.get(pid)
        if rec is None:
            return False
        rec.shared = shared
        return True


class FakeRegistry(Registry):
    def __init__(self):
        self.accounts: dict[str, Account] = {}
        self.tokens: dict[str, str] = {}
        self.models: dict[str, Model] = {}
        self.versions: dict[str, Version] = {}
        self.model_versions: dict[str, list[str]] = {}
        self.gets = 0

    async def create_account(self, username: str, token: str | None = None, name: str | None = None,
                             kind: str = "user", roles: tuple[str, ...] = ("push",)) -> str:
        token = token or f"token-{username}"
        self.accounts.setdefault(username, Account(username=username, type=kind, name=name or username,
                                                   roles=list(roles)))
        self.tokens[token_digest(token)] = username
        return token

    def package_lock(self, digest: str):
        return contextlib.nullcontext()

    async def package_in_use(self, digest: str) -> bool:
        return any(v.package_digest == digest for v in self.versions.values())

    async def account_for_token(self, token: str) -> Account | None:
        return await self.account_for_digest(token_digest(token))

    async def account_for_digest(self, digest: str) -> Account | None:
        username = self.tokens.get(digest)
        return self.accounts.get(username) if username else None

    async def get_model(self, owner: str, name: str) -> Model | None:
        m = self.models.get(f"{owner}/{name}")
        return m.model_copy() if m else None

    async def model_and_version(self, owner: str, name: str, vid: str):
        return await self.get_model(owner, name), vid in self.model_versions.get(f"{owner}/{name}", [])

    async def version_live(self, vid: str) -> bool:
        return vid in self.versions

    async def create_model(self, owner: str, name: str, visibility: str, **fields: Any) -> Model:
        ref = f"{owner}/{name}"
        if ref in self.models:
            raise Conflict(f"model {ref} already exists")
        self.models[ref] = Model(owner=owner, name=name, visibility=visibility, created_at=now_iso(),
                                 **{k: v for k, v in fields.items() if v is not None})
        return self.models[ref].model_copy()

    async def delete_model(self, owner: str, name: str) -> bool:
        ref = f"{owner}/{name}"
        if ref not in self.models:
            return False
        if n := len(self.model_versions.get(ref, [])):
            raise Conflict(f"model {ref} still has {n} version(s); delete them first")
        del self.models[ref]
        return True

    async def count_run(self, owner: str, name: str) -> None:
        self.count_run_in(None, owner, name)

    def count_run_in(self, pipe, owner: str, name: str) -> None:
        self.models[f"{owner}/{name}"].run_count += 1

    async def add_version(self, record: Version) -> tuple[Version, bool]:
        if record.model not in self.models:
            raise NotFound("Model", record.model)
        if record.id in self.versions:
            return self.versions[record.id].model_copy(), False
        self.versions[record.id] = record.model_copy(update={"created_at": now_iso()})
        self.model_versions.setdefault(record.model, []).insert(0, record.id)
        self.models[record.model].latest_version = record.id
        return self.versions[record.id].model_copy(), True

    async def readme(self, vid: str) -> str | None:
        v = self.versions.get(vid)
        return v.readme if v else None

    async def get_version(self, vid: str) -> Version | None:
        self.gets += 1
        v = self.versions.get(vid)
        return v.model_copy() if v else None

    async def version_activity(self, vids: list[str], since: float) -> dict[str, dict[str, int]]:
        return {vid: {"queued": 0, "running": 0, "replica_starts": 0} for vid in vids}

    async def list_version_ids(self, owner: str, name: str, limit: int = 100) -> list[str]:
        return self.model_versions.get(f"{owner}/{name}", [])[:limit]

    async def list_models(self) -> list[Model]:
        return [m.model_copy() for m in self.models.values()]


class FakeHandle:
    """A deployment handle whose `predict.remote(request)` runs `behaviour(request)`."""

    def __init__(self, behaviour):
        self.predict = self
        self.behaviour = behaviour
        self.calls: list[dict[str, Any]] = []

    def remote(self, request: dict[str, Any]):
        self.calls.append(request)
        return _Response(asyncio.get_running_loop().create_task(self.behaviour(request)))


class _Response:
    def __init__(self, task: asyncio.Task):
        self.task = task

    def __await__(self):
        return self.task.__await__()

    def cancel(self) -> None:
        self.task.cancel()


class FakeApps(AppManager):
    """Serve apps as a dict of fake handles: `handle(app)` makes one with `behaviour` on first use."""

    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.handles: dict[str, FakeHandle] = {}
        self.created: list[str] = []

    async def handle(self, spec: AppSpec) -> FakeHandle:
        app = spec.app
        if app not in self.handles:
            self.created.append(app)
            self.handles[app] = FakeHandle(self.behaviour)
        return self.handles[app]

    async def touch(self, app: str, force: bool = False) -> None:
        return None

    def for_input(self, handle, payload):
        return handle

    def forget(self, app: str) -> None:
        self.handles.pop(app, None)

    async def statuses(self) -> dict[str, Any]:
        return {}


def replica(store: FakeStore, output: Any = "done", gate: asyncio.Event | None = None):
    """What a model replica does with a dispatched request: starting → processing, (wait for
    `gate`), then succeeded with `output`, unless something else ended it first."""

    async def run(request: dict[str, Any]) -> dict[str, Any]:
        ok, prev = await store.transition(request["id"], Status.PROCESSING, {"started_at": now_iso()},
                                          heartbeat_deadline=time.time() + 60)
        if not ok:
            return {"status": prev.value if prev else None}
        if gate is not None:
            await gate.wait()
        ok, _ = await store.transition(request["id"], Status.SUCCEEDED, {"output": output,
                                                                        "completed_at": now_iso()})
        return {"status": "succeeded" if ok else (await store.status(request["id"])).value}

    return run


class NoLimits(RateLimiter):
    """A rate limiter that counts requests and never refuses one."""

    def __init__(self):
        self.hits: list[str] = []

    async def hit(self, token: str, bucket: str) -> int | None:
        self.hits.append(bucket)
        return None


class FakeHashes:
    """The few Redis hash commands web sessions use, in memory (no expiry)."""

    def __init__(self):
        self.data: dict[str, dict[str, str]] = {}

    def pipeline(self, transaction: bool = True):
        outer = self

        class Pipe:
            def __init__(self):
                self.ops = []

            async def __aenter__(self):
                return self

            async def __aexit__(self, *exc):
                return False

            def hset(self, key, mapping):
                self.ops.append(lambda: outer.data.setdefault(key, {}).update(mapping))

            def expire(self, key, seconds):
                self.ops.append(lambda: None)

            async def execute(self):
                for op in self.ops:
                    op()

        return Pipe()

    async def hmget(self, key, *fields):
        h = self.data.get(key, {})
        return [h.get(f) for f in fields]

    async def delete(self, key):
        return 1 if self.data.pop(key, None) is not None else 0
