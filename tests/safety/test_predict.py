"""predict.py and the scoring library behind it: new images scored from the checkpoints alone
(the training data deleted), unreadable files listed, the cascade's referral rule applied."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from safehil.safety import cascade
import predict
import review
from safehil.safety import scoring
from conftest import ROOT, run_script
from safehil.data.datasets import ImageSet

DIGITS = (0, 1, 2)


def digit_png(image: np.ndarray, path) -> None:
    """An 8 x 8 sklearn digit (0..16) as a 32 x 32 grayscale PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((image * 255 / 16).astype(np.uint8)).resize((32, 32), Image.NEAREST).save(path)


@pytest.fixture(scope="module")
def digits_deployment(tmp_path_factory):
    """A tiny CNN trained by train_model.py on class folders of digits 0/1/2 (40 each), whose
    training folder is then deleted, and a flat folder of 15 new digits + one corrupt file +
    one image in a subfolder: (checkpoint, new folder, {relative path: true class name})."""
    base = tmp_path_factory.mktemp("digits")
    digits = load_digits()
    train, new, truth, seen = base / "train_data", base / "new", {}, {d: 0 for d in DIGITS}
    for image, label in zip(digits.images, digits.target):
        if label not in DIGITS:
            continue
        seen[label] += 1
        if seen[label] <= 40:
            digit_png(image, train / f"digit{label}" / f"{seen[label]:03d}.png")
        elif seen[label] <= 45:
            name = f"d{label}_{seen[label]}.png" if seen[label] < 45 else f"more/d{label}_{seen[label]}.PNG"
            digit_png(image, new / name)
            truth[name] = f"digit{label}"
    (new / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (new / "notes.txt").write_text("not an image, not listed")
    run_script(ROOT / "train_model.py", "--model", "tiny_cnn", "--dataset", "folders", "--data_dir", train,
               "--image_size", 24, "--epochs", 15, "--batch_size", 16, "--lr", 3e-3, "--device", "cpu",
               "--out_dir", base / "runs", "--run_name", "digits")
    shutil.rmtree(train)
    return base / "runs" / "digits" / "best.pt", new, truth


def test_predict_scores_a_flat_folder_after_the_training_data_is_deleted(digits_deployment, tmp_path):
    checkpoint, new, truth = digits_deployment
    out = tmp_path / "pred"
    proc = run_script(ROOT / "predict.py", "--checkpoints", checkpoint, "--images_dir", new, "--out_dir", out,
                      "--device", "cpu", "--batch_size", 4)
    rows = pd.read_csv(out / "predictions.csv")
    probabilities = [f"prob_digit{d}" for d in DIGITS]
    top = [f"top{i}_{what}" for i in (1, 2, 3) for what in ("label", "prob")]
    assert list(rows.columns) == ["path", "predicted_label", "confidence", "uncertainty", *probabilities, *top,
                                  "referred"]
    # per-class mean MC probabilities: they sum to 1, the largest is the confidence and names the prediction
    assert np.allclose(rows[probabilities].sum(axis=1), 1, atol=1e-5)
    assert np.allclose(rows[probabilities].max(axis=1), rows["confidence"])
    assert (rows[probabilities].to_numpy().argmax(1) == [int(x[-1]) for x in rows["predicted_label"]]).all()
    # the top 3 of 3 classes: every class once, most probable first, the first one the prediction
    assert (rows["top1_label"] == rows["predicted_label"]).all() and np.allclose(rows["top1_prob"], rows["confidence"])
    assert (rows["top1_prob"] >= rows["top2_prob"]).all() and (rows["top2_prob"] >= rows["top3_prob"]).all()
    assert all(sorted(r) == [f"digit{d}" for d in DIGITS] for r in rows[["top1_label", "top2_label", "top3_label"]].values)
    second = [f"prob_{label}" for label in rows["top2_label"]]
    assert np.allclose(rows["top2_prob"], [rows.loc[i, c] for i, c in enumerate(second)])
    assert sorted(rows["path"]) == sorted(truth)  # one row per good image, the subfolder's too
    skipped = pd.read_csv(out / "skipped_inputs.csv")
    assert skipped["path"].tolist() == ["corrupt.png"] and "not an image" in skipped["reason"][0]
    accuracy = np.mean([truth[p] == label for p, label in zip(rows["path"], rows["predicted_label"])])
    assert accuracy >= 0.8  # the model learned the digits: chance is 1/3
    assert ((rows["confidence"] > 1 / 3) & (rows["confidence"] <= 1)).all()
    assert ((rows["uncertainty"] >= 0) & (rows["uncertainty"] <= np.log(3) + 1e-6)).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images_found"] == 16 and summary["scored"] == 15 and summary["skipped"] == 1
    assert summary["predicted_counts"] == rows["predicted_label"].value_counts().reindex(
        [f"digit{d}" for d in DIGITS], fill_value=0).to_dict()
    assert summary["referral_rate"] == 0 and summary["T"] == 20  # the paper's T for a folders data set
    assert json.loads((out / "config.json").read_text())["T"] == 20
    assert "corrupt.png" in proc.stdout
    again = run_script(ROOT / "predict.py", "--checkpoints", checkpoint, "--images_dir", new, "--out_dir", out,
                       "--device", "cpu", check=False)
    assert again.returncode == 1 and "exists already" in again.stderr and "Traceback" not in again.stderr


def test_predict_refuses_a_folder_without_images_in_one_line(digits_deployment, tmp_path, capsys):
    checkpoint, _, _ = digits_deployment
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    cfg = predict.Config(checkpoints=(str(checkpoint),), images_dir=str(tmp_path / "empty"), out_dir=str(tmp_path / "o"))
    with pytest.raises(SystemExit) as stop:
        predict.run_main(predict.main, cfg)
    assert stop.value.code == 1 and "holds no images" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_scoring_files_equals_mc_outputs_of_the_same_images(tiny_checkpoint, tiny_synthetic):
    root, csv = tiny_synthetic
    paths = pd.read_csv(csv).query("split == 'test'")["path"].tolist()[:10]
    models = scoring.load_models(tiny_checkpoint)
    model, meta = models[0]
    result = scoring.score_files([root / p for p in paths], models, T=5, batch_size=4, seed=3)
    images, _, _ = scoring.decode_images_skipping_bad([root / p for p in paths], int(meta["image_size"]))
    data = ImageSet(images, torch.zeros(len(paths), dtype=torch.long), paths, meta["class_names"])
    pred, probs = cascade.mc_outputs(model, meta, data, 5, 4, torch.device("cpu"), seed=3)
    out = result.outputs[0]
    assert result.files == [root / p for p in paths] and not result.skipped
    np.testing.assert_array_equal(out.pred, pred)
    np.testing.assert_allclose(out.confidence, probs.mean(0).max(1).values.numpy(), rtol=1e-6)
    np.testing.assert_allclose(out.uncertainty, scoring.uncertainty.predictive_entropy(probs).numpy(), rtol=1e-6)
    np.testing.assert_allclose(out.probabilities, probs.mean(0).numpy(), rtol=1e-6)  # [N, C], per class


def test_predict_with_a_pair_applies_the_cascade_referral_rule(checkpoint_pair, tiny_synthetic, tmp_path, capsys):
    a, b = checkpoint_pair
    root, csv = tiny_synthetic
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in pd.read_csv(csv).query("split == 'test'")["path"]:
        shutil.copy(root / p, flat / p.replace("/", "_"))
    first = predict.main(predict.Config(checkpoints=(str(a), str(b)), images_dir=str(flat), T=4,
                                        device="cpu", out_dir=str(tmp_path / "all")))
    rows = pd.read_csv(tmp_path / "all" / "predictions.csv")
    assert (rows["disagreement"] == (rows["predicted_label"] != rows["predicted_label_b"])).all()
    assert (rows["referred"] == rows["disagreement"]).all() and first["scored"] == 24  # no thresholds
    cut_a, cut_b = float(rows["uncertainty"].median()), float(rows["uncertainty_b"].quantile(0.75))
    (tmp_path / "th.json").write_text(json.dumps({
        "score": "predictive_entropy", "T": 4, "calibration": {"method": "ltt", "certified": False},
        "modes": {"cascade": {"threshold_a": cut_a, "threshold_b": cut_b, "certified": False}}}))
    summary = predict.main(predict.Config(checkpoints=(str(a), str(b)), images_dir=str(flat), T=4,
                                          thresholds=str(tmp_path / "th.json"), device="cpu",
                                          out_dir=str(tmp_path / "cut")))
    got = pd.read_csv(tmp_path / "cut" / "predictions.csv")
    expected = rows["disagreement"] | (rows["uncertainty"] > cut_a) | (rows["uncertainty_b"] > cut_b)
    assert (got["referred"] == expected).all() and summary["referred"] == int(expected.sum())
    assert summary["referral_rate"] == pytest.approx(expected.mean())
    assert "NOT CERTIFIED" in capsys.readouterr().out
    with pytest.raises(scoring.InputError, match="pass --score predictive_entropy"):
        predict.main(predict.Config(checkpoints=(str(a), str(b)), images_dir=str(flat), T=4,
                                    thresholds=str(tmp_path / "th.json"), score="mutual_information",
                                    device="cpu", out_dir=str(tmp_path / "other")))


def test_review_export_of_a_folder_needs_no_training_data(digits_deployment, tmp_path):
    checkpoint, new, truth = digits_deployment
    result = review.main(review.ExportConfig(checkpoints=(str(checkpoint),), images_dir=str(new), T=4, display_size=24,
                                             device="cpu", out_dir=str(tmp_path / "rev")))
    rows = pd.read_csv(tmp_path / "rev" / "review.csv")
    assert sorted(rows["path"]) == sorted(truth) and result["skipped"] == 1
    assert pd.read_csv(tmp_path / "rev" / "skipped_inputs.csv")["path"].str.endswith("corrupt.png").all()
    meta = json.loads((tmp_path / "rev" / "review_meta.json").read_text())
    assert meta["data_root"] == str(new.resolve()) and meta["class_names"] == [f"digit{d}" for d in DIGITS]


def test_per_class_columns_and_top_k_of_a_known_table_are_formula_guarded(tmp_path):
    names = ["=cmd", "ok", "-1"]
    mean = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    a = scoring.ModelOutputs(pred=mean.argmax(1), confidence=mean.max(1), uncertainty=np.array([0.9, 0.8]),
                             probabilities=mean)
    rows = scoring.predictions_table(["x.png", "y.png"], names, [a], class_probabilities=True, top_k=5)
    assert [c for c in rows.columns if c.startswith("prob_")] == ["prob_=cmd", "prob_ok", "prob_-1"]
    assert rows["top1_label"].tolist() == ["ok", "=cmd"] and rows["top2_label"].tolist() == ["-1", "-1"]
    assert rows["top3_prob"].tolist() == [0.2, 0.1] and "top4_label" not in rows  # k is capped at 3 classes
    from safehil.core.spreadsheet import atomic_write_spreadsheet_csv
    atomic_write_spreadsheet_csv(tmp_path / "p.csv", rows)
    written = pd.read_csv(tmp_path / "p.csv", dtype=str, keep_default_na=False)
    assert written["top1_label"].tolist() == ["ok", "'=cmd"] and written["top2_label"].tolist() == ["'-1", "'-1"]
    assert written["prob_ok"].tolist() == ["0.5", "0.1"]  # numbers stay numbers
    assert list(written.columns)[4] == "prob_=cmd"  # a header starts with 'prob_', never with a formula sign
