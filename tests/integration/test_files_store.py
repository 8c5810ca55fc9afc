"""Files and retention on a real Redis with `file://` storage (no Ray): records and literal keys,
signed links served in place, expiry, localizing inputs for a replica, and the retention purge."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

import pytest

from router.retention import Retention
from tests.redisdb import flush, private_db
from vendo_core.errors import InvalidInput, NotFound
from vendo_core.files import Files, Upload
from vendo_core.keys import Keys
from vendo_core.records import Account, Prediction
from vendo_core.redisconn import connect
from vendo_core.signing import LinkSigner
from vendo_core.status import Status
from vendo_core.storage import FileStore
from vendo_core.store import PredictionStore

DB = int(os.environ.get("VENDO_TEST_FILES_DB", "9"))
ALICE, BOB = Account(username="alice"), Account(username="bob")


@pytest.fixture
def env(tmp_path):
    url = private_db(DB)
    objects = FileStore(tmp_path / "objects", LinkSigner(b"k" * 32))

    def make(expiry_s: int = 3600):
        r = connect(url)
        return Files(r, Keys("vendo:"), objects, expiry_s=expiry_s, signer=objects.signer), r

    yield make, objects, tmp_path
    flush(url)


def _upload(tmp: Path, data: bytes, name: str = "a.txt") -> Upload:
    path = tmp / f"upload-{time.monotonic_ns()}"
    path.write_bytes(data)
    return Upload(path, name, "text/plain", len(data), hashlib.sha256(data).hexdigest(),
                  hashlib.md5(data).hexdigest(), {"metadata": '{"k": "v"}'})


def run(coro):
    return asyncio.run(coro)


def test_create_read_sign_delete(env):
    make, objects, tmp = env

    async def go():
        files, r = make()
        rec = await files.create(ALICE, _upload(tmp, b"hello", "../../etc/x.txt"))
        fid = rec.id
        assert rec.name == "x.txt" and rec.metadata == {"k": "v"} and rec.size == 5
        assert await r.exists(f"vendo:file:{fid}") == 1
        assert await r.zscore("vendo:account:alice:files", fid) is not None
        assert await r.zscore("vendo:files:expiring", fid) == pytest.approx(time.time() + 3600, abs=5)
        assert await r.ttl(f"vendo:file:{fid}") > 3500
        assert objects.get_bytes(f"files/{fid}") == b"hello"

        assert (await files.get(ALICE, fid)).id == fid
        with pytest.raises(NotFound):
            await files.get(BOB, fid)
        assert [f.id for f in (await files.list(ALICE, None))[0]] == [fid]
        assert (await files.list(BOB, None))[0] == []

        link = await files.download_url(rec, "http://h", 60)
        q = dict(p.split("=", 1) for p in link.split("?", 1)[1].split("&"))
        path, got, temporary = await files.open_signed(fid, q["owner"], int(q["expiry"]), q["signature"])
        assert path.read_bytes() == b"hello" and not temporary and got.content_type == "text/plain"
        for owner, expiry, sig in [("bob", q["expiry"], q["signature"]), ("alice", int(q["expiry"]) + 1, q["signature"]),
                                   ("alice", q["expiry"], "x" + q["signature"])]:
            with pytest.raises(NotFound):
                await files.open_signed(fid, owner, int(expiry), sig)
        past = int(time.time()) - 1
        sig = files.signer.sign("alice", fid, past)
        with pytest.raises(NotFound):
            await files.open_signed(fid, "alice", past, sig)

        with pytest.raises(NotFound):
            await files.delete(BOB, fid)
        await files.delete(ALICE, fid)
        assert not objects.exists(f"files/{fid}")
        assert await r.exists(f"vendo:file:{fid}", "vendo:account:alice:files", "vendo:files:expiring") == 0

    run(go())


def test_expired_files_vanish_and_are_swept(env):
    make, objects, tmp = env

    async def go():
        files, r = make(expiry_s=1)
        fid = (await files.create(ALICE, _upload(tmp, b"brief"))).id
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                await files.get(ALICE, fid)
            except NotFound:
                break
            await asyncio.sleep(0.1)
        with pytest.raises(NotFound):
            await files.get(ALICE, fid)
        assert (await files.list(ALICE, None))[0] == []
        assert await files.sweep() == 1
        assert not objects.exists(f"files/{fid}")
        assert await r.zcard("vendo:files:expiring") == 0 and await r.zcard("vendo:account:alice:files") == 0

    run(go())


def test_inputs_checked_at_create_and_localized_for_the_replica(env):
    make, objects, tmp = env

    async def go():
        files, r = make()
        mine = (await files.create(ALICE, _upload(tmp, b"mine", "m.txt"))).id
        theirs = (await files.create(BOB, _upload(tmp, b"theirs", "t.txt"))).id
        base = "http://router:8000/v1/files/"
        ok = {"doc": base + mine, "many": [base + mine, "https://example.com/x.png"], "n": 3}
        await files.check_inputs(ALICE, ok, (base,))
        for bad in (base + theirs, base + "a" * 26, base + "nonsense"):
            with pytest.raises(InvalidInput) as e:
                await files.check_inputs(ALICE, {"text": "x", "img": [bad]}, (base,))
            assert e.value.field == "img"
        # other hosts are not ours to check: they are downloaded the ordinary way
        await files.check_inputs(ALICE, {"img": "https://api.replicate.com/v1/files/" + theirs}, (base,))

        await r.hset("vendo:prediction:p1", mapping={"account": "alice"})
        assert await files.prediction_owner("p1") == "alice"
        dest = tmp / "inputs"
        local = await files.localize("alice", {**ok, "other": base + theirs}, dest)
        assert set(local) == {base + mine}
        assert Path(local[base + mine]).read_bytes() == b"mine" and local[base + mine].endswith("/m.txt")

    run(go())


def test_terminal_transition_schedules_the_purge(env):
    make, objects, tmp = env

    async def go():
        files, r = make()
        keys = Keys("vendo:")
        store = PredictionStore(r, keys, ttl_s=3600, retention_s=3600)
        now = time.time()
        await store.create(Prediction(id="p1", account="alice", model="a/b", version="v" * 64, status="starting",
                                      input={"x": 1}, created_at="t", created_ts=now, iterator=True), now + 30)
        await store.transition("p1", Status.PROCESSING, {"started_at": "t"}, heartbeat_deadline=now + 30)
        await store.append_logs("p1", "working\n")
        await store.append_output("p1", "vendo+file://predictions/p1/out.txt", "u")
        objects.put_bytes("predictions/p1/out.txt", b"out")
        objects.put_bytes("predictions/p10/keep.txt", b"another prediction's")
        ok, _ = await store.transition("p1", Status.SUCCEEDED, {"output": ["x"], "completed_at": "t"},
                                       retention_s=5)
        assert ok
        assert await r.zscore("vendo:retention", "p1") == pytest.approx(time.time() + 5, abs=2)
        # nothing is due yet; the sweep leaves it alone
        retention = Retention(r, keys, objects)
        assert await retention.sweep() == 0
        assert (await store.get("p1")).output == ["x"]

        await r.zadd("vendo:retention", {"p1": time.time() - 1})
        assert await retention.sweep() == 1
        rec = await store.get("p1")
        assert rec.data_removed is True and rec.input == {} and rec.output is None and rec.logs == ""
        assert rec.status == "succeeded" and rec.completed_at == "t"
        assert not objects.exists("predictions/p1/out.txt") and objects.exists("predictions/p10/keep.txt")
        assert await r.zcard("vendo:retention") == 0
        assert await r.llen("vendo:prediction:p1:output") == 0
        assert [e for _, e, _ in await store.read_events("p1", "0-0", None)] == ["done"]
        assert 0 < await r.ttl("vendo:prediction:p1:events") <= 3600
        # no retention: nothing scheduled
        await store.create(Prediction(id="p2", account="alice", model="a/b", version="v" * 64, status="starting",
                                      input={}, created_at="t", created_ts=now), now + 30)
        await store.transition("p2", Status.CANCELED, {"completed_at": "t"}, retention_s=0)
        assert await r.zscore("vendo:retention", "p2") is None

    run(go())
