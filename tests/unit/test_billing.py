"""Money and billing periods: exact integers, calendar months and ISO weeks in UTC."""

from __future__ import annotations

import calendar
import datetime as dt
from decimal import Decimal

import pytest

from vendo_core.billing import nanos_of_usd, period_of, period_start, periods_since, price_nanos, usd
from vendo_core.errors import InvalidRequest
from vendo_core.hardware import HardwareConfig


def ts(day: str) -> float:
    return calendar.timegm(dt.date.fromisoformat(day).timetuple()) + 3600


def test_prices_and_amounts_are_exact_integers():
    assert price_nanos(0.000025) == 25_000 and price_nanos("0.000900") == 900_000
    assert sum(price_nanos(0.000225) for _ in range(10_000)) == 2_250_000_000  # no float drift
    assert usd(2_250_000_000) == Decimal("2.25")
    with pytest.raises(ValueError):
        price_nanos("0.0000000001")
    assert nanos_of_usd("12.50") == 12_500_000_000 and nanos_of_usd(0) == 0
    for bad in ("-1", "lots", "NaN"):
        with pytest.raises(InvalidRequest):
            nanos_of_usd(bad)
    with pytest.raises(ValueError, match="nano-dollar"):
        HardwareConfig.model_validate({"default": "x", "skus": {"x": {
            "name": "x", "num_cpus": 1, "num_gpus": 0, "price_per_second": 1e-12}}})


def test_periods_are_calendar_months_or_iso_weeks_in_utc():
    assert period_of(ts("2026-11-30")) == "2026-11" and period_of(ts("2026-12-01")) == "2026-12"
    assert period_of(ts("2026-11-30"), "week") == "2026-W49"
    assert period_start(ts("2026-11-30")) == dt.date(2026, 11, 1)
    assert period_start(ts("2026-11-30"), "week") == dt.date(2026, 11, 30)
    assert periods_since(dt.date(2026, 9, 30), ts("2026-12-02")) == ["2026-09", "2026-10", "2026-11", "2026-12"]
    assert periods_since(dt.date(2026, 1, 31), ts("2026-03-01")) == ["2026-01", "2026-02", "2026-03"]
    assert periods_since(dt.date(2026, 11, 20), ts("2026-12-01"), "week") == [
        "2026-W47", "2026-W48", "2026-W49"]


def test_a_replica_meter_counts_setup_and_the_time_between_predictions():
    from vendo_core.billing import ReplicaMeter

    m = ReplicaMeter(100.0)
    assert m.take(102.5) == 2500  # setup
    m.start(103.0)  # 0.5 s idle before it
    m.start(103.2)  # a second one, concurrently: not idle
    assert m.take(104.0) == 500
    m.stop(105.0)
    assert m.take(106.0) == 0  # one still runs
    m.stop(106.0)
    assert m.take(107.25) == 1250
    assert m.take(107.25) == 0  # taken once
