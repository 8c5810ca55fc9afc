"""Cancel-After parsing: bare seconds or h/m/s durations, at least 5 s, 422 naming the header."""

from __future__ import annotations

import pytest

from router.deadlines import parse_cancel_after
from vendo_core.errors import InvalidRequest


@pytest.mark.parametrize("value, seconds", [
    ("5", 5), ("30", 30), ("7.5", 7.5), ("30s", 30), ("5m", 300), ("1h", 3600),
    ("1h30m45s", 5445), ("2m5s", 125), ("1h5s", 3605), (" 10S ", 10), ("0m6s", 6),
])
def test_valid_durations(value, seconds):
    assert parse_cancel_after(value) == seconds


def test_absent_header_is_no_deadline():
    assert parse_cancel_after(None) is None


@pytest.mark.parametrize("value", ["", "s", "abc", "5x", "1s1m", "-10", "10 s", "500ms", "1d", "m5"])
def test_malformed_is_422_naming_the_header(value):
    with pytest.raises(InvalidRequest) as e:
        parse_cancel_after(value)
    assert e.value.status == 422
    assert e.value.field == "Cancel-After"


@pytest.mark.parametrize("value", ["0", "4", "4.9s", "4s"])
def test_under_five_seconds_is_refused(value):
    with pytest.raises(InvalidRequest) as e:
        parse_cancel_after(value)
    assert e.value.field == "Cancel-After" and "at least 5" in e.value.reason


@pytest.mark.parametrize("value", ["2592001", "720h1s", "9" * 400, "9" * 400 + "h"])
def test_absurdly_long_is_422_not_an_overflow(value):
    with pytest.raises(InvalidRequest) as e:
        parse_cancel_after(value)
    assert e.value.field == "Cancel-After" and "at most" in e.value.reason
