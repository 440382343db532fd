"""cascade.py: exact Clopper-Pearson bounds, threshold calibration on synthetic scores (reaches the
target, and no cheaper thresholds exist), the referral rule and metrics, and checkpoint-pair loading."""
import itertools
import math

import numpy as np
import pytest
from scipy.stats import binom

import cascade
from conftest import synthetic_scores


# ----------------------------------------------------------------------------- Clopper-Pearson

def test_clopper_pearson_zero_events_closed_form():
    # k = 0: P(X <= 0 | p) = (1 - p)^n = alpha  ->  p = 1 - alpha^(1/n)
    lower, upper = cascade.clopper_pearson(0, 1000, 0.95)
    assert lower == 0.0 and upper == pytest.approx(1 - 0.05 ** (1 / 1000), rel=1e-9)
    assert upper == pytest.approx(0.0029912, abs=1e-6)  # about the "rule of three", 3 / n


def test_clopper_pearson_two_sided_textbook_values():
    # the exact 95 % interval for 1 of 10 and 5 of 10 (standard tables)
    lo, hi = cascade.clopper_pearson(1, 10, 0.95, two_sided=True)
    assert lo == pytest.approx(0.002529, abs=2e-6) and hi == pytest.approx(0.445016, abs=2e-6)
    lo, hi = cascade.clopper_pearson(5, 10, 0.95, two_sided=True)
    assert lo == pytest.approx(0.187086, abs=2e-6) and hi == pytest.approx(0.812914, abs=2e-6)
    assert cascade.clopper_pearson(10, 10, 0.95) == (pytest.approx(0.0), 1.0)


def test_clopper_pearson_all_events_closed_form():
    # k = n, two-sided: P(X >= n | p) = p^n = alpha / 2  ->  lower = (alpha / 2)^(1/n); the upper end is 1
    lower, upper = cascade.clopper_pearson(20, 20, 0.95, two_sided=True)
    assert upper == 1.0 and lower == pytest.approx(0.025 ** (1 / 20), rel=1e-9)
    # k = 0, two-sided: the upper end solves (1 - p)^n = alpha / 2, the lower end is 0
    lower, upper = cascade.clopper_pearson(0, 20, 0.95, two_sided=True)
    assert lower == 0.0 and upper == pytest.approx(1 - 0.025 ** (1 / 20), rel=1e-9)


def test_clopper_pearson_bounds_solve_the_binomial_tails():
    for k, n in ((3, 360), (0, 50), (17, 400), (1, 2)):
        _, upper = cascade.clopper_pearson(k, n, 0.95)
        assert binom.cdf(k, n, upper) == pytest.approx(0.05, abs=1e-9)  # P(X <= k | upper) = 1 - confidence
        assert upper > k / n
        lower, upper = cascade.clopper_pearson(k, n, 0.9, two_sided=True)
        assert binom.cdf(k, n, upper) == pytest.approx(0.05, abs=1e-9)
        assert lower == 0.0 if k == 0 else binom.sf(k - 1, n, lower) == pytest.approx(0.05, abs=1e-9)


def test_clopper_pearson_without_trials_or_with_impossible_counts():
    assert cascade.clopper_pearson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        cascade.clopper_pearson(5, 4)


# ----------------------------------------------------------------------------- calibration

def test_calibrate_one_score_hand_example():
    u = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    wrong = np.array([False, False, True, False, True])
    eligible = np.ones(5, dtype=bool)
    res = cascade.calibrate([u], eligible, wrong, target=0.0)
    assert res["thresholds"] == [0.2] and res["referral_rate"] == pytest.approx(0.6) and res["undetected"] == 0
    res = cascade.calibrate([u], eligible, wrong, target=0.2)  # one undetected error of 5 allowed
    assert res["thresholds"] == [0.4] and res["referral_rate"] == pytest.approx(0.2) and res["undetected"] == 1
    res = cascade.calibrate([u], eligible, np.ones(5, dtype=bool), target=0.0)  # everything wrong: refer all
    assert res["thresholds"] == [-math.inf] and res["referral_rate"] == 1.0


def brute_force_best(s, mode, target):
    """Smallest referral rate over every threshold pair of distinct values (the definition)."""
    cand_a = [-math.inf] + sorted(set(s.unc_a))
    cand_b = [-math.inf] + sorted(set(s.unc_b))
    use_a, use_b = cascade.MODES[mode][:2]
    best = 1.0
    for ta, tb in itertools.product(cand_a if use_a else [math.inf], cand_b if use_b else [math.inf]):
        referred = cascade.referred_mask(s, mode, ta, tb)
        undetected = (~referred & (cascade.decision(s, mode) != s.labels)).sum()
        if undetected <= math.floor(target * len(s) + 1e-9):
            best = min(best, referred.mean())
    return best


@pytest.mark.parametrize("mode,target", [("cascade", 0.001), ("cascade", 0.01), ("uncertainty_a", 0.01),
                                         ("uncertainty_b", 0.0)])
def test_calibration_reaches_target_with_least_workload(mode, target):
    valid = synthetic_scores(120, seed=1)
    th = cascade.calibrate_mode(valid, mode, target)
    referred = cascade.referred_mask(valid, mode, th["threshold_a"], th["threshold_b"])
    undetected = (~referred & (cascade.decision(valid, mode) != valid.labels)).sum()
    assert undetected / len(valid) <= target and th["target_met"]
    assert referred.mean() == pytest.approx(th["referral_rate"])
    assert th["referral_rate"] == pytest.approx(brute_force_best(valid, mode, target))
    if mode == "cascade":
        assert referred[valid.disagree].all()


def test_calibration_with_subsampled_candidates_still_meets_target():
    valid = synthetic_scores(2000, seed=2)
    th = cascade.calibrate_mode(valid, "cascade", 0.002, max_candidates=20)
    assert th["undetected_rate"] <= 0.002 and th["target_met"]
    exact = cascade.calibrate_mode(valid, "cascade", 0.002)
    assert exact["referral_rate"] <= th["referral_rate"] + 1e-12


def test_metrics_and_modes_on_hand_example():
    s = cascade.Scores(labels=np.array([0, 0, 1, 1]), pred_a=np.array([0, 1, 1, 0]), pred_b=np.array([0, 1, 0, 0]),
                  unc_a=np.array([0.1, 0.2, 0.9, 0.3]), unc_b=np.array([0.1, 0.1, 0.1, 0.1]))
    referred = cascade.referred_mask(s, "cascade", 0.5, 0.5)  # image 2 disagrees; image 2 also uncertain
    assert referred.tolist() == [False, False, True, False]
    m = cascade.safety_metrics(s.labels, cascade.decision(s, "cascade"), referred)
    assert m["referral_rate"] == 0.25 and m["undetected"] == 2 and m["undetected_rate"] == 0.5
    assert m["automatic_accuracy"] == pytest.approx(1 / 3) and m["errors"] == 2 and m["errors_caught"] == 0.0
    assert cascade.referred_mask(s, "disagreement", math.inf, math.inf).tolist() == [False, False, True, False]
    assert cascade.referred_mask(s, "uncertainty_a", 0.25, math.inf).tolist() == [False, False, True, True]
    assert cascade.referred_mask(s, "model_a_alone", -math.inf, -math.inf).sum() == 0
    nan_scores = cascade.Scores(s.labels, s.pred_a, s.pred_a, np.array([np.nan, 0, 0, 0]), s.unc_b)
    assert cascade.referred_mask(nan_scores, "uncertainty_a", 1.0, 1.0)[0]  # a NaN score is referred


def test_mismatched_classes_refused(checkpoint_pair, tmp_path):
    import torch
    a, b = checkpoint_pair
    state = torch.load(b, weights_only=True)
    state["class_names"] = list(reversed(state["class_names"]))
    torch.save(state, tmp_path / "b.pt")
    with pytest.raises(ValueError, match="different classes"):
        cascade.load_pair(a, tmp_path / "b.pt", "cpu")
