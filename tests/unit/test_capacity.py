"""The working set's eviction decision over fakes of Serve, Ray and the store: only what is short
is freed, least recently used first, and never a busy, pinned, in-setup or recent app."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from router.apps import AppSpec
from router.capacity import Need, WorkingSet
from vendo_core.hardware import HardwareConfig, Sku
from vendo_core.records import Version

SKUS = HardwareConfig(default="cpu", skus={"cpu": Sku(name="CPU", num_cpus=2, num_gpus=0, price_per_second=0)})


def _status(**states):
    return SimpleNamespace(deployments={"model": SimpleNamespace(replica_states=states)})


class FakeApps:
    def __init__(self, apps, last_used):
        self.serve = apps
        self.used = last_used
        self.specs = {name: AppSpec.of(Version(id=name, model="a/b", hardware="cpu"), name) for name in apps}
        self.deleted, self.counted = [], []

    async def statuses(self):
        return self.serve

    async def last_used(self):
        return self.used

    async def delete(self, app):
        self.deleted.append(app)

    async def count(self, *inc):
        self.counted += inc


class FakeStore:
    def __init__(self, busy=()):
        self.busy = set(busy)

    async def statuses(self, pids):
        return ["starting" for _ in pids]

    async def busy_apps(self):
        return set(self.busy)


class FakeCluster:
    def __init__(self, cpu, pending):
        self.cpu, self.pending = cpu, pending

    def available(self):
        return {"CPU": self.cpu, "memory": 1e12}

    def pending_apps(self):
        return set(self.pending)

    def pending_demands(self):
        return [{"CPU": 2.0, "vendo_cpu": 0.001} for _ in self.pending]  # the cpu SKU's replica, queued


def _ws(apps, *, cpu=0.0, pending=("want",), busy=(), local=()):
    want = AppSpec.of(Version(id="want", model="a/w", hardware="cpu"), "want")
    return WorkingSet(apps, FakeStore(busy), lambda: SKUS, waiting=lambda ts: {"p1": want}, after_s=1.0,
                      idle_s=5.0, cluster=FakeCluster(cpu, pending), local_busy=lambda: set(local))


def test_the_least_recently_used_idle_app_goes_first_and_only_what_is_short():
    apps = FakeApps({"old": _status(RUNNING=1), "older": _status(RUNNING=1), "new": _status(RUNNING=1)},
                    {"old": 50.0, "older": 10.0, "new": 90.0})
    ws = _ws(apps, cpu=1.0)  # 2 CPUs needed, 1 free: one eviction of a 2-CPU replica covers it
    assert asyncio.run(ws.make_room(now=100.0)) == ["older"]
    assert apps.deleted == ["older"] and apps.counted == [("evictions", 1)]


def test_busy_pinned_in_setup_and_recent_apps_are_never_evicted():
    apps = FakeApps({"busy": _status(RUNNING=1), "local": _status(RUNNING=1), "pinned": _status(RUNNING=1),
                     "setup": _status(RUNNING=1, STARTING=1), "recent": _status(RUNNING=1), "zero": _status()},
                    {"busy": 1.0, "local": 1.0, "pinned": 1.0, "setup": 1.0, "recent": 98.0, "zero": 1.0})
    apps.specs["pinned"] = AppSpec(version=Version(id="p", model="a/p", hardware="cpu"), app="pinned", min_replicas=1)
    ws = _ws(apps, busy={"busy"}, local={"local"})
    assert asyncio.run(ws.make_room(now=100.0)) == []
    assert apps.deleted == []


def test_nothing_is_evicted_when_the_wait_is_not_for_room():
    apps = FakeApps({"idle": _status(RUNNING=1)}, {"idle": 1.0})
    assert asyncio.run(_ws(apps, pending=()).make_room(now=100.0)) == []  # placed: setup, or a queue
    assert asyncio.run(_ws(apps, cpu=4.0).make_room(now=100.0)) == []  # it fits: Ray is placing it
    assert apps.deleted == []


def test_needs_add_and_compare():
    n = Need({"CPU": 2.0, "GPU": 0.5})
    short = n.short_of({"CPU": 1.0, "GPU": 1.0})
    assert short.amounts == {"CPU": 1.0} and not short.covered_by(Need({"CPU": 0.5})) and short.covered_by(
        Need({"CPU": 1.0}))


def test_nothing_is_evicted_when_even_everything_idle_would_not_make_it_fit():
    apps = FakeApps({"a": _status(RUNNING=1), "b": _status(RUNNING=1)}, {"a": 1.0, "b": 2.0})
    ws = _ws(apps, cpu=-3.0)  # 2 needed, 5 short: the two idle apps free 4
    assert asyncio.run(ws.make_room(now=100.0)) == [] and apps.deleted == []


def test_a_replica_granted_its_resources_is_not_waiting_for_room_even_before_its_worker_runs():
    apps = FakeApps({"idle": _status(RUNNING=1)}, {"idle": 1.0})
    ws = _ws(apps)
    ws.cluster.pending_demands = lambda: []  # its actor has no worker yet, but nothing is queued in Ray
    assert asyncio.run(ws.make_room(now=100.0)) == [] and apps.deleted == []


def test_a_new_app_that_cannot_fit_makes_room_at_once_and_one_that_fits_does_not():
    want = AppSpec.of(Version(id="want", model="a/w", hardware="cpu"), "want")
    apps = FakeApps({"old": _status(RUNNING=1), "older": _status(RUNNING=1)}, {"old": 50.0, "older": 10.0})
    # not yet waiting, not yet pending in Ray: created just now, with 1 CPU free of the 2 it needs
    ws = _ws(apps, cpu=1.0, pending=())
    assert asyncio.run(ws.make_room_for(want)) == ["older"]
    apps = FakeApps({"old": _status(RUNNING=1)}, {"old": 50.0})
    assert asyncio.run(_ws(apps, cpu=2.0, pending=()).make_room_for(want)) == [] and apps.deleted == []
    busy = FakeApps({"old": _status(RUNNING=1)}, {"old": 50.0})
    assert asyncio.run(_ws(busy, cpu=0.0, pending=(), busy=("old",)).make_room_for(want)) == []


def test_room_made_for_a_new_app_is_not_made_again_while_it_is_given_back():
    import time

    want = AppSpec.of(Version(id="want", model="a/w", hardware="cpu"), "want")
    apps = FakeApps({"old": _status(RUNNING=1), "older": _status(RUNNING=1)}, {"old": 50.0, "older": 10.0})
    ws = _ws(apps, cpu=1.0, pending=("want",))  # Ray still shows the old replica's CPUs held

    async def go():
        assert await ws.make_room_for(want) == ["older"]
        assert await ws.make_room(now=time.time() + 1.0) == []  # its own round, a moment later
    asyncio.run(go())
    assert apps.deleted == ["older"]
