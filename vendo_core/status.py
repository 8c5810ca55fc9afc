"""Prediction statuses and which transitions are allowed (the Lua compare-and-set applies them)."""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    STARTING = "starting"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELED})

# which statuses each target may be entered from; terminal states are sinks
ALLOWED_FROM: dict[Status, frozenset[Status]] = {
    Status.STARTING: frozenset(),
    Status.PROCESSING: frozenset({Status.STARTING}),
    Status.SUCCEEDED: frozenset({Status.PROCESSING}),
    Status.FAILED: frozenset({Status.STARTING, Status.PROCESSING}),
    Status.CANCELED: frozenset({Status.STARTING, Status.PROCESSING}),
}
