"""train_model.py and make_splits.py end to end, as subprocesses, on tiny generated data."""
import json

import pandas as pd
from PIL import Image

from conftest import ROOT, run_script


def test_train_model_end_to_end(tiny_synthetic, tmp_path):
    root, csv = tiny_synthetic
    run_script(ROOT / "train_model.py", "--model", "tiny_cnn", "--data_dir", root, "--dataset", "synthetic",
               "--split_csv", csv, "--image_size", 32, "--epochs", 2, "--batch_size", 16, "--passes", "plain+augmented",
               "--out_dir", tmp_path, "--run_name", "e2e")
    run = tmp_path / "e2e"
    for name in ("config.json", "metrics.csv", "best.pt", "last.pt", "test_metrics.json"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert set(metrics) == {"test", "test_shifted"}
    assert 0 <= metrics["test"]["accuracy"] <= 1
    assert len(metrics["test"]["confusion_matrix"]) == 6
    assert sum(map(sum, metrics["test"]["confusion_matrix"])) == metrics["test"]["n"] == 24
    assert json.loads((run / "config.json").read_text())["passes"] == "plain+augmented"


def test_seed_sweep_reports_mean_and_sample_std_of_its_seeds(tiny_synthetic, tmp_path):
    root, csv = tiny_synthetic
    run_script(ROOT / "train_model.py", "--model", "tiny_cnn", "--data_dir", root, "--split_csv", csv,
               "--image_size", 24, "--epochs", 1, "--batch_size", 32, "--seeds", "0,1,2",
               "--out_dir", tmp_path, "--run_name", "sw")
    # each seed has its own run folder; the summary is computed here by hand from their test_metrics.json
    metrics = [json.loads((tmp_path / f"sw_s{s}" / "test_metrics.json").read_text()) for s in (0, 1, 2)]
    summary = json.loads((tmp_path / "sw_sweep" / "summary.json").read_text())
    assert set(summary) == {"test", "test_shifted"}
    for split in summary:
        accs = [m[split]["accuracy"] for m in metrics]
        mean = sum(accs) / 3
        std = (sum((a - mean) ** 2 for a in accs) / 2) ** 0.5  # sample standard deviation (n - 1)
        got = summary[split]
        assert got["per_seed"] == accs
        assert abs(got["accuracy_mean"] - mean) < 1e-12 and abs(got["accuracy_std"] - std) < 1e-12
        assert got["text"] == f"{100 * mean:.2f} +- {100 * std:.2f}"
    # on test_shifted the seeds differ after one epoch, so a summary taken from one seed fails above
    assert len({m["test_shifted"]["accuracy"] for m in metrics}) > 1


def test_invalid_flags_rejected_without_traceback():
    for args in (["--epochs", "-1"], ["--model", "alexnet"], ["--use_aug", "maybe"]):
        proc = run_script(ROOT / "train_model.py", *args, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and "error" in proc.stderr


def test_help_lists_every_flag():
    out = run_script(ROOT / "train_model.py", "--help").stdout
    for flag in ("--model", "--use_aug", "--seeds", "--weights", "--patience", "--image_size"):
        assert flag in out


def test_make_splits(tmp_path):
    data = tmp_path / "imgs"
    for c in ("a", "b"):
        for i in range(10):
            (data / c).mkdir(parents=True, exist_ok=True)
            Image.new("L", (8, 8), color=i * 20 + (c == "b")).save(data / c / f"{i}.png")
    proc = run_script(ROOT / "make_splits.py", "--data_dir", data, "--out_dir", tmp_path, "--name", "s",
                      "--ratios", "0.6,0.2,0.2", "--seed", 1, "--calib_share", 0)
    table = pd.read_csv(tmp_path / "s.csv")
    assert list(table.columns) == ["path", "label", "split"]
    assert table.groupby("split").size().to_dict() == {"test": 4, "train": 12, "valid": 4}
    assert "total" in proc.stdout
    again = run_script(ROOT / "make_splits.py", "--data_dir", data, "--out_dir", tmp_path, "--name", "t",
                       "--seed", 1, "--calib_share", 0)
    assert pd.read_csv(tmp_path / "t.csv").equals(table)
    # an identical copy in another class lands in another split -> refused
    for i in range(10):
        Image.new("L", (8, 8), color=i * 20).save(data / "b" / f"copy{i}.png")
    proc = run_script(ROOT / "make_splits.py", "--data_dir", data, "--out_dir", tmp_path, "--name", "u",
                      check=False)
    assert proc.returncode != 0 and "identical images across splits" in proc.stderr
