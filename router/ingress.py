"""The router ingress deployment: the FastAPI app under Ray Serve."""

from __future__ import annotations

import logging

from ray import serve

from router.http import create_app, set_runtime

app = create_app()


@serve.ingress(app)
class Router:
    async def __init__(self, settings: dict, redis_url: str):
        from cluster.serve_apps import version_app_builder
        from cluster.settings import Settings
        from router.runtime import Runtime

        logging.basicConfig(level=logging.INFO)
        s = Settings(**settings)
        self.rt = Runtime(s, redis_url, version_app_builder(settings, redis_url))
        set_runtime(self.rt)
        self.rt.start_background()

    def check_health(self) -> None:
        return None
