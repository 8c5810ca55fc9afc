"""The router ingress deployment: one runtime per replica, the FastAPI app built over it, and the
same services as methods for Python callers inside the cluster (`router.handle_api`)."""

from __future__ import annotations

from ray import serve

from router.app import create_app
from router.handle_api import HandleAPI
from router.runtime import Runtime
from router.serve_apps import version_app_builder
from router.serve_fixes import fix_cold_push
from vendo_core import logctx
from vendo_core.settings import Settings


@serve.ingress()
class Router:
    async def __init__(self, settings: dict, redis_url: str):
        logctx.install()  # vendo's lines go where Serve's go, in the deployment's encoding
        s = Settings(**settings)
        if s.serve_cold_push:  # before this process makes its first handle to a model's app
            fix_cold_push()
        self.rt = Runtime.connect(s, redis_url, version_app_builder(settings, redis_url))
        self.rt.start_background()
        self.api = HandleAPI(self.rt)

    def __serve_build_asgi_app__(self):
        return create_app(self.rt)

    def check_health(self) -> None:
        return None

    # the Python API: `serve.get_app_handle("vendo").create.remote(token, "owner/name", {...})`

    async def create(self, token: str, ref: str, input: dict | None = None, **options) -> dict:
        return await self.api.create(token, ref, input, **options)

    async def wait(self, token: str, pid: str, timeout_s: float = 60.0, **options) -> dict:
        return await self.api.wait(token, pid, timeout_s, **options)

    async def get(self, token: str, pid: str, **options) -> dict:
        return await self.api.get(token, pid, **options)

    async def list(self, token: str, cursor: str | None = None, source: str | None = None) -> dict:
        return await self.api.list(token, cursor, source)

    async def cancel(self, token: str, pid: str, **options) -> dict:
        return await self.api.cancel(token, pid, **options)

    async def batch_report(self, token: str, batch_id: str, report: dict) -> dict:
        return await self.api.batch_report(token, batch_id, report)

    async def batch_get(self, token: str, batch_id: str) -> dict:
        return await self.api.batch_get(token, batch_id)

    async def stream(self, token: str, pid: str, last_id: str = "0-0"):
        async for event in self.api.stream(token, pid, last_id):
            yield event
