"""review.py: export (CSV + self-contained HTML), import with validation of every row, the
data-generation operator built on the round trip."""
import base64
import io
import json
import shutil

import pandas as pd
import pytest
import torch
from PIL import Image

import review
from safehil.review import review_page
from conftest import ROOT, run_script


@pytest.fixture(scope="module")
def exported(checkpoint_pair, tmp_path_factory):
    a, b = checkpoint_pair
    out = tmp_path_factory.mktemp("review") / "batch"
    result = review.main(review.ExportConfig(checkpoints=(str(a), str(b)), split="test", T=4, display_size=32,
                                             device="cpu", out_dir=str(out)))
    return out, result


def test_export_writes_sorted_csv_and_self_contained_html(exported, tiny_synthetic):
    out, result = exported
    rows = pd.read_csv(out / "review.csv", dtype=str, keep_default_na=False)
    test_paths = pd.read_csv(tiny_synthetic[1]).query("split == 'test'")["path"]
    assert result["rows"] == len(rows) == 24 and set(rows["path"]) == set(test_paths)  # no thresholds: all
    assert list(rows.columns) == list(review.REVIEW_COLUMNS) and (rows["corrected_label"] == "").all()
    risk = rows["risk"].astype(float)
    assert risk.is_monotonic_decreasing
    disagree = rows["disagreement"] == "True"
    assert ((rows["predicted_label"] != rows["predicted_label_b"]) == disagree).all()
    page = review_page.read_page_batch(out / "review.html")  # the page's cards: every image, in risk order
    assert [cells[0] for cells in page["rows"]] == rows["path"].tolist() and len(page["cards"]) == 24
    uris = [c["picture"] for c in page["cards"]] + [o["heat"] for c in page["cards"] for o in c["overlays"]]
    assert len(uris) == 24 * 3  # picture + saliency map of each model
    assert all(u.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for u in uris)  # all inside
    picture = Image.open(io.BytesIO(base64.b64decode(page["cards"][1]["picture"].split(",", 1)[1])))
    assert picture.size == (24, 24)  # as the model saw it (24 px), not --display_size
    meta = json.loads((out / "review_meta.json").read_text())
    assert meta["class_names"] == sorted(set(pd.read_csv(tiny_synthetic[1])["label"]))


def test_export_only_referred_with_thresholds(checkpoint_pair, exported, tmp_path):
    a, b = checkpoint_pair
    rows = pd.read_csv(exported[0] / "review.csv")
    cut = float(rows["uncertainty"].median())
    (tmp_path / "th.json").write_text(json.dumps({"modes": {"cascade": {"threshold_a": cut,
                                                                        "threshold_b": float("inf")}}}))
    result = review.main(review.ExportConfig(checkpoints=(str(a), str(b)), split="test", T=4, display_size=24,
                                             thresholds=str(tmp_path / "th.json"), device="cpu",
                                             out_dir=str(tmp_path / "ref")))
    got = pd.read_csv(tmp_path / "ref" / "review.csv")
    expected = rows[(rows["uncertainty"] > cut) | rows["disagreement"]]
    assert result["referred"] == result["rows"] == len(got) == len(expected)
    assert set(got["path"]) == set(expected["path"]) and got["referred"].all()


def test_risk_order():
    risk = review.risk_scores(referred=torch.tensor([0, 1, 1, 0]).bool().numpy(),
                              disagree=torch.tensor([0, 1, 0, 0]).bool().numpy(),
                              unc_a=torch.tensor([0.9, 0.1, 0.2, 0.3]).numpy(), unc_b=None)
    assert list(risk.argsort()[::-1]) == [1, 2, 0, 3]


def edited_copy(exported, tmp_path, edit):
    """Copy the exported review folder and apply `edit(frame)` to its CSV."""
    folder = tmp_path / "edited"
    shutil.copytree(exported[0], folder)
    rows = pd.read_csv(folder / "review.csv", dtype=str, keep_default_na=False)
    rows = edit(rows)
    rows.to_csv(folder / "review.csv", index=False)
    return folder / "review.csv"


def test_import_round_trip_appends_labels_and_counts_effort(exported, tiny_synthetic, tmp_path, capsys):
    classes = json.loads((exported[0] / "review_meta.json").read_text())["class_names"]
    truth = pd.read_csv(tiny_synthetic[1]).set_index("path")["label"]

    def person(rows):  # corrects every wrong prediction, confirms one right one explicitly
        rows["corrected_label"] = [truth[p] if truth[p] != pred else "" for p, pred in
                                   zip(rows["path"], rows["predicted_label"])]
        return rows
    csv = edited_copy(exported, tmp_path, person)
    labelled = tmp_path / "labelled.csv"
    old = pd.read_csv(tiny_synthetic[1]).query("split == 'train'")["path"].iloc[0]  # a file under the data root
    pd.DataFrame({"path": [old], "label": [classes[0]], "split": ["train"]}).to_csv(labelled, index=False)
    assert review.cli(["import", "--review_csv", str(csv), "--split_csv", str(labelled)]) == 0
    table = pd.read_csv(labelled)
    assert len(table) == 25 and table.iloc[0]["path"] == old
    added = table.iloc[1:].set_index("path")["label"]
    assert all(added[p] == truth[p] for p in added.index)  # every label now right
    rows = pd.read_csv(csv, dtype=str, keep_default_na=False)
    wrong = sum(truth[p] != pred for p, pred in zip(rows["path"], rows["predicted_label"]))
    report = json.loads(csv.with_suffix(".import.json").read_text())
    assert report["corrected"] == wrong and report["confirmed"] == 24 - wrong and report["rows"] == 24
    assert f"{wrong} corrected" in capsys.readouterr().out


@pytest.mark.parametrize("bad,message", [
    (lambda r: r.assign(corrected_label=["dent"] + [""] * (len(r) - 1)), "line 2: unknown class 'dent'"),
    (lambda r: r.assign(path=r["path"].where(r.index != 3, "crazing/missing.png")), "line 5: unknown path"),
    (lambda r: pd.concat([r, r.iloc[[2]]], ignore_index=True), "line 26: duplicate row"),
    (lambda r: r.drop(columns="corrected_label"), "lacks columns"),
    (lambda r: r.assign(path=r["path"].where(r.index != 0, "")), "line 2: empty path"),
])
def test_import_rejects_bad_rows_and_writes_nothing(exported, tmp_path, bad, message):
    csv = edited_copy(exported, tmp_path, bad)
    labelled = tmp_path / "labelled.csv"
    with pytest.raises(ValueError, match=message):
        review.import_review(csv, labelled)
    assert not labelled.exists() and not csv.with_suffix(".import.json").exists()


def test_import_rejects_path_already_labelled_and_lists_every_problem(exported, tmp_path, capsys):
    def two_problems(rows):
        rows.loc[1, "corrected_label"] = "not_a_class"
        return rows
    csv = edited_copy(exported, tmp_path, two_problems)
    first = pd.read_csv(csv)["path"][0]
    labelled = tmp_path / "labelled.csv"
    pd.DataFrame({"path": [first], "label": ["crazing"], "split": ["train"]}).to_csv(labelled, index=False)
    before = labelled.read_bytes()
    with pytest.raises(ValueError) as err:
        review.import_review(csv, labelled)
    assert "line 2: " in str(err.value) and "already in the labelled split CSV" in str(err.value)
    assert "line 3: unknown class 'not_a_class'" in str(err.value) and "2 problem(s)" in str(err.value)
    assert labelled.read_bytes() == before
    assert review.cli(["import", "--review_csv", str(csv), "--split_csv", str(labelled)]) == 1
    assert "line 3" in capsys.readouterr().err


def test_operator_round_trip(tiny_synthetic, tmp_path):
    root, csv = tiny_synthetic
    table = pd.read_csv(csv).query("split == 'train'").head(6)
    classes = sorted(pd.read_csv(csv)["label"].unique())
    truth = torch.tensor([classes.index(c) for c in table["label"]])
    predicted = truth.clone()
    predicted[[0, 3]] = (truth[[0, 3]] + 1) % len(classes)
    op = review.ReviewOperator(tmp_path / "loop", classes, root, respond=review.fill_ground_truth, display_size=24)
    labels = op(table["path"].tolist(), predicted, truth)
    assert torch.equal(labels, truth) and op.effort == [2]
    labelled = pd.read_csv(tmp_path / "loop" / "run_001" / "labelled.csv")
    assert len(labelled) == 6 and (labelled["split"] == "train").all()
    assert (tmp_path / "loop" / "run_001" / "step_001" / "review.html").is_file()
    op(table["path"].tolist(), predicted, truth)  # the same images again: the next grid setting
    assert (tmp_path / "loop" / "run_002" / "labelled.csv").is_file()

    def careless(csv_path, true_labels):  # a scripted person that types a wrong class name
        rows = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
        rows["corrected_label"] = "nonsense"
        rows.to_csv(csv_path, index=False)
    op = review.ReviewOperator(tmp_path / "bad", classes, root, respond=careless, display_size=24)
    with pytest.raises(ValueError, match="unknown class 'nonsense'"):
        op(table["path"].tolist(), predicted, truth)


def test_loop_runs_data_generation_through_review_files(tiny_synthetic, tmp_path):
    root, csv = tiny_synthetic
    run_script(ROOT / "review.py", "loop", "--review_dir", tmp_path / "rev", "--answer", "ground_truth",
               "--model", "tiny_cnn", "--data_dir", root, "--split_csv", csv, "--image_size", 24,
               "--initial_samples", 4, "--step_sizes", 4, "--pool_per_class", 12, "--epochs", 1,
               "--baseline_epochs", 1, "--full_data_reference", "False", "--device", "cpu",
               "--out_dir", tmp_path / "dg", "--run_name", "r")
    steps = sorted((tmp_path / "rev" / "run_001").glob("step_*/review.csv"))
    assert len(steps) == 2  # 12 per class: 4 initial + 2 steps of 4
    saved = json.loads(next((tmp_path / "dg" / "r" / "settings").glob("*.json")).read_text())
    records = saved["steps"][1:]
    assert all(r["effort"] == r["wrong_predictions"] and r["label_errors"] == 0 for r in records)
    reports = [json.loads(p.with_suffix(".import.json").read_text()) for p in steps]
    assert [r["corrected"] for r in reports] == [r["effort"] for r in records]


def test_each_action_has_its_own_help(capsys):
    export_help = run_script(ROOT / "review.py", "export", "--help").stdout
    assert "usage: review.py export" in export_help and "--only_referred" in export_help
    assert "--review_csv" not in export_help
    assert review.cli(["--help"]) == 0
    main_help = capsys.readouterr().out
    assert all(action in main_help for action in review.ACTIONS)
    assert review.cli(["import", "--help"]) == 0
    import_help = capsys.readouterr().out
    assert "--split_csv" in import_help and "--only_referred" not in import_help
    assert review.cli(["loop", "--help"]) == 0
    loop_help = capsys.readouterr().out  # its own flags and those it passes on to the data-generation script
    assert "--answer" in loop_help and "--initial_samples" in loop_help and "--step_sizes" in loop_help
    assert review.cli(["nonsense"]) == 2 and review.cli([]) == 2
    assert review.cli(["export", "--T", "1"]) == 2 and "--T must be >= 2" in capsys.readouterr().err


def test_export_never_overwrites_a_review_csv_that_may_hold_corrections(exported, checkpoint_pair):
    folder = exported[0]
    before = (folder / "review.csv").read_bytes()
    cfg = review.ExportConfig(checkpoints=(str(checkpoint_pair[0]),), split="test", T=4, display_size=32, device="cpu",
                              out_dir=str(folder))
    with pytest.raises(review.InputError, match="exists already"):
        review.export(cfg)
    assert (folder / "review.csv").read_bytes() == before
