"""The delivery deployment: signed file links served from storage, as a Serve app of its own at
`/v1/storage` (Serve's proxy routes the longest prefix, so these requests never reach the router).
It holds the object store and the link signer, nothing else: no Redis, no accounts."""

from __future__ import annotations

from fastapi import FastAPI
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from router.app import http_error, vendo_error
from router.routes import storage
from vendo_core import logctx
from vendo_core.errors import VendoError
from vendo_core.settings import Settings
from vendo_core.storage import ObjectStore, open_store

DELIVERY_APP = "vendo-files"


def delivery_asgi(objects: ObjectStore) -> FastAPI:
    app = FastAPI(title="vendo files", redirect_slashes=False, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.objects = objects
    app.add_exception_handler(VendoError, vendo_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.include_router(storage.mounted)
    return app


@serve.ingress()
class Delivery:
    def __init__(self, settings: dict):
        logctx.install()
        self.objects = open_store(Settings(**settings))

    def __serve_build_asgi_app__(self):
        return delivery_asgi(self.objects)

    def check_health(self) -> None:
        return None
