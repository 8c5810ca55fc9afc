"""The benchmark suite's plumbing, without Ray and without timing anything: statistics, the
loopback-only load generator (against the suite's own webhook receiver), and the report."""

from __future__ import annotations

import asyncio
import math

import pytest

from benchmarks import load, report
from benchmarks.stats import Figure, percentile, ratio
from benchmarks.webhook_sink import WebhookSink


def test_percentile_interpolates_and_figure_keeps_the_spread():
    assert percentile([1, 2, 3, 4, 5], 50) == 3
    assert percentile([0, 10], 90) == 9
    assert math.isnan(percentile([], 50))
    f = Figure.of([3.0, 1.0, 2.0], "ms")
    assert (f.median, f.lo, f.hi) == (2.0, 1.0, 3.0)
    assert f.text(1) == "2.0 ms (1.0–3.0)"
    assert Figure.from_json(f.to_json()) == f
    r = ratio(Figure.of([2.0, 4.0], "ms"), Figure.of([1.0, 1.0], "ms"))
    assert (r.median, r.lo, r.hi) == (3.0, 2.0, 4.0)


def test_only_loopback_targets():
    assert load.check_loopback("http://127.0.0.1:8000/x")
    assert load.check_loopback("http://localhost/x")
    for url in ("http://10.0.0.1/x", "http://example.com/x", "http://192.168.1.1/"):
        with pytest.raises(ValueError):
            load.check_loopback(url)


def test_closed_loop_stops_at_the_request_bound_and_the_sink_resolves_each_path():
    async def main():
        async with WebhookSink() as sink, load.Pool(4) as pool:
            futures = []

            async def send(http):
                url, fut = sink.expect(f"/hook/{len(futures)}")
                futures.append(fut)
                r = await http.post(url, json={"status": "succeeded"})
                r.raise_for_status()
                await fut

            run = await load.closed_loop(pool, send, max_requests=20, max_s=30.0)
            return run, sink.deliveries

    run, deliveries = asyncio.run(main())
    assert run.ok == 20 and run.errors == 0 and deliveries == 20
    assert run.concurrency == 4 and run.summary()["ok"] == 20


def test_report_from_a_saved_result(tmp_path):
    fig = Figure.of([10.0, 11.0, 12.0], "ms").to_json()
    tp = Figure.of([100.0, 110.0, 120.0], "/s").to_json()
    one = Figure.of([1.1, 1.2, 1.3], "×").to_json()
    res = {
        "started_at": "2026-01-01 00:00 UTC", "commit": "abc", "duration_s": 1.0,
        "plan": {"trials": 3},
        "machine": {"cpus": 2, "cpu_model": "x", "memory_gib": 24, "kernel": "Linux", "python": "3.11",
                    "ray": "2.60.0", "cog": "0.23.1", "coglet": "0.23.1", "note": "a shared-core VM"},
        "overhead": {
            "figures": {t: {"p50_ms": fig, "p99_ms": fig, "throughput_c16": tp, "throughput_c64": tp}
                        for t in ("vendo", "bare", "cog")},
            "ratios": {r: {"p50_ms": one, "p99_ms": one, "throughput_c16": one, "throughput_c64": one}
                       for r in ("vendo/bare", "vendo/cog")},
        },
        "async_path": {"poll": {"poll_interval_ms": 5, "figures": {"p50_ms": fig}},
                       "webhook": {"measured": False, "note": "not measured: webhooks not yet landed"}},
        "gpu": {"measured": False, "note": report.GPU_NOT_MEASURED},
    }
    res["scale"] = {"open_predictions": {"open": 2200, "router_mib_per_1000": [3.0, 3.5]},
                    "open_streams": {"open": 2064, "router_mib_per_1000": [9.0, 30.0],
                                     "proxy_mib_per_1000": [5.0, 5.5]},
                    "redis": {"predictions": 1000, "bytes_per_prediction": 2100}}
    md = report.markdown(res)
    assert "| Overhead: p50 latency at c=1 | ≤ 1.0 × bare Serve | 1.20×" in md
    assert "| Overhead: no-op p50 at c=1 against Cog's own server | ≤ 5 × coglet | 1.20×" in md
    # the router's cost per 1,000 streams tripled from the first 1,000 to the second: not flat
    memory = next(line for line in md.splitlines() if line.startswith("| Memory:"))
    assert "2,100 bytes per finished prediction" in memory and memory.endswith("| **missed** |")
    assert "## 13. Memory and scale" in md
    assert "**missed**" in md and "not measured: no GPU in this run" in md
    assert "not measured: webhooks not yet landed" in md
    pytest.importorskip("matplotlib")
    paths = report.write(res, tmp_path)
    assert paths["png"].read_bytes().startswith(b"\x89PNG")


def test_overhead_ratios_join_the_baseline_cluster_and_vendos():
    """bare Serve's baseline comes from a cluster of its own; vendo's ratios are taken against it
    and, where vendo's ingress differs, against bare Serve on vendo's ingress too."""
    from benchmarks import overhead
    from benchmarks.load import Run
    from benchmarks.plan import Plan

    plan = Plan(trials=1, concurrencies=(16,))

    def runs(latency_s: float, per_s: float) -> dict[str, list[Run]]:
        return {"c1": [Run(1, latencies_s=[latency_s] * 10, elapsed_s=10 * latency_s)],
                "c16": [Run(16, latencies_s=[0.1] * int(per_s), elapsed_s=1.0)]}

    baseline = {"bare": runs(0.010, 100)}
    on_vendos = {"vendo": runs(0.008, 150), "cog": runs(0.002, 400), "bare_same_ingress": runs(0.006, 200)}
    res = overhead.result({**baseline, **on_vendos}, plan)
    assert set(res["ratios"]) == {"vendo/bare", "vendo/cog", "vendo/bare_same_ingress"}
    assert abs(res["ratios"]["vendo/bare"]["p50_ms"]["median"] - 0.8) < 1e-9
    assert abs(res["ratios"]["vendo/bare"]["throughput_c16"]["median"] - 1.5) < 1e-9
    assert abs(res["ratios"]["vendo/bare_same_ingress"]["throughput_c16"]["median"] - 0.75) < 1e-9
    md = report.markdown({
        "started_at": "2026-01-01 00:00 UTC", "commit": "abc", "duration_s": 1.0, "plan": {"trials": 1},
        "machine": {"cpus": 2, "cpu_model": "x", "memory_gib": 24, "kernel": "Linux", "python": "3.11",
                    "ray": "2.60.0", "cog": "0.23.1", "coglet": "0.23.1", "note": "a shared-core VM"},
        "ingress": "haproxy", "overhead": res, "gpu": {"measured": False, "note": report.GPU_NOT_MEASURED}})
    assert "| Overhead: throughput at c=16 | ≥ 1.0 × bare Serve | 1.50×" in md
    assert "bare Serve, vendo's ingress" in md and "on a cluster of its own" in md


def test_part_4_names_the_cpu_of_each_process_it_measured():
    """The efficiency part's CPU accounting: a child that spins for the window is counted to its
    role, in cores, and the report lists every role, vendo's and bare Serve's rows both."""
    import subprocess
    import sys

    from benchmarks.efficiency import ROLES, CpuMeter

    assert next(r for r, test in ROLES if test.search("python -m deployments.worker 5 6")) == "model workers"
    assert next(r for r, test in ROLES if test.search("ray::ServeReplica:v-0a1b:model")) == "model replicas"
    assert next(r for r, test in ROLES if test.search("ray::ServeReplica:vendo:router")) == "router"
    spin = subprocess.Popen([sys.executable, "-c", "import sys, time\nt = time.process_time()\n"
                             "while time.process_time() - t < 0.6: pass\nprint('spun', flush=True)\nsys.stdin.read()"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    meter = CpuMeter()
    meter.start()
    try:
        assert spin.stdout.readline() == "spun\n"
        meter.stop()  # read while it lives: a process gone by the end of a window is not counted
    finally:
        spin.communicate("")
    assert meter.by_role["other"] >= 0.4  # CPU seconds: most of the child's 0.6 s fell in the window
    assert meter.machine >= 0.4
    cores = meter.cores()
    assert cores["by_role"]["other"] == round(meter.by_role["other"] / meter.wall, 3)
    text = "\n".join(report._efficiency_cpu({"vendo": {"4": {"cpu": cores}}, "bare": {"4": {"cpu": cores}}}))
    assert "| vendo | 4 |" in text and "| bare Serve | 4 |" in text and "model workers" in text
