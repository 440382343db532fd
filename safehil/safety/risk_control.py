"""Distribution-free risk control: Learn then Test (Angelopoulos, Bates, Candes, Jordan, Lei 2021).

One concern: pick a parameter lambda (here: referral thresholds) from a path of candidates so
that, with probability at least 1 - delta over the draw of the calibration images, the chosen
lambda's risk (the rate of wrong predictions that are not referred) is at most alpha.

    losses = ...                      # bool [n_lambda, n]: image i is an undetected error at lambda j,
                                      # rows ordered from most to least conservative
    cert = risk_control.certify(losses, alpha=0.001, delta=0.05)
    cert.index, cert.certified, cert.guarantee

How: at each lambda the null hypothesis H0: risk(lambda) > alpha is tested with the exact
binomial p-value of its error count (the loss is 0/1, so the count is Binomial(n, risk)).
The fixed-sequence procedure walks the path from the most conservative lambda and rejects
while p <= delta; the first non-rejection ends the walk. Testing in a fixed order controls
the family-wise error at delta without a multiplicity correction, so the guarantee holds
whatever the shape of the risk curve (it need not be monotone). Nothing here looks at the
data the guarantee is later checked on: the losses must come from calibration images alone.

Also the exact binomial (Clopper-Pearson) bounds every rate in the safety report carries
(`clopper_pearson`), of which the smallest certifiable alpha is the one-sided upper end.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


def _check_level(name: str, value: float) -> None:
    if not 0 < value < 1:
        raise ValueError(f"{name} must be in (0, 1), got {value}")


def binomial_tail_pvalue(k_errors, n: int, alpha: float):
    """Exact p-value of H0: risk > alpha after k_errors errors in n calibration images.

    Under H0 the error count is Binomial(n, risk) with risk > alpha, and seeing k or fewer
    errors is least unlikely at risk = alpha, so p = P[Binomial(n, alpha) <= k].
    k_errors: int or int array (any shape); returns a float or a float array of that shape.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    p = stats.binom.cdf(np.asarray(k_errors), n, alpha)
    return float(p) if np.ndim(p) == 0 else p


def fixed_sequence_test(pvalues_along_path, delta: float) -> int | None:
    """Index of the last rejected hypothesis when testing in order at level delta, or None.

    pvalues_along_path: float [n_lambda], ordered from most to least conservative lambda.
    The walk rejects while p <= delta and stops at the FIRST p > delta: hypotheses after
    it are never tested, however small their p-values (that is what makes the family-wise
    error rate <= delta without a correction).
    """
    _check_level("delta", delta)
    last = None
    for j, p in enumerate(np.asarray(pvalues_along_path, dtype=float).ravel()):
        if not p <= delta:  # also stops at NaN
            break
        last = j
    return last


def clopper_pearson(k: int, n: int, confidence: float = 0.95, two_sided: bool = False) -> tuple[float, float]:
    """Exact (Clopper-Pearson) bounds (lower, upper) on a binomial rate from k events in n trials.

    One-sided (default): the upper bound solves P(X <= k | p) = 1 - confidence, the Beta(k+1, n-k)
    quantile at `confidence`; the lower bound is 0. Two-sided: both ends at alpha = (1 - confidence) / 2,
    the usual exact interval; the lower end is the Beta(k, n-k+1) quantile at alpha. No events
    (k = 0) give lower 0, all events (k = n) upper 1; no trials (n = 0) give (0, 1).
    """
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    alpha = (1 - confidence) / (2 if two_sided else 1)
    upper = 1.0 if k == n else float(stats.beta.ppf(1 - alpha, k + 1, n - k))
    lower = float(stats.beta.ppf(alpha, k, n - k + 1)) if two_sided and k > 0 else 0.0
    return lower, upper


def smallest_certifiable_alpha(n: int, delta: float, k: int = 0) -> float:
    """Smallest alpha that k errors in n images certify at level delta.

    The alpha with P[Binomial(n, alpha) <= k] = delta, i.e. the one-sided (1 - delta)
    Clopper-Pearson upper bound: the Beta(k + 1, n - k) quantile at 1 - delta. With k = 0
    this is 1 - delta ** (1 / n). 1.0 when nothing can be certified (k >= n, n = 0).
    """
    _check_level("delta", delta)
    if n <= 0 or k >= n:
        return 1.0
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if k == 0:  # closed form, avoids the ppf's rounding in the common case
        return float(-math.expm1(math.log(delta) / n))
    return clopper_pearson(k, n, confidence=1 - delta)[1]


def required_calibration_size(alpha: float, delta: float, k: int = 0) -> int:
    """Fewest calibration images with which k errors certify risk <= alpha at level delta.

    Smallest n with P[Binomial(n, alpha) <= k] <= delta. With k = 0: ceil(ln delta / ln(1 - alpha));
    alpha = 0.1 %, delta = 0.05 -> 2995 images.
    """
    _check_level("alpha", alpha)
    _check_level("delta", delta)
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")

    def certifies(n: int) -> bool:
        return binomial_tail_pvalue(k, n, alpha) <= delta

    lo, hi = k, max(k + 1, 1)  # certifies(k) is False: k errors in k images is a 100 % rate
    while not certifies(hi):
        lo, hi = hi, 2 * hi
    while hi - lo > 1:  # P[Binomial(n, alpha) <= k] falls as n grows: bisect
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if certifies(mid) else (mid, hi)
    return hi


@dataclass(frozen=True)
class Certificate:
    """Outcome of Learn then Test on one calibration split.

    index: position of the chosen lambda on the path (None: not even the most conservative one
    is certified). errors: int [n_lambda] errors per lambda; pvalues: float [n_lambda], all of
    them, including those the walk never reached. smallest_certifiable_alpha: the smallest
    alpha this n and the first lambda's errors could certify (what to ask for instead when
    certification fails).
    """
    index: int | None
    errors: tuple[int, ...]
    pvalues: tuple[float, ...]
    n: int
    alpha: float
    delta: float
    smallest_certifiable_alpha: float

    @property
    def certified(self) -> bool:
        return self.index is not None

    @property
    def empirical_risk(self) -> float:
        """Error rate of the chosen lambda on the calibration images (NaN when not certified)."""
        return self.errors[self.index] / self.n if self.certified else math.nan

    @property
    def guarantee(self) -> str:
        """The guarantee in plain words (or why there is none)."""
        if self.certified:
            return (f"with probability >= {1 - self.delta:g} over the draw of the {self.n} calibration images, "
                    f"the undetected-error rate of the chosen thresholds is <= {self.alpha:g} "
                    f"(Learn then Test, exact binomial p-values, fixed-sequence testing)")
        return (f"not certified: {self.n} calibration images cannot certify an undetected-error rate <= "
                f"{self.alpha:g} at delta = {self.delta:g}; the smallest certifiable rate at this n is "
                f"{self.smallest_certifiable_alpha:.4g} (with 0 errors, {self.alpha:g} needs "
                f"{required_calibration_size(self.alpha, self.delta)} images)")

    def to_dict(self) -> dict:
        """JSON-ready summary (the p-values included)."""
        return {"method": "ltt", "alpha": self.alpha, "delta": self.delta, "n": self.n,
                "certified": self.certified, "index": self.index,
                "empirical_risk": None if not self.certified else self.empirical_risk,
                "smallest_certifiable_alpha": self.smallest_certifiable_alpha,
                "guarantee": self.guarantee, "errors": list(self.errors), "pvalues": list(self.pvalues)}


def certify_counts(errors_along_path, n: int, alpha: float, delta: float) -> Certificate:
    """Learn then Test from error counts: int [n_lambda] errors out of n per lambda, ordered
    from most to least conservative -> Certificate."""
    _check_level("alpha", alpha)
    _check_level("delta", delta)
    errors = np.asarray(errors_along_path, dtype=np.int64).ravel()
    if errors.size == 0:
        raise ValueError("the path of candidate lambdas is empty")
    if n <= 0 or errors.min() < 0 or errors.max() > n:
        raise ValueError(f"need 0 <= errors <= n and n >= 1, got n={n}, errors in [{errors.min()}, {errors.max()}]")
    pvalues = np.atleast_1d(binomial_tail_pvalue(errors, n, alpha))
    return Certificate(index=fixed_sequence_test(pvalues, delta), errors=tuple(int(e) for e in errors),
                       pvalues=tuple(float(p) for p in pvalues), n=int(n), alpha=float(alpha),
                       delta=float(delta),
                       smallest_certifiable_alpha=smallest_certifiable_alpha(n, delta, int(errors[0])))


def certify(losses_along_path, alpha: float, delta: float) -> Certificate:
    """Learn then Test on 0/1 losses: bool or {0, 1} [n_lambda, n], row j = which calibration
    images are errors (wrong and not referred) at lambda j, rows ordered from most to least
    conservative -> Certificate."""
    losses = np.asarray(losses_along_path)
    if losses.ndim != 2:
        raise ValueError(f"losses must be [n_lambda, n], got shape {losses.shape}")
    if not np.isin(losses, (0, 1)).all():
        raise ValueError("losses must be 0/1 (the binomial test is exact for 0/1 losses only)")
    return certify_counts(losses.sum(1), losses.shape[1], alpha, delta)
