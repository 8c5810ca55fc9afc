"""A deleted deployment's Serve app is removed even when the router that deleted it died first:
the deletion is remembered in Redis and the reconcile loop of any router finishes it (real Redis,
the app manager faked)."""

from __future__ import annotations

import asyncio
import os

from router.services.deployments import DeploymentService
from router.services.resolve import Resolver
from tests.redisdb import flush, private_db
from tests.unit.fakes import FakeApps, FakeRegistry
from vendo_core.hardware import load_hardware
from vendo_core.ids import deployment_app_name
from vendo_core.keys import Keys
from vendo_core.redisconn import connect

DB = int(os.environ.get("VENDO_TEST_CLEANUP_DB", "6"))


class RecordingApps(FakeApps):
    def __init__(self, running: set[str]):
        super().__init__(None)
        self.running = set(running)
        self.deleted: list[str] = []

    async def running_apps(self) -> set[str]:
        return set(self.running)

    async def delete(self, app: str) -> None:
        self.deleted.append(app)
        self.running.discard(app)


def test_reconcile_removes_the_apps_of_deployments_deleted_by_a_dead_router():
    url = private_db(DB)

    async def go():
        r = connect(url)
        keys = Keys("vendo:")
        # two deletions a router recorded and died before finishing; one deployment was made again
        await r.sadd(keys.deployments_deleted(), "alice/gone", "alice/back")
        await r.hset(keys.deployment("alice", "back"), mapping={
            "owner": "alice", "name": "back", "model": "alice/m", "version": "v" * 64, "hardware": "cpu",
            "min_instances": "0", "max_instances": "1"})
        gone, back = deployment_app_name("alice", "gone"), deployment_app_name("alice", "back")
        apps = RecordingApps({gone, back, "v-0123456789abcdef0123"})
        svc = DeploymentService(r, keys, apps, Resolver(FakeRegistry()), skus=load_hardware)
        await svc.reconcile()
        assert apps.deleted == [gone]
        assert await r.smembers(keys.deployments_deleted()) == set()
        await svc.reconcile()  # nothing left to do, and nothing else is touched
        assert apps.deleted == [gone]
        await r.aclose()

    try:
        asyncio.run(go())
    finally:
        flush(url)
