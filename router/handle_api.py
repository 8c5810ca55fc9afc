"""The router app as a Python API for code inside the Ray cluster: `serve.get_app_handle("vendo")`
and its methods `create`, `wait`, `get`, `list`, `cancel` and `stream` (a streaming call), each
authenticated by an API token argument and answered with the REST API's JSON shapes. They call
the same services, with the same rules (rate limits, spend limits, validation, ownership), as the
HTTP routes; only the HTTP hop and its JSON encoding are gone. A prediction made here is a normal
record with `source` "handle" (or "batch", for `cluster.batch`). `cluster.handle.Vendo` is the
typed wrapper people use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from router import wire
from router.ratelimit import CREATES, REQUESTS
from router.runtime import Runtime
from vendo_core.errors import InvalidRequest, NotFound, Unauthenticated
from vendo_core.grpcmsg import approx_size
from vendo_core.ids import ModelRef
from vendo_core.records import SOURCES, Account

HANDLE_SOURCES = tuple(s for s in SOURCES if s in ("handle", "batch"))  # the sources this door may set
MAX_WAIT_S = 300.0  # one `wait` call holds at most this; the wrapper calls again


class HandleAPI:
    def __init__(self, rt: Runtime):
        self.rt = rt
        s = rt.settings
        self.base = s.self_url

    async def _account(self, token: str, bucket: str) -> Account:
        if not isinstance(token, str) or not token.strip():
            raise Unauthenticated()
        acct = await self.rt.account_for(token.strip())
        if acct is None:
            raise Unauthenticated()
        await self.rt.limiter.hit(token.strip(), bucket)
        return acct

    def _render(self, rec, *, as_starting: bool = False, reply_max: int | None = None) -> dict[str, Any]:
        """The record as the API shows it; with `reply_max` (a caller over Serve's gRPC transport,
        whose messages are capped), a stub saying it is larger than that, for the caller to get it
        over Ray's actor calls."""
        out = wire.prediction(rec, self.base, self.rt.url_for(self.base), as_starting=as_starting)
        if reply_max is not None and approx_size(out, reply_max) > reply_max:
            return {"id": out["id"], "status": out["status"], wire.REPLY_TOO_LARGE: True}
        return out

    async def create(self, token: str, ref: str, input: dict[str, Any] | None = None, *,
                     webhook: str | None = None, webhook_events_filter: list[str] | None = None,
                     wait_s: float | None = None, deployment: bool = False,
                     source: str = "handle", reply_max: int | None = None) -> dict[str, Any]:
        """A prediction of `ref` (`owner/name`: its latest version; `owner/name:version` or a version
        id; with `deployment`, the named deployment `owner/name`) on `input`."""
        account = await self._account(token, CREATES)
        if source not in HANDLE_SOURCES:
            raise InvalidRequest("source", f"must be one of {list(HANDLE_SOURCES)}")
        body: dict[str, Any] = {"input": {} if input is None else input}
        if webhook is not None:
            body["webhook"] = webhook
        if webhook_events_filter is not None:
            body["webhook_events_filter"] = webhook_events_filter
        if not isinstance(body["input"], dict):
            raise InvalidRequest("input", "must be an object")
        target: dict[str, Any]
        if not isinstance(ref, str):
            raise InvalidRequest("model", "expected owner/name[:version] or a version id")
        if deployment:
            target = {"deployment": ModelRef.parse(ref, field="deployment")}
        elif "/" in ref and ":" not in ref:
            target = {"model": ModelRef.parse(ref, field="model")}
        else:
            target = {"version": ref}
        wait = None if wait_s is None else max(0.0, min(float(wait_s), MAX_WAIT_S))
        rec = await self.rt.predictions.create(account, body, **target, source=source, wait_s=wait,
                                               file_url_prefixes=(f"{self.base}/v1/files/",), base=self.base)
        return self._render(rec, as_starting=not rec.done, reply_max=reply_max)

    async def wait(self, token: str, pid: str, timeout_s: float = 60.0, *,
                   reply_max: int | None = None) -> dict[str, Any]:
        """The prediction once it is terminal, or as it is after `timeout_s` (at most 300 s)."""
        account = await self._account(token, REQUESTS)
        await self.rt.predictions.get(account, pid)  # a 404 for what is not the caller's
        await self.rt.predictions.wait(pid, max(0.0, min(float(timeout_s), MAX_WAIT_S)))
        return self._render(await self.rt.predictions.get(account, pid), reply_max=reply_max)

    async def get(self, token: str, pid: str, *, reply_max: int | None = None) -> dict[str, Any]:
        account = await self._account(token, REQUESTS)
        return self._render(await self.rt.predictions.get(account, pid), reply_max=reply_max)

    async def list(self, token: str, cursor: str | None = None, source: str | None = None) -> dict[str, Any]:
        """One page, newest first: `{"results": [...], "next": cursor or None}`."""
        account = await self._account(token, REQUESTS)
        recs, nxt = await self.rt.predictions.list(account, cursor, source=source)
        return {"results": [self._render(r) for r in recs], "next": nxt, "previous": None}

    async def cancel(self, token: str, pid: str, *, reply_max: int | None = None) -> dict[str, Any]:
        account = await self._account(token, REQUESTS)
        return self._render(await self.rt.predictions.cancel(account, pid), reply_max=reply_max)

    async def batch_report(self, token: str, batch_id: str, report: dict[str, Any]) -> dict[str, Any]:
        """Create or update batch `batch_id` of the token's account with a job's progress."""
        account = await self._account(token, REQUESTS)
        return (await self._batches().save(account, batch_id, report)).model_dump()

    async def batch_get(self, token: str, batch_id: str) -> dict[str, Any]:
        account = await self._account(token, REQUESTS)
        return (await self._batches().get(account, batch_id)).model_dump()

    def _batches(self):
        if self.rt.batches is None:
            raise NotFound("Batch", "(no Redis)")
        return self.rt.batches

    async def stream(self, token: str, pid: str, last_id: str = "0-0") -> AsyncIterator[dict[str, str]]:
        """The prediction's events as the SSE stream has them (`output`, `logs`, `error`, `done`),
        each `{"event", "id", "data"}`, from the start (or after `last_id`) until `done`."""
        account = await self._account(token, REQUESTS)
        await self.rt.predictions.get(account, pid)
        url_for = self.rt.url_for(self.base)
        last = last_id
        while True:
            for eid, event, data in await self.rt.predictions.events(pid, last, 15_000):
                last = eid
                if event == "output":
                    data = wire.resolve_files(data, url_for)
                yield {"event": event, "id": eid, "data": data}
                if event == "done":
                    return
