"""evaluate_safety.py: every mechanism calibrated and reported per split, and the script end to end
(the cascade itself is tested in test_cascade.py)."""
import json

import cascade
import evaluate_safety as es
from conftest import ROOT, run_script, synthetic_scores


def test_analyse_reports_every_split_and_sweep():
    scores = {"valid": synthetic_scores(200, 3), "test": synthetic_scores(200, 4),
              "test_shifted": synthetic_scores(90, 5)}
    cfg = es.Config(model_a="a.pt", model_b="b.pt", target=0.005, sweep_points=11)
    thresholds, results, curve = es.analyse(scores, ["c0", "c1", "c2", "c3"], cfg)
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


# ----------------------------------------------------------------------------- end to end

def test_evaluate_safety_end_to_end(checkpoint_pair, tmp_path):
    a, b = checkpoint_pair
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


def test_help_and_bad_flags():
    from utils import config_parser
    assert "--target" in config_parser(es.Config, es.__doc__).format_help()  # every help string formats
    proc = run_script(ROOT / "evaluate_safety.py", "--target", "1.5", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
