"""A certificate that cannot lie: "certified" is the Learn-then-Test decision
re-run from thresholds.json's evidence against the artefacts in use (certificate.py), never a stored
flag; calibration images are unseen by content; make_splits.py holds out a calib split that
evaluate_safety.py certifies on by default; an ONNX export keeps the checkpoint's canvas."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import evaluate_safety
import make_splits
import predict as predict_script
import review
import train_model
from conftest import copy_test_images, run_in_process
from safehil.safety import cascade, certificate

T = ("--T", 4)
FAST = ("--sweep_points", 3, "--max_candidates", 50, "--device", "cpu")


@pytest.fixture(scope="module")
def new_images(tiny_synthetic, tmp_path_factory):
    """6 new images (copies of test images) to score."""
    return copy_test_images(tiny_synthetic, tmp_path_factory.mktemp("new"), 6)


def safety(*args, out, run="r") -> int:
    return run_in_process(evaluate_safety, *args, *T, *FAST, "--out_dir", out, "--run_name", run)


def predicted_rule(capsys, *args, out):
    """predict.py's command line -> (its summary's referral_rule, stdout)."""
    assert run_in_process(predict_script, *args, "--device", "cpu", "--out_dir", out) == 0
    stdout = capsys.readouterr().out
    return json.loads((out / "summary.json").read_text())["referral_rule"], stdout


def rewrite_document(path, edit) -> None:
    """Edit a thresholds.json and recompute its own sha256 (a careful hand edit)."""
    doc = json.loads(path.read_text())
    edit(doc)
    doc["sha256"] = cascade._document_sha256(doc)
    path.write_text(json.dumps(doc))


# ============================================================================ case 1: the early-stopping split

@pytest.fixture(scope="module")
def on_valid(checkpoint_pair, tmp_path_factory):
    """evaluate_safety.py with its defaults on the pair's own data (no calib split: it falls back to
    valid, the split both models early-stopped on) at a target the decision alone would certify."""
    a, b = checkpoint_pair
    out = tmp_path_factory.mktemp("valid")
    assert safety("--checkpoints", f"{a},{b}", "--target", 0.5, out=out) == 0
    return out / "r"


def test_calibrating_on_the_early_stopping_split_certifies_nothing_and_says_why(on_valid, checkpoint_pair,
                                                                                new_images, tmp_path, capsys):
    doc = json.loads((on_valid / "thresholds.json").read_text())
    assert doc["calib_split"] == "valid" and doc["certified"] is False
    assert doc["calibration"]["certified"] is False and doc["calibration"]["seen_in_training"] == 24
    assert not any(m["certified"] or m["target_met"] for m in doc["modes"].values() if "certified" in m)
    assert any("24 of the 24 calibration images are, by content, images model A trained or early-stopped on" in r
               for r in doc["not_certified"])
    assert certificate.decide(doc["evidence"]).certified  # the decision alone would certify: the content voids it
    assert "| yes |" not in (on_valid / "comparison.md").read_text()
    a, b = checkpoint_pair
    rule, stdout = predicted_rule(capsys, "--images_dir", new_images, "--checkpoints", f"{a},{b}", *T, "--thresholds",
                                  on_valid / "thresholds.json", out=tmp_path / "p")
    assert rule["certified"] is False and "NOT CERTIFIED" in stdout and "(certified)" not in stdout
    assert any("early-stopped on" in r for r in rule["not_certified"])
    assert run_in_process(review, "export", "--checkpoints", f"{a},{b}", "--thresholds", on_valid / "thresholds.json",
                          "--images_dir", new_images, *T, "--device", "cpu", "--out_dir", tmp_path / "rev") == 0
    meta = json.loads((tmp_path / "rev" / "review_meta.json").read_text())
    assert meta["referral_rule"]["certified"] is False and "(certified)" not in capsys.readouterr().out
    assert "NOT certified" in (tmp_path / "rev" / "review.html").read_text()


def test_training_records_the_content_of_every_image_it_trained_and_early_stopped_on(checkpoint_pair, tiny_synthetic):
    root, csv = tiny_synthetic
    table = pd.read_csv(csv)
    seen = torch.load(checkpoint_pair[0], weights_only=True)[certificate.SEEN_IMAGES_KEY]
    expected = {cascade.file_sha256(root / p) for p in table.loc[table["split"].isin(["train", "valid"]), "path"]}
    assert set(seen) == expected and len(seen) == len(expected) == 96


@pytest.fixture(scope="module")
def own_images(tmp_path_factory):
    """Class folders of new images (3 classes x 20 grey 20 px squares), as a user brings them."""
    from PIL import Image
    root = tmp_path_factory.mktemp("own") / "images"
    rng = np.random.default_rng(1)
    for c in range(3):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(20):
            pixels = np.clip(rng.normal(50 + 70 * c, 25, (20, 20)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")
    return root


def test_the_own_images_path_holds_out_a_calib_split_and_ends_with_a_certificate_that_holds(own_images, new_images,
                                                                                          tmp_path, capsys):
    assert run_in_process(make_splits, "--dataset", "folders", "--data_dir", own_images, "--out_dir", tmp_path,
                          "--name", "mine") == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(tmp_path / "mine.csv")
    assert (table["split"] == "calib").sum() == 12 and "calib" in printed  # 20 % of every class, sizes printed
    runs = tmp_path / "runs"
    for name, seed in (("a", 0), ("b", 1)):
        assert run_in_process(train_model, "--model", "tiny_cnn", "--dataset", "folders", "--data_dir", own_images,
                              "--split_csv", tmp_path / "mine.csv", "--image_size", 16, "--epochs", 1, "--batch_size",
                              16, "--seed", seed, "--device", "cpu", "--out_dir", runs, "--run_name", name) == 0
    assert "calib" not in set(pd.read_csv(runs / "a" / "split.csv")["split"])  # never decoded by training
    pair = f"{runs / 'a' / 'best.pt'},{runs / 'b' / 'best.pt'}"
    assert safety("--checkpoints", pair, "--data_dir", own_images, "--split_csv", tmp_path / "mine.csv",
                  "--target", 0.3, out=tmp_path / "safety") == 0
    doc = json.loads((tmp_path / "safety" / "r" / "thresholds.json").read_text())
    assert doc["calib_split"] == "calib" and doc["certified"] is True and doc["not_certified"] == []
    assert doc["calibration"]["seen_in_training"] == 0 and doc["evidence"]["n"] == 12
    capsys.readouterr()
    rule, stdout = predicted_rule(capsys, "--images_dir", new_images, "--checkpoints", pair, *T, "--thresholds",
                                  tmp_path / "safety" / "r" / "thresholds.json", out=tmp_path / "p")
    assert rule["certified"] is True and "(certified)" in stdout and "NOT CERTIFIED" not in stdout


# ============================================================================ case 3: thresholds.json edited, sha256 recomputed

EDITS = {
    "thresholds raised (nothing referred)": (
        lambda d: d["modes"]["cascade"].update(threshold_a=1e9, threshold_b=1e9),
        "not the ones Learn then Test chooses"),
    "alpha and n of the evidence edited": (
        lambda d: d["evidence"].update(alpha=0.0001, n=100000),
        "says n = 100000 but records 12"),
    "a calibration error hidden": (
        lambda d: d["evidence"]["calibration"].update(label=d["evidence"]["calibration"]["pred_a"]),
        "not the ones Learn then Test chooses"),
    "another model's weights hash": (
        lambda d: d["evidence"]["models"]["a"].update(weights_sha256="0" * 64),
        "model A's weights"),
    "the evidence removed, certified set true": (
        lambda d: (d.pop("evidence"), d.update(certified=True, not_certified=[])),
        "no certificate evidence"),
}


@pytest.mark.parametrize("edit", EDITS)
def test_a_thresholds_json_edited_with_its_sha256_recomputed_is_not_certified_and_says_why(
        edit, certified_thresholds, new_images, tmp_path, capsys):
    path, a, b = certified_thresholds
    edited = tmp_path / "thresholds.json"
    shutil.copy(path, edited)
    change, reason = EDITS[edit]
    rewrite_document(edited, change)
    assert cascade.read_thresholds(edited)[1] == []  # the file's own hash holds: only the re-run decision can tell
    rule, stdout = predicted_rule(capsys, "--images_dir", new_images, "--checkpoints", f"{a},{b}", *T, "--thresholds",
                                  edited, out=tmp_path / "p")
    assert rule["certified"] is False and "NOT CERTIFIED" in stdout
    assert any(reason in r for r in rule["not_certified"]), rule["not_certified"]


def test_the_unedited_certificate_is_certified(certified_thresholds, new_images, tmp_path, capsys):
    path, a, b = certified_thresholds
    rule, stdout = predicted_rule(capsys, "--images_dir", new_images, "--checkpoints", f"{a},{b}", *T, "--thresholds",
                                  path, out=tmp_path / "p")
    assert rule["certified"] is True and rule["n"] == 12 and rule["alpha"] == 0.5


# ============================================================================ case 4: unseen by content, not by path

@pytest.mark.parametrize("where", ["valid images copied under new names", "the data root copied elsewhere"])
def test_calibration_images_a_model_saw_are_found_by_content_whatever_their_path(where, checkpoint_pair,
                                                                                 tiny_synthetic, tmp_path, capsys):
    a, b = checkpoint_pair
    root, csv = tiny_synthetic
    table = pd.read_csv(csv)
    if where == "the data root copied elsewhere":
        new_root = tmp_path / "copy"
        shutil.copytree(root, new_root)
        trained = table.index[table["split"] == "train"][:12]
        table.loc[trained, "split"] = "calib"   # model A's training images, under another root
    else:
        new_root = root
        valid = table.loc[table["split"] == "valid"].head(12)
        copies = valid.assign(path=[f"copied_{tmp_path.name}/{i}.png" for i in range(len(valid))], split="calib")
        (root / f"copied_{tmp_path.name}").mkdir()
        for src, dst in zip(valid["path"], copies["path"]):
            shutil.copy(root / src, root / dst)
        table = pd.concat([table, copies], ignore_index=True)
    table.to_csv(tmp_path / "split.csv", index=False)
    code = safety("--checkpoints", f"{a},{b}", "--data_dir", new_root, "--split_csv", tmp_path / "split.csv",
                  "--target", 0.5, out=tmp_path / "s")
    err = capsys.readouterr()
    if code != 0:  # refused outright is as good as certifying nothing, if it says why
        assert "trained on" in err.err and "Traceback" not in err.err
        return
    doc = json.loads((tmp_path / "s" / "r" / "thresholds.json").read_text())
    assert doc["certified"] is False and doc["calibration"]["seen_in_training"] == 12
    assert any("12 of the 12 calibration images are, by content" in r for r in doc["not_certified"])
    assert "NOT CERTIFIED" in err.out


# ============================================================================ case 2: the ONNX sidecar is re-run, not trusted

ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime not installed (pip install -r requirements-onnx.txt)")


@pytest.fixture(scope="module")
def exported(certified_thresholds, tmp_path_factory):
    """The certified pair exported by export.py with its thresholds: the folder holding cascade.onnx."""
    import export
    path, a, b = certified_thresholds
    out = tmp_path_factory.mktemp("onnx")
    assert run_in_process(export, "--checkpoints", f"{a},{b}", "--thresholds", path, "--out", out / "cascade.onnx") == 0
    return out


@pytest.fixture(scope="module")
def other_graph(checkpoint_pair, tmp_path_factory):
    """model A's checkpoint with noise added to its weights, exported alone: another model's graph."""
    import export
    state = torch.load(checkpoint_pair[0], weights_only=True)
    generator = torch.Generator().manual_seed(0)
    state["model"] = {k: v + torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
                      for k, v in state["model"].items()}
    out = tmp_path_factory.mktemp("other")
    torch.save(state, out / "best.pt")
    assert run_in_process(export, "--checkpoints", out / "best.pt", "--T", 4, "--out", out / "other.onnx") == 0
    return out / "other.onnx"


def _swap_graph(side, folder, other):
    shutil.copy(other, folder / "cascade.onnx")
    side["models"][0]["onnx_sha256"] = cascade.file_sha256(folder / "cascade.onnx")


def _embedded(edit):
    def apply(side, folder, other):
        doc = side["thresholds"]["document"]
        edit(doc)
        doc["sha256"] = cascade._document_sha256(doc)
    return apply


SIDECAR_EDITS = {
    "thresholds 1e9": (lambda s, f, o: s["thresholds"].update(threshold_a=1e9, threshold_b=1e9),
                       "not the ones Learn then Test chooses"),
    "class names reversed": (lambda s, f, o: s.update(class_names=s["class_names"][::-1]), "class names"),
    "mean changed": (lambda s, f, o: s["models"][0].update(mean=[0.9 for _ in np.atleast_1d(s["models"][0]["mean"])]),
                     "normalisation mean"),
    "dropout p set to 0": (lambda s, f, o: [d.update(p=0.0) for d in s["models"][0]["dropout_layers"]],
                           "dropout rates"),
    "T edited": (lambda s, f, o: s.update(T=2), "calibrated with T = 4"),
    "alpha and n edited": (_embedded(lambda d: d["evidence"].update(alpha=0.0001, n=100000)),
                           "says n = 100000 but records 12"),
    "model B removed": (lambda s, f, o: s.update(models=s["models"][:1]), "refused: needs two models"),
    "another model's graph, its hash updated": (_swap_graph, "graph does not compute the calibrated weights"),
}


@pytest.mark.parametrize("edit", SIDECAR_EDITS)
def test_every_edit_of_an_onnx_sidecar_runs_not_certified_with_its_reason(edit, exported, other_graph, new_images,
                                                                         tmp_path, capsys):
    from safehil.safety import deploy
    folder = tmp_path / "bundle"
    shutil.copytree(exported, folder)
    side = json.loads((folder / "cascade.json").read_text())
    change, reason = SIDECAR_EDITS[edit]
    change(side, folder, other_graph)
    side["sha256"] = deploy.sidecar_sha256(side)  # recomputed: only the re-run decision can tell
    (folder / "cascade.json").write_text(json.dumps(side))
    if reason.startswith("refused: "):  # malformed for what it claims (deploy.check_sidecar): nothing is scored
        assert run_in_process(predict_script, "--images_dir", new_images, "--onnx", folder / "cascade.onnx",
                              "--out_dir", tmp_path / "p") == 1
        assert reason.removeprefix("refused: ") in capsys.readouterr().err
        return
    rule, stdout = predicted_rule(capsys, "--images_dir", new_images, "--onnx", folder / "cascade.onnx",
                                  out=tmp_path / "p")
    assert rule["certified"] is False and "NOT CERTIFIED" in stdout and "(certified)" not in stdout
    assert any(reason in r for r in rule["not_certified"]), rule["not_certified"]


def test_an_unedited_onnx_export_is_certified_and_a_plain_edit_is_named(exported, new_images, tmp_path, capsys):
    rule, stdout = predicted_rule(capsys, "--images_dir", new_images, "--onnx", exported / "cascade.onnx",
                                  out=tmp_path / "p")
    assert rule["certified"] is True and rule["not_certified"] == []
    folder = tmp_path / "bundle"
    shutil.copytree(exported, folder)
    side = json.loads((folder / "cascade.json").read_text())
    side["T"] = 8  # edited without recomputing anything
    (folder / "cascade.json").write_text(json.dumps(side))
    rule, _ = predicted_rule(capsys, "--images_dir", new_images, "--onnx", folder / "cascade.onnx", out=tmp_path / "q")
    assert rule["certified"] is False and any("edited after export.py wrote it" in r for r in rule["not_certified"])


def test_an_uncertified_export_stays_uncertified_whatever_its_sidecar_says(on_valid, checkpoint_pair, new_images,
                                                                           tmp_path, capsys):
    import export
    from safehil.safety import deploy
    a, b = checkpoint_pair
    assert run_in_process(export, "--checkpoints", f"{a},{b}", "--thresholds", on_valid / "thresholds.json", "--out",
                          tmp_path / "m.onnx") == 0
    side = json.loads((tmp_path / "m.json").read_text())
    assert side["thresholds"]["certified_at_export"] is False
    side["thresholds"].update(certified_at_export=True, not_certified_at_export=[])
    doc = side["thresholds"]["document"]
    doc.update(certified=True, not_certified=[])
    doc["calibration"].update(certified=True)
    doc["sha256"] = cascade._document_sha256(doc)
    side["sha256"] = deploy.sidecar_sha256(side)
    (tmp_path / "m.json").write_text(json.dumps(side))
    rule, stdout = predicted_rule(capsys, "--images_dir", new_images, "--onnx", tmp_path / "m.onnx", out=tmp_path / "p")
    assert rule["certified"] is False and any("early-stopped on" in r for r in rule["not_certified"])


# ============================================================================ case 5: ONNX keeps the canvas

def test_onnx_of_a_whole_strip_model_gives_the_checkpoints_classes_and_probabilities(tmp_path, capsys):
    import export
    from safehil.data.synthetic import generate_severstal_strips
    root = generate_severstal_strips(tmp_path / "strips", per_class=4, seed=0, height=16)
    assert run_in_process(train_model, "--model", "tiny_cnn", "--dataset", "severstal_kaggle", "--data_dir", root,
                          "--image_size", 16, "--epochs", 1, "--batch_size", 8, "--device", "cpu", "--out_dir",
                          tmp_path / "runs", "--run_name", "strip") == 0
    checkpoint = tmp_path / "runs" / "strip" / "best.pt"
    meta = torch.load(checkpoint, weights_only=True)
    assert meta["canvas"]["geometry"] == "whole" and meta["canvas"]["width"] > meta["canvas"]["height"]
    assert run_in_process(export, "--checkpoints", checkpoint, "--T", 4, "--out", tmp_path / "strip.onnx") == 0
    side = json.loads((tmp_path / "strip.json").read_text())
    assert side["geometry"]["geometry"] == "whole" and side["geometry"]["width"] == meta["canvas"]["width"]
    assert "centre crop" not in side["geometry"]["input"]
    images = root / "train_images"
    for args, out in (((("--checkpoints", checkpoint)), "torch"), ((("--onnx", tmp_path / "strip.onnx")), "onnx")):
        assert run_in_process(predict_script, "--images_dir", images, *args, "--T", 4, "--device", "cpu",
                              "--out_dir", tmp_path / out) == 0
    torch_rows, onnx_rows = (pd.read_csv(tmp_path / o / "predictions.csv") for o in ("torch", "onnx"))
    assert len(torch_rows) == 20
    assert (torch_rows["predicted_label"] == onnx_rows["predicted_label"]).all()
    assert np.abs(torch_rows["confidence"] - onnx_rows["confidence"]).max() < 1e-4
