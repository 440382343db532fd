"""A certificate holds only for what it was made on: thresholds.json
binds its checkpoints (file sha256), its calibration data and itself (a sha256 over the whole
document); predict.py and review.py refuse other checkpoints and never call an edited or
unbound file certified; evaluate_safety.py never calibrates or tests on a model's training
images, on a training or test split, or on one model posing as two."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest

import torch

from safehil.safety import cascade
import evaluate_safety
import predict as predict_script
import review
import train_model
from conftest import copy_test_images, run_in_process

T = ("--T", 4)


@pytest.fixture(scope="module")
def certified(certified_thresholds):
    """The tiny pair certified on its held-out calib split (conftest): (thresholds.json, a, b)."""
    return certified_thresholds


@pytest.fixture(scope="module")
def other_model(checkpoint_pair, tmp_path_factory):
    """best.pt of another, worse model E: model A's checkpoint with noise added to its weights."""
    state = torch.load(checkpoint_pair[0], weights_only=True)
    generator = torch.Generator().manual_seed(0)
    state["model"] = {k: v + torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
                      for k, v in state["model"].items()}
    path = tmp_path_factory.mktemp("other") / "best.pt"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def new_images(tiny_synthetic, tmp_path_factory):
    """A folder of 6 new images (copies of test images) to score."""
    return copy_test_images(tiny_synthetic, tmp_path_factory.mktemp("new"), 6)


def predict(capsys, *args, out, T=T):
    """predict.py's command line -> (exit code, stdout, stderr)."""
    code = run_in_process(predict_script, "--images_dir", *args, *T, "--device", "cpu", "--out_dir", out)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def summary_rule(out):
    return json.loads((out / "summary.json").read_text())["referral_rule"]


def test_thresholds_json_records_both_checkpoints_the_calibration_data_and_its_own_hash(certified):
    path, a, b = certified
    doc = json.loads(path.read_text())
    models = doc["certificate"]["models"]
    assert models["a"]["sha256"] == cascade.file_sha256(a) and models["b"]["sha256"] == cascade.file_sha256(b)
    assert models["a"]["weights_sha256"] != models["b"]["weights_sha256"]
    assert doc["certificate"]["calibration_data"]["n"] == 12 and len(doc["certificate"]["calibration_data"]["sha256"]) == 64
    assert doc["format"] == 2 and doc["sha256"] == cascade._document_sha256(doc)
    assert doc["score"] == "predictive_entropy" and doc["T"] == 4
    assert cascade.read_thresholds(path)[1] == []


def test_the_certified_pair_is_applied_certified(certified, new_images, tmp_path, capsys):
    path, a, b = certified
    code, stdout, stderr = predict(capsys, new_images, "--checkpoints", f"{a},{b}", "--thresholds", path, out=tmp_path / "p")
    assert code == 0
    rule = summary_rule(tmp_path / "p")
    assert rule["certified"] is True and rule["not_certified"] == [] and "NOT CERTIFIED" not in stdout


def test_predict_refuses_thresholds_of_another_model(certified, other_model, new_images, tmp_path, capsys):
    path, a, b = certified
    code, stdout, stderr = predict(capsys, new_images, "--checkpoints", other_model, "--thresholds", path, out=tmp_path / "e")
    assert code == 1 and "Traceback" not in stderr
    assert f"certified for model A = {a}" in stderr and "run evaluate_safety.py" in stderr
    assert not (tmp_path / "e" / "predictions.csv").exists()
    code, stdout, stderr = predict(capsys, new_images, "--checkpoints", f"{a},{other_model}", "--thresholds", path,
                   out=tmp_path / "e2")
    assert code == 1 and "certified for model B" in stderr


def test_a_swapped_pair_is_refused_and_named(certified, new_images, tmp_path, capsys):
    path, a, b = certified
    code, stdout, stderr = predict(capsys, new_images, "--checkpoints", f"{b},{a}", "--thresholds", path, out=tmp_path / "s")
    assert code == 1 and "swapped" in stderr and "Traceback" not in stderr


def test_a_checkpoint_retrained_into_the_same_path_is_another_model(certified, other_model, new_images, tmp_path, capsys):
    path, a, b = certified
    doc = json.loads(path.read_text())
    same_path = tmp_path / "run" / "best.pt"
    same_path.parent.mkdir()
    shutil.copy(a, same_path)
    doc["certificate"]["models"]["a"]["path"] = str(same_path)  # as if certified at this path ...
    moved = tmp_path / "thresholds.json"
    cascade.write_thresholds(moved, {k: v for k, v in doc.items() if k not in ("sha256", "format")})
    shutil.copy(other_model, same_path)  # ... then retrained into it with --overwrite True
    code, stdout, stderr = predict(capsys, new_images, "--checkpoints", same_path, "--thresholds", moved, out=tmp_path / "r")
    assert code == 1 and "another model, or the file was retrained" in stderr


def test_a_hand_edited_threshold_runs_uncertified_with_a_warning(certified, new_images, tmp_path, capsys):
    path, a, b = certified
    doc = json.loads(path.read_text())
    doc["modes"]["cascade"]["threshold_a"] = 99.0  # "a bit more automatic"
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(doc, indent=1))
    code, stdout, stderr = predict(capsys, new_images, "--checkpoints", f"{a},{b}", "--thresholds", edited, out=tmp_path / "h")
    assert code == 0
    rule = summary_rule(tmp_path / "h")
    assert rule["certified"] is False and "edited after evaluate_safety.py wrote it" in rule["not_certified"][0]
    assert "warning: NOT CERTIFIED" in stdout and "edited" in stdout


def test_thresholds_without_hashes_or_with_another_T_are_never_certified(certified, new_images, tmp_path, capsys):
    path, a, b = certified
    doc = json.loads(path.read_text())
    legacy = tmp_path / "legacy.json"
    legacy.write_text(json.dumps({k: v for k, v in doc.items() if k not in ("sha256", "certificate", "format")}))
    code = predict(capsys, new_images, "--checkpoints", f"{a},{b}", "--thresholds", legacy, out=tmp_path / "l")[0]
    assert code == 0
    assert summary_rule(tmp_path / "l")["certified"] is False
    assert "records no hashes" in summary_rule(tmp_path / "l")["not_certified"][0]
    assert predict(capsys, new_images, "--checkpoints", f"{a},{b}", "--thresholds", path,
                   out=tmp_path / "t", T=("--T", 6))[0] == 0
    assert summary_rule(tmp_path / "t")["certified"] is False
    assert "T = 4" in summary_rule(tmp_path / "t")["not_certified"][0]


def test_review_export_refuses_thresholds_of_another_model(certified, other_model, new_images, tmp_path, capsys):
    path, a, b = certified
    code = run_in_process(review, "export", "--checkpoints", other_model, "--thresholds", path,
                          "--images_dir", new_images, *T, "--device", "cpu", "--out_dir", tmp_path / "rev")
    assert code == 1 and "certified for model A" in capsys.readouterr().err


# ============================================================================ item 2: no calibration on training images

@pytest.fixture(scope="module")
def folder_pair(tmp_path_factory):
    """Class folders without a split CSV (3 classes x 15 images) and two tiny CNNs trained on them by
    train_model.py with --seed 0 and --seed 1: (data root, run folder of A, run folder of B)."""
    from PIL import Image
    base = tmp_path_factory.mktemp("folders")
    rng = np.random.default_rng(0)
    for c in range(3):
        for i in range(15):
            (base / "data" / f"c{c}").mkdir(parents=True, exist_ok=True)
            pixels = np.clip(rng.normal(60 + 70 * c, 20, (20, 20)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(base / "data" / f"c{c}" / f"{i}.png")
    for name, seed in (("a", 0), ("b", 1)):
        assert run_in_process(train_model, "--model", "tiny_cnn", "--dataset", "folders", "--data_dir",
                              base / "data", "--image_size", 16, "--epochs", 1, "--batch_size", 16, "--seed", seed,
                              "--device", "cpu", "--out_dir", base / "runs", "--run_name", name) == 0
    return base / "data", base / "runs" / "a", base / "runs" / "b"


def safety(*args, out):
    return run_in_process(evaluate_safety, *args, *T, "--device", "cpu", "--sweep_points", 3, "--max_candidates", 20,
                          "--out_dir", out, "--run_name", "r")


def test_models_trained_with_different_seeds_share_one_split_and_record_it(folder_pair, tmp_path, capsys):
    root, a, b = folder_pair
    split_a, split_b = pd.read_csv(a / "split.csv"), pd.read_csv(b / "split.csv")
    assert list(split_a.columns) == ["path", "label", "split"] and len(split_a) == 45
    assert split_a.sort_values("path").equals(split_b.sort_values("path"))  # the seed does not move the split
    assert json.loads((a / "config.json").read_text())["split_seed"] == 0
    assert safety("--checkpoints", f"{a / 'best.pt'},{b / 'best.pt'}", out=tmp_path) == 0, capsys.readouterr().err


def test_calibration_or_test_images_a_model_trained_on_are_refused_whatever_the_flags(folder_pair, tmp_path, capsys):
    root, a, b = folder_pair
    table = pd.read_csv(b / "split.csv")
    trained = table.index[table["split"] == "train"]
    table.loc[trained[:4], "split"] = "valid"   # 4 of B's (and A's) training images now calibrate
    table.loc[trained[4:7], "split"] = "test"   # and 3 are tested on
    table.to_csv(tmp_path / "leaky.csv", index=False)
    code = safety("--checkpoints", f"{a / 'best.pt'},{b / 'best.pt'}", "--data_dir", root, "--split_csv",
                  tmp_path / "leaky.csv", out=tmp_path)
    err = capsys.readouterr().err
    n_valid = int((table["split"] == "valid").sum())
    assert code == 1 and f"model B ({b / 'best.pt'}) trained on 4 of the {n_valid} calibration images and 3 of" in err
    assert "model A" in err and "certify nothing" in err and "Traceback" not in err
    assert not (tmp_path / "r" / "thresholds.json").exists()


@pytest.mark.parametrize("split", ["train", "test", "test_shifted"])
def test_calibrating_on_a_training_or_test_split_is_refused(split, capsys):
    assert run_in_process(evaluate_safety, "--calib_split", split) == 2
    assert "is a training or test split" in capsys.readouterr().err


def test_a_pair_that_is_one_model_is_refused(folder_pair, tmp_path, capsys):
    root, a, b = folder_pair
    assert safety("--checkpoints", f"{a / 'best.pt'},{a / 'best.pt'}", out=tmp_path) == 1
    assert "are the same file" in capsys.readouterr().err
    state = torch.load(a / "best.pt", weights_only=True)
    state["config"] = {**state["config"], "lr": 0.5}  # other metadata, same weights
    (tmp_path / "copy").mkdir()
    torch.save(state, tmp_path / "copy" / "best.pt")
    assert safety("--checkpoints", f"{a / 'best.pt'},{tmp_path / 'copy' / 'best.pt'}", out=tmp_path) == 1
    assert "hold the same weights" in capsys.readouterr().err
