"""Webhooks end to end: the official client creates predictions with webhooks, a real receiver on
127.0.0.1 gets them, and `replicate.webhooks.validate` checks every signature. The delivery queue
itself (reclaiming a dead replica's entries, send-time address checks, redirects) is tested on a
real Redis without Ray."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
import replicate
from replicate.exceptions import ReplicateError
from replicate.webhook import InvalidSignatureError, WebhookSigningSecret

from tests import redisdb
from tests.integration.webhook_receiver import Receiver

pytestmark = pytest.mark.integration


@pytest.fixture
def receiver():
    with Receiver() as r:
        yield r


def validate_all(deliveries, secret) -> None:
    for d in deliveries:
        replicate.webhooks.validate(headers=d.headers, body=d.body, secret=secret, tolerance=300)


def terminal(d) -> bool:
    return d.json["status"] in ("succeeded", "failed", "canceled")


# with the cluster


def test_stream_prediction_sends_start_output_completed_in_order(cluster, examples, receiver):
    c = cluster.client()
    secret = c.webhooks.default.secret()
    assert secret.key.startswith("whsec_") and c.webhooks.default.secret().key == secret.key
    p = c.predictions.create(version=examples["stream"], webhook=receiver.url("/stream"),
                             input={"prompt": "webhooks in order", "max_tokens": 6, "delay": 0.3})
    got = receiver.until("/stream", terminal)
    validate_all(got, secret)

    ids = [d.id for d in got]
    assert ids[0] == f"msg_{p.id}_start" and ids[-1] == f"msg_{p.id}_completed", ids
    progress = got[1:-1]
    assert progress and all(i.startswith(f"msg_{p.id}_output_") for i in ids[1:-1]), ids
    assert len(set(ids)) == len(ids)

    bodies = [d.json for d in got]
    assert bodies[0]["status"] == "processing" and bodies[0]["id"] == p.id
    assert all(b["status"] == "processing" and b["output"] for b in bodies[1:-1])
    lengths = [len(b["output"] or []) for b in bodies]
    assert lengths == sorted(lengths) and lengths[-1] == 6
    # throttled: progress at most once per 500 ms
    gaps = [b.at - a.at for a, b in zip(progress, progress[1:], strict=False)]
    assert all(g >= 0.45 for g in gaps), gaps
    # the completed body is the prediction exactly as GET returns it
    with cluster.http() as h:
        assert bodies[-1] == h.get(f"/v1/predictions/{p.id}").json()
    assert bodies[-1]["status"] == "succeeded" and bodies[-1]["urls"]["get"].startswith(cluster.url)


def test_completed_is_retried_with_the_same_webhook_id(cluster, examples, receiver):
    c = cluster.client()
    secret = c.webhooks.default.secret()
    receiver.answer("/flaky", 500, 500)
    p = c.predictions.create(version=examples["hello-world"], input={"text": "retry"},
                             webhook=receiver.url("/flaky"), webhook_events_filter=["completed"])
    got = [receiver.get("/flaky") for _ in range(3)]
    validate_all(got, secret)
    assert [d.status for d in got] == [500, 500, 200]
    assert {d.id for d in got} == {f"msg_{p.id}_completed"}
    assert len({d.body for d in got}) == 1
    assert got[0].json["status"] == "succeeded" and got[0].json["output"] == "hello retry"
    # the schedule itself (0, 0.2, 0.6 s after completion here) is unit-tested with retry_offsets;
    # a send that starts late on a loaded machine shortens the gap after it, so no timing here
    assert got[0].at < got[1].at < got[2].at


def test_events_filter_and_legacy_webhook_completed_on_cancel(cluster, examples, receiver):
    c = cluster.client()
    secret = c.webhooks.default.secret()
    p = c.predictions.create(version=examples["slow"], input={"steps": 600, "step_s": 0.1},
                             webhook=receiver.url("/filtered"), webhook_events_filter=["start", "completed"],
                             webhook_completed=receiver.url("/legacy"))
    with cluster.http() as h:
        echoed = h.get(f"/v1/predictions/{p.id}").json()
    assert echoed["webhook"] == receiver.url("/filtered")
    assert echoed["webhook_events_filter"] == ["start", "completed"]
    start = receiver.get("/filtered")
    assert start.id == f"msg_{p.id}_start" and start.json["status"] == "processing"
    c.predictions.cancel(p.id)
    done, legacy = receiver.get("/filtered"), receiver.get("/legacy")
    validate_all([start, done, legacy], secret)
    # no logs or output events in between (the slow model logs a progress bar), only completed
    assert done.id == legacy.id == f"msg_{p.id}_completed"
    assert done.json["status"] == legacy.json["status"] == "canceled"
    assert done.body == legacy.body


def test_failed_prediction_sends_completed(cluster, receiver):
    from tests.integration.conftest import FIXTURES

    vid = cluster.push(FIXTURES / "raises", "alice/raises")
    c = cluster.client()
    c.predictions.create(version=vid, input={}, webhook_completed=receiver.url("/failed"))
    d = receiver.get("/failed")
    validate_all([d], c.webhooks.default.secret())
    assert d.json["status"] == "failed" and "boom" in d.json["error"]


def test_rotated_secret_signs_the_next_deliveries(cluster, examples, receiver):
    from tests.integration.test_cli import vendo

    c = cluster.client("bob")
    old = c.webhooks.default.secret()
    rotated = vendo(cluster, "webhooks", "secret", "--rotate", user="bob")
    assert rotated.returncode == 0, rotated.stderr
    new_key = rotated.stdout.strip()
    assert new_key.startswith("whsec_") and new_key != old.key
    assert c.webhooks.default.secret().key == new_key
    c.predictions.create(version=examples["hello-world"], input={"text": "r"},
                         webhook_completed=receiver.url("/rotated"))
    d = receiver.get("/rotated")
    validate_all([d], WebhookSigningSecret(key=new_key))
    with pytest.raises(InvalidSignatureError):
        validate_all([d], old)


def test_invalid_webhook_fields_are_422_naming_the_field(cluster, examples):
    c = cluster.client()
    for kwargs, field in (
        ({"webhook": "https://example.com/h", "webhook_events_filter": ["start", "finished"]},
         "webhook_events_filter"),
        ({"webhook": "ftp://example.com/h"}, "webhook"),
        ({"webhook_completed": "not a url"}, "webhook_completed"),
    ):
        with pytest.raises(ReplicateError) as e:
            c.predictions.create(version=examples["hello-world"], input={}, **kwargs)
        assert e.value.status == 422 and e.value.detail.startswith(field + ":"), e.value.detail
    with cluster.http() as h:
        r = h.post("/v1/models/alice/hello-world/predictions",
                   json={"input": {}, "webhook": "https://example.com/h", "webhook_events_filter": ["x"]})
    assert r.status_code == 422 and r.json()["invalid_fields"][0]["field"] == "webhook_events_filter"


def test_private_webhooks_refused_unless_allowed(cluster, examples, receiver):
    cluster.deploy_router(allow_private_webhooks=False)
    try:
        c = cluster.client()
        for kwargs, field in (
            ({"webhook": receiver.url("/private")}, "webhook"),
            ({"webhook": "http://localhost:8080/h"}, "webhook"),
            ({"webhook_completed": "http://10.0.0.7/h"}, "webhook_completed"),
            ({"webhook": "http://169.254.169.254/latest/meta-data/"}, "webhook"),
            ({"webhook": "http://[::1]/h"}, "webhook"),
        ):
            with pytest.raises(ReplicateError) as e:
                c.predictions.create(version=examples["hello-world"], input={}, **kwargs)
            assert e.value.status == 422 and e.value.detail.startswith(field + ":"), e.value.detail
            assert "non-public" in e.value.detail
    finally:
        cluster.deploy_router()
    assert receiver.pending("/private") == 0


# the delivery queue on a real Redis, no Ray

DB = int(os.environ.get("VENDO_TEST_WEBHOOK_DB", "8"))

redis_url = redisdb.fixture(DB)


def _parts(url: str):
    from router.webhooks import WebhookSecrets
    from vendo_core.keys import Keys
    from vendo_core.redisconn import connect
    from vendo_core.store import PredictionStore

    r = connect(url)
    keys = Keys("vendo:")
    return r, keys, PredictionStore(r, keys, ttl_s=3600), WebhookSecrets(r, keys)


def _delivery(r, keys, store, secrets, **kw):
    from router.webhook_delivery import WebhookDelivery

    kw.setdefault("allow_private", True)
    return WebhookDelivery(r, keys, store, secrets, lambda base: (lambda key: f"{base}/files/{key}"),
                           "http://default.invalid", **kw)


async def _finished_prediction(store, pid: str, **hooks) -> None:
    from vendo_core.records import Prediction
    from vendo_core.status import Status

    await store.create(Prediction(id=pid, account="alice", model="a/b", version="v" * 64, status="starting",
                                  input={"x": 1}, created_at="2026-01-01T00:00:00.000000Z", created_ts=time.time(),
                                  base_url="http://vendo.test", **hooks), time.time() + 30)
    assert (await store.transition(pid, Status.PROCESSING, {"started_at": "t"}))[0]
    assert (await store.transition(pid, Status.SUCCEEDED, {"output": "ok", "completed_at": "t"}))[0]


async def _until_empty(r, keys, timeout_s: float = 10.0) -> None:
    from router.webhook_delivery import GROUP

    deadline = time.monotonic() + timeout_s
    while (await r.xlen(keys.webhooks()) or (await r.xpending(keys.webhooks(), GROUP))["pending"]):
        assert time.monotonic() < deadline, "webhook entries still queued"
        await asyncio.sleep(0.05)


def test_transitions_queue_start_and_completed_atomically(redis_url):
    async def go():
        r, keys, store, _ = _parts(redis_url)
        await _finished_prediction(store, "p1", webhook="http://h/x")
        await _finished_prediction(store, "p2")  # no webhook: nothing queued
        await _finished_prediction(store, "p3", webhook_completed="http://h/y")
        entries = await r.xrange("vendo:webhooks")
        assert [f for _, f in entries] == [{"prediction": "p1", "event": "start"},
                                           {"prediction": "p1", "event": "completed"},
                                           {"prediction": "p3", "event": "completed"}]
        await r.aclose()
    asyncio.run(go())


def test_entries_of_a_dead_replica_are_reclaimed(redis_url, receiver):
    from router.webhook_delivery import GROUP

    async def go():
        r, keys, store, secrets = _parts(redis_url)
        dead = _delivery(r, keys, store, secrets)
        await dead.ensure_group()
        await _finished_prediction(store, "p1", webhook=receiver.url("/hook"))
        # a replica reads both entries and dies before delivering them
        read = await r.xreadgroup(GROUP, "dead", {keys.webhooks(): ">"}, count=10)
        assert len(read[0][1]) == 2
        live = _delivery(r, keys, store, secrets, claim_idle_s=0.3)
        task = asyncio.create_task(live.run())
        try:
            got = [await asyncio.to_thread(receiver.get, "/hook", 10) for _ in range(2)]
            await _until_empty(r, keys)
        finally:
            task.cancel()
            await live.close()
        secret = WebhookSigningSecret(key=await secrets.get("alice"))
        validate_all(got, secret)
        assert [d.id for d in got] == ["msg_p1_start", "msg_p1_completed"]
        body = got[1].json
        assert body["status"] == "succeeded" and body["output"] == "ok"
        assert body["urls"]["get"] == "http://vendo.test/v1/predictions/p1"
        await r.aclose()
    asyncio.run(go())


def test_send_time_check_refuses_private_addresses(redis_url, receiver):
    from router.webhook_delivery import REFUSED

    async def go():
        r, keys, store, secrets = _parts(redis_url)
        d = _delivery(r, keys, store, secrets, allow_private=False)
        await d.ensure_group()
        # accepted when it was created (say the name resolved elsewhere then); refused when sent
        await _finished_prediction(store, "p1", webhook_completed=receiver.url("/private"))
        (eid, fields), = (await r.xrange(keys.webhooks()))[-1:]
        assert await d.handle(eid, fields) == REFUSED
        assert await r.xlen(keys.webhooks()) == 0  # given up, not retried
        await d.close()
        await r.aclose()
    asyncio.run(go())
    assert receiver.pending("/private") == 0


def test_redirects_are_not_followed(redis_url, receiver):
    from router.webhook_delivery import FAILED

    async def go():
        r, keys, store, secrets = _parts(redis_url)
        d = _delivery(r, keys, store, secrets, retry_base_s=0.05, max_attempts=2)
        await d.ensure_group()
        receiver.answer("/moved", 307, 307, headers={"location": receiver.url("/elsewhere")})
        await _finished_prediction(store, "p1", webhook_completed=receiver.url("/moved"))
        (eid, fields), = (await r.xrange(keys.webhooks()))[-1:]
        assert await d.handle(eid, fields) == FAILED
        await d.close()
        await r.aclose()
    asyncio.run(go())
    assert [receiver.get("/moved", 1).status for _ in range(2)] == [307, 307]
    assert receiver.pending("/elsewhere") == 0
