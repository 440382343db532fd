"""One 'error:' line, never a traceback: a malformed ONNX sidecar, export.py
without onnx, --weights imagenet offline (before any image is decoded), a calibration split with
no valid rows, evaluate_safety.py --split_csv without --data_dir as its help says, and a
symbolic link out of the folder in review.py export --images_dir. In-process, tiny data."""
import json
import os
import shutil
import sys
import urllib.error

import pandas as pd
import pytest
import torch

import evaluate_safety
import export
import predict
import review
import train_model
from conftest import copy_test_images, one_error_line, run_in_process
from safehil.settings import config
from safehil.settings.cli import parse_config


@pytest.fixture(scope="module")
def images(tiny_synthetic, tmp_path_factory):
    return copy_test_images(tiny_synthetic, tmp_path_factory.mktemp("images"), 3)


# ============================================================================ the ONNX sidecar

@pytest.fixture(scope="module")
def exported(checkpoint_pair, tmp_path_factory):
    """export.py of model A -> (MODEL.onnx, its sidecar dict with a well-formed thresholds block)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert run_in_process(export, "--checkpoints", checkpoint_pair[0], "--out", out) == 0
    sidecar = json.loads(out.with_suffix(".json").read_text())
    sidecar["thresholds"] = {"mode": "uncertainty_a", "threshold_a": 0.5, "threshold_b": 0.5, "certified": False,
                             "score": sidecar["score"], "T": sidecar["T"], "not_certified": []}
    return out, sidecar


def edited(sidecar, change):
    copy = json.loads(json.dumps(sidecar))
    change(copy)
    return copy


@pytest.mark.parametrize("change, needle", [
    (lambda s: s["thresholds"].update(threshold_a="abc"), 'thresholds.threshold_a must be a number, got "abc"'),
    (lambda s: s["thresholds"].pop("mode"), "thresholds.mode must be one of"),
    (lambda s: s.update(models=[]), "models must list one or two exported graphs"),
    (lambda s: s.update(class_names=s["class_names"][:5]), "lists 5 class names, the graph model.onnx predicts 6"),
    (lambda s: s["models"][0].update(image_size="24"), "models[0].image_size is malformed"),
    (lambda s: s["models"][0]["dropout_layers"][0].update(p=1.5), "models[0].dropout_layers is malformed"),
])
def test_a_malformed_sidecar_is_one_line_naming_the_field(exported, images, tmp_path, change, needle, capsys):
    out, sidecar = exported
    bundle = tmp_path / "model.onnx"
    shutil.copy(out, bundle)
    bundle.with_suffix(".json").write_text(json.dumps(edited(sidecar, change)))
    code = run_in_process(predict, "--onnx", bundle, "--images_dir", images, "--out_dir", tmp_path / "p", "--T", 2)
    assert code == 1
    one_error_line(capsys, f"{bundle.with_suffix('.json')}: ", needle)


def test_export_without_onnx_names_requirements_onnx(checkpoint_pair, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx fails, as where it is not installed
    out = tmp_path / "m.onnx"
    assert run_in_process(export, "--checkpoints", checkpoint_pair[0], "--out", out) == 1
    one_error_line(capsys, "pip install -r requirements-onnx.txt")
    assert not out.exists()


# ============================================================================ training and calibration data

def test_weights_imagenet_offline_is_one_line_before_any_image_is_decoded(tiny_synthetic, tmp_path, monkeypatch,
                                                                          capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline (test)")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setattr(train_model, "load_checked_data", lambda *a: pytest.fail("images decoded before the check"))
    root, csv = tiny_synthetic
    code = run_in_process(train_model, "--model", "resnet18", "--weights", "imagenet", "--data_dir", root,
                          "--split_csv", csv, "--image_size", 16, "--epochs", 1, "--device", "cpu",
                          "--out_dir", tmp_path / "runs")
    assert code == 1
    one_error_line(capsys, "--weights imagenet", "pass --weights none", "resnet18")


def test_a_calibration_split_with_no_valid_rows_is_one_line(tiny_synthetic, checkpoint_pair, tmp_path, capsys):
    root, csv = tiny_synthetic
    table = pd.read_csv(csv)
    table.loc[table["split"] == "valid", "path"] = "gone/" + table.loc[table["split"] == "valid", "path"]
    table.to_csv(tmp_path / "gone.csv", index=False)
    table[table["split"] != "valid"].to_csv(tmp_path / "none.csv", index=False)
    for split_csv, needle in (("gone.csv", "calibration or test row(s) cannot be scored"),
                              ("none.csv", "no 'calib' split to calibrate on")):
        code = run_in_process(evaluate_safety, "--checkpoints", checkpoint_pair[0], "--data_dir", root, "--split_csv",
                              tmp_path / split_csv, "--T", 2, "--device", "cpu", "--out_dir", tmp_path / "ev",
                              "--run_name", split_csv[:-4], "--sweep_points", 3)
        assert code == 1
        one_error_line(capsys, needle)


def test_split_csv_without_data_dir_keeps_model_as_data_root_as_the_help_says():
    trained = {"config": {"dataset": "folders", "data_dir": "/data/cells", "split_csv": "old.csv"},
               "class_names": ["a", "b"], "image_size": 32}
    cfg = parse_config(evaluate_safety.Config, ["--checkpoints", "a.pt", "--split_csv", "new.csv"])
    cfg = config.resolve_data(cfg, trained)
    assert (cfg.data_dir, cfg.split_csv) == ("/data/cells", "new.csv")
    moved = config.resolve_data(parse_config(evaluate_safety.Config, ["--checkpoints", "a.pt", "--data_dir", "/new"]),
                                trained)
    assert (moved.data_dir, moved.split_csv) == ("/new", "")  # a new root: its own layout


# ============================================================================ review export

def test_a_symbolic_link_out_of_the_images_dir_is_listed_as_skipped_not_a_traceback(checkpoint_pair, images,
                                                                                  tmp_path):
    folder = tmp_path / "batch"
    folder.mkdir()
    for f in images.iterdir():
        shutil.copy(f, folder / f.name)
    outside = tmp_path / "elsewhere.png"
    shutil.copy(next(images.iterdir()), outside)
    os.symlink(outside, folder / "link.png")
    out = tmp_path / "review"
    code = run_in_process(review, "export", "--checkpoints", checkpoint_pair[0], "--images_dir", folder, "--T", 2,
                          "--device", "cpu", "--out_dir", out)
    assert code == 0
    skipped = pd.read_csv(out / "skipped_inputs.csv")
    assert skipped["path"].tolist() == [str(folder / "link.png")]
    assert "outside the data root" in skipped["reason"].iloc[0]
    assert "link.png" not in set(pd.read_csv(out / "review.csv")["path"])
