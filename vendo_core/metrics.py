"""Platform metrics, counted in Redis and rendered for Prometheus.

Every router replica and every model replica writes to one Redis hash (`Keys.metrics()`), so
`/metrics` on any router replica shows the whole platform, whichever replica a scrape reaches,
and nothing is lost when a replica goes. The counts ride on writes that happen anyway: the
prediction create pipeline, the status transition script, the rate-limit script, the replica's
setup record, so a prediction's hot path pays no extra round trip for them.

A hash field is `name|label value|label value…`, the values in the order `SPECS[name].labels`
declares. A histogram keeps `name:bucket|labels…|le`, `name:sum|labels…` and `name:count|labels…`.
Lua scripts build the fields of the metrics they count (`transition.lua`, `ratelimit.lua`): the
names they use are declared here, and a unit test checks them against this table.

Amounts are kept as Redis integers where they are money or time (`billed_seconds` in milliseconds,
`cost_usd` in nano-dollars: exact, and `scale` turns them into seconds and dollars when rendered)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

NAMESPACE = "vendo"
SEP = "|"
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


@dataclass(frozen=True)
class Spec:
    name: str
    kind: str  # counter | gauge | histogram
    help: str
    labels: tuple[str, ...] = ()
    scale: float = 1.0  # stored unit → rendered unit
    buckets: tuple[float, ...] = field(default=())


SPECS: dict[str, Spec] = {s.name: s for s in (
    Spec("predictions_created", "counter", "Predictions created", ("model", "hardware")),
    Spec("predictions_finished", "counter", "Predictions that reached a terminal status",
         ("status", "model", "hardware")),
    Spec("predictions_queued", "gauge", "Predictions starting: created, not yet running", ("model", "version")),
    Spec("predictions_running", "gauge", "Predictions processing on a replica", ("model", "version")),
    Spec("billed_seconds", "counter", "Billable seconds (active time, and the setup and idle time billed "
         "to private models' and deployments' owners)", ("account", "hardware"), scale=1e-3),
    Spec("cost_usd", "counter", "Cost of the billed seconds in US dollars", ("account", "hardware"), scale=1e-9),
    Spec("cold_starts", "counter", "Predictions that waited for a replica to boot", ("model", "version")),
    Spec("cold_start_seconds", "histogram", "How long a cold-started prediction waited for boot and setup",
         ("model", "version"), buckets=DURATION_BUCKETS),
    Spec("replica_setups", "counter", "Replica setups by outcome (succeeded|failed)", ("model", "version", "outcome")),
    Spec("replica_setup_seconds", "histogram", "Replica setup duration (worker start and setup())",
         ("model", "version"), buckets=DURATION_BUCKETS),
    Spec("webhook_sends", "counter", "Webhook POSTs by outcome (delivered|failed|refused)", ("outcome",)),
    Spec("webhooks_given_up", "counter", "Completed webhooks abandoned after their last retry"),
    Spec("evictions", "counter", "Idle apps scaled to zero to make room for a waiting prediction"),
    Spec("rate_limited", "counter", "Requests refused by a token's rate limit", ("bucket",)),
)}


def key(name: str, *labels: str) -> str:
    """The hash field of a counter or gauge."""
    spec = SPECS[name]
    if len(labels) != len(spec.labels):
        raise ValueError(f"{name} takes labels {spec.labels}, got {labels}")
    return SEP.join((name, *labels))


def inc(name: str, *labels: str, by: int = 1) -> tuple[str, int]:
    return key(name, *labels), by


def observe(name: str, value: float, *labels: str) -> list[tuple[str, int | float]]:
    """The increments that record one observation of histogram `name`."""
    spec = SPECS[name]
    if spec.kind != "histogram" or len(labels) != len(spec.labels):
        raise ValueError(f"{name} is not a histogram with labels {spec.labels}")
    out: list[tuple[str, int | float]] = [
        (SEP.join((f"{name}:bucket", *labels, repr(b))), 1) for b in spec.buckets if value <= b]
    out += [(SEP.join((f"{name}:bucket", *labels, "+Inf")), 1),
            (SEP.join((f"{name}:count", *labels)), 1),
            (SEP.join((f"{name}:sum", *labels)), float(value))]
    return out


def flat(increments: Iterable[tuple[str, int | float]]) -> list[str]:
    """`[field, amount, field, amount…]` for a Lua script (`amount` with a dot is a float)."""
    out: list[str] = []
    for f, by in increments:
        out += [f, repr(float(by)) if isinstance(by, float) else str(int(by))]
    return out


def add(pipe, metrics_key: str, increments: Iterable[tuple[str, int | float]]) -> None:
    """Queue the increments on a redis-py pipeline (or client)."""
    for f, by in increments:
        if isinstance(by, float):
            pipe.hincrbyfloat(metrics_key, f, by)
        else:
            pipe.hincrby(metrics_key, f, by)


async def count(redis, metrics_key: str, *increments: tuple[str, int | float]) -> None:
    """Apply the increments now, in one round trip (an asyncio redis-py client)."""
    pipe = redis.pipeline(transaction=False)
    add(pipe, metrics_key, increments)
    await pipe.execute()


def _parse(f: str) -> tuple[Spec | None, str, list[str]]:
    """A stored field as (its metric's spec, the histogram part or "", its labels)."""
    name, *labels = f.split(SEP)
    base, _, part = name.partition(":")
    return SPECS.get(base), part, labels


def series(raw: dict[str, str], name: str) -> dict[tuple[str, ...], float]:
    """The stored (unscaled) values of counter or gauge `name`, by its label values."""
    out = {}
    for f, v in raw.items():
        spec, part, labels = _parse(f)
        if spec is not None and spec.name == name and not part and len(labels) == len(spec.labels):
            try:
                out[tuple(labels)] = float(v)
            except ValueError:
                continue
    return out


def families(raw: dict[str, str]) -> Iterator[Metric]:
    """Prometheus metric families of the stored hash: every declared metric, even with no samples."""
    samples: dict[str, dict[tuple[str, ...], float]] = {n: {} for n in SPECS}
    hist: dict[str, dict[tuple[str, ...], dict]] = {n: {} for n, s in SPECS.items() if s.kind == "histogram"}
    for f, v in raw.items():
        spec, part, labels = _parse(f)
        if spec is None:
            continue
        base = spec.name
        try:
            value = float(v)
        except ValueError:
            continue
        if spec.kind != "histogram":
            if not part and len(labels) == len(spec.labels):
                samples[base][tuple(labels)] = value * spec.scale
            continue
        if part == "bucket" and len(labels) == len(spec.labels) + 1:
            le = labels.pop()
            hist[base].setdefault(tuple(labels), {"buckets": {}, "sum": 0.0})["buckets"][le] = value
        elif part == "sum" and len(labels) == len(spec.labels):
            hist[base].setdefault(tuple(labels), {"buckets": {}, "sum": 0.0})["sum"] = value
    for name, spec in SPECS.items():
        full = f"{NAMESPACE}_{name}"
        labels = list(spec.labels)
        if spec.kind == "histogram":
            fam = HistogramMetricFamily(full, spec.help, labels=labels)
            for values, h in sorted(hist[name].items()):
                bounds = [repr(b) for b in spec.buckets] + ["+Inf"]
                fam.add_metric(list(values), [(b if b != "+Inf" else "+Inf", h["buckets"].get(b, 0.0)) for b in bounds],
                               h["sum"])
            yield fam
            continue
        fam = (CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily)(full, spec.help, labels=labels)
        for values, value in sorted(samples[name].items()):
            fam.add_metric(list(values), max(value, 0.0) if spec.kind == "gauge" else value)
        yield fam


class _Fixed:
    def __init__(self, metrics: list[Metric]):
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)


def render(raw: dict[str, str], extra: Iterable[Metric] = ()) -> bytes:
    """The Prometheus text exposition of the stored counts and `extra` families read at scrape time."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed([*families(raw), *extra]))
    return generate_latest(registry)
