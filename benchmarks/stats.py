"""Numbers from samples: percentiles within a trial, and a figure across trials (the median of the
trials with their min and max, so every published number carries its spread)."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Iterable


def percentile(samples: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks; NaN if empty."""
    xs = sorted(samples)
    if not xs:
        return math.nan
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass(frozen=True)
class Figure:
    """One published number: the median over trials, the trials' min and max, and the unit."""

    median: float
    lo: float
    hi: float
    unit: str
    trials: tuple[float, ...]

    @classmethod
    def of(cls, trials: Iterable[float], unit: str) -> Figure:
        xs = tuple(float(x) for x in trials if x is not None and not math.isnan(x))
        if not xs:
            return cls(math.nan, math.nan, math.nan, unit, ())
        return cls(statistics.median(xs), min(xs), max(xs), unit, xs)

    def to_json(self) -> dict:
        d = asdict(self)
        d["trials"] = list(self.trials)
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}

    @classmethod
    def from_json(cls, d: dict | None) -> Figure:
        if not d:
            return cls.of((), "")
        nan = math.nan
        return cls(*(nan if d.get(k) is None else d[k] for k in ("median", "lo", "hi")), d.get("unit", ""),
                   tuple(d.get("trials") or ()))

    def text(self, digits: int | None = None) -> str:
        """`12.3 ms (11.9–13.0)`: median with the min–max of the trials."""
        if math.isnan(self.median):
            return "n/a"
        d = _digits(self.median) if digits is None else digits
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.median:.{d}f}{unit} ({self.lo:.{d}f}–{self.hi:.{d}f})"


def ratio(a: Figure, b: Figure) -> Figure:
    """a / b per trial (trials paired in order: they ran interleaved), as a unitless figure."""
    pairs = [x / y for x, y in zip(a.trials, b.trials, strict=False) if y]
    return Figure.of(pairs, "×")


def _digits(x: float) -> int:
    ax = abs(x)
    if ax >= 100:
        return 0
    if ax >= 10:
        return 1
    if ax >= 1:
        return 2
    return 3
