"""Reliability: resume after a kill, atomic writes, bad input found before training (or skipped
and listed), CLI rejection of invalid values, safe checkpoints, and the memory-mapped cache."""
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from safehil.data import cache
from safehil.settings import cli
from safehil.core import utils
from safehil.data.augment import Augmenter, _chunked_mean_std
from safehil.data.cache import cached_images, decode_for_cache, decode_images_skipping_bad
from conftest import ROOT, run_script, script_env
from safehil.data.datasets import (ImageSet, gather_images, load_image_sets_checked, normalisation_for, scan_class_folders)
from safehil.data.images import BadInputError, image_mode_problem
from safehil.training.models import build_model, load_weights_file
from safehil.data.splits import check_split_table, split_name_ok
from safehil.training.training import fit

CPU = torch.device("cpu")


def grey(path, seed, size=40, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


@pytest.fixture
def folder_set(tmp_path):
    """Two classes a/b, 8 PNGs each, with a split CSV (5 train, 2 valid, 1 test per class): (root, csv)."""
    root = tmp_path / "data"
    rows = []
    for c, label in enumerate("ab"):
        for i in range(8):
            grey(root / label / f"{i}.png", seed=100 * c + i)
            rows.append({"path": f"{label}/{i}.png", "label": label,
                         "split": "train" if i < 5 else "valid" if i < 7 else "test"})
    csv = tmp_path / "split.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return root, csv


def problems_of(table, root, source="", **kw):
    """The problem list of load_image_sets_checked with skip_bad=True -> {'class/file': problem}."""
    _, problems = load_image_sets_checked(table, root, 16, skip_bad=True, source=source, **kw)
    return {Path(p["path"]).relative_to(root).as_posix(): p["problem"] for p in problems}


# ============================================================================ resume

def _metrics(run):
    return pd.read_csv(run / "metrics.csv").drop(columns="seconds")


def test_resume_after_sigkill_matches_uninterrupted_run(tiny_synthetic, tmp_path):
    root, csv = tiny_synthetic
    args = [ROOT / "train_model.py", "--model", "tiny_cnn", "--data_dir", root, "--split_csv", csv,
            "--image_size", 24, "--epochs", 5, "--patience", 5, "--batch_size", 16, "--passes", "plain+augmented",
            "--out_dir", tmp_path]
    run_script(*args, "--run_name", "full")

    proc = subprocess.Popen([sys.executable, *map(str, args), "--run_name", "killed"], cwd=ROOT, env=script_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "killed" / "last.pt"
    deadline = time.time() + 240
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # no cleanup, no atexit: a real crash mid-training
    proc.wait()
    killed = tmp_path / "killed"
    done_before = len(pd.read_csv(killed / "metrics.csv"))
    assert done_before < 5 and not (killed / "test_metrics.json").exists(), "the run finished before the kill"

    out = run_script(*args, "--run_name", "killed", "--resume", "True").stdout
    assert "resumed from" in out
    pd.testing.assert_frame_equal(_metrics(killed), _metrics(tmp_path / "full"))
    assert json.loads((killed / "test_metrics.json").read_text()) == \
        json.loads((tmp_path / "full" / "test_metrics.json").read_text())
    a = utils.load_checkpoint(killed / "best.pt")["model"]
    b = utils.load_checkpoint(tmp_path / "full" / "best.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list(killed.glob(".*.tmp"))


def _toy(n, seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    x = torch.rand(n, 1, 16, 16, generator=g) * 80
    x[labels == 0, :, :, :8] += 120
    x[labels == 1, :, :, 8:] += 120
    return ImageSet(x.to(torch.uint8).repeat(1, 3, 1, 1), labels, [str(i) for i in range(n)], ["l", "r"])


def _fit(out_dir, epochs, resume=False, patience=10, valid=None, model="tiny_cnn"):
    torch.manual_seed(0)
    net = build_model(model, 2)
    fit(net, _toy(48, 0), valid or _toy(16, 1), epochs=epochs, patience=patience, batch_size=8, lr=3e-3,
        mean=0.3, std=0.25, device=CPU, seed=3, augment=Augmenter("neu", True), out_dir=out_dir,
        resume=resume, checkpoint_extra={"model_name": model, "class_names": ["l", "r"]})
    return net.state_dict()


def test_fit_resume_extends_a_finished_run_bitwise(tmp_path):
    full = _fit(tmp_path / "full", 4)
    _fit(tmp_path / "part", 2)
    resumed = _fit(tmp_path / "part", 4, resume=True)
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    assert list(pd.read_csv(tmp_path / "part" / "metrics.csv")["epoch"]) == [1, 2, 3, 4]


def test_resume_of_an_early_stopped_run_trains_no_more(tmp_path):
    noisy = _toy(16, 1)
    noisy.labels = torch.randint(0, 2, (16,), generator=torch.Generator().manual_seed(5))
    _fit(tmp_path / "r", 30, patience=1, valid=noisy)
    epochs = len(pd.read_csv(tmp_path / "r" / "metrics.csv"))
    assert epochs < 30
    _fit(tmp_path / "r", 30, patience=1, valid=noisy, resume=True)
    assert len(pd.read_csv(tmp_path / "r" / "metrics.csv")) == epochs


def test_resume_into_another_model_says_so(tmp_path):
    _fit(tmp_path / "r", 1)
    with pytest.raises(ValueError, match=r"last.pt: checkpoint does not match.*model_name: checkpoint has "
                                         r"'tiny_cnn', this run has 'resnet18'"):
        _fit(tmp_path / "r", 2, resume=True, model="resnet18")


# ============================================================================ atomic writes

def test_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    utils.save_checkpoint(path, {"w": torch.ones(3)})
    assert stat.S_IMODE(path.stat().st_mode) & 0o044  # readable by others, not mkstemp's 0600

    def dies_halfway(obj, f):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        utils.save_checkpoint(path, {"w": torch.zeros(3)})
    assert torch.equal(utils.load_checkpoint(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left behind


def test_stale_temp_files_are_removed(tmp_path):
    (tmp_path / ".last.pt.abc.tmp").write_bytes(b"half")
    (tmp_path / "last.pt").write_bytes(b"x")
    assert [p.name for p in utils.remove_stale_temp_files(tmp_path)] == [".last.pt.abc.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


# ============================================================================ bad input

def test_each_bad_image_is_named_with_its_problem(folder_set, tmp_path, monkeypatch):
    root, csv = folder_set
    good = (root / "a" / "0.png").read_bytes()
    (root / "a" / "0.png").write_bytes(good[: len(good) // 2])                      # truncated PNG
    grey(root / "a" / "1.jpg", 1, mode="RGB")
    jpg = (root / "a" / "1.jpg").read_bytes()
    (root / "a" / "1.jpg").write_bytes(jpg[: len(jpg) // 2])                         # truncated JPEG
    corrupt = bytearray(good)
    corrupt[150:190] = bytes(40)
    (root / "a" / "2.png").write_bytes(bytes(corrupt))                               # corrupt data
    (root / "a" / "3.png").write_bytes(b"")                                          # empty file
    (root / "a" / "4.png").write_text("not an image")                                # text
    Image.fromarray(np.full((40, 40), 40000, np.uint16)).save(root / "b" / "0.png")  # 16-bit
    Image.new("CMYK", (40, 40), (0, 0, 0, 200)).save(root / "b" / "1.jpg")          # CMYK
    Image.fromarray(np.ones((40, 40), np.float32)).save(root / "b" / "2.tif")        # float
    table = pd.read_csv(csv)
    table.loc[table["path"] == "a/1.png", "path"] = "a/1.jpg"
    table.loc[table["path"] == "b/1.png", "path"] = "b/1.jpg"
    table.loc[table["path"] == "b/2.png", "path"] = "b/2.tif"
    (root / "b" / "3.png").chmod(0o000)                                               # unreadable
    real_open = Image.open

    def open_as_non_root(path, *a, **k):  # tests run as root, who can read mode-000 files
        if Path(path).name == "3.png" and Path(path).parent.name == "b":
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(Image, "open", open_as_non_root)
    found = problems_of(table, root)
    expected = {"a/0.png": "cannot decode image: the file is truncated or corrupt",
                "a/1.jpg": "cannot decode image: the file is truncated or corrupt",
                "a/2.png": "cannot decode image: the file is truncated or corrupt",
                "a/3.png": "empty file (0 bytes)",
                "a/4.png": "not an image (unknown format or a corrupt header)",
                "b/0.png": "wrong image mode: 16-bit grayscale (mode I;16); the 8-bit cache would clip",
                "b/1.jpg": "wrong image mode: CMYK",
                "b/2.tif": "wrong image mode: 32-bit float (mode F)",
                "b/3.png": "cannot open the file (permission denied)"}
    assert sorted(found) == sorted(expected)
    for name, text in expected.items():
        assert found[name].startswith(text), (name, found[name])
    with pytest.raises(BadInputError, match=r"9 bad inputs.*--skip_bad_images True") as err:
        load_image_sets_checked(table, root, 16)
    assert len(err.value.problems) == 9


def test_table_problems_are_found_before_decoding(folder_set, monkeypatch):
    root, csv = folder_set
    table = pd.read_csv(csv)
    table.loc[0, "path"] = "a/gone.png"                 # CSV names a missing file
    table.loc[5, "label"] = "c"                         # a label nobody trains on (valid) ...
    table.loc[15, "label"] = "zz"                       # ... also in the test split
    table.loc[2, "split"] = "trian"                     # a typo in the split
    table.loc[3, "label"] = np.nan                      # an empty cell
    table.loc[14, "split"] = "train"                    # b/6.png now in train ...
    table = pd.concat([table, table.iloc[[14]].assign(split="test")], ignore_index=True)  # ... and in test

    def never(*a, **k):
        raise AssertionError("decoded although the table was already known to be bad")

    monkeypatch.setattr(cache, "decode_for_cache", never)
    with pytest.raises(BadInputError) as err:
        load_image_sets_checked(table, root, 16, source=csv, splits=split_name_ok)
    text = str(err.value)
    assert f"{root / 'a' / 'gone.png'}: file not found (named in {csv} row 2)" in text
    assert "unknown label 'zz': no image of this label in the train split" in text
    assert "unknown split 'trian'" in text and f"{root / 'a' / '3.png'}: empty label (named in {csv} row 5)" in text
    assert "unknown label 'c'" in text
    assert "listed in split 'train' and again in 'test'" in text
    kept, problems = check_split_table(table, root, csv, splits=split_name_ok)
    assert len(problems) == 6 and len(kept) == len(table) - 6
    assert "b/1.png" in set(kept["path"]) and "c" not in set(kept["label"])


def test_label_outside_a_checkpoints_classes(folder_set):
    root, csv = folder_set
    found = problems_of(pd.read_csv(csv), root, class_names=["a"])
    assert len(found) == 8 and all("not one of the model's classes ['a']" in v for v in found.values())


def test_empty_class_folder_named_or_skipped(folder_set):
    root, _ = folder_set
    (root / "c").mkdir()
    with pytest.raises(ValueError, match=r"[/\\]c: class folder holds no images"):
        scan_class_folders(root)
    problems = []
    table = scan_class_folders(root, problems)
    assert set(table["label"]) == {"a", "b"} and problems[0]["path"].endswith("c")


def test_read_image_modes():
    for mode in ("1", "L", "LA", "P", "RGB", "RGBA"):
        assert image_mode_problem(mode) is None
    for mode in ("I;16", "I", "F", "CMYK", "LAB"):
        assert image_mode_problem(mode).startswith("wrong image mode")


def test_train_model_stops_before_training_then_skips(folder_set, tmp_path):
    root, csv = folder_set
    (root / "a" / "1.png").write_bytes((root / "a" / "1.png").read_bytes()[:60])
    Image.fromarray(np.full((40, 40), 1000, np.uint16)).save(root / "b" / "2.png")
    args = [ROOT / "train_model.py", "--model", "tiny_cnn", "--dataset", "folders", "--data_dir", root,
            "--split_csv", csv, "--image_size", 16, "--epochs", 1, "--batch_size", 4, "--out_dir", tmp_path,
            "--run_name", "r"]
    proc = run_script(*args, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "error: 2 bad inputs" in proc.stderr
    assert f"{root / 'a' / '1.png'}: cannot decode image: the file is truncated" in proc.stderr
    assert f"{root / 'b' / '2.png'}: wrong image mode: 16-bit grayscale" in proc.stderr
    assert not (tmp_path / "r" / "metrics.csv").exists()  # nothing trained
    assert len(pd.read_csv(tmp_path / "r" / "bad_inputs.csv")) == 2

    run_script(*args, "--skip_bad_images", "True")
    skipped = pd.read_csv(tmp_path / "r" / "skipped_inputs.csv")
    assert sorted(Path(p).name for p in skipped["path"]) == ["1.png", "2.png"]
    assert json.loads((tmp_path / "r" / "test_metrics.json").read_text())["test"]["n"] == 2


# ============================================================================ CLI

@pytest.mark.parametrize("args,needle", [
    (["--epochs", "-1"], "--epochs must be >= 0"),
    (["--model", "alexnet"], "invalid choice: 'alexnet'"),
    (["--dropout", "1.5"], "--dropout must be in [0, 1)"),
    (["--batch_size", "0"], "--batch_size must be >= 1"),
    (["--lr", "0"], "--lr must be > 0"),
    (["--image_size", "8"], "--image_size must be >= 16"),
    (["--device", "gpu"], "--device must be auto, cpu"),
    (["--seeds", "1,x"], "comma-separated list of int"),
    (["--seeds", "1,1"], "lists a seed twice"),
    (["--seed", "-3"], "--seed must be >= 0"),
    (["--run_name", "a/b"], "--run_name must be a plain folder name"),
    (["--use_aug", "maybe"], "expected True or False"),
    (["--dataset", "imagenet"], "invalid choice: 'imagenet'"),
])
def test_invalid_values_rejected_with_a_message(args, needle, capsys):
    import train_model
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_config(train_model.Config, args)
    assert exit_info.value.code == 2 and needle in capsys.readouterr().err


def test_missing_data_is_an_error_not_a_traceback(tmp_path):
    proc = run_script(ROOT / "train_model.py", "--dataset", "folders", "--data_dir", tmp_path / "nope",
                      "--model", "tiny_cnn", "--out_dir", tmp_path, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"error: {tmp_path / 'nope'}: data folder not found" in proc.stderr


# ============================================================================ checkpoints

class NotWeights:  # module level, so a weights_only=False load could rebuild it
    pass


def test_checkpoint_needing_code_is_refused(tmp_path):
    torch.save({"model": {}, "extra": NotWeights()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match=r"evil.pt: refused .* needs arbitrary code .*NotWeights"):
        utils.load_checkpoint(tmp_path / "evil.pt")
    utils.save_checkpoint(tmp_path / "ok.pt", {"w": torch.ones(100)})
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut.pt: cannot read this checkpoint: the file is corrupt or truncated"):
        utils.load_checkpoint(tmp_path / "cut.pt")


def test_weights_of_another_model_say_so(tmp_path):
    utils.save_checkpoint(tmp_path / "t.pt", {"model": build_model("tiny_cnn", 2).state_dict(),
                                              "model_name": "tiny_cnn", "class_names": ["a", "b"]})
    with pytest.raises(ValueError, match=r"t.pt: weights do not fit this model \(the checkpoint records model "
                                         r"'tiny_cnn'\); missing \['conv1.weight'"):
        load_weights_file(build_model("resnet18", 2), tmp_path / "t.pt")
    with pytest.raises(utils.InputError, match=r"class_names: checkpoint has \['a', 'b'\], this run has \['a', 'c'\]"):
        utils.check_checkpoint_matches(utils.load_checkpoint(tmp_path / "t.pt"), tmp_path / "t.pt",
                                       model_name="tiny_cnn", class_names=["a", "c"])


# ============================================================================ memory-mapped cache

def decode_in_ram(paths, image_size):
    """uint8 [N, 3, S, S] of files that must all decode (the reference the cache is compared with)."""
    images, kept, failures = decode_images_skipping_bad(paths, image_size)
    assert failures == {} and kept == list(range(len(paths)))
    return images


def test_cache_is_built_once_reused_and_equals_ram_decoding(folder_set, tmp_path):
    root, csv = folder_set
    paths = pd.read_csv(csv)["path"].tolist()
    images, kept, failures = cached_images(paths, root, 24, tmp_path / "c", name="all")
    ram = decode_in_ram([root / p for p in paths], 24)
    assert torch.equal(images, ram) and kept == list(range(16)) and failures == {}
    data_file = next((tmp_path / "c").glob("*.u8"))
    assert data_file.stat().st_size == 16 * 3 * 24 * 24
    stamp = data_file.stat().st_mtime_ns
    again, _, _ = cached_images(paths, root, 24, tmp_path / "c", name="all")
    assert data_file.stat().st_mtime_ns == stamp and torch.equal(again, ram)  # reused, not rebuilt
    pick = torch.tensor([3, 0, 15, 3])
    assert torch.equal(gather_images(again, pick), ram[pick])  # training's batch gather
    grey(root / "a" / "3.png", seed=999)  # one file changes -> rebuilt
    os.utime(root / "a" / "3.png", ns=(stamp + 10**9, stamp + 10**9))
    rebuilt, _, _ = cached_images(paths, root, 24, tmp_path / "c", name="all")
    assert not torch.equal(rebuilt, ram)
    assert torch.equal(rebuilt, decode_in_ram([root / p for p in paths], 24))
    # another image size or another path list is another cache file
    cached_images(paths[:4], root, 24, tmp_path / "c", name="all")
    assert len(list((tmp_path / "c").glob("*.u8"))) == 2


def test_cache_keeps_only_decodable_images_and_remembers_the_bad(folder_set, tmp_path):
    root, csv = folder_set
    (root / "a" / "2.png").write_text("junk")
    paths = pd.read_csv(csv)["path"].tolist()
    for _ in range(2):  # built, then reused: the failure is reported both times
        images, kept, failures = cached_images(paths, root, 16, tmp_path / "c", name="all")
        assert len(images) == 15 and 2 not in kept and "not an image" in failures[2]
    ram = decode_in_ram([root / p for i, p in enumerate(paths) if i != 2], 16)
    assert torch.equal(images, ram)
    sets, problems = load_image_sets_checked(pd.read_csv(csv), root, 16, skip_bad=True, cache_dir=tmp_path / "c")
    assert len(sets["train"]) == 9 and len(problems) == 1
    assert sets["train"].labels.tolist() == [0] * 4 + [1] * 5


def test_crash_during_build_leaves_no_valid_cache(folder_set, tmp_path, monkeypatch):
    root, csv = folder_set
    paths = pd.read_csv(csv)["path"].tolist()
    real = decode_for_cache
    calls = []

    def crash_on_ninth(path, size):
        calls.append(path)
        if len(calls) == 9:
            raise KeyboardInterrupt  # stands in for a kill in the middle of the build
        return real(path, size)

    monkeypatch.setattr(cache, "decode_for_cache", crash_on_ninth)
    with pytest.raises(KeyboardInterrupt):
        cached_images(paths, root, 16, tmp_path / "c", name="all")
    assert not list((tmp_path / "c").glob("*.json")) and not list((tmp_path / "c").glob("*.u8"))
    monkeypatch.setattr(cache, "decode_for_cache", real)
    images, kept, _ = cached_images(paths, root, 16, tmp_path / "c", name="all")
    assert torch.equal(images, decode_in_ram([root / p for p in paths], 16))


def test_chunked_normalisation_matches_exact():
    images = torch.randint(0, 256, (300, 3, 20, 20), dtype=torch.uint8)
    x = images.float() / 255
    mean, std = _chunked_mean_std(images, chunk=7)
    assert abs(mean - x.mean().item()) < 1e-6 and abs(std - x.std().item()) < 1e-6
    exact = normalisation_for("folders", ImageSet(images, torch.zeros(300), [""] * 300, ["a"]))
    assert abs(exact[0] - mean) < 1e-6
