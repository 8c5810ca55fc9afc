"""The router's queue in front of a Serve app: no more calls than slots, a freed slot handed to the
next waiter at once, first come first served within an account, round-robin between accounts, and
a waiter that is cancelled holds nothing."""

from __future__ import annotations

import asyncio

from router.queueing import FairQueue
from router.services.predictions import PredictionService
from router.services.resolve import Resolver
from tests.unit.fakes import FakeApps, FakeStore, replica
from tests.unit.test_services import ALICE, BOB, _registry
from vendo_core.ids import app_name
from vendo_core.status import Status


def run(coro):
    return asyncio.run(coro)


async def _waiters(q: FairQueue, order: list[str], who: list[tuple[str, str]]) -> list[asyncio.Task]:
    async def one(account: str, key: str) -> None:
        await q.acquire(account, key)
        order.append(key)

    tasks = [asyncio.create_task(one(a, k)) for a, k in who]
    for _ in range(3):
        await asyncio.sleep(0)
    return tasks


def test_slots_then_round_robin_between_accounts_fifo_within_one():
    async def go():
        q, order = FairQueue(2), []
        who = [("a", f"a{i}") for i in range(6)] + [("b", "b0"), ("b", "b1"), ("c", "c0")]
        tasks = await _waiters(q, order, who)
        assert order == ["a0", "a1"] and q.used == 2 and q.queued == 7  # two slots, the rest wait
        for _ in range(7):
            q.release()  # a freed slot goes to the next waiter with no delay
            await asyncio.sleep(0)
        # a's line, b's and c's take turns (each in its own arrival order), then a's rest
        assert order == ["a0", "a1", "a2", "b0", "c0", "a3", "b1", "a4", "a5"]
        assert q.used == 2 and q.queued == 0
        await asyncio.gather(*tasks)
    run(go())


def test_a_cancelled_waiter_holds_nothing_and_is_skipped():
    async def go():
        q, order = FairQueue(1), []
        tasks = await _waiters(q, order, [("a", "a0"), ("a", "a1"), ("b", "b0"), ("a", "a2")])
        assert q.cancel("a1") and not q.cancel("a1") and not q.cancel("nobody")
        tasks[2].cancel()  # b0's own task
        await asyncio.sleep(0)
        q.release()
        await asyncio.sleep(0)
        assert order == ["a0", "a2"] and q.used == 1 and q.queued == 0
        q.release()
        assert q.used == 0
    run(go())


def test_resize_hands_out_the_new_slots():
    async def go():
        q, order = FairQueue(1), []
        await _waiters(q, order, [("a", f"a{i}") for i in range(4)])
        q.resize(3)
        await asyncio.sleep(0)
        assert order == ["a0", "a1", "a2"] and q.used == 3
    run(go())


def test_the_service_sends_serve_no_more_than_the_slots_and_another_account_is_not_starved():
    async def go():
        gate = asyncio.Event()
        store, reg = FakeStore(), await _registry()
        apps = FakeApps(replica(store, gate=gate))
        svc = PredictionService(store, Resolver(reg), apps)  # one replica, concurrency 1: two slots
        mine = [await svc.create(ALICE, {"input": {"text": str(i)}}, version="alice/echo") for i in range(20)]
        theirs = await svc.create(BOB, {"input": {"text": "b"}}, version="alice/echo")
        for _ in range(5):
            await asyncio.sleep(0)
        calls = apps.handles[app_name(mine[0].version)].calls
        assert len(calls) == 2 and svc.queues[app_name(mine[0].version)].queued == 19
        # bob's waits behind at most one of alice's (round-robin), not behind nineteen
        gate.set()
        await svc.wait(theirs.id, 5)
        ids = [c["id"] for c in calls]
        assert ids.index(theirs.id) <= 3, ids.index(theirs.id)
        # a queued one canceled never reaches Serve, and its slot is not lost
        last = mine[-1]
        await svc.cancel(ALICE, last.id)
        for rec in mine[:-1]:
            await svc.wait(rec.id, 5)
        assert all(store.records[r.id].status == Status.SUCCEEDED for r in mine[:-1])
        assert store.records[last.id].status == Status.CANCELED and last.id not in [c["id"] for c in calls]
        assert svc.inflight == {} and svc.queues == {}  # an app's queue goes once it is empty
    run(go())
