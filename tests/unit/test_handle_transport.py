"""`cluster.handle.Vendo` picks the transport per call: Serve's gRPC transport for arguments that fit
its messages, with the router told how large an answer may be, and Ray's actor calls for larger
arguments and for an answer the router says is too large (fakes of Serve's handle)."""

from __future__ import annotations

import asyncio

from cluster.handle import Vendo
from router import wire
from vendo_core.grpcmsg import GRPC_MAX_MESSAGE


class Call:
    def __init__(self, handle: FakeHandle, method: str):
        self.handle, self.method = handle, method

    def remote(self, *args, **kwargs):
        self.handle.calls.append((self.method, args, kwargs))
        answer = self.handle.answer(self.method, args, kwargs)
        fut = asyncio.get_event_loop().create_future() if self.handle.use_async else None
        if fut is None:
            return type("Resp", (), {"result": lambda _self: answer})()
        fut.set_result(answer)
        return fut


class FakeHandle:
    """A router handle: `by_value` answers over "gRPC" (a stub when the record is larger than the
    caller's `reply_max`), otherwise the whole record."""

    def __init__(self, record: dict, by_value: bool = False, calls: list | None = None, use_async: bool = False):
        self.record, self.by_value, self.use_async = record, by_value, use_async
        self.calls = [] if calls is None else calls

    def options(self, _by_reference: bool) -> FakeHandle:
        return FakeHandle(self.record, not _by_reference, self.calls, self.use_async)

    def answer(self, method, args, kwargs) -> dict:
        limit = kwargs.get("reply_max")
        if limit is not None and len(str(self.record)) > limit:
            return {"id": self.record["id"], "status": self.record["status"], wire.REPLY_TOO_LARGE: True}
        return self.record

    def __getattr__(self, method: str) -> Call:
        return Call(self, method)


def _vendo(record: dict, use_async: bool = False) -> tuple[Vendo, FakeHandle]:
    v = Vendo("r8_token")
    v._handle = FakeHandle(record, use_async=use_async)
    return v, v._handle


def test_a_small_call_goes_over_grpc_and_says_how_large_an_answer_may_be():
    v, h = _vendo({"id": "p1", "status": "succeeded", "output": "ok"})
    assert v.call_sync("create", "alice/m", {"text": "x"}, wait_s=1.0)["output"] == "ok"
    assert [(m, k.get("reply_max")) for m, _, k in h.calls] == [("create", GRPC_MAX_MESSAGE)]


def test_an_answer_too_large_for_grpc_is_fetched_over_actor_calls():
    big = {"id": "p2", "status": "succeeded", "output": "y" * (GRPC_MAX_MESSAGE + 10)}
    v, h = _vendo(big, use_async=True)
    got = asyncio.run(v.call("wait", "p2", 60.0))
    assert got == big
    assert [(m, a[1:], "reply_max" in k) for m, a, k in h.calls] == [("wait", ("p2", 60.0), True),
                                                                       ("get", ("p2",), False)]


def test_arguments_too_large_for_grpc_go_over_actor_calls():
    v, h = _vendo({"id": "p3", "status": "starting"})
    v.call_sync("create", "alice/m", {"image": "data:," + "A" * GRPC_MAX_MESSAGE})
    assert len(h.calls) == 1 and "reply_max" not in h.calls[0][2]
    assert v.handle_for(({"image": "A" * GRPC_MAX_MESSAGE},)) is v.handle
    assert v.handle_for(({"text": "x"},)).by_value


def test_grpc_off_keeps_every_call_on_actor_calls():
    v, h = _vendo({"id": "p4", "status": "starting"})
    v.grpc = False
    v.call_sync("get", "p4")
    assert h.calls == [("get", ("r8_token", "p4"), {})]
