"""Per-prediction metric collection for Cog predictors running in-process.

Outside a coglet worker, `BaseRunner.record_metric` and `cog.current_scope()` talk to a
no-op scope. We replace `coglet._sdk.current_scope` (the one function both of them call at
call time) with a contextvar lookup, so every prediction gets its own scope, even when several
run concurrently in different threads or asyncio tasks.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_MODES = {"replace": "replace", "incr": "incr", "increment": "incr", "append": "append"}
_TYPES = ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"), (list, "list"), (dict, "dict"))

_current: contextvars.ContextVar[PredictionScope | None] = contextvars.ContextVar(
    "vendo_cog_scope", default=None
)
_install_lock = threading.Lock()
_original_current_scope: Any = None


def _type_tag(value: Any) -> str:
    # bool before int: bool is an int subclass, and coglet keeps them apart.
    for tpe, tag in _TYPES:
        if isinstance(value, tpe):
            return tag
    raise TypeError(
        f"Unsupported metric value type: {type(value).__name__}. "
        "Expected bool, int, float, str, list, or dict."
    )


def _check_name(key: str, *, for_delete: bool = False) -> None:
    # Same rules coglet enforces, so a model that works here also works under coglet.
    if not for_delete:
        if key == "predict_time":
            raise ValueError("'predict_time' is reserved by the runtime")
        if key.startswith("cog."):
            raise ValueError("the 'cog.' prefix is reserved for system metrics")
    if not key:
        raise ValueError("metric name must not be empty")
    if len(key) > 128:
        raise ValueError(f"metric name must be 128 characters or fewer (got {len(key)} characters)")
    segments = key.split(".")
    if len(segments) > 4:
        raise ValueError(f"metric name must have at most 4 dot-separated segments (got {len(segments)})")
    for i, segment in enumerate(segments):
        if not segment:  # coglet's messages, word for word (crates/coglet-python/src/metric_scope.rs)
            if i == 0:
                raise ValueError("metric name must not start with a dot")
            if i == len(segments) - 1:
                raise ValueError("metric name must not end with a dot")
            raise ValueError("metric name must not contain empty segments (consecutive dots)")
        if not segment[0].isascii() or not segment[0].isalpha():
            raise ValueError(f"metric name segment '{segment}' must start with a letter")
        prev_underscore = False
        for ch in segment[1:]:
            if ch == "_":
                if prev_underscore:
                    raise ValueError(f"metric name segment '{segment}' must not contain consecutive underscores")
                prev_underscore = True
            elif ch.isascii() and ch.isalnum():
                prev_underscore = False
            else:
                raise ValueError(f"metric name segment '{segment}' contains invalid character '{ch}'")
        if prev_underscore:
            raise ValueError(f"metric name segment '{segment}' must end with a letter or digit")


class CollectedMetrics(dict):
    """The metrics one prediction recorded (dotted names nest); `metric_scope` yields it."""

    def __init__(self, scope: PredictionScope):
        super().__init__()
        self.scope = scope

    @property
    def context(self) -> dict[str, str]:
        """The prediction's context dict, as the predictor sees it in `scope.context`."""
        return self.scope.context


class MetricRecorder:
    """`scope.metrics`: the coglet MetricRecorder API, collecting into a CollectedMetrics dict."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self._types: dict[str, str] = {}
        self._lock = threading.Lock()

    def record(self, key: str, value: Any, mode: str | None = "replace") -> None:
        """Record `value` under `key` (dots nest) with mode replace, incr or append."""
        resolved = _MODES.get(mode or "replace")
        if resolved is None:
            raise TypeError(f"Invalid metric mode: {mode!r}. Expected 'replace', 'incr', or 'append'.")
        if value is None:
            self.delete(key)
            return
        _check_name(key)
        tag = _type_tag(value)
        with self._lock:
            known = self._types.get(key)
            if known is not None and known != tag:
                raise TypeError(f"Metric {key!r} has type {known}, cannot set to {tag} without deleting first")
            if resolved == "incr" and tag not in ("int", "float"):
                raise TypeError(f"Increment mode requires int or float, got {tag}")
            self._types[key] = tag
            parent, leaf = self._parent(key)
            if resolved == "replace":
                parent[leaf] = value
            elif resolved == "incr":
                current = parent.get(leaf, 0)
                parent[leaf] = current + value if isinstance(current, (int, float)) else value
            else:
                current = parent.setdefault(leaf, [])
                if isinstance(current, list):
                    current.append(value)
                else:
                    parent[leaf] = [current, value]

    def delete(self, key: str) -> None:
        """Remove `key`; needed before re-recording it with a different type."""
        _check_name(key, for_delete=True)
        with self._lock:
            self._types.pop(key, None)
            parent, leaf = self._parent(key, create=False)
            if parent is not None:
                parent.pop(leaf, None)

    def __setitem__(self, key: str, value: Any) -> None:
        self.record(key, value)

    def __delitem__(self, key: str) -> None:
        self.delete(key)

    def __repr__(self) -> str:
        return f"MetricRecorder(keys={len(self._types)})"

    def _parent(self, key: str, create: bool = True) -> tuple[Any, str]:
        # Dotted keys become nested objects, as coglet stores them in the prediction's metrics.
        *path, leaf = key.split(".")
        node: Any = self.values
        for part in path:
            child = node.get(part)
            if not isinstance(child, dict):
                if not create:
                    return None, leaf
                child = node[part] = {}
            node = child
        return node, leaf


class PredictionScope:
    """What `cog.current_scope()` returns inside `metric_scope()`."""

    def __init__(self, context: dict[str, str] | None = None) -> None:
        self.values = CollectedMetrics(self)
        self.metrics = MetricRecorder(self.values)
        self.context: dict[str, str] = dict(context or {})

    def record_metric(self, key: str, value: Any, mode: str | None = "replace") -> None:
        """Shorthand for `self.metrics.record(...)`."""
        self.metrics.record(key, value, mode)

    def __repr__(self) -> str:
        return f"Scope({self.metrics!r})"


def _scope_lookup() -> Any:
    scope = _current.get()
    return scope if scope is not None else _original_current_scope()


def install() -> None:
    """Patch `coglet._sdk.current_scope` once per process; idempotent."""
    global _original_current_scope
    import coglet  # Cog's server runtime: only a process that runs predictors patches it

    with _install_lock:
        if _original_current_scope is None:
            _original_current_scope = coglet._sdk.current_scope
            coglet._sdk.current_scope = _scope_lookup


@contextmanager
def metric_scope(context: dict[str, str] | None = None) -> Iterator[CollectedMetrics]:
    """Collect the metrics a predictor records while the block runs.

    Yields the dict the metrics land in (`.scope` is the `PredictionScope` that
    `cog.current_scope()` returns, `.context` its context dict). The scope lives in a contextvar:
    enter it in the thread or task that calls the predictor (contextvars do not follow
    `loop.run_in_executor`; `asyncio.to_thread` and new tasks copy the current context).
    `context` becomes `scope.context`, where the Replicate client looks for its API token.
    """
    install()
    scope = PredictionScope(context)
    token = _current.set(scope)
    try:
        yield scope.values
    finally:
        _current.reset(token)
