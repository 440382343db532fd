"""The verdict rules' one decision and their operating characteristics at a run's own scale.

A claim is a region of its statistic (`Band`): "beats random" is (0, inf), "does not fall" is
(-margin, inf), "level with random" is (-margin, margin), "roughly halves" is a tolerance band
around the expected ratio. One rule decides every row: reproduced = the interval lies inside
the region, contradicted = it lies wholly outside, inconclusive = it reaches across a bound.

    band = Band(0.0, math.inf)
    band.outcome(low, high)                          # [k] codes: 1 reproduced, -1 contradicted, 0 inconclusive
    t_power(band, effect=0.096, null=0.0, sd=0.05, n=3, sd_df=2)   # Power of a t-interval over 3 seeds
    z_power(band, effect=0.70, null=0.5, se=0.03, n=360)           # Power of a normal interval over images

Power is simulated (t-intervals over seeds: the true seed spread is drawn around the observed one,
a scaled inverse chi-square with the observed n - 1 degrees of freedom, so the spread estimate is
not taken as the truth) or written in closed form (normal intervals over images, whose standard
error is estimated from many units). Every simulation is seeded: the same inputs give the same
numbers, and vectorised (a few milliseconds per row).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

POWER_NEEDED = 0.8        # below this P(reproduced | the effect), a row is "not testable at this scale"
REPS = 4000               # simulated runs per operating characteristic
SEARCH_REPS = 2000        # per candidate size when searching the seeds that would give POWER_NEEDED
MOST_SEEDS = 200          # the search gives up beyond this many seeds
SEED = 0                  # the simulations' fixed seed: the same command gives the same table

REPRODUCED_CODE, CONTRADICTED_CODE, INCONCLUSIVE_CODE = 1, -1, 0


@dataclass(frozen=True)
class Band:
    """The claim as a region of its statistic: the true effect lies in (low, high); either end may
    be infinite."""
    low: float = -math.inf
    high: float = math.inf

    def outcome(self, low, high) -> np.ndarray:
        """Codes of intervals [low, high] (arrays of one shape): 1 inside the region (reproduced),
        -1 wholly outside (contradicted), 0 across a bound (inconclusive); NaN bounds give 0."""
        low, high = np.asarray(low, float), np.asarray(high, float)
        inside = (low > self.low) & (high < self.high)
        outside = (high < self.low) | (low > self.high)
        return np.where(inside, REPRODUCED_CODE, np.where(outside, CONTRADICTED_CODE, INCONCLUSIVE_CODE))

    def text(self, show) -> str:
        """'above 0', 'below 2.0', 'between -1.5 and 1.5' with `show` writing each bound."""
        if math.isinf(self.high):
            return f"above {show(self.low)}"
        if math.isinf(self.low):
            return f"below {show(self.high)}"
        return f"between {show(self.low)} and {show(self.high)}"


@dataclass(frozen=True)
class Power:
    """A rule's operating characteristics at this run's own scale."""
    reproduce: float    # P(reproduced | the effect named in `at`): the rule's power
    contradict: float   # P(contradicted | no effect, as the rule's `at` names it)
    at: str             # the effects and spread the two were computed at, in words
    needed: str = ""    # the seeds / images that would give POWER_NEEDED ("" when this run has it)

    @property
    def enough(self) -> bool:
        return self.reproduce >= POWER_NEEDED

    def text(self) -> str:
        # no '|' in the text: it is a markdown table cell
        return f"P(reproduced) {self.reproduce:.2f}; P(contradicted) {self.contradict:.2f} under no effect ({self.at})"


def t_outcomes(band: Band, effect: float, sd: float, n: int, sd_df: int, reps: int = REPS, seed: int = SEED,
               confidence: float = 0.95) -> np.ndarray:
    """Codes [reps] of the rule on two-sided t-intervals over n seeds when the true mean is `effect`.

    The true seed sd is drawn as sd * sqrt(sd_df / chi2(sd_df)) (sd_df = 0: sd is taken as known);
    each simulated run's mean ~ N(effect, sigma^2 / n) and its sample sd ~ sigma * sqrt(chi2(n-1) / (n-1)),
    independent (normal seeds), so no n-sized arrays are drawn.
    """
    if n < 2:
        return np.zeros(reps, int)
    rng = np.random.default_rng(seed)
    sigma = sd * np.sqrt(sd_df / rng.chisquare(sd_df, reps)) if sd_df > 0 else np.full(reps, float(sd))
    mean = effect + sigma / math.sqrt(n) * rng.standard_normal(reps)
    s = sigma * np.sqrt(rng.chisquare(n - 1, reps) / (n - 1))
    half = float(scipy_stats.t.ppf((1 + confidence) / 2, n - 1)) * s / math.sqrt(n)
    return band.outcome(mean - half, mean + half)


def _rate(codes: np.ndarray, code: int) -> float:
    return float(np.mean(codes == code))


def t_power(band: Band, effect: float, null: float, sd: float, n: int, sd_df: int, at: str,
            unit: str = "seeds") -> Power:
    """Power of a t-interval rule over n seeds: P(reproduced | effect), P(contradicted | null), and
    when the first is under POWER_NEEDED the fewest seeds that would reach it (simulated the same way)."""
    p_rep = _rate(t_outcomes(band, effect, sd, n, sd_df), REPRODUCED_CODE)
    p_con = _rate(t_outcomes(band, null, sd, n, sd_df), CONTRADICTED_CODE)
    needed = ""
    if p_rep < POWER_NEEDED:
        candidates = sorted({*range(n + 1, n + 11), 15, 20, 30, 40, 60, 80, 100, 150, MOST_SEEDS})
        m = next((k for k in candidates if k > n and _rate(
            t_outcomes(band, effect, sd, k, sd_df, SEARCH_REPS), REPRODUCED_CODE) >= POWER_NEEDED), None)
        needed = (f"about {m} {unit} would give power {POWER_NEEDED}" if m else
                  f"more than {MOST_SEEDS} {unit} would be needed for power {POWER_NEEDED}")
    return Power(p_rep, p_con, at, needed)


def z_rates(band: Band, effect: float, se: float, z: float = 1.959963984540054) -> tuple[float, float]:
    """(P(reproduced), P(contradicted)) of the rule on intervals estimate +- z se, the estimate
    ~ N(effect, se^2): closed form."""
    if not se > 0:
        code = int(band.outcome(effect, effect))
        return float(code == REPRODUCED_CODE), float(code == CONTRADICTED_CODE)
    cdf = scipy_stats.norm.cdf
    inside = 0.0
    if band.high - band.low > 2 * z * se:
        inside = float(cdf((band.high - z * se - effect) / se) - cdf((band.low + z * se - effect) / se))
    outside = float(cdf((band.low - z * se - effect) / se) + 1 - cdf((band.high + z * se - effect) / se))
    return max(inside, 0.0), outside


def z_power(band: Band, effect: float, null: float, se: float, n: int, at: str, unit: str = "images",
            most: int = 10 ** 7) -> Power:
    """Power of a normal-interval rule over n units (its se shrinks as 1 / sqrt(n)): P(reproduced |
    effect), P(contradicted | null), and the fewest units that would give POWER_NEEDED."""
    p_rep = z_rates(band, effect, se)[0]
    p_con = z_rates(band, null, se)[1]
    needed = ""
    if p_rep < POWER_NEEDED:
        def enough(m: int) -> bool:
            return z_rates(band, effect, se * math.sqrt(n / m))[0] >= POWER_NEEDED
        lo, hi = n, 2 * n
        while not enough(hi) and hi <= most:
            lo, hi = hi, 2 * hi
        if hi > most:
            needed = f"more than {most:,} {unit} would be needed for power {POWER_NEEDED}"
        else:
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if enough(mid) else (mid, hi)
            needed = f"about {hi:,} {unit} would give power {POWER_NEEDED}"
    return Power(p_rep, p_con, at, needed)
