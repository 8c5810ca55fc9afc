"""Trainings through the official client: a trainable version trained toward a destination model,
the new version answering with the trained behaviour, served on its base's replicas (Serve's
model multiplexing, or the base's `replicate_weights` input), never an app of its own."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import replicate
from ray import serve

from tests.integration.conftest import EXAMPLES, FIXTURES
from vendo_core.ids import app_name, training_app_name

TERMINAL = ("succeeded", "failed", "canceled")


def _settle(obj, timeout_s: float = 120.0):
    """Poll a prediction or training the way the client's own wait() does, with a bound."""
    deadline = time.monotonic() + timeout_s
    while obj.status not in TERMINAL:
        assert time.monotonic() < deadline, f"{obj.id} still {obj.status}"
        time.sleep(0.2)
        obj.reload()
    return obj


@pytest.fixture(scope="module")
def phrasebook(cluster):
    vid = cluster.push(EXAMPLES / "phrasebook", "alice/phrasebook", visibility="public")
    c = cluster.client("alice")
    for name in ("my-phrasebook", "other-phrasebook"):
        try:
            c.models.create("alice", name, visibility="private", hardware="cpu")
        except replicate.exceptions.ReplicateError:
            pass  # made by an earlier run on this cluster
    return vid


def _train(c, vid: str, words: str, tmp_path: Path, destination="alice/my-phrasebook", **extra):
    path = tmp_path / "words.txt"
    path.write_text(words)
    with path.open("rb") as f:
        return c.trainings.create(version=f"alice/phrasebook:{vid}", input={"words": f, **extra},
                                  destination=destination)


def test_training_makes_a_version_that_answers_with_what_it_learned(cluster, phrasebook, tmp_path):
    c = cluster.client("alice")
    t = _train(c, phrasebook, "good\tgut\nmorning\tMorgen\ncat,Katze\n", tmp_path, name="german")
    assert t.status == "starting" and t.destination == "alice/my-phrasebook"
    t = _settle(t)
    assert t.status == "succeeded", (t.error, t.logs)
    assert "learned 3 words" in t.logs
    new = t.output["version"]
    assert new.startswith("alice/my-phrasebook:") and t.destination == "alice/my-phrasebook"
    assert httpx.get(t.output["weights"], timeout=10).json()["words"]["cat"] == "Katze"
    # the new version speaks the trained phrasebook; the base still its own
    assert c.run(new, input={"text": "Good morning cat"}) == "gut Morgen Katze"
    assert c.run(f"alice/phrasebook:{phrasebook}", input={"text": "good morning cat"}) == "bon matin chat"
    # listed as a version of the destination, its latest
    model = c.models.get("alice/my-phrasebook")
    assert model.latest_version.id == new.split(":")[1]
    # served by the base's app: no app of its own
    apps = serve.status().applications
    assert app_name(phrasebook) in apps and app_name(new.split(":")[1]) not in apps
    # trainings are listed apart from predictions
    assert t.id in [x.id for x in c.trainings.list().results]
    assert t.id not in [p.id for p in c.predictions.list().results]
    # the same training output is the same version
    again = _settle(_train(c, phrasebook, "good\tgut\nmorning\tMorgen\ncat,Katze\n", tmp_path, name="german"))
    assert again.output["version"] == new


def test_five_fine_tunes_answer_from_the_base_app_even_past_the_lru_bound(cluster, phrasebook, tmp_path):
    """The test cluster keeps 2 fine-tunes per replica: five used in turn are unloaded and loaded
    again, on the base's one replica, and each still answers with its own weights."""
    import redis

    from vendo_core.keys import Keys

    c = cluster.client("alice")
    made = []
    for i, word in enumerate(("eins", "deux", "tres", "quattro", "cinq")):
        t = _settle(_train(c, phrasebook, f"one\t{word}\n", tmp_path, destination="alice/other-phrasebook",
                           name=f"n{i}"))
        assert t.status == "succeeded", t.error
        made.append((t.output["version"], word))
    vids = [ref.split(":")[1] for ref, _ in made]
    r = redis.Redis.from_url(cluster.redis_url, decode_responses=True)
    keys = Keys(cluster.settings.redis_prefix)
    loads = []
    for _ in range(2):  # in turn, twice: each answers with its own weights
        for ref, word in made:
            assert c.run(ref, input={"text": "one"}) == word
        loads.append([r.hget(keys.version(v), "setup_completed_at") for v in vids])
    # every one was set up again in the second round (the bound of 2 unloaded it meanwhile)
    assert all(a and b and float(b) > float(a) for a, b in zip(*loads, strict=True))
    apps = serve.status().applications
    assert not [a for a in apps if a in {app_name(v) for v in vids}]
    from router.apps import replica_counts

    assert replica_counts(apps[app_name(phrasebook)]).get("running") == 1


def test_training_errors_name_the_field_and_hide_what_is_not_yours(cluster, phrasebook, examples, tmp_path):
    c = cluster.client("alice")
    with cluster.http() as h:
        url = f"/v1/models/alice/phrasebook/versions/{phrasebook}/trainings"
        r = h.post(url, json={"destination": "alice/my-phrasebook", "input": {}})
        assert r.status_code == 422 and r.json()["invalid_fields"][0]["field"] == "words"
        r = h.post(url, json={"input": {"words": "data:text/plain,a%09b"}})
        assert r.status_code == 422 and r.json()["invalid_fields"][0]["field"] == "destination"
        r = h.post(url, json={"destination": "alice/no-such-model", "input": {"words": "data:text/plain,a%09b"}})
        assert r.status_code == 404
        assert r.json()["detail"] == "The specified training destination does not exist"
        hello = examples["hello-world"]
        r = h.post(f"/v1/models/alice/hello-world/versions/{hello}/trainings",
                   json={"destination": "alice/my-phrasebook", "input": {}})
        assert r.status_code == 422 and "no `train` target" in r.json()["detail"]
    # bob: alice's destination does not exist for him; alice's training neither
    bob = cluster.client("bob")
    with cluster.http("bob") as h:
        r = h.post(f"/v1/models/alice/phrasebook/versions/{phrasebook}/trainings",
                   json={"destination": "alice/my-phrasebook", "input": {"words": "data:text/plain,a%09b"}})
        assert r.status_code == 404
    t = _train(c, phrasebook, "a\tb\n", tmp_path)
    with pytest.raises(replicate.exceptions.ReplicateError) as e:
        bob.trainings.get(t.id)
    assert e.value.status == 404
    # a training is not a prediction's id either way round
    p = c.predictions.create(version=examples["hello-world"], input={"text": "x"})
    with pytest.raises(replicate.exceptions.ReplicateError):
        c.trainings.get(p.id)
    _settle(t)


def test_a_running_training_can_be_canceled_and_trainings_paginate(cluster):
    c = cluster.client("alice")
    vid = cluster.push(FIXTURES / "replicate_weights", "alice/styles", visibility="private")
    t = c.trainings.create(version=f"alice/styles:{vid}", input={"seconds": 60}, destination="alice/styles")
    deadline = time.monotonic() + 60
    while t.status != "processing":
        assert time.monotonic() < deadline
        time.sleep(0.1)
        t.reload()
    t.cancel()
    t = _settle(t, 30)
    assert t.status == "canceled" and t.output is None
    assert t.id in [x.id for page in replicate.paginate(c.trainings.list) for x in page.results]


def test_a_base_that_takes_replicate_weights_gets_them_as_its_input(cluster):
    c = cluster.client("alice")
    vid = cluster.push(FIXTURES / "replicate_weights", "alice/styles", visibility="private")
    t = _settle(c.trainings.create(version=f"alice/styles:{vid}", input={"style": "bold"},
                                   destination="alice/styles"))
    assert t.status == "succeeded", (t.error, t.logs)
    new = t.output["version"]
    # the base's own replica answers, with the weights as its input: no second setup, no COG_WEIGHTS
    assert c.run(new, input={"text": "hi"}) == "bold:hi (setups=1, COG_WEIGHTS=None)"
    assert c.run(f"alice/styles:{vid}", input={"text": "hi"}) == "plain:hi (setups=1, COG_WEIGHTS=None)"
    apps = serve.status().applications
    assert training_app_name(vid) in apps and app_name(new.split(":")[1]) not in apps


def test_a_training_sends_its_webhooks_in_its_own_shape(cluster, phrasebook, tmp_path):
    from tests.integration.webhook_receiver import Receiver

    c = cluster.client()
    secret = c.webhooks.default.secret()
    path = tmp_path / "words.txt"
    path.write_text("dog\tHund\n")
    with Receiver() as receiver, path.open("rb") as f:
        t = c.trainings.create(version=f"alice/phrasebook:{phrasebook}", input={"words": f},
                               destination="alice/my-phrasebook", webhook=receiver.url("/t"),
                               webhook_events_filter=["completed"])
        got = receiver.get("/t")
    replicate.webhooks.validate(headers=got.headers, body=got.body, secret=secret, tolerance=300)
    body = got.json
    assert body["id"] == t.id and body["status"] == "succeeded" and body["destination"] == "alice/my-phrasebook"
    assert body["output"]["version"].startswith("alice/my-phrasebook:")
    assert body["urls"]["get"].endswith(f"/v1/trainings/{t.id}")
