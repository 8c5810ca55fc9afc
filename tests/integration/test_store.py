"""The Redis prediction store on a real Redis (private logical database, flushed per test)."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest

from tests.redisdb import flush, private_db
from vendo_core.keys import Keys
from vendo_core.records import Prediction
from vendo_core.redisconn import connect
from vendo_core.status import Status
from vendo_core.store import PredictionStore

DB = int(os.environ.get("VENDO_TEST_STORE_DB", "12"))


@pytest.fixture
def store(tmp_path):
    url = private_db(DB)

    def make():
        r = connect(url)
        return PredictionStore(r, Keys("vendo:"), ttl_s=3600)

    yield make
    flush(url)


def _record(pid: str, account: str = "alice", ts: float | None = None) -> Prediction:
    ts = ts or time.time()
    return Prediction(id=pid, account=account, model="a/b", version="v" * 64, status="starting", input={"x": 1},
                      created_at="2026-01-01T00:00:00.000000Z", created_ts=ts)


def run(coro):
    return asyncio.run(coro)


def test_create_get_and_literal_keys(store):
    async def go():
        s = store()
        await s.create(_record("p1"), time.time() + 30)
        rec = await s.get("p1")
        assert rec.status == "starting" and rec.input == {"x": 1} and rec.logs == ""
        assert await s.redis.exists("vendo:prediction:p1") == 1
        assert await s.redis.zscore("vendo:account:alice:predictions", "p1") is not None
        assert await s.redis.zscore("vendo:dispatch", "p1") is not None
    run(go())


def test_transitions_follow_the_state_machine(store):
    async def go():
        s = store()
        await s.create(_record("p1"), time.time() + 30)
        assert (await s.transition("p1", Status.SUCCEEDED))[0] is False  # must process first
        ok, prev = await s.transition("p1", Status.PROCESSING, {"started_at": "t"}, heartbeat_deadline=123)
        assert ok and prev == Status.STARTING
        assert await s.redis.zscore("vendo:running", "p1") == 123
        assert await s.redis.zscore("vendo:dispatch", "p1") is None
        ok, _ = await s.transition("p1", Status.SUCCEEDED, {"output": ["a"], "metrics": {"predict_time": 1}})
        assert ok
        rec = await s.get("p1")
        assert rec.status == "succeeded" and rec.output == ["a"]
        assert await s.redis.zscore("vendo:running", "p1") is None
        assert await s.redis.ttl("vendo:prediction:p1") > 0
        events = await s.read_events("p1", "0-0", None)
        assert [e[1] for e in events] == ["done"] and json.loads(events[0][2]) == {}
        # terminal states are sinks
        for target in (Status.CANCELED, Status.FAILED, Status.PROCESSING):
            ok, prev = await s.transition("p1", target)
            assert not ok and prev == Status.SUCCEEDED
    run(go())


def test_cancel_racing_completion_has_one_winner(store):
    async def go():
        s = store()
        for i in range(30):
            pid = f"r{i}"
            await s.create(_record(pid), time.time() + 30)
            await s.transition(pid, Status.PROCESSING)
            a, b = await asyncio.gather(
                s.transition(pid, Status.CANCELED, {"completed_at": "x"}),
                s.transition(pid, Status.SUCCEEDED, {"output": "done", "completed_at": "y"}),
            )
            assert a[0] != b[0]
            rec = await s.get(pid)
            assert rec.status in ("canceled", "succeeded")
            assert (rec.output is not None) == (rec.status == "succeeded")
            done = [e for e in await s.read_events(pid, "0-0", None) if e[1] == "done"]
            assert len(done) == 1
    run(go())


def test_failed_appends_error_then_done(store):
    async def go():
        s = store()
        await s.create(_record("p"), time.time() + 30)
        await s.transition("p", Status.FAILED, error="boom")
        events = await s.read_events("p", "0-0", None)
        assert [e[1] for e in events] == ["error", "done"]
        assert json.loads(events[0][2]) == {"detail": "boom"}
        assert json.loads(events[1][2]) == {"reason": "error"}
        assert (await s.get("p")).error == "boom"
    run(go())


def test_iterator_output_and_logs(store):
    async def go():
        s = store()
        rec = _record("p")
        rec.iterator = True
        await s.create(rec, time.time() + 30)
        await s.transition("p", Status.PROCESSING)
        await s.append_output("p", "a", "a", logs="line 1\n")
        await s.append_output("p", {"k": 1}, '{"k":1}')
        got = await s.get("p")
        assert got.output == ["a", {"k": 1}] and got.logs == "line 1\n"
        assert [e[1] for e in await s.read_events("p", "0-0", None)] == ["logs", "output", "output"]
    run(go())


def test_listing_is_newest_first_with_keyset_cursor(store):
    async def go():
        s = store()
        base = time.time()
        for i in range(25):
            await s.create(_record(f"p{i:02d}", ts=base + (i // 2)), base + 30)  # pairs share a score
        await s.create(_record("other", account="bob"), base + 30)
        seen, cursor = [], None
        while True:
            ids, cursor = await s.list_ids("alice", cursor, 4)
            seen += ids
            if not cursor:
                break
        assert len(seen) == 25 and len(set(seen)) == 25 and "other" not in seen
        assert seen[0] in ("p24",) and seen[-1] in ("p00", "p01")
    run(go())


def test_one_lease_per_router_covers_all_it_dispatches(store):
    async def go():
        s = store()
        a, b = await s.join(time.time() + 30), await s.join(time.time() + 30)
        for i in range(50):
            await s.create(_record(f"a{i}"), a)
        await s.create(_record("b0"), b)
        assert await s.lapsed(time.time()) == ([], [])
        assert not await s.take_lease("a0", b)  # a's lease holds
        await s.renew(a, time.time() - 1)  # a stops renewing: one write was all it ever paid
        running, dispatch = await s.lapsed(time.time())
        assert sorted(dispatch) == sorted(f"a{i}" for i in range(50))
        assert all([await s.take_lease(f"a{i}", b) for i in range(50)])
        assert await s.lapsed(time.time()) == ([], [])
        assert await s.redis.zscore("vendo:routers", str(a)) is None  # nothing left: forgotten
        assert await s.redis.zscore("vendo:routers", str(b)) is not None
        await s.transition("a3", Status.PROCESSING, heartbeat_deadline=time.time() + 30)
        assert await s.redis.zscore("vendo:dispatch", "a3") is None
    run(go())


def test_heartbeat_does_not_resurrect_and_lapses(store):
    async def go():
        s = store()
        router = await s.join(time.time() - 1)  # its lease already lapsed
        await s.create(_record("p"), router)
        running, dispatch = await s.lapsed(time.time())
        assert dispatch == ["p"] and running == []
        other = await s.join(time.time() + 30)
        assert await s.take_lease("p", other)
        assert not await s.take_lease("p", other) and not await s.take_lease("p", router)
        await s.transition("p", Status.PROCESSING, heartbeat_deadline=time.time() - 1)
        assert (await s.lapsed(time.time()))[0] == ["p"]
        await s.transition("p", Status.FAILED, error="lost")
        await s.heartbeat(["p"], time.time() + 100)
        assert await s.redis.zscore("vendo:running", "p") is None
    run(go())


def test_wait_terminal_wakes_on_done(store):
    async def go():
        s = store()
        await s.create(_record("p"), time.time() + 30)

        async def finish():
            await asyncio.sleep(0.2)
            await s.transition("p", Status.CANCELED)

        t0 = time.monotonic()
        task = asyncio.create_task(finish())
        assert await s.wait_terminal("p", 10)
        await task
        assert time.monotonic() - t0 < 5
        assert not await s.wait_terminal("missing", 0.2)
    run(go())


def test_logs_are_capped_keeping_the_tail_and_saying_so(tmp_path):
    url = private_db(DB)

    async def go():
        r = connect(url)
        s = PredictionStore(r, Keys("vendo:"), ttl_s=3600, max_log_bytes=1000)
        await s.create(_record("p"), time.time() + 30)
        for i in range(100):
            await s.append_logs("p", f"line {i:03d} é\n")  # a two-byte character on every line
        logs = (await s.get("p")).logs
        assert logs.startswith("[vendo: logs longer than 1000 bytes; the earliest were removed]\n")
        assert logs.endswith("line 099 é\n") and "line 000" not in logs
        assert len(logs.encode()) <= 1000 + 100
        events = await s.read_events("p", "0-0", None)
        assert len(events) == 100 and events[0][2] == "line 000 é\n"  # the stream is capped by count
        await r.aclose()

    try:
        asyncio.run(go())
    finally:
        flush(url)


def test_an_accounts_index_forgets_predictions_whose_records_expired(tmp_path):
    url = private_db(DB)

    async def go():
        r = connect(url)
        s = PredictionStore(r, Keys("vendo:"), ttl_s=3600)
        now = time.time()
        await s.create(_record("old", ts=now - 7200), now + 30)
        await s.create(_record("new", ts=now), now + 30)
        assert await r.zrange("vendo:account:alice:predictions", 0, -1) == ["new"]
        await r.aclose()

    try:
        asyncio.run(go())
    finally:
        flush(url)


def test_a_transition_of_an_expired_record_drops_its_index_entries(store):
    async def go():
        s = store()
        await s.redis.zadd("vendo:running", {"gone": time.time() - 1})
        await s.redis.zadd("vendo:dispatch", {"gone": time.time() - 1})
        assert await s.lapsed(time.time()) == (["gone"], ["gone"])
        assert await s.transition("gone", Status.FAILED, {"completed_at": "t"}, error="lost") == (False, None)
        assert await s.lapsed(time.time()) == ([], [])
        assert await s.redis.exists("vendo:prediction:gone") == 0  # nothing was made of it

    run(go())


def test_queued_counts_only_predictions_still_starting(store):
    async def go():
        s = store()
        for i in range(4):
            await s.create(_record(f"q{i}"), time.time() + 30)
        await s.create(_record("other", account="bob"), time.time() + 30)
        assert await s.queued("alice", limit=100) == 4  # under the limit: one ZCARD, no pruning
        await s.transition("q0", Status.PROCESSING, heartbeat_deadline=time.time() + 30)
        await s.transition("q1", Status.CANCELED)
        assert await s.queued("alice", limit=4) == 2  # at the limit: the ones that moved on are pruned
        assert await s.redis.zcard("vendo:account:alice:queued") == 2
        assert await s.queued("bob", limit=1) == 1
    run(go())


def test_billing_is_fixed_by_the_terminal_transition_exactly_once_and_sums_exactly(store):
    """A thousand predictions on three models and two SKUs: the usage total equals the sum of the
    predictions' own costs to the nano-dollar (so to the cent), a second terminal move bills
    nothing, a prediction canceled from outside pays for the time since it started, and one
    without a price (or that never started) adds nothing."""
    import datetime as dt
    import random

    from vendo_core.billing import Usage, usd

    async def go():
        s = store()
        rng = random.Random(7)
        prices = {"cpu": 25_000, "gpu-small": 225_000}
        pids = []
        for i in range(1000):
            hw = "cpu" if i % 3 else "gpu-small"
            rec = _record(f"b{i}")
            rec.model, rec.hardware, rec.price_nanos = f"a/m{i % 3}", hw, prices[hw]
            await s.create(rec, time.time() + 30)
            await s.transition(rec.id, Status.PROCESSING, {"started_at": "x", "started_ts": time.time()})
            end = Status.SUCCEEDED if i % 10 else Status.FAILED
            await s.transition(rec.id, end, {"metrics": {"predict_time": round(rng.uniform(0, 30), 6)}})
            pids.append(rec.id)
        # billed once: a late second terminal move is refused and changes nothing
        assert (await s.transition("b1", Status.CANCELED, {"metrics": {"predict_time": 1000.0}}))[0] is False

        # canceled from outside while running: no predict_time, billed from started_ts
        rec = _record("c1")
        rec.model, rec.hardware, rec.price_nanos = "a/m0", "cpu", prices["cpu"]
        await s.create(rec, time.time() + 30)
        await s.transition("c1", Status.PROCESSING, {"started_at": "x", "started_ts": time.time() - 2.0})
        await s.transition("c1", Status.CANCELED)
        c1 = await s.get("c1")
        assert 2000 <= c1.billed_ms < 2500 and c1.cost_nanos == round(c1.billed_ms * 25_000 / 1000)
        pids.append("c1")
        # never started, or no price: nothing billed
        for pid, price in (("n1", prices["cpu"]), ("n2", None)):
            rec = _record(pid)
            rec.price_nanos = price
            await s.create(rec, time.time() + 30)
            if price is None:
                await s.transition(pid, Status.PROCESSING, {"started_at": "x"})
                await s.transition(pid, Status.SUCCEEDED, {"metrics": {"predict_time": 5.0}})
            else:
                await s.transition(pid, Status.CANCELED)
        assert (await s.get("n1")).cost_nanos == 0 and (await s.get("n2")).cost_nanos is None

        records = await s.get_many(pids)
        assert all(r.billed_ms == round(r.metrics["predict_time"] * 1000) for r in records if r.id != "c1")
        total = sum(r.cost_nanos for r in records)
        usage = Usage(s.redis, s.keys)
        today = dt.datetime.now(dt.timezone.utc).date()
        for by in ("model", "hardware", "day"):
            rows = await usage.rows("alice", today, time.time(), by)
            assert sum(r.nanos for r in rows) == total
            assert sum(r.milliseconds for r in rows) == sum(r.billed_ms for r in records)
        by_hw = {r.key: r.nanos for r in await usage.rows("alice", today, time.time(), "hardware")}
        assert by_hw["gpu-small"] == sum(r.cost_nanos for r in records if r.hardware == "gpu-small")
        assert await usage.spent("alice", time.time()) == total
        assert round(usd(total), 2) == round(sum(usd(r.cost_nanos) for r in records), 2)
        # each cost is the billed milliseconds at the SKU's price, rounded to the nano-dollar
        assert all(r.cost_nanos == (r.billed_ms * r.price_nanos + 500) // 1000 for r in records)

    run(go())


def test_listing_several_accounts_together_merges_newest_first_across_pages(store):
    """A member's list is its own predictions and its organizations', interleaved by creation,
    paged by the same keyset cursor with none lost or repeated (ties on the time included)."""
    async def go():
        s = store()
        base = time.time()
        expected = []
        for i in range(30):
            account = ("ann", "acme", "other")[i % 3]
            ts = base + (i // 2)  # pairs share a creation time
            await s.create(_record(f"m{i:02d}", account=account, ts=ts), time.time() + 30)
            if account != "other":
                expected.append((ts, f"m{i:02d}"))
        expected = [pid for _, pid in sorted(expected, reverse=True)]
        seen, cursor = [], None
        while True:
            ids, cursor = await s.list_ids(["ann", "acme"], cursor, 7)
            seen += ids
            if cursor is None:
                break
        assert seen == expected
        assert (await s.list_ids("ann", None, 100))[0] == [p for p in expected if int(p[1:]) % 3 == 0]

    run(go())


def test_metrics_follow_each_move_in_the_same_call(store):
    async def go():
        s = store()
        m = "vendo:metrics"
        v = "v" * 64

        async def counts():
            raw = await s.redis.hgetall(m)
            return {k: int(float(x)) for k, x in raw.items() if x not in ("0", "0.0")}
        for pid in ("p1", "p2", "p3"):
            rec = _record(pid)
            rec.hardware, rec.price_nanos = "cpu", 100_000
            await s.create(rec, time.time() + 30)
        assert await counts() == {"predictions_created|a/b|cpu": 3, f"predictions_queued|a/b|{v}": 3}
        await s.transition("p1", Status.PROCESSING, {"started_ts": time.time()}, heartbeat_deadline=1,
                           counts=[("cold_starts|a/b|" + v, 1)])
        await s.transition("p2", Status.CANCELED)
        got = await counts()
        assert got[f"predictions_queued|a/b|{v}"] == 1 and got[f"predictions_running|a/b|{v}"] == 1
        assert got["cold_starts|a/b|" + v] == 1 and got["predictions_finished|canceled|a/b|cpu"] == 1
        await s.transition("p1", Status.SUCCEEDED, {"metrics": {"predict_time": 2.5}})
        assert not (await s.transition("p1", Status.FAILED))[0]  # a refused move counts nothing
        got = await counts()
        assert f"predictions_running|a/b|{v}" not in got
        assert got["predictions_finished|succeeded|a/b|cpu"] == 1 and "predictions_finished|failed|a/b|cpu" not in got
        assert got["billed_seconds|alice|cpu"] == 2500 and got["cost_usd|alice|cpu"] == 250_000
    run(go())


def test_a_prediction_costs_three_round_trips_metrics_included(store, monkeypatch):
    """Create, start and finish: one round trip each, with the metrics and billing counted inside
    them (the platform's counts never add a round trip to a prediction's path)."""
    from redis.asyncio.connection import Connection

    sent = []
    real = Connection.send_packed_command

    async def counting(self, command, check_health=True):
        sent.append(command)
        return await real(self, command, check_health)

    async def go():
        s = store()
        await s.redis.ping()
        await s.transition("warm", Status.CANCELED)  # loads the script once (a NOSCRIPT retry would count)
        rec = _record("p1")
        rec.hardware, rec.price_nanos = "cpu", 100_000
        monkeypatch.setattr(Connection, "send_packed_command", counting)
        await s.create(rec, time.time() + 30)
        await s.transition("p1", Status.PROCESSING, {"started_ts": time.time()}, heartbeat_deadline=1,
                           counts=[("cold_starts|a/b|" + "v" * 64, 1)])
        await s.transition("p1", Status.SUCCEEDED, {"metrics": {"predict_time": 0.5}})
        monkeypatch.undo()
        assert len(sent) == 3
        raw = await s.redis.hgetall("vendo:metrics")
        assert raw["predictions_finished|succeeded|a/b|cpu"] == "1" and raw["billed_seconds|alice|cpu"] == "500"
    run(go())
