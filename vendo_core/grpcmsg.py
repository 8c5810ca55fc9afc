"""The size rule of Serve's gRPC transport (`_by_reference=False` handles), which vendo uses
between its own processes: a replica's gRPC server and a caller's channel each take messages of
4 MiB at most (Serve's default, RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH), for the call's
arguments and for its answer alike. What may be larger goes by Ray's actor calls instead: the
arguments by the caller's choice of handle, the answer by leaving out what the caller can read
elsewhere (a model replica's record, which the router reads back; the handle API's record, which
its caller gets over an actor call)."""

from __future__ import annotations

from typing import Any

GRPC_MAX_MESSAGE = 3 * 2**20  # under the 4 MiB cap, with room for the message's framing and pickling


def approx_size(value: Any, limit: int = GRPC_MAX_MESSAGE) -> int:
    """About how many bytes `value` (JSON-shaped) takes, counted until it passes `limit`."""
    n, todo = 0, [value]
    while todo and n <= limit:
        v = todo.pop()
        if isinstance(v, (str, bytes)):
            n += len(v) + 8
        elif isinstance(v, dict):
            n += 16 * len(v)
            todo.extend(v.keys())
            todo.extend(v.values())
        elif isinstance(v, (list, tuple)):
            n += 8 * len(v)
            todo.extend(v)
        else:
            n += 16
    return n


def fits_grpc(value: Any) -> bool:
    """Whether `value` (a call's arguments, or an answer) fits one gRPC message."""
    return approx_size(value) <= GRPC_MAX_MESSAGE
