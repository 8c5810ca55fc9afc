"""How much each part measures: trial counts, request bounds and time limits. `full()` is what
`make bench` runs (about 8 minutes on a 2-core machine); `quick()` is a fast pass that checks the
plumbing and publishes nothing."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    trials: int = 3
    concurrencies: tuple[int, ...] = (16, 64)
    latency_requests: int = 400  # per trial at concurrency 1 (or until latency_max_s)
    latency_max_s: float = 4.0
    throughput_requests: int = 50_000  # per trial (or until throughput_max_s)
    throughput_max_s: float = 4.0
    warm_requests: int = 30  # at concurrency 1; at higher ones, one per connection
    poll_interval_s: float = 0.005
    cold_trials: int = 5  # replica start varies by seconds on 2 busy cores: more trials than the rest
    cold_settle_s: float = 3.0  # at zero replicas this long before the prediction
    efficiency_replicas: tuple[int, ...] = (1, 2, 4)
    efficiency_max_s: float = 4.0
    stream_predictions: int = 6  # per trial
    stream_items: int = 8
    file_predictions: int = 6  # per trial and mode
    batch_lines: int = 1000  # per trial, by batch job and by HTTP each
    catalogue_versions: int = 10_000  # registered, of which 3 are used
    finetunes: int = 20  # of one base, used in turn
    finetunes_separate: int = 10  # on apps of their own, at most (fewer where the cluster has no room)
    finetune_rounds: int = 3
    burst: int = 1000  # async creates in one burst (and sync predictions in its baseline)
    fair_samples: int = 5  # idle-cluster predictions of the other account, per model
    fair_queue: int = 200  # predictions one account queues on the 50 ms model (10 s of work)
    scale_open: int = 1000  # open predictions added per step (two steps)
    scale_streams: int = 400  # open SSE streams added per step (two steps; a router replica takes 1,000 requests at once)
    scale_finished: int = 1000  # finished predictions whose Redis bytes are counted


def full() -> Plan:
    return Plan()


def quick() -> Plan:
    return Plan(trials=1, latency_requests=40, latency_max_s=1.0, throughput_requests=400,
                throughput_max_s=1.0, warm_requests=5, cold_trials=1, cold_settle_s=0.5, efficiency_replicas=(1, 2),
                efficiency_max_s=1.5, stream_predictions=2, file_predictions=2, batch_lines=100, catalogue_versions=200,
                finetunes=4, finetunes_separate=2, finetune_rounds=1, burst=100, fair_samples=2, fair_queue=40,
                scale_open=100, scale_streams=100, scale_finished=100)
