"""stats.py: the t-interval equals scipy's, pairing removes the shared seed effect, the bootstrap
interval matches the normal theory on a known distribution and keeps rows together."""
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from safehil.report.stats import Interval, bootstrap_interval, paired_t_interval, t_interval


def test_t_interval_equals_scipy_student_t():
    x = np.array([0.81, 0.84, 0.79, 0.88, 0.83])
    got = t_interval(x, 0.95)
    low, high = scipy_stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=scipy_stats.sem(x))
    assert (got.estimate, got.n) == (pytest.approx(x.mean()), 5)
    assert got.low == pytest.approx(low) and got.high == pytest.approx(high)
    wider = t_interval(x, 0.99)
    assert wider.low < got.low and wider.high > got.high


def test_paired_interval_is_the_interval_of_the_differences():
    base = np.array([0.50, 0.70, 0.90])                       # a large seed effect ...
    a, b = base + np.array([0.05, 0.06, 0.04]), base         # ... and a steady gain of about 0.05
    paired = paired_t_interval(a, b)
    assert paired.estimate == pytest.approx(0.05) and paired.low > 0 and paired.excludes(0)
    # unpaired, the seed effect would swamp the gain: the pairing is what makes it visible
    assert paired.high - paired.low < 0.1
    half = scipy_stats.t.ppf(0.975, 2) * np.std([0.05, 0.06, 0.04], ddof=1) / math.sqrt(3)
    assert paired.high == pytest.approx(0.05 + half)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_t_interval([1, 2], [1])


def test_one_value_has_no_interval():
    one = t_interval([0.3])
    assert one.estimate == 0.3 and math.isnan(one.low) and not one.excludes(0) and "n/a" in one.text()


def test_bootstrap_of_a_mean_matches_the_normal_interval():
    x = np.random.default_rng(1).normal(2.0, 1.0, 400)
    got = bootstrap_interval(np.mean, (x,), n_resamples=2000, seed=0)
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x))          # about 0.098
    assert got.estimate == pytest.approx(x.mean())
    assert got.low == pytest.approx(x.mean() - half, abs=0.02) and got.high == pytest.approx(x.mean() + half, abs=0.02)
    assert bootstrap_interval(np.mean, (x,), seed=0) == bootstrap_interval(np.mean, (x,), seed=0)   # seeded


def test_bootstrap_resamples_rows_of_every_array_together():
    b = np.random.default_rng(0).normal(size=50)
    got = bootstrap_interval(lambda a, b: float(np.mean(a - b)), (b + 1.0, b), n_resamples=200)
    assert got.low == pytest.approx(1.0) and got.high == pytest.approx(1.0)
    nan_when_one_class = bootstrap_interval(lambda y: math.nan if y.min() == y.max() else y.mean(),
                                            (np.array([0, 0, 0, 1]),), n_resamples=300)
    assert 0 <= nan_when_one_class.low <= nan_when_one_class.high <= 1   # one-class resamples are dropped


def test_interval_text():
    assert Interval(0.0123, 0.004, 0.02, 3).text(100, 1, " %") == "1.2 % [0.4, 2.0]"
