"""vendo from Python code running inside the Ray cluster (a task, an actor, a job driver, a Serve
deployment): the router's methods through a Serve handle, with no HTTP hop, wrapped in the
`replicate` client's names.

    from cluster.handle import Vendo

    @ray.remote
    def caption(url: str) -> str:
        return Vendo(token).run("vendo/hello-world", input={"text": url})

`Vendo(token).run(ref, input=…)` returns the output as `replicate.run` does (raising `ModelError`
for a failed prediction), `.stream(ref, input=…)` yields output chunks as they come,
`.predictions.create/get/list/cancel` return `Prediction` records with `reload()`, `wait()` and
`cancel()`. Async code (a Serve deployment) uses `async_run`, `async_stream` and the
`predictions.async_*` methods. Every prediction is a normal record (`source` "handle"): it shows
in the API, the CLI, webhooks and billing like any other. Outside the cluster, use the official
`replicate` client over HTTP."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

from pydantic import PrivateAttr

from router import wire
from vendo_core.errors import VendoError
from vendo_core.grpcmsg import GRPC_MAX_MESSAGE, fits_grpc

ROUTER_APP = "vendo"
WAIT_STEP_S = 60.0
TERMINAL = ("succeeded", "failed", "canceled")


class ModelError(Exception):
    """The model failed the prediction (as `replicate.exceptions.ModelError`)."""

    def __init__(self, prediction: Prediction):
        self.prediction = prediction
        super().__init__(prediction.error or f"prediction {prediction.id} {prediction.status}")


class Prediction(wire.Prediction):
    """A prediction as the API shows it, with the `replicate` client's methods."""

    _vendo: Vendo | None = PrivateAttr(default=None)

    def _bind(self, vendo: Vendo) -> Prediction:
        self._vendo = vendo
        return self

    def _take(self, fresh: Prediction) -> Prediction:
        for name in type(self).model_fields:
            setattr(self, name, getattr(fresh, name))
        return self

    def reload(self) -> Prediction:
        return self._take(self._vendo.predictions.get(self.id))

    def wait(self) -> Prediction:
        while self.status not in TERMINAL:
            self._take(self._vendo.predictions._wait(self.id))
        return self

    def cancel(self) -> Prediction:
        return self._take(self._vendo.predictions.cancel(self.id))

    async def async_wait(self) -> Prediction:
        while self.status not in TERMINAL:
            self._take(await self._vendo.predictions._async_wait(self.id))
        return self


def _unwrap(e: Exception) -> Exception:
    """A VendoError raised by the router reaches the caller wrapped by Ray: the error itself."""
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, VendoError) else e


class Predictions:
    def __init__(self, vendo: Vendo):
        self._v = vendo

    def _record(self, data: dict[str, Any]) -> Prediction:
        return Prediction.model_validate(data)._bind(self._v)

    def _call(self, method: str, *args, **kwargs) -> dict[str, Any]:
        try:
            return self._v.call_sync(method, *args, **kwargs)
        except Exception as e:  # noqa: BLE001 - re-raised, unwrapped
            raise _unwrap(e) from None

    async def _async_call(self, method: str, *args, **kwargs) -> dict[str, Any]:
        try:
            return await self._v.call(method, *args, **kwargs)
        except Exception as e:  # noqa: BLE001 - re-raised, unwrapped
            raise _unwrap(e) from None

    @staticmethod
    def _target(model: str | None, version: str | None, deployment: str | None) -> tuple[str, dict]:
        given = [x for x in (model, version, deployment) if x]
        if len(given) != 1:
            raise ValueError("name exactly one of model (owner/name[:version]), version or deployment")
        return given[0], {"deployment": True} if deployment else {}

    def create(self, model: str | None = None, input: dict[str, Any] | None = None, *,
               version: str | None = None, deployment: str | None = None, webhook: str | None = None,
               webhook_events_filter: list[str] | None = None, wait: float | None = None) -> Prediction:
        """Start a prediction (with `wait`, hold up to that many seconds for it to finish)."""
        ref, opts = self._target(model, version, deployment)
        return self._record(self._call("create", ref, input, webhook=webhook, wait_s=wait,
                                       webhook_events_filter=webhook_events_filter, **opts))

    def get(self, id: str) -> Prediction:
        return self._record(self._call("get", id))

    def list(self, cursor: str | None = None) -> wire.Page[Prediction]:
        try:  # a page of records can be larger than a gRPC message: over actor calls
            page = self._v.handle.list.remote(self._v.token, cursor).result()
        except Exception as e:  # noqa: BLE001 - re-raised, unwrapped
            raise _unwrap(e) from None
        return wire.Page[Prediction](results=[self._record(p) for p in page["results"]], next=page["next"])

    def cancel(self, id: str) -> Prediction:
        return self._record(self._call("cancel", id))

    def _wait(self, id: str) -> Prediction:
        return self._record(self._call("wait", id, WAIT_STEP_S))

    async def async_create(self, model: str | None = None, input: dict[str, Any] | None = None, *,
                           version: str | None = None, deployment: str | None = None,
                           webhook: str | None = None, webhook_events_filter: list[str] | None = None,
                           wait: float | None = None) -> Prediction:
        ref, opts = self._target(model, version, deployment)
        return self._record(await self._async_call("create", ref, input, webhook=webhook, wait_s=wait,
                                                   webhook_events_filter=webhook_events_filter, **opts))

    async def async_get(self, id: str) -> Prediction:
        return self._record(await self._async_call("get", id))

    async def async_cancel(self, id: str) -> Prediction:
        return self._record(await self._async_call("cancel", id))

    async def _async_wait(self, id: str) -> Prediction:
        return self._record(await self._async_call("wait", id, WAIT_STEP_S))


class Vendo:
    """vendo inside the cluster. `token` defaults to `VENDO_API_TOKEN`, then `REPLICATE_API_TOKEN`.
    Unary calls go to the router over Serve's gRPC transport (`_by_reference=False`: a batch job
    keeps pace with HTTP on it, not on Ray's actor calls; benchmarks/results/findings.md) unless
    their arguments are too large for its messages; an answer too large for one is fetched over
    actor calls. `grpc=False` keeps every call on actor calls."""

    def __init__(self, token: str | None = None, *, app: str = ROUTER_APP, grpc: bool = True):
        self.token = token or os.environ.get("VENDO_API_TOKEN") or os.environ.get("REPLICATE_API_TOKEN") or ""
        self.app = app
        self.grpc = grpc
        self._handle = self._by_value = None
        self.predictions = Predictions(self)

    @property
    def handle(self):
        """The router's handle over Ray's actor calls (streaming calls, and any argument size)."""
        if self._handle is None:
            from ray import serve  # heavy: only a caller inside the cluster needs it

            self._handle = serve.get_app_handle(self.app)
        return self._handle

    def handle_for(self, payload: Any):
        """The router's handle for a unary call with arguments `payload`: over gRPC when they fit
        a message (`vendo_core.grpcmsg`, the rule the router keeps for model replicas)."""
        if not self.grpc or not fits_grpc(payload):
            return self.handle
        if self._by_value is None:
            self._by_value = self.handle.options(_by_reference=False)
        return self._by_value

    def _route(self, args: tuple, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """(handle, keyword arguments) for a unary call: over gRPC, telling the router the largest
        answer it may send, when the arguments fit a message."""
        h = self.handle_for((args, kwargs))
        return (h, kwargs) if h is self.handle else (h, {**kwargs, "reply_max": GRPC_MAX_MESSAGE})

    async def call(self, method: str, *args, **kwargs) -> dict[str, Any]:
        """The router's unary `method` (`create`, `get`, `wait`, `cancel`) with this token: its
        answer as the API's JSON (a record too large for gRPC fetched over an actor call), or the
        router's exception as Ray raises it."""
        h, kw = self._route(args, kwargs)
        got = await getattr(h, method).remote(self.token, *args, **kw)
        if got.get(wire.REPLY_TOO_LARGE):
            got = await self.handle.get.remote(self.token, got["id"])
        return got

    def call_sync(self, method: str, *args, **kwargs) -> dict[str, Any]:
        """`call` from synchronous code."""
        h, kw = self._route(args, kwargs)
        got = getattr(h, method).remote(self.token, *args, **kw).result()
        if got.get(wire.REPLY_TOO_LARGE):
            got = self.handle.get.remote(self.token, got["id"]).result()
        return got

    def run(self, ref: str, input: dict[str, Any] | None = None, **options) -> Any:
        """The output of a prediction of `ref` (`owner/name`, `owner/name:version`, a version id),
        once it finishes; `ModelError` if it failed."""
        p = self.predictions.create(ref, input, wait=WAIT_STEP_S, **options).wait()
        if p.status == "failed":
            raise ModelError(p)
        return p.output

    async def async_run(self, ref: str, input: dict[str, Any] | None = None, **options) -> Any:
        p = await (await self.predictions.async_create(ref, input, wait=WAIT_STEP_S, **options)).async_wait()
        if p.status == "failed":
            raise ModelError(p)
        return p.output

    def stream(self, ref: str, input: dict[str, Any] | None = None, **options) -> Iterator[str]:
        """Output chunks as the model yields them (each as the SSE stream's `output` data)."""
        p = self.predictions.create(ref, input, **options)
        try:
            for ev in self.handle.options(stream=True).stream.remote(self.token, p.id):
                if ev["event"] == "output":
                    yield ev["data"]
                elif ev["event"] == "done":
                    break
        except Exception as e:  # noqa: BLE001 - re-raised, unwrapped
            raise _unwrap(e) from None
        if p.reload().status == "failed":
            raise ModelError(p)

    async def async_stream(self, ref: str, input: dict[str, Any] | None = None, **options) -> AsyncIterator[str]:
        p = await self.predictions.async_create(ref, input, **options)
        async for ev in self.handle.options(stream=True).stream.remote(self.token, p.id):
            if ev["event"] == "output":
                yield ev["data"]
            elif ev["event"] == "done":
                break
        if (await self.predictions.async_get(p.id)).status == "failed":
            raise ModelError(p)


__all__ = ["ModelError", "Prediction", "Vendo"]
