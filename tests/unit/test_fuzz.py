"""Schema-driven fuzzing (schemathesis, from the API's own OpenAPI document) of the routes that
read user input the most, in-process over fakes: no answer is ever a 500, and every error is
problem-details JSON."""

from __future__ import annotations

import asyncio

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from router.app import create_app
from router.runtime import Runtime
from tests.unit.fakes import FakeApps, FakeRegistry, FakeStore, NoLimits, replica
from tests.unit.test_app import SCHEMA, VID
from vendo_core.files import Files
from vendo_core.keys import Keys
from vendo_core.records import Version
from vendo_core.settings import Settings
from vendo_core.storage import open_store


def _app(tmp_dir: str):
    settings = Settings(data_dir=tmp_dir, redis_prefix="t:")
    store, registry = FakeStore(), FakeRegistry()

    async def seed() -> str:
        token = await registry.create_account("alice")
        await registry.create_model("alice", "echo", "public")
        await registry.add_version(Version(id=VID, model="alice/echo", openapi_schema=SCHEMA, package_key="p"))
        return token

    token = asyncio.run(seed())
    objects = open_store(settings)
    rt = Runtime(settings, store=store, registry=registry, objects=objects, apps=FakeApps(replica(store, "hi")),
                 files=Files(None, Keys("t:"), objects), limiter=NoLimits())
    return create_app(rt), token


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    return _app(str(tmp_path_factory.mktemp("fuzz")))


@pytest.mark.parametrize("path", ["/v1/predictions", "/v1/predictions/{pid}", "/v1/predictions/{pid}/stream"])
def test_prediction_reads_never_fail_with_a_500(api, path):
    app, token = api
    operation = schemathesis.openapi.from_asgi("/openapi.json", app)[path]["GET"]
    seen: list[int] = []

    @given(case=operation.as_strategy())
    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case):
        response = case.call(headers={"Authorization": f"Bearer {token}"})
        seen.append(response.status_code)
        assert response.status_code < 500, (case.query, case.path_parameters, response.text)
        if response.status_code >= 400:
            ctype = response.headers.get("content-type") or [""]
            ctype = ctype[0] if isinstance(ctype, list) else ctype
            assert ctype.startswith("application/problem+json"), response.text
            assert response.json()["status"] == response.status_code

    check()
    assert len(seen) >= 50  # it did fuzz
