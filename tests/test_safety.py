"""The safety cascade: exact Clopper-Pearson bounds, threshold calibration on synthetic scores
(reaches the target, and no cheaper thresholds exist), the metrics, and evaluate_safety.py end to end."""
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import evaluate_safety as es

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- Clopper-Pearson

def test_clopper_pearson_zero_events_closed_form():
    # k = 0: P(X <= 0 | p) = (1 - p)^n = alpha  ->  p = 1 - alpha^(1/n)
    lower, upper = es.clopper_pearson(0, 1000, 0.95)
    assert lower == 0.0 and upper == pytest.approx(1 - 0.05 ** (1 / 1000), rel=1e-9)
    assert upper == pytest.approx(0.0029912, abs=1e-6)  # about the "rule of three", 3 / n


def test_clopper_pearson_two_sided_textbook_values():
    # the exact 95 % interval for 1 of 10 and 5 of 10 (standard tables)
    lo, hi = es.clopper_pearson(1, 10, 0.95, two_sided=True)
    assert lo == pytest.approx(0.002529, abs=2e-6) and hi == pytest.approx(0.445016, abs=2e-6)
    lo, hi = es.clopper_pearson(5, 10, 0.95, two_sided=True)
    assert lo == pytest.approx(0.187086, abs=2e-6) and hi == pytest.approx(0.812914, abs=2e-6)
    assert es.clopper_pearson(10, 10, 0.95) == (pytest.approx(0.0), 1.0)


def test_clopper_pearson_upper_solves_binomial_tail():
    for k, n in ((3, 360), (0, 50), (17, 400)):
        _, upper = es.clopper_pearson(k, n, 0.95)
        assert es.binomial_cdf(k, n, upper) == pytest.approx(0.05, abs=1e-9)
        assert upper > k / n


def test_binomial_cdf_matches_direct_sum():
    n, p = 12, 0.3
    direct = sum(math.comb(n, j) * p ** j * (1 - p) ** (n - j) for j in range(5))
    assert es.binomial_cdf(4, n, p) == pytest.approx(direct, rel=1e-12)


# ----------------------------------------------------------------------------- calibration

def test_calibrate_one_score_hand_example():
    u = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    wrong = np.array([False, False, True, False, True])
    eligible = np.ones(5, dtype=bool)
    res = es.calibrate([u], eligible, wrong, target=0.0)
    assert res["thresholds"] == [0.2] and res["referral_rate"] == pytest.approx(0.6) and res["undetected"] == 0
    res = es.calibrate([u], eligible, wrong, target=0.2)  # one undetected error of 5 allowed
    assert res["thresholds"] == [0.4] and res["referral_rate"] == pytest.approx(0.2) and res["undetected"] == 1
    res = es.calibrate([u], eligible, np.ones(5, dtype=bool), target=0.0)  # everything wrong: refer all
    assert res["thresholds"] == [-math.inf] and res["referral_rate"] == 1.0


def synthetic_scores(n=300, seed=0):
    """Two models; wrong predictions tend to have higher uncertainty; some disagreement."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    wrong_a = rng.random(n) < 0.12
    pred_a = np.where(wrong_a, (labels + 1) % 4, labels)
    flip_b = rng.random(n) < 0.5
    pred_b = np.where(wrong_a & flip_b, labels, pred_a)          # B catches half of A's errors
    pred_b = np.where(~wrong_a & (rng.random(n) < 0.03), (labels + 2) % 4, pred_b)
    unc_a = rng.gamma(2, 0.1, n) + wrong_a * rng.gamma(2, 0.25, n)
    unc_b = rng.gamma(2, 0.1, n) + wrong_a * rng.gamma(2, 0.2, n)
    return es.Scores(labels, pred_a, pred_b, unc_a, unc_b)


def brute_force_best(s, mode, target):
    """Smallest referral rate over every threshold pair of distinct values (the definition)."""
    cand_a = [-math.inf] + sorted(set(s.unc_a))
    cand_b = [-math.inf] + sorted(set(s.unc_b))
    use_a, use_b = es.MODES[mode][:2]
    best = 1.0
    for ta, tb in itertools.product(cand_a if use_a else [math.inf], cand_b if use_b else [math.inf]):
        referred = es.referred_mask(s, mode, ta, tb)
        undetected = (~referred & (es.decision(s, mode) != s.labels)).sum()
        if undetected <= math.floor(target * len(s) + 1e-9):
            best = min(best, referred.mean())
    return best


@pytest.mark.parametrize("mode,target", [("cascade", 0.001), ("cascade", 0.01), ("uncertainty_a", 0.01),
                                         ("uncertainty_b", 0.0)])
def test_calibration_reaches_target_with_least_workload(mode, target):
    valid = synthetic_scores(120, seed=1)
    th = es.calibrate_mode(valid, mode, target)
    referred = es.referred_mask(valid, mode, th["threshold_a"], th["threshold_b"])
    undetected = (~referred & (es.decision(valid, mode) != valid.labels)).sum()
    assert undetected / len(valid) <= target and th["target_met"]
    assert referred.mean() == pytest.approx(th["referral_rate"])
    assert th["referral_rate"] == pytest.approx(brute_force_best(valid, mode, target))
    if mode == "cascade":
        assert referred[valid.disagree].all()


def test_calibration_with_subsampled_candidates_still_meets_target():
    valid = synthetic_scores(2000, seed=2)
    th = es.calibrate_mode(valid, "cascade", 0.002, max_candidates=20)
    assert th["undetected_rate"] <= 0.002 and th["target_met"]
    exact = es.calibrate_mode(valid, "cascade", 0.002)
    assert exact["referral_rate"] <= th["referral_rate"] + 1e-12


def test_metrics_and_modes_on_hand_example():
    s = es.Scores(labels=np.array([0, 0, 1, 1]), pred_a=np.array([0, 1, 1, 0]), pred_b=np.array([0, 1, 0, 0]),
                  unc_a=np.array([0.1, 0.2, 0.9, 0.3]), unc_b=np.array([0.1, 0.1, 0.1, 0.1]))
    referred = es.referred_mask(s, "cascade", 0.5, 0.5)  # image 2 disagrees; image 2 also uncertain
    assert referred.tolist() == [False, False, True, False]
    m = es.safety_metrics(s.labels, es.decision(s, "cascade"), referred)
    assert m["referral_rate"] == 0.25 and m["undetected"] == 2 and m["undetected_rate"] == 0.5
    assert m["automatic_accuracy"] == pytest.approx(1 / 3) and m["errors"] == 2 and m["errors_caught"] == 0.0
    assert es.referred_mask(s, "disagreement", math.inf, math.inf).tolist() == [False, False, True, False]
    assert es.referred_mask(s, "uncertainty_a", 0.25, math.inf).tolist() == [False, False, True, True]
    assert es.referred_mask(s, "model_a_alone", -math.inf, -math.inf).sum() == 0
    nan_scores = es.Scores(s.labels, s.pred_a, s.pred_a, np.array([np.nan, 0, 0, 0]), s.unc_b)
    assert es.referred_mask(nan_scores, "uncertainty_a", 1.0, 1.0)[0]  # a NaN score is referred


def test_analyse_reports_every_split_and_sweep():
    scores = {"valid": synthetic_scores(200, 3), "test": synthetic_scores(200, 4), "test_shifted": synthetic_scores(90, 5)}
    cfg = es.Config(model_a="a.pt", model_b="b.pt", target=0.005, sweep_points=11)
    thresholds, results, curve = es.analyse(scores, ["c0", "c1", "c2", "c3"], cfg)
    assert list(results) == ["valid", "test", "test_shifted"]
    assert set(results["test"]) == set(es.MODES)
    assert results["valid"]["cascade"]["undetected_rate"] <= 0.005
    per_class = results["test"]["cascade"]["per_class"]
    assert sum(m["n"] for m in per_class.values()) == 200
    assert sum(m["undetected"] for m in per_class.values()) == results["test"]["cascade"]["undetected"]
    full = curve[(curve["mode"] == "cascade") & (curve["split"] == "test") & (curve["level"] == 0)]
    assert full["referral_rate"].item() == 1.0 and full["undetected"].item() == 0
    table = es.comparison_markdown(results, thresholds, cfg)
    assert "disagreement only" in table and "| both: disagreement + uncertainty |" in table


# ----------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def two_checkpoints(tiny_synthetic, tmp_path_factory):
    import train_model
    root, csv = tiny_synthetic
    out = tmp_path_factory.mktemp("train")
    for name, width_model in (("a", "tiny_cnn"), ("b", "tiny_cnn")):
        train_model.main(train_model.Config(model=width_model, data_dir=str(root), split_csv=str(csv),
                                            image_size=24, epochs=2, batch_size=16, seed=0 if name == "a" else 1,
                                            out_dir=str(out), run_name=name, device="cpu"))
    return out / "a" / "best.pt", out / "b" / "best.pt"


def run_script(*args, check=True):
    import os
    env = {**os.environ, "HIL_NO_PROGRESS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_evaluate_safety_end_to_end(two_checkpoints, tmp_path):
    a, b = two_checkpoints
    run_script(ROOT / "evaluate_safety.py", "--model_a", a, "--model_b", b, "--T", 4, "--device", "cpu",
               "--out_dir", tmp_path / "results" / "safety", "--run_name", "cas", "--sweep_points", 6)
    run = tmp_path / "results" / "safety" / "cas"
    for name in ("config.json", "per_image.csv", "thresholds.json", "safety.json", "sweep.csv", "comparison.md"):
        assert (run / name).is_file(), name
    safety = json.loads((run / "safety.json").read_text())
    assert set(safety["splits"]) == {"valid", "test", "test_shifted"}
    valid = safety["splits"]["valid"]["cascade"]
    assert valid["undetected_rate"] <= 0.001 and valid["n"] == 24
    assert 0 <= safety["splits"]["test"]["cascade"]["undetected_upper"] <= 1
    import pandas as pd
    per_image = pd.read_csv(run / "per_image.csv")
    assert len(per_image) == 24 + 24 + 36 and per_image.loc[per_image["disagree"], "referred"].all()
    import plot_results
    written = plot_results.main(tmp_path / "results", tmp_path / "fig", only=["safety_tradeoff", "safety_comparison"])
    assert sorted(p.name for p in written) == ["safety_comparison_cas.pdf", "safety_comparison_cas.png",
                                               "safety_tradeoff_cas.pdf", "safety_tradeoff_cas.png"]


def test_mismatched_classes_refused(two_checkpoints, tmp_path):
    import torch
    a, b = two_checkpoints
    state = torch.load(b, weights_only=True)
    state["class_names"] = list(reversed(state["class_names"]))
    torch.save(state, tmp_path / "b.pt")
    with pytest.raises(ValueError, match="different classes"):
        es.load_pair(a, tmp_path / "b.pt", "cpu")


def test_help_and_bad_flags():
    from utils import config_parser
    assert "--target" in config_parser(es.Config, es.__doc__).format_help()  # every help string formats
    proc = run_script(ROOT / "evaluate_safety.py", "--target", "1.5", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
