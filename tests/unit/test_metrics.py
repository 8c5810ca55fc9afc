"""The platform's metrics: the names the Lua scripts count are the declared ones, the exposition
parses with Prometheus's own parser with the right units, and a prediction's wait splits into
queue, boot and setup time that add up."""

from __future__ import annotations

import re
from importlib import resources

import pytest
from prometheus_client.parser import text_string_to_metric_families

from deployments.replica import wait_breakdown
from vendo_core import metrics


@pytest.mark.parametrize("package,script,key", [("vendo_core", "transition.lua", "KEYS[9]"),
                                                ("router", "ratelimit.lua", "KEYS[2]")])
def test_lua_counts_only_declared_metrics(package, script, key):
    source = resources.files(package).joinpath(script).read_text()
    names = set(re.findall(re.escape(key) + r", '([a-z_]+)\|'", source))
    assert names, "the script counts something"
    assert names <= set(metrics.SPECS), names - set(metrics.SPECS)


def _parse(text: bytes) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(text.decode())}


def test_exposition_parses_with_units_and_histograms():
    raw = {}
    for f, by in [metrics.inc("predictions_created", "a/m", "cpu"),
                  metrics.inc("predictions_created", "a/m", "cpu"),
                  metrics.inc("billed_seconds", "alice", "cpu", by=1500),
                  metrics.inc("cost_usd", "alice", "cpu", by=250_000_000),
                  metrics.inc("predictions_queued", "a/m", "v1", by=-1),
                  *metrics.observe("cold_start_seconds", 3.0, "a/m", "v1"),
                  *metrics.observe("cold_start_seconds", 0.2, "a/m", "v1")]:
        raw[f] = str(float(raw.get(f, 0)) + by)
    raw["not_a_metric|x"] = "5"
    fams = _parse(metrics.render(raw))
    created = fams["vendo_predictions_created"]
    assert [(s.name, s.labels, s.value) for s in created] == [
        ("vendo_predictions_created_total", {"model": "a/m", "hardware": "cpu"}, 2.0)]
    assert fams["vendo_billed_seconds"][0].value == pytest.approx(1.5)
    assert fams["vendo_cost_usd"][0].value == pytest.approx(0.25)
    assert fams["vendo_predictions_queued"][0].value == 0.0  # a gauge never shows below zero
    hist = {(s.name, s.labels.get("le")): s.value for s in fams["vendo_cold_start_seconds"]}
    assert hist[("vendo_cold_start_seconds_bucket", "0.25")] == 2 - 1  # 0.2 only
    assert hist[("vendo_cold_start_seconds_bucket", "5.0")] == 2
    assert hist[("vendo_cold_start_seconds_bucket", "+Inf")] == 2
    assert hist[("vendo_cold_start_seconds_count", None)] == 2
    assert hist[("vendo_cold_start_seconds_sum", None)] == pytest.approx(3.2)
    assert "vendo_rate_limited" in fams and fams["vendo_rate_limited"] == []  # declared, no samples yet


def test_labels_must_match_the_declaration():
    with pytest.raises(ValueError):
        metrics.key("predictions_created", "only-model")
    with pytest.raises(ValueError):
        metrics.observe("predictions_created", 1.0, "a/m", "cpu")


def test_a_cold_prediction_waits_for_boot_then_setup_then_a_slot():
    # created at 10, the replica's setup ran 14..20, it started at 21
    got = wait_breakdown(10.0, 21.0, (14.0, 20.0))
    assert got == {"boot_time": 4.0, "setup_time": 6.0, "queue_time": 1.0}


def test_a_warm_prediction_only_queues():
    assert wait_breakdown(100.0, 100.5, (14.0, 20.0)) == {"boot_time": 0.0, "setup_time": 0.0, "queue_time": 0.5}


def test_a_prediction_created_during_setup_waits_for_its_rest():
    got = wait_breakdown(17.0, 20.25, (14.0, 20.0))
    assert got == {"boot_time": 0.0, "setup_time": 3.0, "queue_time": 0.25}
    assert wait_breakdown(None, 5.0, (0.0, 1.0)) == {}


def test_the_parts_never_exceed_the_wait():
    got = wait_breakdown(10.0, 12.0, (11.0, 30.0))  # clocks that disagree: setup "ends" after the start
    assert sum(got.values()) == pytest.approx(2.0) and min(got.values()) >= 0


def test_series_reads_one_metric_by_its_labels():
    raw = {"predictions_queued|a/m|v1": "2", "predictions_queued|a/m|v2": "-1", "predictions_running|a/m|v1": "1",
           "predictions_queued|short": "9", "cold_start_seconds:count|a/m|v1": "3", "other|x": "4"}
    assert metrics.series(raw, "predictions_queued") == {("a/m", "v1"): 2.0, ("a/m", "v2"): -1.0}
    assert metrics.series(raw, "cold_start_seconds") == {}  # a histogram's parts are not a series
