"""evaluate_safety.py: every mechanism calibrated and reported per split, and the script end to end
(the cascade itself is tested in test_cascade.py)."""
import json

import numpy as np
import pytest

from safehil.safety import cascade
import evaluate_safety as es
from conftest import ROOT, run_script, synthetic_scores


@pytest.mark.parametrize("method", ["ltt", "empirical"])
def test_analyse_reports_every_split_and_sweep(method):
    scores = {"valid": synthetic_scores(200, 3), "test": synthetic_scores(200, 4),
              "test_shifted": synthetic_scores(90, 5)}
    cfg = es.Config(checkpoints=("a.pt", "b.pt"), target=0.005, sweep_points=11, calibration=method,
                    calib_split="valid")
    thresholds, results, curve, path = es.analyse(scores, ["c0", "c1", "c2", "c3"], cfg)
    assert (path is None) == (method == "empirical")
    assert list(results) == ["valid", "test", "test_shifted"]
    assert set(results["test"]) == set(cascade.MODES)
    assert results["valid"]["cascade"]["undetected_rate"] <= 0.005
    per_class = results["test"]["cascade"]["per_class"]
    assert sum(m["n"] for m in per_class.values()) == 200
    assert sum(m["undetected"] for m in per_class.values()) == results["test"]["cascade"]["undetected"]
    full = curve[(curve["mode"] == "cascade") & (curve["split"] == "test") & (curve["level"] == 0)]
    assert full["referral_rate"].item() == 1.0 and full["undetected"].item() == 0
    table = es.comparison_markdown(results, thresholds, cfg)
    assert "disagreement only" in table and "| both: disagreement + uncertainty |" in table


@pytest.mark.parametrize("method", ["ltt", "empirical"])
def test_thresholds_depend_on_the_calibration_split_alone(method):
    valid, test = synthetic_scores(3000, 9), synthetic_scores(500, 10)
    cfg = es.Config(checkpoints=("a.pt", "b.pt"), target=0.01, calibration=method, max_candidates=200,
                    calib_split="valid")
    names = ["c0", "c1", "c2", "c3"]
    first = es.analyse({"valid": valid, "test": test}, names, cfg)[0]
    changed = cascade.Scores(test.labels, test.pred_b, test.pred_a, test.unc_a[::-1] * 5, test.unc_b + 1)
    again = es.analyse({"valid": valid, "test": changed}, names, cfg)[0]
    bounds = (cascade.score_upper_bound("predictive_entropy", 4),) * 2
    alone = cascade.calibrate_modes(valid, method, 0.01, 0.05, max_candidates=200, score_bounds=bounds)[0]
    assert json.dumps(first, sort_keys=True) == json.dumps(again, sort_keys=True) == json.dumps(alone, sort_keys=True)
    # pooling valid and test for calibration would have moved them
    pooled = cascade.Scores(*(np.concatenate([getattr(valid, k), getattr(changed, k)])
                              for k in ("labels", "pred_a", "pred_b", "unc_a", "unc_b")))
    moved = cascade.calibrate_modes(pooled, method, 0.01, 0.05, max_candidates=200, score_bounds=bounds)[0]["cascade"]
    assert moved["threshold_a"] != first["cascade"]["threshold_a"]


# ----------------------------------------------------------------------------- end to end

def test_evaluate_safety_end_to_end(checkpoint_pair, tmp_path):
    a, b = checkpoint_pair
    proc = run_script(ROOT / "evaluate_safety.py", "--checkpoints", f"{a},{b}", "--T", 4, "--device", "cpu",
               "--out_dir", tmp_path / "results" / "safety", "--run_name", "cas", "--sweep_points", 6)
    run = tmp_path / "results" / "safety" / "cas"
    for name in ("config.json", "per_image.csv", "thresholds.json", "safety.json", "sweep.csv", "comparison.md"):
        assert (run / name).is_file(), name
    safety = json.loads((run / "safety.json").read_text())
    assert set(safety["splits"]) == {"valid", "test", "test_shifted"}
    valid = safety["splits"]["valid"]["cascade"]
    assert valid["undetected_rate"] <= 0.001 and valid["n"] == 24
    # 24 calibration images cannot certify 0.1 %: the run says so and refers every image, uncertified
    smallest = 1 - 0.05 ** (1 / 24)
    assert "NOT CERTIFIED: 24 images on valid" in proc.stdout and f"{smallest:.4g}" in proc.stdout
    assert "2995 images" in proc.stdout and valid["referral_rate"] == 1.0
    calibration = json.loads((run / "thresholds.json").read_text())["calibration"]
    assert calibration == safety["calibration"]
    assert calibration["method"] == "ltt" and calibration["alpha"] == 0.001 and calibration["delta"] == 0.05
    assert calibration["n"] == 24 and calibration["certified"] is False
    assert calibration["smallest_certifiable_alpha"] == pytest.approx(smallest)
    assert calibration["guarantee"].startswith("not certified")
    assert (run / "ltt_path.csv").is_file() and "certified (ltt) |" in (run / "comparison.md").read_text()
    assert 0 <= safety["splits"]["test"]["cascade"]["undetected_upper"] <= 1
    import pandas as pd
    per_image = pd.read_csv(run / "per_image.csv")
    assert len(per_image) == 24 + 24 + 36 and per_image.loc[per_image["disagree"], "referred"].all()
    import plot_results
    written = plot_results.main(tmp_path / "results", tmp_path / "fig", only=["safety_tradeoff", "safety_comparison"])
    assert sorted(p.name for p in written) == ["safety_comparison_cas.pdf", "safety_comparison_cas.png",
                                               "safety_tradeoff_cas.pdf", "safety_tradeoff_cas.png"]


def test_help_and_bad_flags():
    from safehil.settings.cli import config_parser
    assert "--target" in config_parser(es.Config, es.__doc__).format_help()  # every help string formats
    proc = run_script(ROOT / "evaluate_safety.py", "--target", "1.5", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_one_model_certifies_referral_by_its_own_uncertainty_and_predict_applies_it(checkpoint_pair, tiny_synthetic,
                                                                                    calib_split_csv, tmp_path):
    a, _ = checkpoint_pair
    import pandas as pd
    import predict
    root, _ = tiny_synthetic
    proc = run_script(ROOT / "evaluate_safety.py", "--checkpoints", a, "--T", 4, "--device", "cpu", "--target", 0.3,
                      "--data_dir", root, "--split_csv", calib_split_csv,
                      "--out_dir", tmp_path / "safety", "--run_name", "one", "--sweep_points", 6)
    run = tmp_path / "safety" / "one"
    saved = json.loads((run / "thresholds.json").read_text())
    assert saved["models"] == 1 and saved["model_b"] == "" and set(saved["modes"]) == {"model_a_alone", "uncertainty_a"}
    calibration = saved["calibration"]
    # 12 held-out calibration images certify 30 % at delta 0.05 (0 errors at the refer-everything end: p = 0.7 ** 12)
    assert calibration["mode"] == "uncertainty_a" and calibration["certified"] is True and calibration["n"] == 12
    rule = saved["modes"]["uncertainty_a"]
    assert rule["undetected"] == 0  # P[Binomial(12, 0.3) <= 0] = 0.014 <= 0.05 < P[<= 1] = 0.085
    assert "Referral from one model's uncertainty" in (run / "comparison.md").read_text()
    assert "uncertainty only (model A) refers" in proc.stdout
    per_image = pd.read_csv(run / "per_image.csv")
    assert not per_image["disagree"].any()
    valid = per_image[per_image["split"] == "calib"]
    assert valid["referred"].tolist() == (~(valid["uncertainty_a"] <= rule["threshold_a"])).tolist()
    # predict.py with that one checkpoint and its thresholds refers exactly the images above the threshold
    images = root / "crazing"
    summary = predict.main(predict.Config(checkpoints=(str(a),), images_dir=str(images), thresholds=str(run / "thresholds.json"),
                                          T=4, device="cpu", out_dir=str(tmp_path / "pred")))
    rows = pd.read_csv(tmp_path / "pred" / "predictions.csv")
    assert rows["referred"].tolist() == (~(rows["uncertainty"] <= rule["threshold_a"])).tolist()
    assert summary["referral_rule"]["mode"] == "uncertainty_a" and summary["referral_rule"]["certified"] is True
    assert summary["referral_rule"]["alpha"] == 0.3 and summary["referral_rule"]["n"] == 12
    # a pair cannot use one model's thresholds
    with pytest.raises(ValueError, match="calibrated for one model"):
        predict.main(predict.Config(checkpoints=(str(a), str(a)), images_dir=str(images), T=4, device="cpu",
                                    thresholds=str(run / "thresholds.json"), out_dir=str(tmp_path / "pred2")))


def test_one_model_with_too_few_images_names_the_smallest_certifiable_rate_and_the_images_needed(checkpoint_pair,
                                                                                                  tmp_path):
    a, _ = checkpoint_pair
    proc = run_script(ROOT / "evaluate_safety.py", "--checkpoints", a, "--T", 2, "--device", "cpu", "--target", 0.01,
                      "--out_dir", tmp_path, "--run_name", "small", "--sweep_points", 3)
    smallest = 1 - 0.05 ** (1 / 24)
    assert "NOT CERTIFIED: 24 images on valid" in proc.stdout and f"{smallest:.4g}" in proc.stdout
    assert "needs >= 299 images" in proc.stdout  # ceil(ln 0.05 / ln 0.99) = 299
