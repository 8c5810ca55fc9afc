"""The router ingress deployment: one runtime per replica, and the FastAPI app built over it."""

from __future__ import annotations

from ray import serve

from router.app import create_app
from router.runtime import Runtime
from router.serve_apps import version_app_builder
from vendo_core import logctx
from vendo_core.settings import Settings


@serve.ingress()
class Router:
    async def __init__(self, settings: dict, redis_url: str):
        logctx.install()  # vendo's lines go where Serve's go, in the deployment's encoding
        self.rt = Runtime.connect(Settings(**settings), redis_url, version_app_builder(settings, redis_url))
        self.rt.start_background()

    def __serve_build_asgi_app__(self):
        return create_app(self.rt)

    def check_health(self) -> None:
        return None
