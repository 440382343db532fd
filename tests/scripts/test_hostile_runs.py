"""Runs that race, resume the wrong checkpoint, or meet a read-only or full disk, a file where a
folder belongs, a malformed Label Studio export or a NUL byte: one
run per folder (the second one named the holder), and one 'error:' line, never a traceback,
with nothing scored before the output folder is known to be writable."""
import builtins
import errno
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

import evaluate_safety
from safehil.core import locks
import predict
import review
import train_model
from conftest import copy_test_images, one_error_line, run_in_process

CPU = ("--device", "cpu")


@pytest.fixture(scope="module")
def images(tiny_synthetic, tmp_path_factory):
    """A folder of 4 test images to score."""
    return copy_test_images(tiny_synthetic, tmp_path_factory.mktemp("images"), 4)


def train_args(tiny_synthetic, out, *extra):
    root, csv = tiny_synthetic
    return ("--model", "tiny_cnn", "--data_dir", root, "--split_csv", csv, "--image_size", 16, "--epochs", 1,
            "--batch_size", 32, *CPU, "--out_dir", out, "--run_name", "run", *extra)


def script_runs(name, tiny_synthetic, checkpoint_pair, images, out):
    """(module, command line) of each script that writes an output folder, into `out`."""
    a, b = checkpoint_pair
    return {"train": (train_model, train_args(tiny_synthetic, out.parent, "--run_name", out.name)),
            "predict": (predict, ("--checkpoints", a, "--images_dir", images, "--T", 2, *CPU, "--out_dir", out)),
            "evaluate_safety": (evaluate_safety, ("--checkpoints", f"{a},{b}", "--T", 2, *CPU, "--out_dir",
                                                  out.parent, "--run_name", out.name, "--sweep_points", 3)),
            "review export": (review, ("export", "--checkpoints", a, "--images_dir", images, "--T", 2, *CPU,
                                       "--out_dir", out))}[name]


SCRIPTS = ("train", "predict", "evaluate_safety", "review export")


# ============================================================================ item 4: one run per folder

@pytest.mark.parametrize("name", SCRIPTS)
def test_a_second_run_into_a_held_folder_is_refused_naming_the_holder(name, tiny_synthetic, checkpoint_pair, images,
                                                                      tmp_path, capsys):
    out = tmp_path / "runs" / "held"
    out.mkdir(parents=True)
    holder = locks.acquire(out / locks.FOLDER_LOCK)  # another run (its own open lock file) holds the folder
    try:
        module, args = script_runs(name, tiny_synthetic, checkpoint_pair, images, out)
        assert run_in_process(module, *args) == 1
        one_error_line(capsys, f"{out}: another run is writing into it (pid {os.getpid()} on ", "started ")
        assert sorted(p.name for p in out.iterdir()) == [locks.FOLDER_LOCK]  # nothing of the second run
    finally:
        holder.close()
    assert run_in_process(module, *args) == 0  # released: the run goes ahead


def test_resume_compares_the_settings_recorded_in_the_checkpoint_itself(tiny_synthetic, tmp_path, capsys):
    assert run_in_process(train_model, *train_args(tiny_synthetic, tmp_path)) == 0
    run = tmp_path / "run"
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "lr": 0.01}))  # run 2's config beside run 1's last.pt
    code = run_in_process(train_model, *train_args(tiny_synthetic, tmp_path, "--lr", 0.01, "--epochs", 2,
                                                   "--resume", "True"))
    assert code == 1
    one_error_line(capsys, f"{run / 'last.pt'}: was trained with other settings", "lr: 0.001 there, 0.01 now")


# ============================================================================ item 6: one line, never a traceback

@pytest.fixture
def read_only(monkeypatch):
    """read_only(folder): nothing can be created or written under `folder` (chmod, and for root,
    who ignores modes, os.open / os.mkdir / open refuse with EACCES as a read-only mount would)."""
    def make(folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o555)
        if os.geteuid() != 0:
            return folder
        guarded = os.path.realpath(folder)

        def denied(path):
            return os.path.realpath(os.fspath(path)).startswith(guarded + os.sep)

        real_open, real_mkdir, real_builtin_open = os.open, os.mkdir, builtins.open

        def os_open(path, flags, *a, **k):
            if denied(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
            return real_open(path, flags, *a, **k)

        def mkdir(path, *a, **k):
            if denied(path):
                raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
            return real_mkdir(path, *a, **k)

        def open_(file, mode="r", *a, **k):
            if isinstance(file, (str, os.PathLike)) and denied(file) and set(mode) & set("wax+"):
                raise PermissionError(errno.EACCES, "Permission denied", os.fspath(file))
            return real_builtin_open(file, mode, *a, **k)
        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(os, "mkdir", mkdir)
        monkeypatch.setattr(builtins, "open", open_)
        return folder
    yield make


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_read_only_out_dir_is_one_line_before_anything_is_scored(name, tiny_synthetic, checkpoint_pair, images,
                                                                   tmp_path, read_only, capsys):
    parent = read_only(tmp_path / "ro")
    module, args = script_runs(name, tiny_synthetic, checkpoint_pair, images, parent / "out")
    assert run_in_process(module, *args) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.err.strip().count("\n") == 0, captured.err
    assert f"{parent / 'out'}" in captured.err and "Permission denied" in captured.err
    assert "scoring" not in captured.out and "epoch" not in captured.out  # the folder is checked first


def test_a_read_only_split_csv_folder_is_one_line_at_import(tmp_path, read_only, capsys):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    shutil.copy(Path(__file__).resolve().parents[1] / "conftest.py", root / "a" / "x.txt")
    from PIL import Image
    Image.new("L", (16, 16)).save(root / "a" / "0.png")
    review_csv = tmp_path / "batch" / "review.csv"
    review_csv.parent.mkdir()
    review_csv.write_text("path,predicted_label,corrected_label\na/0.png,a,\n")
    splits = read_only(tmp_path / "splits")
    assert run_in_process(review, "import", "--review_csv", review_csv, "--split_csv", splits / "s.csv",
                          "--data_dir", root, "--class_names", "a") == 1
    one_error_line(capsys, str(splits), "Permission denied")


def test_predict_into_an_out_dir_that_is_a_file_is_one_line(checkpoint_pair, images, tmp_path, capsys):
    (tmp_path / "f").write_text("a file")
    assert run_in_process(predict, "--checkpoints", checkpoint_pair[0], "--images_dir", images, *CPU,
                          "--out_dir", tmp_path / "f") == 1
    one_error_line(capsys, f"{tmp_path / 'f'} is a file, not a folder")


def test_a_full_disk_while_saving_a_checkpoint_is_one_line_naming_it(tiny_synthetic, tmp_path, monkeypatch, capsys):
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        real_save({"half": 1}, f)
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", full_disk)
    root, csv = tiny_synthetic
    before = Path(csv).read_bytes()
    assert run_in_process(train_model, *train_args(tiny_synthetic, tmp_path)) == 1
    one_error_line(capsys, str(tmp_path / "run"), ".pt: No space left on device; the disk is full")
    assert Path(csv).read_bytes() == before and not list((tmp_path / "run").glob(".*.tmp"))


@pytest.mark.parametrize("content", ['{"tasks": []}', '"tasks"', "null", "[" * 200_000 + "]" * 200_000])
def test_a_label_studio_export_that_is_no_task_list_is_one_line(content, tmp_path, capsys):
    batch = tmp_path / "batch"
    batch.mkdir()
    (batch / "review.csv").write_text("path,predicted_label,corrected_label\n")
    (batch / "export.json").write_text(content)
    assert run_in_process(review, "import", "--review_csv", batch / "review.csv", "--label_studio_json",
                          batch / "export.json", "--split_csv", tmp_path / "s.csv", "--data_dir", tmp_path,
                          "--class_names", "a") == 1
    one_error_line(capsys, str(batch / "export.json"))


def test_a_nul_byte_in_a_split_csv_path_is_one_line(tiny_synthetic, tmp_path, capsys):
    root, csv = tiny_synthetic
    table = pd.read_csv(csv)
    table.loc[0, "path"] = "bad\x00name.png"
    table.to_csv(tmp_path / "nul.csv", index=False)
    args = list(train_args(tiny_synthetic, tmp_path))
    args[args.index("--split_csv") + 1] = tmp_path / "nul.csv"
    assert run_in_process(train_model, *args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "NUL" in err, err
