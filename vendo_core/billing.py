"""Money and usage. Amounts are integers of nano-dollars (1e-9 USD) and billed time is integer
milliseconds, so sums are exact: a usage total is the sum of its predictions' costs to the last
nano-dollar, never a float that drifts.

A prediction's cost is fixed by the terminal transition (`transition.lua`), in the same atomic
call that ends it: its billed milliseconds (active time: `metrics.predict_time`, or the time since
it started when it was canceled or failed from outside) times the per-second price of its
hardware, recorded at creation. The same call adds both to the account's usage for the billing
period, keyed by day, model and hardware. Nothing else writes usage, so a crash can neither bill
twice nor lose a charge.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import redis.asyncio as aioredis

from vendo_core import metrics
from vendo_core.errors import InvalidRequest
from vendo_core.keys import Keys

NANOS = 1_000_000_000
BY = ("model", "hardware", "day")


def price_nanos(price_per_second: float | str | Decimal) -> int:
    """A per-second price in USD as integer nano-dollars; ValueError if finer than that."""
    exact = Decimal(str(price_per_second)) * NANOS
    if exact != exact.to_integral_value():
        raise ValueError(f"price {price_per_second} per second is finer than a nano-dollar")
    return int(exact)


def usd(nanos: int) -> Decimal:
    return Decimal(nanos) / NANOS


def nanos_of_usd(value: str | float | Decimal, field: str = "limit_usd") -> int:
    try:
        amount = Decimal(str(value))
    except ArithmeticError:
        raise InvalidRequest(field, "must be an amount in USD, e.g. 25 or 12.50") from None
    if not amount.is_finite() or amount < 0:
        raise InvalidRequest(field, "must be an amount in USD of 0 or more")
    return int((amount * NANOS).to_integral_value())


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc)


def period_of(ts: float, kind: str = "month") -> str:
    """The billing period holding `ts`: `2026-11` (calendar month) or `2026-W48` (ISO week)."""
    d = _utc(ts)
    if kind == "week":
        y, w, _ = d.isocalendar()
        return f"{y}-W{w:02d}"
    return f"{d.year}-{d.month:02d}"


def period_start(ts: float, kind: str = "month") -> dt.date:
    d = _utc(ts).date()
    if kind == "week":
        return d - dt.timedelta(days=d.weekday())
    return d.replace(day=1)


def periods_since(since: dt.date, now_ts: float, kind: str = "month") -> list[str]:
    """Every period label from the one holding `since` to the current one, oldest first."""
    out: list[str] = []
    day = since
    end = _utc(now_ts).date()
    while day <= end:
        ts = calendar.timegm(day.timetuple())
        label = period_of(ts, kind)
        if not out or out[-1] != label:
            out.append(label)
        day += dt.timedelta(days=7 if kind == "week" else 28)
    last = period_of(now_ts, kind)
    if not out or out[-1] != last:
        out.append(last)
    return out


def day_of(ts: float) -> str:
    return _utc(ts).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class UsageRow:
    key: str  # the model, the hardware or the day
    milliseconds: int
    nanos: int

    @property
    def seconds(self) -> float:
        return self.milliseconds / 1000

    @property
    def cost_usd(self) -> Decimal:
        return usd(self.nanos)


class Usage:
    """Reads what the terminal transitions wrote: per account and period, by day/model/hardware."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, period: str = "month"):
        self.redis = redis
        self.keys = keys
        self.period = period

    async def spent(self, username: str, now_ts: float) -> int:
        """Nano-dollars spent in the current period (one round trip)."""
        raw = await self.redis.hget(self.keys.usage(username, period_of(now_ts, self.period)), "total_nanos")
        return int(raw or 0)

    async def rows(self, username: str, since: dt.date, now_ts: float, by: str = "model") -> list[UsageRow]:
        """Usage from `since` (a day) to now, summed by `by`; largest cost first."""
        if by not in BY:
            raise InvalidRequest("by", f"must be one of {list(BY)}")
        labels = periods_since(since, now_ts, self.period)
        pipe = self.redis.pipeline(transaction=False)
        for label in labels:
            pipe.hgetall(self.keys.usage(username, label))
        sums: dict[str, list[int]] = {}
        first = since.isoformat()
        for raw in await pipe.execute():
            for field, value in raw.items():
                kind, _, rest = field.partition("|")
                if kind not in ("ms", "nanos"):
                    continue
                day, model, hardware = rest.split("|", 2)
                if day < first:
                    continue
                key = {"model": model, "hardware": hardware, "day": day}[by]
                acc = sums.setdefault(key, [0, 0])
                acc[0 if kind == "ms" else 1] += int(value)
        rows = [UsageRow(k, ms, n) for k, (ms, n) in sums.items()]
        return sorted(rows, key=lambda r: (-r.nanos, r.key)) if by != "day" else sorted(rows, key=lambda r: r.key)


SETUP_IDLE = " (setup+idle)"  # the usage key of a model's replica time outside predictions


class ReplicaMeter:
    """The time a replica runs with no prediction on it: from its start through setup(), and every
    stretch between predictions. Private models and deployments bill it to their owner (their
    predictions' callers pay the active seconds). Measured, not estimated: `take()` returns the
    milliseconds accrued since the last take, which the replica adds to the owner's usage on every
    heartbeat and at shutdown (a crash loses at most one heartbeat's worth)."""

    def __init__(self, now: float):
        self.last = now  # idle time is accrued up to here
        self.active = 0  # predictions running now
        self.pending = 0  # accrued milliseconds not taken yet

    def _accrue(self, now: float) -> None:
        if self.active == 0 and now > self.last:
            self.pending += round((now - self.last) * 1000)
        self.last = max(self.last, now)

    def start(self, now: float) -> None:
        """A prediction starts: the idle stretch before it ends here."""
        self._accrue(now)
        self.active += 1

    def stop(self, now: float) -> None:
        """A prediction ended: idle again from here once none runs."""
        self.active = max(0, self.active - 1)
        self.last = max(self.last, now)

    def take(self, now: float) -> int:
        """The idle milliseconds accrued since the last take."""
        self._accrue(now)
        ms, self.pending = self.pending, 0
        return ms


async def bill_replica_time(redis: aioredis.Redis, keys: Keys, owner: str, model: str, hardware: str,
                            price: int, ms: int, now_ts: float, period: str = "month") -> None:
    """Add a replica's setup and idle milliseconds to its owner's usage (one round trip)."""
    if ms <= 0:
        return
    cost = (ms * price + 500) // 1000
    field = f"{day_of(now_ts)}|{model}{SETUP_IDLE}|{hardware}"
    pipe = redis.pipeline(transaction=True)
    key = keys.usage(owner, period_of(now_ts, period))
    pipe.hincrby(key, f"ms|{field}", ms)
    pipe.hincrby(key, f"nanos|{field}", cost)
    pipe.hincrby(key, "total_ms", ms)
    pipe.hincrby(key, "total_nanos", cost)
    metrics.add(pipe, keys.metrics(), [metrics.inc("billed_seconds", owner, hardware, by=ms),
                                       metrics.inc("cost_usd", owner, hardware, by=cost)])
    await pipe.execute()
