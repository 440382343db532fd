"""Hostile and careless use through the command line: run folders never overwrite
another or a finished run, size-like flags are bounded, every expected failure is one line
without a traceback, and the small input defects (broken links, case twins, one class, stale
temp files) are named. Each test drives a script as a subprocess on tiny class folders."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from safehil.settings import cli
from safehil.core import utils
from conftest import ROOT, run_script, script_env

TRAIN = ["--model", "tiny_cnn", "--dataset", "folders", "--image_size", 16, "--epochs", 1, "--batch_size", 4,
         "--device", "cpu"]
DEFAULT_RUN = "tiny_cnn_folders_plain_s0"  # train_model.py names a run <model>_<dataset>_<passes>_s<seed>


def make_folders(root: Path, classes: str = "ab", per_class: int = 10, seed: int = 0, size: int = 20) -> Path:
    """Class folders root/<class>/<i>.png of random grey 20 px images."""
    rng = np.random.default_rng(seed)
    for label in classes:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(root / label / f"{i}.png")
    return root


def train(*args, **kw):
    return run_script(ROOT / "train_model.py", *TRAIN, *args, check=False, **kw)


def assert_one_line_error(proc, code: int, *needles: str) -> str:
    """The process exited with `code`, printed no traceback, and its one error line holds every needle."""
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, proc.stderr[-2000:]
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two class-folder data roots of the same classes but other images: (first, second)."""
    base = tmp_path_factory.mktemp("folders")
    return make_folders(base / "one", seed=0), make_folders(base / "two", seed=1)


@pytest.fixture(scope="module")
def finished_run(data, tmp_path_factory):
    """out_dir of a finished 1-epoch run under the default name, trained on data[0]."""
    out = tmp_path_factory.mktemp("runs")
    proc = train("--data_dir", data[0], "--out_dir", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture
def runs(finished_run, tmp_path):
    """A private copy of `finished_run`'s out_dir (tests may overwrite it)."""
    return Path(shutil.copytree(finished_run, tmp_path / "runs"))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# ============================================================================ run folders

def test_a_run_on_other_data_is_refused_and_the_first_run_stays(data, runs):
    run = runs / DEFAULT_RUN
    before = snapshot(run)
    proc = train("--data_dir", data[1], "--out_dir", runs)
    assert_one_line_error(proc, 1, f"{run}: holds another run", "data_dir:", "--run_name", "--overwrite True")
    assert snapshot(run) == before  # best.pt, last.pt, config.json untouched

    train("--data_dir", data[1], "--out_dir", runs, "--overwrite", "True", "--epochs", 2).check_returncode()
    assert json.loads((run / "config.json").read_text())["data_dir"] == str(data[1])
    assert len(pd.read_csv(run / "metrics.csv")) == 2  # the old run's files were replaced, not mixed in


def test_a_finished_run_is_not_rerun_over_itself_but_can_be_resumed(data, runs):
    run = runs / DEFAULT_RUN
    before = snapshot(run)
    proc = train("--data_dir", data[0], "--out_dir", runs)
    assert_one_line_error(proc, 1, "already holds this run's results", "--resume True", "--overwrite True")
    assert snapshot(run) == before

    proc = train("--data_dir", data[0], "--out_dir", runs, "--resume", "True")
    assert proc.returncode == 0 and "resumed from" in proc.stdout
    assert snapshot(run)["best.pt"] == before["best.pt"]


def test_resume_with_changed_settings_names_the_differing_fields(data, runs):
    run = runs / DEFAULT_RUN
    before = snapshot(run)
    proc = train("--data_dir", data[0], "--out_dir", runs, "--resume", "True", "--lr", "0.01", "--batch_size", 8)
    assert_one_line_error(proc, 1, "--resume True continues a run only with its own settings",
                          "batch_size: 4 there, 8 now", "lr: 0.001 there, 0.01 now")
    assert snapshot(run) == before


def test_run_names_cannot_leave_out_dir(data, tmp_path, capsys):
    proc = train("--data_dir", data[0], "--out_dir", tmp_path / "runs", "--run_name", "..")
    assert_one_line_error(proc, 2, "--run_name must be a plain folder name inside --out_dir")
    import train_model
    for name in (".", "a/../..", str(tmp_path / "elsewhere")):
        with pytest.raises(SystemExit) as exit_info:
            cli.parse_config(train_model.Config, ["--run_name", name])
        assert exit_info.value.code == 2 and "--run_name must be a plain folder name" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_failed_run_leaves_another_runs_config_alone(data, runs):
    run = runs / DEFAULT_RUN
    before = snapshot(run)
    assert_one_line_error(train("--data_dir", data[0], "--out_dir", runs, "--lr", "inf"), 2,
                          "--lr must be a finite number")
    # a finite rate that blows up: the folder is refused before anything is written ...
    assert_one_line_error(train("--data_dir", data[0], "--out_dir", runs, "--lr", "1e30"), 1, "holds another run")
    assert snapshot(run) == before
    # ... and in a new folder the blow-up is one line that says what to change
    assert_one_line_error(train("--data_dir", data[0], "--out_dir", runs, "--lr", "1e30", "--run_name", "big"), 1,
                          "loss became", "lower --lr")


def test_stale_temp_file_of_a_killed_first_checkpoint_write_is_removed(data, tmp_path):
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / ".last.pt.k1ll3d.tmp").write_bytes(b"PK\x03\x04 half a zip")  # killed during the first save
    train("--data_dir", data[0], "--out_dir", tmp_path / "runs", "--run_name", "r").check_returncode()
    assert not list(run.glob(".*.tmp")) and (run / "last.pt").is_file()


def test_evaluation_scripts_refuse_another_runs_folder(finished_run, tmp_path):
    ckpt = finished_run / DEFAULT_RUN / "best.pt"
    args = [ROOT / "get_mc_scores.py", "--checkpoint", ckpt, "--T", 2, "--device", "cpu", "--out_dir", tmp_path]
    run_script(*args).check_returncode()
    before = snapshot(tmp_path / DEFAULT_RUN)
    assert_one_line_error(run_script(*args, "--T", 3, check=False), 1, "holds another run", "T: 2 there, 3 now")
    assert_one_line_error(run_script(*args, check=False), 1, "already holds this run's results", "--overwrite True")
    assert snapshot(tmp_path / DEFAULT_RUN) == before
    run_script(*args, "--T", 3, "--overwrite", "True")
    assert json.loads((tmp_path / DEFAULT_RUN / "summary.json").read_text())["T"] == 3


# ============================================================================ memory bounds

@pytest.mark.parametrize("script,args,needle", [
    ("train_model.py", ["--image_size", "100000"], "--image_size must be <= 1024"),
    ("train_model.py", ["--seed", "99999999999999999999"], "--seed must be <= 2147483647"),
    ("get_mc_scores.py", ["--T", "100000000"], "--T must be <= 1000"),
    ("review.py", ["export", "--display_size", "100000"], "--display_size must be <= 1024"),
])
def test_size_flags_are_bounded_at_parse_time(script, args, needle):
    assert_one_line_error(run_script(ROOT / script, *args, check=False), 2, needle)


@pytest.mark.parametrize("spec,flag,value", [
    ("train_model:Config", "epochs", 10**9), ("train_model:Config", "batch_size", 10**6),
    ("train_model:Config", "per_class", 10**9), ("train_model:Config", "seeds", "0,99999999999"),
    ("active_learning:Config", "ensemble_size", 1000), ("active_learning:Config", "mc_samples", 10**6),
    ("saliency_map_uncertainties:Config", "max_images", 10**12), ("evaluate_safety:Config", "T", 10**6),
    ("train_model_data_generation:Config", "step_sizes", "2,10000000"), ("make_splits:Config", "seed", 2**40),
    ("train_model:Config", "max_image_pixels", 10**12),
])
def test_every_size_flag_has_an_upper_bound(spec, flag, value, capsys):
    import importlib
    module, name = spec.split(":")
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_config(getattr(importlib.import_module(module), name), [f"--{flag}", str(value)])
    assert exit_info.value.code == 2 and f"--{flag} must be <=" in capsys.readouterr().err


def test_help_states_the_bounds():
    out = " ".join(run_script(ROOT / "train_model.py", "--help").stdout.split())
    assert "the side of a padded one (at most 1024)" in out and "--max_image_pixels" in out


def png_header(width: int, height: int) -> bytes:
    """A PNG holding only its signature, IHDR (width x height, 8-bit grey) and IEND: a valid header,
    no pixel data, so decoding it fails while reading the header succeeds."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IEND", b""))


def test_an_image_above_the_pixel_limit_is_bad_input_found_from_its_header(data, tmp_path):
    root = Path(shutil.copytree(data[0], tmp_path / "data"))
    (root / "a" / "huge.png").write_bytes(png_header(13000, 13000))  # 169 Mpx, would cost 0.5 GB to decode
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(root / "b" / "big.png")  # 1600 px
    proc = train("--data_dir", root, "--out_dir", tmp_path / "runs", "--run_name", "r")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"{root / 'a' / 'huge.png'}: image too large: 13000 x 13000 = 169,000,000 pixels" in proc.stderr
    proc = train("--data_dir", root, "--out_dir", tmp_path / "runs", "--run_name", "r", "--max_image_pixels", 1000,
                 "--skip_bad_images", "True")
    assert proc.returncode == 0, proc.stderr[-2000:]
    skipped = pd.read_csv(tmp_path / "runs" / "r" / "skipped_inputs.csv")
    assert sorted(Path(p).name for p in skipped["path"]) == ["big.png", "huge.png"]
    assert skipped["problem"].str.contains("above the limit of 1,000").all()


# ============================================================================ one error path

def test_out_dir_naming_a_file_is_one_line(data, tmp_path):
    (tmp_path / "afile").write_text("x")
    assert_one_line_error(train("--data_dir", data[0], "--out_dir", tmp_path / "afile"), 1,
                          f"--out_dir {tmp_path / 'afile'}", "is a file, not a folder")


def test_a_layout_without_built_in_data_needs_data_dir(tmp_path):
    assert_one_line_error(train("--data_dir", "", "--out_dir", tmp_path), 2, "--dataset folders needs --data_dir")


@pytest.fixture(scope="module")
def bad_checkpoints(finished_run, tmp_path_factory):
    """{name: path} of checkpoints that are not train_model.py checkpoints in three ways."""
    folder = tmp_path_factory.mktemp("bad_ckpt")
    good = torch.load(finished_run / DEFAULT_RUN / "best.pt", weights_only=True)
    torch.save({**good, "config": [1, 2]}, folder / "config_list.pt")
    torch.save({k: v for k, v in good.items() if k != "mean"}, folder / "no_mean.pt")
    (folder / "random.pt").write_bytes(np.random.default_rng(0).bytes(5000))
    return {p.stem: p for p in folder.iterdir()}


@pytest.mark.parametrize("name,needles", [
    ("config_list", ["config_list.pt: not a train_model.py checkpoint", "config is list"]),
    ("no_mean", ["no_mean.pt: not a train_model.py checkpoint", "lacks ['mean']"]),
    ("random", ["random.pt: cannot read this checkpoint: the file is corrupt or truncated"]),
])
def test_a_broken_checkpoint_is_named_in_one_line(bad_checkpoints, name, needles, tmp_path):
    proc = run_script(ROOT / "get_mc_scores.py", "--checkpoint", bad_checkpoints[name], "--T", 2,
                      "--out_dir", tmp_path, check=False)
    line = assert_one_line_error(proc, 1, *needles)
    assert "arbitrary code" not in line
    assert not any(tmp_path.iterdir())  # nothing written for a checkpoint that cannot be used


def test_safety_with_models_of_other_classes_is_one_line_and_writes_nothing(data, finished_run, tmp_path):
    three = make_folders(tmp_path / "three", classes="abc")
    train("--data_dir", three, "--out_dir", tmp_path / "runs", "--run_name", "abc").check_returncode()
    proc = run_script(ROOT / "evaluate_safety.py", "--checkpoints",
                      f"{finished_run / DEFAULT_RUN / 'best.pt'},{tmp_path / 'runs' / 'abc' / 'best.pt'}", "--T", 2, "--device", "cpu",
                      "--out_dir", tmp_path / "safety", check=False)
    assert_one_line_error(proc, 1, "have different classes")
    assert not (tmp_path / "safety").exists()


def test_ctrl_c_during_training_says_how_to_resume(data, tmp_path):
    args = [sys.executable, ROOT / "train_model.py", *TRAIN, "--data_dir", data[0], "--out_dir", tmp_path,
            "--run_name", "r", "--epochs", 10_000, "--patience", 10_000]
    proc = subprocess.Popen(list(map(str, args)), cwd=ROOT, env=script_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "r" / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr[-2000:]
    assert "interrupted (Ctrl-C); continue it with the same flags and --resume True" in stderr


# ============================================================================ smaller defects

def test_broken_symlinks_are_named_and_listed_when_skipped(data, tmp_path):
    root = Path(shutil.copytree(data[0], tmp_path / "data"))
    os.symlink(root / "a" / "loop.png", root / "a" / "loop.png")       # points at itself
    os.symlink(tmp_path / "nowhere.png", root / "b" / "gone.png")      # dangling
    proc = train("--data_dir", root, "--out_dir", tmp_path / "runs", "--run_name", "r")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "2 bad inputs" in proc.stderr
    assert f"{root / 'a' / 'loop.png'}: broken symbolic link" in proc.stderr
    assert f"{root / 'b' / 'gone.png'}: broken symbolic link" in proc.stderr
    train("--data_dir", root, "--out_dir", tmp_path / "runs", "--run_name", "r",
          "--skip_bad_images", "True").check_returncode()
    skipped = pd.read_csv(tmp_path / "runs" / "r" / "skipped_inputs.csv")
    assert sorted(Path(p).name for p in skipped["path"]) == ["gone.png", "loop.png"]


def test_class_folders_differing_only_in_case_are_refused(tmp_path):
    root = make_folders(tmp_path / "data", classes="ab")
    make_folders(root, classes="A", seed=5)
    assert_one_line_error(train("--data_dir", root, "--out_dir", tmp_path / "runs"), 1,
                          "class folders 'A' and 'a' differ only in case")


def test_a_one_class_data_set_is_refused(tmp_path):
    root = make_folders(tmp_path / "data", classes="a")
    assert_one_line_error(train("--data_dir", root, "--out_dir", tmp_path / "runs"), 1,
                          "needs at least 2 classes")
    assert not list((tmp_path / "runs").rglob("*.pt"))
