"""Shared test helpers: the repository root, running a script in a subprocess, and fixtures that
build tiny data sets and train tiny checkpoints, so no test downloads anything.

Test modules import the plain helpers (`from conftest import ROOT, run_script`); the fixtures
are found by name as usual.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HIL_NO_PROGRESS", "1")
PACKAGE = "safehil"


def project_files() -> list[Path]:
    """Every Python file of the project: the scripts and the card's modules at the top, and the
    library package at any depth (not tests or benchmarks)."""
    return sorted(ROOT.glob("*.py")) + sorted((ROOT / PACKAGE).rglob("*.py"))


def module_name(path: Path) -> str:
    """The importable name of a project file: 'train_model', 'safehil.data.datasets'."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def script_env(**extra: str) -> dict[str, str]:
    """The environment of a script started by a test: the repository importable, no progress bars."""
    python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "HIL_NO_PROGRESS": "1", "PYTHONPATH": python_path, **extra}


def run_script(*args, check: bool = True, timeout: float = 300, cwd: str | Path = ROOT,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `python *args` (a script path and its flags, or `-m module ...`) -> the finished process,
    stdout and stderr captured as text. With `check`, a non-zero exit fails the test with the
    command, its exit code and the end of both streams. `env` adds variables to `script_env()`."""
    command = [sys.executable, *map(str, args)]
    proc = subprocess.run(command, cwd=cwd, env=script_env(**(env or {})), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(command[1:])} exited with {proc.returncode}\n"
                             f"--- stdout (end)\n{proc.stdout[-4000:]}\n--- stderr (end)\n{proc.stderr[-4000:]}")
    return proc


class RecordInput(nn.Module):
    """A 'network' that keeps every batch it is given and answers zero logits [B, C]: what
    reaches the network, e.g. through `training.predict`."""

    def __init__(self, classes):
        super().__init__()
        self.classes, self.seen = classes, []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return torch.zeros(len(x), self.classes)


def synthetic_scores(n=300, seed=0):
    """cascade.Scores of two made-up models on n images of 4 classes: model A is wrong on about
    12 %, with higher uncertainty there; model B catches half of A's errors and disagrees on a few
    right ones."""
    from safehil.safety import cascade
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    wrong_a = rng.random(n) < 0.12
    pred_a = np.where(wrong_a, (labels + 1) % 4, labels)
    flip_b = rng.random(n) < 0.5
    pred_b = np.where(wrong_a & flip_b, labels, pred_a)          # B catches half of A's errors
    pred_b = np.where(~wrong_a & (rng.random(n) < 0.03), (labels + 2) % 4, pred_b)
    unc_a = rng.gamma(2, 0.1, n) + wrong_a * rng.gamma(2, 0.25, n)
    unc_b = rng.gamma(2, 0.1, n) + wrong_a * rng.gamma(2, 0.2, n)
    return cascade.Scores(labels, pred_a, pred_b, unc_a, unc_b)


@pytest.fixture
def one_cpu_thread():
    """Tiny models run fastest on one thread, most of all when other jobs share the cores."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    """A 6-class synthetic set, 20 images per class at 64 px, with its split CSV: (root, csv)."""
    from safehil.data.synthetic import generate_synthetic
    base = tmp_path_factory.mktemp("synthetic")
    return generate_synthetic(base / "data", per_class=20, seed=0, size=64,
                              split_csv=base / "splits.csv")


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_synthetic, tmp_path_factory):
    """best.pt of a tiny CNN trained for one epoch on `tiny_synthetic` by train_model.py (run 'tiny')."""
    root, csv = tiny_synthetic
    out = tmp_path_factory.mktemp("train")
    run_script(ROOT / "train_model.py", "--model", "tiny_cnn", "--data_dir", root, "--split_csv", csv,
               "--image_size", 24, "--epochs", 1, "--batch_size", 32, "--out_dir", out, "--run_name", "tiny")
    return out / "tiny" / "best.pt"


@pytest.fixture(scope="session")
def checkpoint_pair(tiny_synthetic, tmp_path_factory):
    """(a, b): best.pt of two tiny CNNs trained on `tiny_synthetic` from different seeds (runs 'a', 'b')."""
    import train_model
    root, csv = tiny_synthetic
    out = tmp_path_factory.mktemp("pair")
    for name, seed in (("a", 0), ("b", 1)):
        train_model.main(train_model.Config(model="tiny_cnn", data_dir=str(root), split_csv=str(csv), image_size=24,
                                            epochs=2, batch_size=16, seed=seed, out_dir=str(out), run_name=name,
                                            device="cpu"))
    return out / "a" / "best.pt", out / "b" / "best.pt"


@pytest.fixture(scope="session")
def calib_split_csv(tiny_synthetic, tmp_path_factory):
    """The tiny set's split CSV with every other test image of each class moved to `calib` (what
    make_splits.py holds out): images `tiny_checkpoint` and `checkpoint_pair` never trained or
    early-stopped on, for evaluate_safety.py to certify on (--data_dir root --split_csv this)."""
    import pandas as pd
    root, csv = tiny_synthetic
    table = pd.read_csv(csv)
    for label in table["label"].unique():
        test = table.index[(table["split"] == "test") & (table["label"] == label)]
        table.loc[test[::2], "split"] = "calib"
    out = tmp_path_factory.mktemp("calib") / "with_calib.csv"
    table.to_csv(out, index=False)
    return out


@pytest.fixture(scope="session")
def certified_thresholds(checkpoint_pair, tiny_synthetic, calib_split_csv, tmp_path_factory):
    """evaluate_safety.py on `checkpoint_pair` (T = 4), calibrated on the held-out calib split of
    `calib_split_csv` with a target its 12 images certify (0.5): (thresholds.json, a, b)."""
    import evaluate_safety
    a, b = checkpoint_pair
    out = tmp_path_factory.mktemp("cert")
    assert run_in_process(evaluate_safety, "--checkpoints", f"{a},{b}", "--T", 4, "--device", "cpu", "--target", 0.5,
                          "--data_dir", tiny_synthetic[0], "--split_csv", calib_split_csv, "--sweep_points", 3,
                          "--max_candidates", 50, "--out_dir", out, "--run_name", "cas") == 0
    return out / "cas" / "thresholds.json", a, b


def fast_and_full_mc_probs(model, x, T: int, seed: int):
    """(fast-path, T-full-pass) MC-dropout probabilities [T, N, C] of `model` on `x` for one mask
    seed, after checking the fast path is available; the two must agree (same masks, same order)."""
    from safehil.uq import uncertainty
    assert uncertainty.fast_path_available(model)
    fast = uncertainty.mc_dropout_probs(model, x, T, torch.Generator().manual_seed(seed), use_fast=True)
    full = uncertainty.mc_dropout_probs(model, x, T, torch.Generator().manual_seed(seed), use_fast=False)
    return fast, full


def copy_test_images(tiny_synthetic, folder: Path, n: int) -> Path:
    """`folder` holding copies 0.png .. (n-1).png of the first `n` test images of the tiny set
    (new images to score, with no split table beside them)."""
    import shutil

    import pandas as pd
    root, csv = tiny_synthetic
    table = pd.read_csv(csv)
    for i, path in enumerate(table.loc[table["split"] == "test", "path"][:n]):
        shutil.copy(root / path, folder / f"{i}.png")
    return folder


def run_in_process(module, *args) -> int:
    """A script's command line run in this process, as `python <script> *args` runs it (review.py's
    `cli`, else `run_main(main, parse_config(Config, args))`), without a new interpreter's start-up
    -> the exit code (0 done). Read its output with pytest's capsys."""
    from safehil.core.errors import run_main
    from safehil.settings.cli import parse_config
    argv = [str(a) for a in args]
    try:
        if hasattr(module, "cli"):
            return module.cli(argv)
        run_main(module.main, parse_config(module.Config, argv, module.__doc__))
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1
    return 0


def write_fake_elpv(folder: Path, per_level: int = 8, size: int = 20) -> Path:
    """A tiny replica of the elpv-dataset package's data folder: labels.csv (path, probability,
    cell type, as the package writes them) + images/ of grey `size` px PNGs, `per_level` images per
    expert level (0, 1/3, 2/3, 1) and cell type; defective cells carry a dark crack. -> folder."""
    from PIL import Image
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines, number = [], 0
    for cell_type in ("mono", "poly"):
        for p in ("0.0", "0.3333333333333333", "0.6666666666666666", "1.0"):
            for _ in range(per_level):
                number += 1
                pixels = rng.integers(150, 200, (size, size)).astype(np.uint8)
                if float(p) > 0.5:
                    pixels[size // 2 - 1:size // 2 + 1, :] = 20
                name = f"images/cell{number:04d}.png"
                Image.fromarray(pixels, mode="L").save(folder / name)
                lines.append(f"{name}  {p:<19} {cell_type}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="session")
def fake_elpv(tmp_path_factory):
    """The data folder of a tiny ELPV replica (`write_fake_elpv`, 10 images per level and cell type)."""
    return write_fake_elpv(tmp_path_factory.mktemp("elpv"), per_level=10)


def one_error_line(capsys, *needles) -> str:
    """The captured stderr of a script that failed as promised: one 'error: ...' line, no traceback,
    holding every needle -> that line."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.startswith("error: ") and "\n" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err
