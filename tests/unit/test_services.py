"""The services over fakes of their collaborators: no Redis, no Ray. What a prediction goes through
(create → dispatch → complete), the races that must have one winner, the sweep that keeps every
accepted prediction moving, visibility, and pushing the same package twice."""

from __future__ import annotations

import asyncio
import time

import pytest

from router.services.predictions import HEARTBEAT_LOST, PredictionService
from router.services.resolve import Resolver
from router.services.versions import VersionService
from tests.unit.fakes import FakeApps, FakeRegistry, FakeStore, replica
from vendo_core.errors import InvalidInput, InvalidRequest, ModelNotFound, PredictionNotFound, VersionNotFound
from vendo_core.hardware import load_hardware
from vendo_core.ids import ModelRef, app_name, version_id
from vendo_core.records import Account, Version
from vendo_core.status import Status
from vendo_core.store import now_iso

SCHEMA = {"components": {"schemas": {"Input": {"type": "object", "required": ["text"],
                                               "properties": {"text": {"type": "string"}}}}}}
ALICE = Account(username="alice", roles=["push"])
BOB = Account(username="bob", roles=["push"])
VID = version_id("alice/echo", "0" * 64)
PRIVATE_VID = version_id("alice/secret", "0" * 64)


async def _registry() -> FakeRegistry:
    reg = FakeRegistry()
    for account in (ALICE, BOB):
        await reg.create_account(account.username)
    await reg.create_model("alice", "echo", "public")
    await reg.add_version(Version(id=VID, model="alice/echo", openapi_schema=SCHEMA, package_key="p"))
    await reg.create_model("alice", "secret", "private")
    await reg.add_version(Version(id=PRIVATE_VID, model="alice/secret", openapi_schema=SCHEMA, package_key="p"))
    return reg


async def _service(behaviour=None, **kw) -> tuple[PredictionService, FakeStore, FakeApps, FakeRegistry]:
    store, reg = FakeStore(), await _registry()
    apps = FakeApps(behaviour or replica(store, output="hi"))
    return PredictionService(store, Resolver(reg), apps, **kw), store, apps, reg


def run(coro):
    return asyncio.run(coro)


def test_create_dispatch_complete():
    async def go():
        svc, store, apps, reg = await _service()
        rec = await svc.create(ALICE, {"input": {"text": "x", "extra": 1}}, version="alice/echo", wait_s=5)
        assert rec.status == "succeeded" and rec.output == "hi"
        assert rec.input == {"text": "x"}  # unknown keys dropped, as Cog does
        assert apps.created == [app_name(VID)]
        assert [c["input"] for c in apps.handles[app_name(VID)].calls] == [{"text": "x"}]
        assert store.dispatch == {} and store.running == {}  # the terminal write cleared both indexes
        assert svc.inflight == {}
        assert reg.models["alice/echo"].run_count == 1
    run(go())


def test_every_door_resolves_the_same_version():
    async def go():
        svc, store, apps, _ = await _service()
        by_id = await svc.create(ALICE, {"input": {"text": "a"}}, version=VID, wait_s=5)
        by_ref = await svc.create(ALICE, {"input": {"text": "b"}}, version=f"alice/echo:{VID}", wait_s=5)
        by_model = await svc.create(BOB, {"input": {"text": "c"}}, model=ModelRef("alice", "echo"), wait_s=5)
        assert {r.version for r in (by_id, by_ref, by_model)} == {VID}
        assert len(apps.handles[app_name(VID)].calls) == 3
    run(go())


def test_bad_input_is_refused_before_anything_is_written():
    async def go():
        svc, store, apps, _ = await _service()
        with pytest.raises(InvalidInput) as e:
            await svc.create(ALICE, {"input": {}}, version="alice/echo")
        assert e.value.field == "text"
        with pytest.raises(InvalidRequest) as e:
            await svc.create(ALICE, {"input": {"text": "x"}})
        assert e.value.field == "version"
        assert store.records == {} and apps.created == []
    run(go())


def test_private_models_and_other_accounts_predictions_are_404():
    async def go():
        svc, store, apps, _ = await _service()
        for target in ({"version": PRIVATE_VID}, {"version": "alice/secret"},
                       {"model": ModelRef("alice", "secret")}):
            with pytest.raises((ModelNotFound, VersionNotFound)):
                await svc.create(BOB, {"input": {"text": "x"}}, **target)
        mine = await svc.create(ALICE, {"input": {"text": "x"}}, version=PRIVATE_VID, wait_s=5)
        with pytest.raises(PredictionNotFound):
            await svc.get(BOB, mine.id)
        with pytest.raises(PredictionNotFound):
            await svc.cancel(BOB, mine.id)
        assert (await svc.get(ALICE, mine.id)).status == "succeeded"
    run(go())


def test_cancel_racing_completion_has_one_winner():
    async def go():
        for _ in range(20):
            gate = asyncio.Event()
            svc, store, apps, _ = await _service()
            apps.behaviour = replica(store, gate=gate)
            rec = await svc.create(ALICE, {"input": {"text": "x"}}, version="alice/echo")
            while (await store.status(rec.id)) != Status.PROCESSING:
                await asyncio.sleep(0)
            gate.set()  # completion and cancel now race on the same compare-and-set
            await svc.cancel_now(rec.id)
            await svc.wait(rec.id, 5)
            final = store.records[rec.id].status
            assert final in ("succeeded", "canceled")
            assert [e for _, e, _ in store.events[rec.id]].count("done") == 1
    run(go())


def test_cancel_of_a_queued_prediction_drops_it_from_the_queue():
    async def go():
        never = asyncio.Event()

        async def cold_start(request):
            await never.wait()  # no replica ever takes it

        svc, store, apps, _ = await _service(cold_start)
        rec = await svc.create(ALICE, {"input": {"text": "x"}}, version="alice/echo")
        await asyncio.sleep(0)
        dispatch = svc.inflight[rec.id].task
        out = await svc.cancel(ALICE, rec.id)
        assert out.status == "canceled" and store.canceled == [rec.id]
        await asyncio.wait_for(dispatch, 5)  # the pending handle call was cancelled, so it ends
        assert svc.inflight == {}
    run(go())


def test_a_lapsed_lease_is_redispatched_once():
    async def go():
        queued = asyncio.Event()

        async def dies_while_queued(request):
            queued.set()
            await asyncio.Event().wait()

        svc, store, _, reg = await _service(dies_while_queued)
        rec = await svc.create(ALICE, {"input": {"text": "x"}}, version="alice/echo")
        await queued.wait()
        svc.inflight[rec.id].task.cancel()  # the dispatching router dies, and with it its lease renewal
        store.routers[svc.router] = time.time() - 1
        live = FakeApps(replica(store, output="again"))
        others = [PredictionService(store, Resolver(reg), live) for _ in range(2)]
        await asyncio.gather(*(o.sweep() for o in others))  # two routers sweep at once
        for o in others:
            await o.wait(rec.id, 5)
        assert store.records[rec.id].status == "succeeded"
        assert store.records[rec.id].output == "again"
        assert len(live.handles[app_name(VID)].calls) == 1  # exactly one took the lease
        await others[0].sweep()
        assert len(live.handles[app_name(VID)].calls) == 1
    run(go())


def test_a_lost_replica_fails_its_prediction_and_never_reruns_it():
    async def go():
        gate = asyncio.Event()
        svc, store, apps, _ = await _service()
        apps.behaviour = replica(store, gate=gate)
        rec = await svc.create(ALICE, {"input": {"text": "x"}}, version="alice/echo")
        while (await store.status(rec.id)) != Status.PROCESSING:
            await asyncio.sleep(0)
        store.running[rec.id] = time.time() - 1  # its heartbeat lapsed
        await svc.sweep()
        assert store.records[rec.id].status == "failed"
        assert store.records[rec.id].error == HEARTBEAT_LOST
        gate.set()
        await svc.wait(rec.id, 5)
        assert store.records[rec.id].status == "failed"  # terminal states are sinks
        assert len(apps.handles[app_name(VID)].calls) == 1
    run(go())


class _Objects:
    def __init__(self):
        self.puts: list[str] = []

    def exists(self, key: str) -> bool:
        return key in self.puts

    def put_bytes(self, key: str, data: bytes, content_type=None) -> None:
        self.puts.append(key)


def test_push_of_the_same_package_twice_and_to_a_second_model():
    from tests.integration.conftest import EXAMPLES
    from vendo_core.packaging import pack_project

    data, digest = pack_project(EXAMPLES / "hello-world")
    introspections = []

    async def introspect(package: bytes, limits):
        introspections.append(package)
        return {"openapi_schema": SCHEMA, "traits": {}, "package_key": "evil", "hardware": "gpu-huge"}

    async def go():
        reg = await _registry()
        objects = _Objects()
        svc = VersionService(reg, Resolver(reg), objects, FakeApps(None), skus=lambda: load_hardware(),
                             introspect=introspect)

        async def read():
            return data

        first = await svc.push(ALICE, "alice", "hello", read)
        again = await svc.push(ALICE, "alice", "hello", read)
        fork = await svc.push(ALICE, "alice", "fork", read)
        assert first.id == again.id == version_id("alice/hello", digest)
        assert fork.id == version_id("alice/fork", digest) != first.id
        assert len(introspections) == 2  # the same package to the same model is not looked at again
        assert objects.puts == [f"packages/{digest}.tar.gz"]  # stored once, by digest
        # the model's own introspection cannot choose where its package lives or what it runs on
        assert first.package_key == f"packages/{digest}.tar.gz" and first.hardware != "gpu-huge"
        with pytest.raises(ModelNotFound):
            await svc.push(BOB, "alice", "hello", read)
    run(go())


def test_index_entries_of_expired_records_are_dropped_by_the_sweep():
    async def go():
        svc, store, apps, _ = await _service()
        store.dispatch["gone"] = time.time() - 1  # its record expired; its index entry did not
        await svc.sweep()
        assert "gone" not in store.dispatch and apps.created == []
    run(go())


def test_push_and_model_creation_need_the_push_role(tmp_path):
    from router.services.catalogue import Catalogue
    from router.wire import ModelCreate
    from vendo_core.errors import Forbidden

    carol = Account(username="carol")

    async def never(*_):
        raise AssertionError("a refused push is neither read nor introspected")

    async def go():
        reg = FakeRegistry()
        svc = VersionService(reg, Resolver(reg), _Objects(), FakeApps(None), skus=lambda: load_hardware(),
                             introspect=never)
        with pytest.raises(Forbidden, match="needs the 'push' role"):
            await svc.push(carol, "carol", "m", never)
        cat = Catalogue(reg, FakeStore(), FakeApps(None), skus=lambda: load_hardware(),
                        collections=lambda: None)
        with pytest.raises(Forbidden):
            await cat.create_model(carol, ModelCreate(owner="carol", name="m", visibility="private",
                                                      hardware="cpu"))
        assert reg.models == {}
        assert Account(username="root", roles=["admin"]).has("push")

    run(go())


def test_an_account_with_too_many_waiting_predictions_gets_a_429():
    from vendo_core.errors import TooManyQueued

    async def go():
        gate = asyncio.Event()

        async def never_starts(request):
            await gate.wait()  # no replica takes them
            return {"status": "starting"}

        svc, store, _, _ = await _service(never_starts, max_queued=2)
        for _ in range(2):
            await svc.create(ALICE, {"input": {"text": "x"}}, version="alice/echo")
        with pytest.raises(TooManyQueued) as e:
            await svc.create(ALICE, {"input": {"text": "x"}}, version="alice/echo")
        assert e.value.status == 429 and e.value.headers() == {"Retry-After": "5"}
        assert len(store.records) == 2  # the refused one was never written
        await svc.create(BOB, {"input": {"text": "x"}}, version="alice/echo")  # others are not held back
        gate.set()

    run(go())


def test_a_waiting_create_is_answered_from_what_the_replica_wrote_without_reading_it_back():
    async def go():
        store = FakeStore()

        async def answers_with_its_record(request):
            started = now_iso()
            await store.transition(request["id"], Status.PROCESSING, {"started_at": started},
                                   heartbeat_deadline=time.time() + 60)
            fields = {"output": "hi", "completed_at": now_iso(), "metrics": {"predict_time": 0.001}}
            await store.transition(request["id"], Status.SUCCEEDED, fields)
            return {"status": "succeeded", "record": {**fields, "status": "succeeded", "error": None,
                                                      "logs": "a line\n", "started_at": started}}

        reg = await _registry()
        svc = PredictionService(store, Resolver(reg), FakeApps(answers_with_its_record))
        reads = []
        real_get = store.get

        async def counted_get(pid):
            reads.append(pid)
            return await real_get(pid)

        store.get = counted_get
        rec = await svc.create(ALICE, {"input": {"text": "x"}}, version="alice/echo", wait_s=5)
        assert reads == []
        stored = await real_get(rec.id)
        assert (rec.status, rec.output, rec.logs, rec.metrics) == (Status.SUCCEEDED, "hi", "a line\n",
                                                                    {"predict_time": 0.001})
        assert (rec.started_at, rec.completed_at) == (stored.started_at, stored.completed_at)
        assert rec.input == stored.input and rec.created_at == stored.created_at

        # an answer without the record (the move was refused, or the logs were long): read back
        svc2, store2, _, _ = await _service()
        rec2 = await svc2.create(ALICE, {"input": {"text": "x"}}, version="alice/echo", wait_s=5)
        assert rec2.status == Status.SUCCEEDED and rec2.output == "hi"

    run(go())


def test_a_live_version_is_looked_up_once_and_forgotten_when_its_model_changes():
    async def go():
        reg = await _registry()
        calls = []
        real = reg.model_and_version

        async def counted(owner, name, vid):
            calls.append(vid)
            return await real(owner, name, vid)

        reg.model_and_version = counted
        res = Resolver(reg)
        for _ in range(3):
            await res.resolve(ALICE, version_field=VID)
            await res.resolve(ALICE, version_field=f"alice/echo:{VID}")
        assert calls == [VID]
        reg.model_versions["alice/echo"].remove(VID)  # deleted; the catalogue channel's message:
        res.forget_model("alice/echo")
        with pytest.raises(VersionNotFound):
            await res.resolve(ALICE, version_field=VID)
        assert calls == [VID, VID]
        # visibility still applies to a cached entry: bob cannot see alice's private model
        await res.resolve(ALICE, version_field=PRIVATE_VID)
        with pytest.raises(VersionNotFound):
            await res.resolve(BOB, version_field=PRIVATE_VID)

    run(go())


def test_an_input_too_large_for_a_grpc_message_goes_by_reference():
    from router.apps import AppManager
    from vendo_core.grpcmsg import GRPC_MAX_MESSAGE, approx_size

    class Handle:
        def __init__(self, by_reference=False):
            self.by_reference = by_reference

        def options(self, _by_reference):
            return Handle(_by_reference)

    grpc = AppManager(None, None, lambda spec: None, 60.0, grpc=True)
    small, large = {"text": "x" * 1000}, {"image": "data:image/png;base64," + "A" * GRPC_MAX_MESSAGE}
    assert approx_size(small) < 2000 and approx_size(large) > GRPC_MAX_MESSAGE
    assert approx_size({"a": [{"b": "x" * GRPC_MAX_MESSAGE}] * 1000}) < 2 * GRPC_MAX_MESSAGE  # stops counting
    assert not grpc.for_input(Handle(), small).by_reference
    assert grpc.for_input(Handle(), large).by_reference
    plain = AppManager(None, None, lambda spec: None, 60.0, grpc=False)
    assert not plain.for_input(Handle(), large).by_reference  # already Ray's actor calls
