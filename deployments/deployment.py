"""Serve's class for a model version's deployment. Kept light on purpose: Serve imports this
module in a fresh replica process, and the constructor starts the model's worker interpreter
(`ModelWorker.prestart`: Python, Cog and vendo's worker, ~0.2–0.3 s) before it imports the platform
side (`deployments.replica`: redis-py, the store, the storage client, ~0.2 s), so the two load at
once on a cold start instead of one after the other."""

from __future__ import annotations

import time
from typing import Any

from deployments.supervisor import ModelWorker, WorkerOptions
from vendo_core import logctx
from vendo_core.settings import Settings


class ModelReplica:
    """One replica of a model version: a worker process for the model's code, and the platform
    side (`deployments.replica.Replica`) that runs predictions through it."""

    async def __init__(self, version: dict[str, Any], settings: dict[str, Any], redis_url: str):
        born = time.time()
        logctx.install()
        s = Settings(**settings)
        worker = ModelWorker(None, WorkerOptions.of(s, gpu_fraction=float(version.get("num_gpus") or 0)),
                             mode=version.get("mode") or "predict", born=born)
        await worker.prestart()
        from deployments.replica import Replica  # deliberately late: see the module's docstring

        self.replica = Replica(version, s, redis_url, born)
        await self.replica.open(version, worker)

    async def predict(self, request: dict[str, Any]) -> dict[str, Any]:
        """Run prediction (or training) `request["id"]`: `Replica.predict`."""
        return await self.replica.predict(request)

    def check_health(self) -> None:
        # a failed setup keeps the replica up so predictions fail with its error, as Cog does
        return None

    async def __del__(self) -> None:
        replica = getattr(self, "replica", None)  # None: the constructor failed; the worker exits with us
        if replica is not None:
            await replica.close()
