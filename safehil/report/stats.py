"""Confidence intervals for the reproduction report: a t-interval of a mean (and of paired
differences), and a percentile bootstrap interval of any statistic of resampled rows.

    from safehil.report.stats import paired_t_interval, bootstrap_interval
    paired_t_interval(with_aug, without_aug)            # Interval(estimate, low, high, n): mean of a - b
    bootstrap_interval(auroc, (scores, wrong), seed=0)  # resamples images (rows of every array together)

Exact binomial bounds (Clopper-Pearson) and the Learn-then-Test certificate live with the
safety cascade (cascade.py, risk_control.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import stats as scipy_stats


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval; n = the sample it came from."""
    estimate: float
    low: float
    high: float
    n: int
    confidence: float = 0.95

    def excludes(self, value: float = 0.0) -> bool:
        """True when `value` lies outside [low, high] (a NaN interval excludes nothing)."""
        return bool(self.low > value or self.high < value)

    def text(self, scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
        """'12.30 [8.10, 16.50]' (values times `scale`), 'n/a' when undefined."""
        if not all(math.isfinite(v) for v in (self.estimate, self.low, self.high)):
            return "n/a" if not math.isfinite(self.estimate) else f"{self.estimate * scale:.{digits}f}{unit} [n/a]"
        return (f"{self.estimate * scale:.{digits}f}{unit} [{self.low * scale:.{digits}f}, "
                f"{self.high * scale:.{digits}f}]")


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Student-t interval of the mean of `values` [n]: mean +- t_{n-1, (1+c)/2} * sd / sqrt(n).
    With n < 2 the bounds are NaN (no spread to estimate)."""
    x = np.asarray(values, dtype=np.float64)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, confidence)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, confidence)
    half = float(scipy_stats.t.ppf((1 + confidence) / 2, n - 1)) * float(x.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, confidence)


def paired_t_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Interval:
    """t-interval of the mean paired difference a - b (a[i] and b[i] share seed i)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples need equal lengths, got {a.shape} and {b.shape}")
    return t_interval(a - b, confidence)


def bootstrap_interval(statistic: Callable[..., float], data: tuple[np.ndarray, ...], n_resamples: int = 2000,
                       confidence: float = 0.95, seed: int = 0) -> Interval:
    """Percentile bootstrap interval of `statistic(*data)`.

    data: arrays with the same first dimension N (e.g. scores [N] and labels [N]); each
    resample draws N row indices with replacement and applies them to every array, so the
    rows (images) stay intact. Resamples where the statistic is NaN (e.g. an AUROC of a
    resample with one class only) are dropped. estimate = the statistic on the data itself.
    """
    arrays = [np.asarray(d) for d in data]
    n = len(arrays[0])
    if any(len(d) != n for d in arrays):
        raise ValueError("bootstrap data arrays need the same length")
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, confidence)
    estimate = float(statistic(*arrays))
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, n)
        value = float(statistic(*(d[idx] for d in arrays)))
        if math.isfinite(value):
            draws.append(value)
    if not draws:
        return Interval(estimate, math.nan, math.nan, n, confidence)
    low, high = np.quantile(draws, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Interval(estimate, float(low), float(high), n, confidence)


def units_to_decide(interval: Interval, distance: float, kind: str = "t", most: int = 10 ** 7) -> int | None:
    """How many units (seeds for kind 't', images for kind 'bootstrap') would shrink the
    interval's half-width below `distance`, if its estimate and spread stayed as observed.

    't': the spread sd is read back from the t-interval (half = t_{n-1} sd / sqrt(n)) and the
    smallest m with t_{m-1} sd / sqrt(m) < distance is returned. 'bootstrap': the half-width
    shrinks as 1 / sqrt(n), m = ceil(n (half / distance)^2). None when undefined (no finite
    interval, distance <= 0) or beyond `most`. Always more than the n observed.
    """
    if kind not in ("t", "bootstrap"):
        raise ValueError(f"kind must be 't' or 'bootstrap', got {kind!r}")
    half = (interval.high - interval.low) / 2
    n = interval.n
    if not (math.isfinite(half) and math.isfinite(distance)) or distance <= 0 or n < 2:
        return None
    if half <= 0:
        return n + 1
    q = (1 + interval.confidence) / 2
    if kind == "bootstrap":
        m = math.ceil(n * (half / distance) ** 2)
    else:
        sd = half * math.sqrt(n) / float(scipy_stats.t.ppf(q, n - 1))

        def enough(m: int) -> bool:
            return float(scipy_stats.t.ppf(q, m - 1)) * sd / math.sqrt(m) < distance

        lo, hi = 1, 2
        while not enough(hi):
            if hi > most:
                return None
            lo, hi = hi, 2 * hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if enough(mid) else (mid, hi)
        m = hi
    return max(m, n + 1) if m <= most else None
