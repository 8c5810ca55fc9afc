"""A small HTTP client for the CLI: finds the cluster from VENDO_URL / VENDO_API_TOKEN or from
what `vendo up` wrote in the data directory."""

from __future__ import annotations

import os

import httpx

from cluster.up import first_token, read_state
from vendo_core.settings import Settings


class ClusterNotFound(Exception):
    pass


class Client:
    def __init__(self, base_url: str, token: str, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout,
                                 headers={"Authorization": f"Bearer {token}", "User-Agent": "vendo-cli"})

    @classmethod
    def from_env(cls, settings: Settings | None = None) -> Client:
        settings = settings or Settings()
        url = os.environ.get("VENDO_URL")
        if not url:
            state = read_state(settings)
            if not state:
                raise ClusterNotFound(
                    f"no running cluster: set VENDO_URL, or run `vendo up` (data dir {settings.resolved_data_dir()})")
            url = state["url"]
        token = os.environ.get("VENDO_API_TOKEN") or first_token(settings)
        return cls(url, token)

    def request(self, method: str, path: str, **kw) -> httpx.Response:
        resp = self.http.request(method, path, **kw)
        if resp.status_code >= 400:
            raise ApiError(resp)
        return resp

    def json(self, method: str, path: str, **kw):
        return self.request(method, path, **kw).json()


class ApiError(Exception):
    def __init__(self, resp: httpx.Response):
        try:
            body = resp.json()
            detail = body.get("detail") or body.get("title") or resp.text
        except ValueError:
            detail = resp.text
        super().__init__(f"HTTP {resp.status_code}: {detail}")
        self.status = resp.status_code
