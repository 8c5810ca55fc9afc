"""The model registry on a real Redis (private logical database, flushed per test): creating and
deleting models, keyset pages over the listing indexes, deleting versions. No Ray."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from tests.redisdb import flush, private_db
from vendo_core.errors import Conflict, InvalidRequest, NotFound
from vendo_core.keys import Keys
from vendo_core.records import Prediction, Version
from vendo_core.redisconn import connect
from vendo_core.registry import LATEST_VERSION_CREATED, MODEL_CREATED, Registry, token_digest
from vendo_core.status import Status
from vendo_core.store import PredictionStore

DB = int(os.environ.get("VENDO_TEST_REGISTRY_DB", "7"))
KEYS = Keys("vendo:")


@pytest.fixture
def redis_url(tmp_path):
    url = private_db(DB)
    yield url
    flush(url)


def run(redis_url, fn):
    async def go():
        r = connect(redis_url)
        try:
            return await fn(Registry(r, KEYS), r)
        finally:
            await r.aclose()

    return asyncio.run(go())


def _version(vid: str, model: str = "alice/m") -> Version:
    return Version(id=vid, model=model, cog_version="0.23.1", openapi_schema={"components": {}})


async def _all_pages(reg: Registry, viewer: str, sort_by: str, desc: bool, limit: int, keep=lambda m: True):
    out, after, pages = [], None, 0
    while True:
        models, after = await reg.page_models(viewer, sort_by, desc, after, limit, keep)
        out += [m.ref for m in models]
        pages += 1
        if after is None:
            return out, pages


def test_create_conflict_and_delete(redis_url):
    async def go(reg: Registry, r):
        m = await reg.create_model("alice", "m", "private", hardware="cpu", description=None)
        assert m.run_count == 0 and m.hardware == "cpu" and m.description is None
        with pytest.raises(Conflict):
            await reg.create_model("alice", "m", "public")
        assert (await reg.ensure_model("alice", "m", visibility="public")).visibility == "private"
        await reg.add_version(_version("a" * 64, "alice/m"))
        with pytest.raises(Conflict, match="1 version"):
            await reg.delete_model("alice", "m")
        assert await reg.delete_version("alice", "m", "a" * 64)
        assert await reg.delete_model("alice", "m")
        assert await reg.get_model("alice", "m") is None
        assert not await reg.delete_model("alice", "m")
        for sort_by in (MODEL_CREATED, LATEST_VERSION_CREATED):
            assert await r.zcard(KEYS.models_sorted(sort_by, "alice")) == 0
        # a run counter left behind by a deleted model's last prediction does not block re-creation
        await reg.count_run("alice", "m")
        assert await reg.get_model("alice", "m") is None
        assert (await reg.create_model("alice", "m", "public")).run_count == 0
        with pytest.raises(NotFound):
            await reg.add_version(_version("b" * 64, "alice/nope"))

    run(redis_url, go)


def test_pages_merge_public_and_own_private_in_order(redis_url):
    async def go(reg: Registry, r):
        expected = []
        for i in range(57):
            owner = ("alice", "bob")[i % 2]
            vis = "public" if i % 3 else "private"
            await reg.create_model(owner, f"m{i:03d}", vis)
            if vis == "public" or owner == "alice":
                expected.append(f"{owner}/m{i:03d}")
        for desc in (True, False):
            for limit in (1, 7, 100):
                seen, pages = await _all_pages(reg, "alice", MODEL_CREATED, desc, limit)
                assert seen == (expected[::-1] if desc else expected)
                assert pages == max(1, -(-len(expected) // limit))
        # a filter that rejects most rows still fills pages and ends
        seen, _ = await _all_pages(reg, "alice", MODEL_CREATED, True, 3, keep=lambda m: m.name.endswith("7"))
        assert seen == [e for e in expected[::-1] if e.endswith("7")]

    run(redis_url, go)


def test_ties_on_score_are_broken_by_name(redis_url):
    async def go(reg: Registry, r):
        names = [f"t{i:02d}" for i in range(25)]
        for n in names:
            await reg.create_model("alice", n, "public")
        key = KEYS.models_sorted(MODEL_CREATED)
        await r.zadd(key, {f"alice/{n}": 1000.0 for n in names})  # every score the same
        for desc in (True, False):
            seen, _ = await _all_pages(reg, "bob", MODEL_CREATED, desc, 4)
            assert seen == sorted((f"alice/{n}" for n in names), reverse=desc)

    run(redis_url, go)


def test_latest_version_order_and_version_delete(redis_url):
    async def go(reg: Registry, r):
        for n in ("a", "b", "c"):
            await reg.create_model("alice", n, "public")
        await reg.add_version(_version("1" * 64, "alice/a"))
        await reg.add_version(_version("2" * 64, "alice/b"))
        await reg.add_version(_version("3" * 64, "alice/a"))
        seen, _ = await _all_pages(reg, "bob", LATEST_VERSION_CREATED, True, 100)
        assert seen == ["alice/a", "alice/b", "alice/c"]  # no version: last, newest model first
        seen, _ = await _all_pages(reg, "bob", LATEST_VERSION_CREATED, False, 100)
        assert seen == ["alice/c", "alice/b", "alice/a"]
        assert await reg.delete_version("alice", "a", "3" * 64)
        assert (await reg.get_model("alice", "a")).latest_version == "1" * 64
        assert await reg.get_version("3" * 64) is None and not await reg.version_live("3" * 64)
        assert await reg.model_and_version("alice", "a", "3" * 64) == (await reg.get_model("alice", "a"), False)
        seen, _ = await _all_pages(reg, "bob", LATEST_VERSION_CREATED, True, 100)
        assert seen == ["alice/b", "alice/a", "alice/c"]
        assert not await reg.delete_version("alice", "a", "3" * 64)
        assert not await reg.delete_version("alice", "b", "1" * 64)  # not a version of that model
        assert await reg.delete_version("alice", "a", "1" * 64)
        assert "latest_version" not in await reg.get_model("alice", "a")
        # a late replica's setup fields do not bring a deleted version back, and a re-push works
        await r.hset(KEYS.version("1" * 64), mapping={"setup_status": "succeeded"})
        assert await reg.get_version("1" * 64) is None
        v, created = await reg.add_version(_version("1" * 64, "alice/a"))
        assert created and v.model == "alice/a" and v.setup_status is None

    run(redis_url, go)


def test_indexes_are_built_for_models_registered_before_them(redis_url):
    async def go(reg: Registry, r):
        await reg.create_model("alice", "old", "public")
        await reg.add_version(_version("4" * 64, "alice/old"))
        await reg.create_model("alice", "secret", "private")
        for sort_by in (MODEL_CREATED, LATEST_VERSION_CREATED):
            await r.delete(KEYS.models_sorted(sort_by), KEYS.models_sorted(sort_by, "alice"))
        fresh = Registry(r, KEYS)
        assert (await _all_pages(fresh, "alice", LATEST_VERSION_CREATED, True, 10))[0] == \
            ["alice/old", "alice/secret"]
        assert (await _all_pages(fresh, "bob", MODEL_CREATED, True, 10))[0] == ["alice/old"]

    run(redis_url, go)


def test_live_predictions_of_a_version(redis_url):
    async def go(reg: Registry, r):
        store = PredictionStore(r, KEYS, ttl_s=60)
        now = time.time()
        for pid, vid in (("p1", "v1"), ("p2", "v1"), ("p3", "v2")):
            await store.create(Prediction(id=pid, account="alice", model="a/b", version=vid, status="starting",
                                          created_at="t", created_ts=now), now + 30)
        await store.transition("p2", Status.PROCESSING, heartbeat_deadline=now + 30)
        assert sorted(await store.live_of_version("v1")) == ["p1", "p2"]
        await store.transition("p1", Status.CANCELED)
        assert await store.live_of_version("v1") == ["p2"]
        await store.transition("p2", Status.SUCCEEDED)
        assert await store.live_of_version("v1") == [] and await store.live_of_version("v2") == ["p3"]

    run(redis_url, go)


def test_tokens_are_revoked_rotated_and_replaced_when_the_configured_one_changes(redis_url):
    async def go(reg: Registry, r):
        first = await reg.create_account("ann")
        second = await reg.create_account("ann")
        assert (await reg.account_for_token(first)).username == "ann"
        assert await reg.revoke_token(first) == "ann"
        assert await reg.account_for_token(first) is None
        assert (await reg.account_for_token(second)).username == "ann"  # only that one
        assert await reg.revoke_token(first) is None

        fresh = await reg.rotate_tokens("ann")
        assert await reg.account_for_token(second) is None
        assert (await reg.account_for_token(fresh)).username == "ann"
        with pytest.raises(NotFound):
            await reg.rotate_tokens("nobody")

        # `vendo up` with VENDO_API_TOKEN=old, then with VENDO_API_TOKEN=new
        await reg.configure_token("op", "old-token", roles=("admin",))
        await reg.configure_token("op", "old-token", roles=("admin",))  # a restart: still good
        assert (await reg.account_for_token("old-token")).roles == ["admin"]
        await reg.configure_token("op", "new-token", roles=("admin",))
        assert await reg.account_for_token("old-token") is None
        assert (await reg.account_for_token("new-token")).username == "op"
        # tokens are kept only as digests
        assert not [k async for k in r.scan_iter(match="*new-token*")]
        assert "new-token" not in str(await r.hgetall(KEYS.account("op")))

    run(redis_url, go)


def test_roles_are_granted_and_revoked(redis_url):
    async def go(reg: Registry, r):
        await reg.create_account("ann")
        assert (await reg.get_account("ann")).roles == []
        assert await reg.grant("ann", "push") == ["push"]
        assert (await reg.get_account("ann")).has("push")
        assert await reg.grant("ann", "push", revoke=True) == []
        with pytest.raises(NotFound):
            await reg.grant("nobody", "push")
        from vendo_core.errors import InvalidRequest

        with pytest.raises(InvalidRequest):
            await reg.grant("ann", "root")

    run(redis_url, go)


def test_a_package_is_in_use_until_its_last_version_is_deleted(redis_url):
    async def go(reg: Registry, r):
        for ref in ("alice/a", "bob/b"):
            await reg.create_model(*ref.split("/"), "public")
        shared = "d" * 64
        await reg.add_version(_version("1" * 64, "alice/a").model_copy(update={"package_digest": shared}))
        await reg.add_version(_version("2" * 64, "bob/b").model_copy(update={"package_digest": shared}))
        assert await reg.package_in_use(shared)
        deleted = await reg.delete_version("alice", "a", "1" * 64)
        assert deleted.package_digest == shared
        assert await reg.package_in_use(shared)  # bob's version has the same contents
        await reg.delete_version("bob", "b", "2" * 64)
        assert not await reg.package_in_use(shared)
        async with reg.package_lock(shared):
            assert await r.exists(KEYS.package_lock(shared))
        assert not await r.exists(KEYS.package_lock(shared))

    run(redis_url, go)


def test_named_expiring_tokens_listed_and_revoked_by_id_with_a_message_to_every_router(redis_url):
    async def go(reg: Registry, r):
        await reg.create_account("ann")
        pubsub = r.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(KEYS.auth_channel())
        rec, token = await reg.create_token("ann", name="laptop")
        assert rec.id.startswith("tok_") and rec.prefix == token[:7] and rec.name == "laptop"
        assert token not in str(await r.hgetall(KEYS.token(token_digest(token))))  # stored hashed
        assert (await reg.account_for_token(token)).username == "ann"
        listed = {t.id: t for t in await reg.list_tokens("ann")}
        assert listed[rec.id].last_used_at is not None and len(listed) == 2  # with the first token

        _, expired = await reg.create_token("ann", expires_at="2020-01-01T00:00:00Z")
        assert await reg.account_for_token(expired) is None
        with pytest.raises(InvalidRequest):
            await reg.create_token("ann", expires_at="soon")
        with pytest.raises(NotFound):
            await reg.create_token("nobody")

        assert (await reg.revoke_token_id(rec.id)).name == "laptop"
        assert await reg.account_for_token(token) is None
        assert await reg.revoke_token_id(rec.id) is None
        assert not await r.exists(KEYS.token(token_digest(token)))  # nothing re-created by a late use
        seen = []
        for _ in range(20):  # the subscribe confirmation comes back as None first
            msg = await pubsub.get_message(timeout=0.5)
            if msg is not None:
                seen.append(msg["data"])
            if token_digest(token) in seen:
                break
        assert token_digest(token) in seen
        await pubsub.aclose()

    run(redis_url, go)


def test_disabled_accounts_and_organization_members(redis_url):
    async def go(reg: Registry, r):
        token = await reg.create_account("ann")
        await reg.create_account("acme", kind="organization")
        assert await reg.set_membership("acme", "ann") == ["ann"]
        acct = await reg.account_for_token(token)
        assert acct.orgs == ["acme"] and acct.acts_for("acme") and not acct.acts_for("other")
        with pytest.raises(NotFound):
            await reg.set_membership("ann", "acme")  # ann is no organization
        assert await reg.set_membership("acme", "ann", member=False) == []
        assert (await reg.account_for_token(token)).orgs == []

        assert (await reg.update_account("ann", disabled=True)).disabled
        assert await reg.account_for_token(token) is None
        assert await reg.get_account("ann") is not None  # the account and its data stay
        await reg.update_account("ann", disabled=False)
        assert (await reg.account_for_token(token)).username == "ann"

    run(redis_url, go)
