"""reproduce.py --smoke: every experiment at tiny size, every figure and REPORT.md, end to end."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args, check=True, timeout=600):
    env = {**os.environ, "HIL_NO_PROGRESS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def test_reproduce_smoke_end_to_end(tiny_synthetic, tmp_path):
    root, csv = tiny_synthetic
    out = tmp_path / "results"
    run_script(ROOT / "reproduce.py", "--smoke", "True", "--data_dir", root, "--split_csv", csv,
               "--out_dir", out, "--device", "cpu")
    manifest = json.loads((out / "reproduce.json").read_text())
    import reproduce
    assert list(manifest["seconds"]) == list(reproduce.STEPS)
    for experiment in ("train", "data_generation", "mc_scores", "saliency", "active_learning", "safety"):
        assert any((out / experiment).iterdir()), experiment
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    for expected in ("training_curves", "augmentation_accuracy", "data_generation_", "safety_tradeoff_",
                     "safety_comparison_", "active_learning"):
        assert any(name.startswith(expected) for name in figures), expected
    assert all((out / "figures" / name).with_suffix(".pdf").is_file() for name in figures)
    report = (out / "REPORT.md").read_text()
    embedded = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", report)
    assert sorted(Path(p).name for p in embedded) == figures  # every figure, each one that exists
    assert "| result | this run | paper |" in report
    for headline in ("without / with augmentation", "HIL data generation", "MC dropout", "Saliency",
                     "Active learning", "Safety cascade on test"):
        assert headline in report, headline
    assert "< 0.1 %" in report and "n/a / n/a" not in report


def test_reproduce_rejects_bad_flags():
    proc = run_script(ROOT / "reproduce.py", "--smoke", "True", "--full", "True", check=False)
    assert proc.returncode == 2 and "exclude each other" in proc.stderr
    proc = run_script(ROOT / "reproduce.py", "--steps", "train,nonsense", check=False)
    assert proc.returncode == 2 and "nonsense" in proc.stderr
