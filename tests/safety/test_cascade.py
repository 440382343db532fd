"""cascade.py: exact Clopper-Pearson bounds, threshold calibration on synthetic scores (reaches the
target, and no cheaper thresholds exist), the referral rule and metrics, and checkpoint-pair loading."""
import itertools
import math

import numpy as np
import pytest
from scipy.stats import binom

from safehil.safety import cascade
from safehil.safety import risk_control
from conftest import synthetic_scores


# ----------------------------------------------------------------------------- Clopper-Pearson

def test_clopper_pearson_zero_events_closed_form():
    # k = 0: P(X <= 0 | p) = (1 - p)^n = alpha  ->  p = 1 - alpha^(1/n)
    lower, upper = risk_control.clopper_pearson(0, 1000, 0.95)
    assert lower == 0.0 and upper == pytest.approx(1 - 0.05 ** (1 / 1000), rel=1e-9)
    assert upper == pytest.approx(0.0029912, abs=1e-6)  # about the "rule of three", 3 / n


def test_clopper_pearson_two_sided_textbook_values():
    # the exact 95 % interval for 1 of 10 and 5 of 10 (standard tables)
    lo, hi = risk_control.clopper_pearson(1, 10, 0.95, two_sided=True)
    assert lo == pytest.approx(0.002529, abs=2e-6) and hi == pytest.approx(0.445016, abs=2e-6)
    lo, hi = risk_control.clopper_pearson(5, 10, 0.95, two_sided=True)
    assert lo == pytest.approx(0.187086, abs=2e-6) and hi == pytest.approx(0.812914, abs=2e-6)
    assert risk_control.clopper_pearson(10, 10, 0.95) == (pytest.approx(0.0), 1.0)


def test_clopper_pearson_all_events_closed_form():
    # k = n, two-sided: P(X >= n | p) = p^n = alpha / 2  ->  lower = (alpha / 2)^(1/n); the upper end is 1
    lower, upper = risk_control.clopper_pearson(20, 20, 0.95, two_sided=True)
    assert upper == 1.0 and lower == pytest.approx(0.025 ** (1 / 20), rel=1e-9)
    # k = 0, two-sided: the upper end solves (1 - p)^n = alpha / 2, the lower end is 0
    lower, upper = risk_control.clopper_pearson(0, 20, 0.95, two_sided=True)
    assert lower == 0.0 and upper == pytest.approx(1 - 0.025 ** (1 / 20), rel=1e-9)


def test_clopper_pearson_bounds_solve_the_binomial_tails():
    for k, n in ((3, 360), (0, 50), (17, 400), (1, 2)):
        _, upper = risk_control.clopper_pearson(k, n, 0.95)
        assert binom.cdf(k, n, upper) == pytest.approx(0.05, abs=1e-9)  # P(X <= k | upper) = 1 - confidence
        assert upper > k / n
        lower, upper = risk_control.clopper_pearson(k, n, 0.9, two_sided=True)
        assert binom.cdf(k, n, upper) == pytest.approx(0.05, abs=1e-9)
        assert lower == 0.0 if k == 0 else binom.sf(k - 1, n, lower) == pytest.approx(0.05, abs=1e-9)


def test_clopper_pearson_without_trials_or_with_impossible_counts():
    assert risk_control.clopper_pearson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        risk_control.clopper_pearson(5, 4)


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


# ----------------------------------------------------------------------------- certified thresholds (LTT)

def known_risk_scores(rng, n):
    """Scores whose cascade risk is known in closed form: uncertainties u_a, u_b ~ U(0, 1),
    independent; the models disagree on 10 % of the images (independently); model A is wrong
    with probability u_a * u_b, and B repeats A where they agree."""
    labels = rng.integers(0, 4, n)
    unc_a, unc_b = rng.random(n), rng.random(n)
    wrong = rng.random(n) < unc_a * unc_b
    disagree = rng.random(n) < 0.1
    pred_a = np.where(wrong, (labels + 1) % 4, labels)
    return cascade.Scores(labels, pred_a, np.where(disagree, (pred_a + 2) % 4, pred_a), unc_a, unc_b)


def cascade_risk(threshold_a, threshold_b):
    """P(agree, u_a <= t_a, u_b <= t_b, wrong) = 0.9 * (t_a^2 / 2) * (t_b^2 / 2) for the scores above."""
    ta, tb = np.clip(threshold_a, 0, 1), np.clip(threshold_b, 0, 1)
    return 0.9 * ta ** 2 / 2 * tb ** 2 / 2


def test_certified_cascade_meets_the_risk_bound_in_at_least_1_minus_delta_of_draws():
    alpha, delta, n, draws = 0.02, 0.1, 1000, 300
    rng = np.random.default_rng(0)
    ltt, empirical = [], []
    for _ in range(draws):
        calib = known_risk_scores(rng, n)
        chosen, _ = cascade.certify_mode(calib, "cascade", alpha, delta, path_points=201)
        assert chosen["certified"]
        ltt.append(cascade_risk(chosen["threshold_a"], chosen["threshold_b"]))
        fitted = cascade.calibrate_mode(calib, "cascade", alpha, max_candidates=60)
        empirical.append(cascade_risk(fitted["threshold_a"], fitted["threshold_b"]))
    ltt, empirical = np.array(ltt), np.array(empirical)
    # if P(risk > alpha) were delta, violations ~ Binomial(draws, delta): allow its 99.9 % quantile
    allowed = binom.ppf(0.999, draws, delta)
    assert (ltt > alpha).sum() <= allowed
    assert (empirical > alpha).sum() > allowed  # the check can fail: fitting calibration alone breaks it
    assert np.median(ltt) > alpha / 2  # and the certificate is not bought by referring everything


def test_fixed_path_certificate_covers_alpha_one_in_a_thousand_in_at_least_1_minus_delta_of_draws():
    # the paper's alpha = 0.1 %: 400 simulated calibration draws of 6,000 images, the path fixed in advance
    alpha, delta, n, draws = 0.001, 0.05, 6000, 400
    rng = np.random.default_rng(1)
    ltt, empirical, referred = [], [], []
    for _ in range(draws):
        calib = known_risk_scores(rng, n)
        chosen, _ = cascade.certify_mode(calib, "cascade", alpha, delta, path_points=1000)
        assert chosen["certified"] and chosen["path"]["kind"] == "fixed"
        ltt.append(cascade_risk(chosen["threshold_a"], chosen["threshold_b"]))
        referred.append(chosen["referral_rate"])
        fitted = cascade.calibrate_mode(calib, "cascade", alpha, max_candidates=60)
        empirical.append(cascade_risk(fitted["threshold_a"], fitted["threshold_b"]))
    ltt, empirical = np.array(ltt), np.array(empirical)
    allowed = binom.ppf(0.999, draws, delta)  # violations ~ Binomial(draws, <= delta) if the theorem holds
    print(f"fixed path, alpha {alpha}: true risk above alpha in {(ltt > alpha).sum()} of {draws} draws "
          f"(allowed {allowed:.0f}); empirical thresholds: {(empirical > alpha).sum()}")
    assert (ltt > alpha).sum() <= allowed
    assert (empirical > alpha).sum() > allowed        # the check can fail: fitting to the calibration split does
    assert np.median(ltt) > alpha / 5 and max(referred) < 1   # not bought by referring everything


def test_the_certified_path_does_not_depend_on_the_calibration_scores():
    first, second = synthetic_scores(3000, seed=21), synthetic_scores(3000, seed=22)
    shifted = cascade.Scores(second.labels, second.pred_a, second.pred_b, second.unc_a * 0.3, second.unc_b ** 2)
    bounds = (math.log(4), math.log(4))
    _, path_1 = cascade.certify_mode(first, "cascade", 0.01, 0.05, path_points=300, score_bounds=bounds)
    _, path_2 = cascade.certify_mode(shifted, "cascade", 0.01, 0.05, path_points=300, score_bounds=bounds)
    for column in ("level", "threshold_a", "threshold_b"):
        assert path_1[column].tolist() == path_2[column].tolist()
    assert path_1["undetected"].tolist() != path_2["undetected"].tolist()   # the scores only count errors
    levels, path_a, _ = cascade.fixed_path(300, *bounds)
    assert path_1["threshold_a"].tolist() == path_a.tolist() and path_a[0] == -math.inf
    assert path_a[-1] == pytest.approx(math.log(4)) and (np.diff(path_a[1:]) > 0).all()


def test_path_errors_count_what_the_referral_rule_leaves_undetected():
    s = synthetic_scores(500, seed=23)
    s.unc_a[:5] = np.nan
    levels, path_a, path_b = cascade.fixed_path(50, 1.5, 1.2)
    for mode in ("cascade", "uncertainty_a", "uncertainty_b"):
        use_a, use_b = cascade.MODES[mode][:2]
        pa, pb = (path_a if use_a else np.full(50, math.inf)), (path_b if use_b else np.full(50, math.inf))
        wrong = cascade.decision(s, mode) != s.labels
        expected = [int((~cascade.referred_mask(s, mode, ta, tb) & wrong).sum()) for ta, tb in zip(pa, pb)]
        assert cascade.path_errors(s, mode, pa, pb).tolist() == expected


def test_score_bounds_hold_for_every_uncertainty_score():
    import torch
    from safehil.uq import uncertainty
    probs = torch.softmax(torch.randn(8, 200, 6) * torch.tensor([0.01, 3.0]).repeat(100)[None, :, None], -1)
    probs[:, 0] = 1 / 6                                   # the uniform prediction reaches ln C
    for name, fn in uncertainty.SCORES.items():
        values = fn(probs)
        assert float(values.max()) <= cascade.score_upper_bound(name, 6) + 1e-6, name
    assert cascade.score_upper_bound("predictive_entropy", 6) == pytest.approx(
        float(uncertainty.SCORES["predictive_entropy"](probs)[0]), abs=1e-5)


def test_certification_keeps_the_last_point_before_the_first_non_rejection():
    calib = synthetic_scores(3000, seed=7)
    chosen, path = cascade.certify_mode(calib, "cascade", 0.01, 0.05, path_points=400)
    j = int(np.flatnonzero(path["chosen"])[0])
    assert (path["pvalue"][:j + 1] <= 0.05).all() and path["pvalue"][j + 1] > 0.05
    assert path["level"].is_monotonic_increasing and path["undetected"].is_monotonic_increasing
    assert (chosen["threshold_a"], chosen["threshold_b"]) == (path["threshold_a"][j], path["threshold_b"][j])
    assert chosen["undetected"] == path["undetected"][j] and chosen["certified"]
    assert path["pvalue"][j] == pytest.approx(binom.cdf(chosen["undetected"], 3000, 0.01))


def test_too_few_calibration_images_refer_everything_and_are_not_certified():
    calib = synthetic_scores(100, seed=8)
    chosen, _ = cascade.certify_mode(calib, "cascade", 0.001, 0.05)
    assert not chosen["certified"] and not chosen["target_met"]
    assert chosen["threshold_a"] == chosen["threshold_b"] == -math.inf and chosen["referral_rate"] == 1.0
    assert chosen["smallest_certifiable_alpha"] == pytest.approx(1 - 0.05 ** (1 / 100))
    assert chosen["guarantee"].startswith("not certified")
    thresholds, _ = cascade.calibrate_modes(calib, "ltt", 0.001, 0.05)
    summary = cascade.calibration_summary(thresholds, "ltt", 0.001, 0.05, len(calib))
    assert summary["certified"] is False and summary["images_needed"] == 2995


def test_sweep_takes_its_thresholds_from_the_calibration_split():
    valid, test = synthetic_scores(300, seed=11), synthetic_scores(300, seed=12)
    test = cascade.Scores(test.labels, test.pred_a, test.pred_b, test.unc_a * 3, test.unc_b * 3)
    curve = cascade.sweep(test, valid, np.array([0.0, 0.5, 1.0]))
    row = curve[(curve["mode"] == "cascade") & (curve["level"] == 0.5)].iloc[0]
    assert row["threshold_a"] == np.quantile(valid.unc_a, 0.5) != np.quantile(test.unc_a, 0.5)
    assert row["threshold_b"] == np.quantile(valid.unc_b, 0.5)
    referred = cascade.referred_mask(test, "cascade", row["threshold_a"], row["threshold_b"])
    assert row["referral_rate"] == pytest.approx(referred.mean())


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
