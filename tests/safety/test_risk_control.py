"""Learn then Test (risk_control.py): exact p-values, the fixed-sequence walk, the sample size
rule, and the guarantee itself checked over many calibration draws with a known risk curve."""
import math

import numpy as np
import pytest
from scipy import stats

from safehil.safety import risk_control as rc


# ----------------------------------------------------------------------------- p-values

def test_pvalue_matches_scipy_binomial_cdf():
    for k, n, alpha in [(0, 100, 0.01), (3, 1000, 0.001), (7, 250, 0.05), (50, 60, 0.9)]:
        assert rc.binomial_tail_pvalue(k, n, alpha) == pytest.approx(stats.binom.cdf(k, n, alpha), rel=1e-12)
    ks = np.array([0, 1, 2, 5])
    np.testing.assert_allclose(rc.binomial_tail_pvalue(ks, 40, 0.1), stats.binom.cdf(ks, 40, 0.1), rtol=1e-12)


def test_pvalue_hand_computed_small_cases():
    # P[Bin(3, 1/2) <= 1] = (1 + 3) / 8; P[Bin(10, 0.1) = 0] = 0.9 ** 10
    assert rc.binomial_tail_pvalue(1, 3, 0.5) == pytest.approx(0.5)
    assert rc.binomial_tail_pvalue(0, 10, 0.1) == pytest.approx(0.3486784401)
    assert rc.binomial_tail_pvalue(10, 10, 0.1) == pytest.approx(1.0)


def test_more_errors_give_larger_pvalues():
    p = rc.binomial_tail_pvalue(np.arange(20), 500, 0.01)
    assert np.all(np.diff(p) > 0)


# ----------------------------------------------------------------------------- fixed sequence

def test_fixed_sequence_stops_at_first_non_rejection():
    # the last p-value is tiny again, but the walk ended at index 2 and never reaches it
    assert rc.fixed_sequence_test([0.001, 0.02, 0.3, 0.0001], delta=0.05) == 1


def test_fixed_sequence_returns_none_when_the_first_hypothesis_stands():
    assert rc.fixed_sequence_test([0.2, 0.0, 0.0], delta=0.05) is None


def test_fixed_sequence_rejects_at_exactly_delta_and_runs_to_the_end():
    assert rc.fixed_sequence_test([0.0, 0.05, 0.01], delta=0.05) == 2


def test_certify_does_not_jump_over_a_risky_lambda():
    n = 3000
    losses = np.zeros((4, n), dtype=bool)
    losses[1, :1] = True      # 1 error: still certifies 0.2 % at 5 %
    losses[2, :40] = True     # 40 errors: risk 1.3 %, not certifiable
    # row 3 has no errors again: a later small p-value that must not be reached
    cert = rc.certify(losses, alpha=0.002, delta=0.05)
    assert cert.pvalues[3] <= 0.05 < cert.pvalues[2]
    assert cert.index == 1 and cert.certified
    assert cert.errors == (0, 1, 40, 0)
    assert cert.empirical_risk == pytest.approx(1 / n)


# ----------------------------------------------------------------------------- sample size

def test_zero_errors_need_2995_images_for_a_tenth_of_a_percent_at_delta_5_percent():
    assert math.log(0.05) / math.log(0.999) == pytest.approx(2994.2, abs=0.1)
    assert rc.required_calibration_size(0.001, 0.05) == 2995
    assert rc.smallest_certifiable_alpha(2995, 0.05) <= 0.001 < rc.smallest_certifiable_alpha(2994, 0.05)


def test_required_size_is_the_smallest_that_certifies_with_errors():
    for k in (1, 2, 5):
        n = rc.required_calibration_size(0.01, 0.05, k=k)
        assert rc.binomial_tail_pvalue(k, n, 0.01) <= 0.05 < rc.binomial_tail_pvalue(k, n - 1, 0.01)


def test_smallest_certifiable_alpha_solves_the_binomial_tail():
    for n, k in [(100, 0), (100, 3), (2000, 10)]:
        a = rc.smallest_certifiable_alpha(n, 0.05, k)
        assert stats.binom.cdf(k, n, a) == pytest.approx(0.05, rel=1e-6)
    assert rc.smallest_certifiable_alpha(100, 0.05) == pytest.approx(1 - 0.05 ** (1 / 100))
    assert rc.smallest_certifiable_alpha(10, 0.05, k=10) == 1.0


def test_small_calibration_set_is_not_certifiable_and_names_the_smallest_alpha():
    cert = rc.certify(np.zeros((3, 100), dtype=bool), alpha=0.001, delta=0.05)
    assert not cert.certified and cert.index is None and math.isnan(cert.empirical_risk)
    assert cert.smallest_certifiable_alpha == pytest.approx(0.02951, abs=1e-5)
    assert "not certified" in cert.guarantee and "0.02951" in cert.guarantee and "2995" in cert.guarantee
    summary = cert.to_dict()
    assert summary["certified"] is False and summary["n"] == 100 and len(summary["pvalues"]) == 3


def test_certified_guarantee_reads_in_plain_words():
    cert = rc.certify(np.zeros((2, 3000), dtype=bool), alpha=0.001, delta=0.05)
    assert cert.certified and cert.index == 1
    assert "with probability >= 0.95" in cert.guarantee and "<= 0.001" in cert.guarantee
    assert "3000 calibration images" in cert.guarantee


def test_losses_that_are_not_zero_or_one_are_refused():
    with pytest.raises(ValueError, match="0/1"):
        rc.certify(np.full((2, 10), 0.5), alpha=0.1, delta=0.1)


# ----------------------------------------------------------------------------- the guarantee

def _draw_calibration(rng, n):
    """Uncertainty u ~ U(0, 1); the prediction is wrong with probability u. An image is accepted
    (not referred) when u <= t, so the undetected-error rate is risk(t) = integral_0^t u du = t^2 / 2."""
    u = rng.random(n)
    wrong = rng.random(n) < u
    return u, wrong


def _true_risk(t):
    return t ** 2 / 2


def test_certified_threshold_meets_the_risk_bound_in_at_least_1_minus_delta_of_draws():
    alpha, delta, n, draws = 0.02, 0.1, 1000, 300
    path = np.linspace(0.0, 1.0, 201)  # thresholds = quantiles of U(0, 1): most to least conservative
    rng = np.random.default_rng(0)
    ltt_risk, naive_risk = [], []
    for _ in range(draws):
        u, wrong = _draw_calibration(rng, n)
        losses = (u[None, :] <= path[:, None]) & wrong[None, :]  # [n_lambda, n]
        cert = rc.certify(losses, alpha, delta)
        assert cert.certified
        ltt_risk.append(_true_risk(path[cert.index]))
        # the empirical rule (least conservative threshold whose calibration rate is <= alpha)
        naive_risk.append(_true_risk(path[np.nonzero(losses.mean(1) <= alpha)[0].max()]))
    ltt_risk, naive_risk = np.array(ltt_risk), np.array(naive_risk)
    # if P(risk > alpha) were delta, violations ~ Binomial(draws, delta): allow its 99.9 % quantile
    allowed = stats.binom.ppf(0.999, draws, delta)
    assert (ltt_risk > alpha).sum() <= allowed
    # the check can fail: the empirical rule breaks the bound far more often than that
    assert (naive_risk > alpha).sum() > allowed
    # and the certificate is not bought by referring everything (true t* = 0.2, risk 0.02)
    assert np.median(ltt_risk) > alpha / 2
