"""Bare Ray Serve doing the same hops as vendo, for comparison: a FastAPI ingress deployment that
calls a model deployment by handle. The model deployment loads the same Cog project the same way
a vendo replica does (`deployments.cog_runtime`), with no Redis, no storage and no prediction
record: what anyone would write to serve one Cog model on Ray Serve by hand.

No `from __future__ import annotations` here: FastAPI must see `Request` itself to inject it."""

import asyncio
import concurrent.futures
import time
from typing import Any

from fastapi import FastAPI, Request
from ray import serve

api = FastAPI(title="bare Serve")


class BareModel:
    """One Cog predictor, set up in the constructor, called with a prediction's input."""

    async def __init__(self, project_dir: str, slots: int | None = None):
        from deployments import cog_runtime

        self.constructed_at = time.time()
        # `slots` < max_ongoing_requests: the extra requests wait here, already routed (experiment)
        self.slots = asyncio.Semaphore(slots) if slots else None
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="predict")
        self.predictor = await asyncio.to_thread(cog_runtime.load, project_dir)
        await self.predictor.asetup(self.pool)
        self.ready_at = time.time()

    async def __call__(self, payload: dict[str, Any]) -> dict[str, Any]:
        if self.slots is None:
            return await self._predict(payload)
        async with self.slots:
            return await self._predict(payload)

    async def _predict(self, payload: dict[str, Any]) -> dict[str, Any]:
        from deployments import cog_runtime

        p = self.predictor
        started = time.time()
        kwargs = cog_runtime.prepare_input(p, payload)
        if p.is_async:
            output = await p.call(kwargs)
        else:
            output = await asyncio.get_running_loop().run_in_executor(self.pool, p.call, kwargs)
        output = cog_runtime.encode_output(output, _no_files)
        return {"status": "succeeded", "output": output, "started_at": started, "completed_at": time.time(),
                "constructed_at": self.constructed_at, "ready_at": self.ready_at}


def _no_files(src: Any, filename: str) -> str:
    raise RuntimeError("the bare deployment has no storage for file outputs")


@serve.ingress(api)
class BareIngress:
    def __init__(self, model):
        self.model = model

    @api.post("/predictions")
    async def predict(self, request: Request) -> dict[str, Any]:
        body = await request.json()
        return await self.model.remote(body.get("input") or {})


def bare_app(project_dir: str, *, max_ongoing_requests: int, autoscaling_config: dict[str, Any],
             ray_actor_options: dict[str, Any], graceful_shutdown_timeout_s: float = 20.0,
             slots: int | None = None):
    """The Serve application: ingress (as vendo's router: no CPU reserved, 1000 in flight) and the
    model deployment with the options vendo would give this project's version."""
    model = serve.deployment(
        BareModel, name="model", ray_actor_options=ray_actor_options,
        max_ongoing_requests=max_ongoing_requests, max_queued_requests=-1,
        autoscaling_config=autoscaling_config, graceful_shutdown_timeout_s=graceful_shutdown_timeout_s,
        graceful_shutdown_wait_loop_s=1.0, health_check_period_s=10.0, health_check_timeout_s=30.0,
    ).bind(project_dir, slots)
    ingress = serve.deployment(BareIngress, name="ingress", num_replicas=1, ray_actor_options={"num_cpus": 0},
                               max_ongoing_requests=1000)
    return ingress.bind(model)
