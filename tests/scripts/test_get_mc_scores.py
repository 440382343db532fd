"""get_mc_scores.py end to end as a subprocess on a tiny CNN trained on tiny generated data,
and clear errors for bad input."""
import json

import pandas as pd
import pytest
import torch

import get_mc_scores
import plot_results
from safehil.uq import uncertainty
from conftest import ROOT, run_script
from safehil.core.utils import InputError
from safehil.settings.cli import parse_config


def test_get_mc_scores_end_to_end(tiny_synthetic, tiny_checkpoint, tmp_path):
    splits = pd.read_csv(tiny_synthetic[1])["split"].value_counts()
    run_script(ROOT / "get_mc_scores.py", "--checkpoint", tiny_checkpoint, "--out_dir", tmp_path / "mc_scores",
               "--batch_size", 10)
    run = tmp_path / "mc_scores" / "tiny"  # run name = the checkpoint's run folder
    config = json.loads((run / "config.json").read_text())
    assert config["T"] == 20 and config["dataset"] == "synthetic" and config["split_csv"]  # resolved
    table = pd.read_csv(run / "per_image.csv")
    assert table["split"].value_counts().to_dict() == {s: splits[s] for s in ("test", "test_shifted")}
    for column in ("path", "label", "prediction", "correct", "confidence", "margin", *uncertainty.SCORES):
        assert column in table.columns, column
    assert (table["correct"] == (table["label"] == table["prediction"])).all()
    assert table["one_minus_margin"].to_numpy() == pytest.approx(1 - table["margin"].to_numpy(), abs=1e-6)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["T"] == 20 and summary["model_name"] == "tiny_cnn"
    for split, part in table.groupby("split"):
        s = summary["splits"][split]
        assert s["n"] == len(part) and s["accuracy"] == pytest.approx(part["correct"].mean())
        assert 0 <= s["ece"] <= 1 and set(s["auroc"]) == set(uncertainty.SCORES)
        wrong = ~part["correct"]
        pe = s["scores"]["predictive_entropy"]
        if wrong.any() and (~wrong).any():
            assert pe["mean_wrong"] == pytest.approx(part.loc[wrong, "predictive_entropy"].mean(), rel=1e-5)
            assert pe["auroc"] == pytest.approx(uncertainty.score_auroc(part["predictive_entropy"], wrong))
        assert sum(s["reliability"]["count"]) == len(part)
    figures = tmp_path / "figures"
    names = [p.name for fn in (plot_results.plot_mc_entropy_boxplots, plot_results.plot_mc_reliability,
                               plot_results.plot_mc_risk_coverage) for p in fn(tmp_path, figures)]
    for name in ("mc_entropy_boxplots_test.png", "mc_entropy_boxplots_test_shifted.png", "mc_reliability_test.png",
                 "mc_risk_coverage.png"):
        assert name in names and (figures / name).stat().st_size > 0
    assert plot_results.plot_mc_risk_coverage(tmp_path / "nothing", figures) == []


def test_plain_path_and_explicit_T_give_the_same_scores(tiny_checkpoint, tmp_path):
    common = dict(checkpoint=str(tiny_checkpoint), out_dir=str(tmp_path), splits=("test",), T=5, device="cpu")
    get_mc_scores.main(get_mc_scores.Config(**common, run_name="fast"))
    get_mc_scores.main(get_mc_scores.Config(**common, run_name="plain", use_fast=False))
    fast = pd.read_csv(tmp_path / "fast" / "per_image.csv")
    plain = pd.read_csv(tmp_path / "plain" / "per_image.csv")
    assert set(fast["split"]) == {"test"}
    pd.testing.assert_frame_equal(fast, plain, atol=1e-5, rtol=0)
    assert json.loads((tmp_path / "fast" / "summary.json").read_text())["T"] == 5


def test_bad_input_exits_with_a_message(tiny_checkpoint, tmp_path):
    proc = run_script(ROOT / "get_mc_scores.py", "--checkpoint", tmp_path / "missing.pt", check=False)
    assert proc.returncode == 1 and "missing.pt" in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(InputError, match="nope"):
        get_mc_scores.main(get_mc_scores.Config(checkpoint=str(tiny_checkpoint), splits=("nope",),
                                                out_dir=str(tmp_path), device="cpu"))
    with pytest.raises(InputError, match="not a train_model.py checkpoint"):
        torch.save({"weights": 1}, tmp_path / "other.pt")
        get_mc_scores.main(get_mc_scores.Config(checkpoint=str(tmp_path / "other.pt"), out_dir=str(tmp_path)))
    with pytest.raises(SystemExit):
        parse_config(get_mc_scores.Config, ["--T", "1"])


def test_help_lists_every_flag():
    out = run_script(ROOT / "get_mc_scores.py", "--help").stdout
    for flag in ("--checkpoint", "--T", "--splits", "--n_bins", "--use_fast", "--seed"):
        assert flag in out
