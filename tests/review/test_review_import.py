"""review.py import and the split tables as a careless or hostile person would feed them, all
through the command line: paths that leave the data root or spell one file two ways, split
CSVs with extra columns and labels such as 'NA', class names a spreadsheet would run as
formulas, and missing or empty files (one clean error line, no traceback)."""
import csv
import os

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import ROOT, run_script
from safehil.data.splits import read_split_csv
from safehil.training.models import load_trained_model

ONE_THREAD = {"OMP_NUM_THREADS": "1"}
REVIEW = ROOT / "review.py"
TRAIN = ROOT / "train_model.py"


def grey(path, seed, size=16):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8), "L").save(path)


@pytest.fixture
def labelled(tmp_path):
    """A data root with a/img000..005.png, b/img000..005.png and new/n0..n2.png, and a split CSV
    labelling a/ and b/ (img003 in valid, the rest train): (root, split_csv)."""
    root = tmp_path / "data"
    rows = []
    for c, label in enumerate("ab"):
        for i in range(6):
            grey(root / label / f"img{i:03d}.png", seed=10 * c + i)
            rows.append({"path": f"{label}/img{i:03d}.png", "label": label, "split": "valid" if i == 3 else "train"})
    for i in range(3):
        grey(root / "new" / f"n{i}.png", seed=100 + i)
    split_csv = tmp_path / "split.csv"
    pd.DataFrame(rows).to_csv(split_csv, index=False)
    return root, split_csv


def write_review_csv(path, rows):
    """A review CSV as a person leaves it: rows [(path, predicted_label, corrected_label)]."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "predicted_label", "uncertainty", "corrected_label"])
        writer.writerows([(p, pred, 0.5, corr) for p, pred, corr in rows])
    return path


def run_import(review_csv, split_csv, root, *flags):
    return run_script(REVIEW, "import", "--review_csv", review_csv, "--split_csv", split_csv, "--data_dir", root,
                      "--class_names", "a,b", *flags, check=False)


def assert_one_clean_error(proc, *needles):
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)


# ============================================================================ paths

def test_import_refuses_every_path_that_leaves_the_data_root_and_writes_nothing(labelled, tmp_path):
    root, split_csv = labelled
    secret = tmp_path / "outside" / "secret.png"
    grey(secret, seed=7)
    (root / "a" / "link.png").symlink_to(secret)
    escapes = ["/etc/passwd", "../outside/secret.png", str(secret), "a/link.png"]  # lines 3 to 6
    review_csv = write_review_csv(tmp_path / "rev" / "review.csv",
                                  [("new/n0.png", "a", "")] + [(path, "a", "b") for path in escapes])
    before = split_csv.read_bytes()
    proc = run_import(review_csv, split_csv, root)
    assert_one_clean_error(proc, "4 problem(s), nothing imported",
                           *[f"{review_csv} line {line}: path '{path}' leaves the data root {root}"
                             for line, path in enumerate(escapes, start=3)])
    assert f"a symbolic link to {secret}" in proc.stderr
    assert split_csv.read_bytes() == before


def test_import_stores_an_absolute_path_inside_the_root_relative_to_it(labelled, tmp_path):
    root, split_csv = labelled
    review_csv = write_review_csv(tmp_path / "rev" / "review.csv", [(str(root / "new" / "n1.png"), "b", "")])
    run_script(REVIEW, "import", "--review_csv", review_csv, "--split_csv", split_csv, "--data_dir", root,
               "--class_names", "a,b")
    assert pd.read_csv(split_csv).iloc[-1].tolist() == ["new/n1.png", "b", "train"]


def test_import_sees_other_spellings_of_one_path_as_the_same_file(labelled, tmp_path):
    root, split_csv = labelled
    review_csv = write_review_csv(tmp_path / "rev" / "review.csv", [
        ("./a/img003.png", "a", "b"),     # line 2: in the split CSV (valid) as a/img003.png
        ("new/n0.png", "a", ""),          # line 3
        ("new//n0.png", "b", ""),         # line 4: line 3 again
        ("new/../new/n0.png", "a", "")])  # line 5: line 3 again
    before = split_csv.read_bytes()
    proc = run_import(review_csv, split_csv, root)
    assert_one_clean_error(proc, "3 problem(s), nothing imported",
                           f"{review_csv} line 2: a/img003.png is already in the labelled split CSV",
                           f"{review_csv} line 4: duplicate row, new/n0.png is already on line 3",
                           f"{review_csv} line 5: duplicate row, new/n0.png is already on line 3")
    assert split_csv.read_bytes() == before


def test_training_refuses_a_split_csv_with_one_image_in_two_splits_or_a_path_outside_the_root(labelled, tmp_path):
    root, split_csv = labelled
    table = pd.read_csv(split_csv)
    extra = pd.DataFrame({"path": ["./a/img003.png", "/etc/passwd"], "label": ["b", "a"], "split": ["train"] * 2})
    pd.concat([table, extra], ignore_index=True).to_csv(split_csv, index=False)  # rows 14 and 15
    proc = run_script(TRAIN, "--model", "tiny_cnn", "--dataset", "folders", "--data_dir", root, "--split_csv",
                      split_csv, "--image_size", 16, "--epochs", 1, "--out_dir", tmp_path / "runs",
                      "--run_name", "r", check=False, env=ONE_THREAD)
    assert_one_clean_error(proc, "2 bad inputs",
                           f"listed in split 'valid' as 'a/img003.png' ({split_csv} row 5) and again in 'train' "
                           f"(named in {split_csv} row 14)",
                           f"{split_csv} row 15: path '/etc/passwd' leaves the data root")
    assert not (tmp_path / "runs" / "r" / "metrics.csv").exists()


# ============================================================================ split CSVs: appended to, never rewritten

def test_import_appends_and_keeps_extra_columns_na_labels_and_val_as_written(labelled, tmp_path):
    root, _ = labelled
    split_csv = tmp_path / "annotated.csv"
    split_csv.write_text("path,label,split,annotator,note\r\n"
                         "a/img000.png,NA,train,ann,first\r\n"
                         "a/img001.png,null,train,bob,\r\n"
                         "b/img000.png,None,train,,x\r\n"
                         "b/img001.png,NA,val,,\r\n"
                         'b/img002.png,null,val,,"a note, quoted"\r\n')
    before = split_csv.read_bytes()
    review_csv = write_review_csv(tmp_path / "rev" / "review.csv", [("new/n0.png", "NA", ""),
                                                                     ("new/n1.png", "NA", "None")])
    run_script(REVIEW, "import", "--review_csv", review_csv, "--split_csv", split_csv, "--data_dir", root,
               "--class_names", "NA,null,None")
    after = split_csv.read_bytes()
    assert after.startswith(before)  # not one byte of what was there rewritten
    assert after[len(before):] == b"new/n0.png,NA,train,,\r\nnew/n1.png,None,train,,\r\n"
    table = pd.read_csv(split_csv, dtype=str, keep_default_na=False)
    assert table["label"].tolist() == ["NA", "null", "None", "NA", "null", "NA", "None"]
    # training reads 'NA', 'null' and 'None' as class names, not as empty cells
    run_script(TRAIN, "--model", "tiny_cnn", "--dataset", "folders", "--data_dir", root, "--split_csv", split_csv,
               "--image_size", 16, "--epochs", 1, "--out_dir", tmp_path / "runs",
               "--run_name", "r", env=ONE_THREAD)
    _, meta = load_trained_model(tmp_path / "runs" / "r" / "best.pt", torch.device("cpu"))
    assert sorted(meta["class_names"]) == ["NA", "None", "null"]


# ============================================================================ spreadsheet formulas

FORMULA_CLASSES = ["-1", "=cmd", "+plus", "@at"]


@pytest.fixture(scope="module")
def formula_review(tmp_path_factory):
    """A tiny CNN trained on classes named like formulas, and review.py export of its test split:
    (root, review folder)."""
    base = tmp_path_factory.mktemp("formula")
    root, rows = base / "data", []
    for c, label in enumerate(FORMULA_CLASSES):
        for i in range(6):
            grey(root / f"c{c}" / f"{i}.png", seed=10 * c + i)
            split = "train" if i < 4 else "valid" if i == 4 else "test"
            rows.append({"path": f"c{c}/{i}.png", "label": label, "split": split})
    split_csv = base / "split.csv"
    pd.DataFrame(rows).to_csv(split_csv, index=False)
    run_script(TRAIN, "--model", "tiny_cnn", "--dataset", "folders", "--data_dir", root, "--split_csv", split_csv,
               "--image_size", 16, "--epochs", 1, "--out_dir", base / "runs", "--run_name", "m",
               env=ONE_THREAD)
    out = base / "review"
    run_script(REVIEW, "export", "--checkpoints", base / "runs" / "m" / "best.pt", "--split", "test", "--T", 2,
               "--display_size", 16, "--device", "cpu", "--out_dir", out, env=ONE_THREAD)
    return root, out


def test_export_quotes_every_text_cell_a_spreadsheet_would_run_and_keeps_numbers_numeric(formula_review):
    _, out = formula_review
    with open(out / "review.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(FORMULA_CLASSES)
    for row in rows:
        assert row["predicted_label"] in {"'" + c for c in FORMULA_CLASSES}
        assert not any(cell.startswith(("=", "@", "+", "-")) for cell in row.values())
        assert 0 <= float(row["uncertainty"]) and float(row["risk"]) > 0  # numbers, no quote


def test_import_strips_the_quote_so_formula_like_class_names_round_trip(formula_review, tmp_path):
    root, out = formula_review
    edited = tmp_path / "review.csv"
    with open(out / "review.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rows[0]["corrected_label"] = "'=cmd"  # as the spreadsheet shows it, quote included
    with open(edited, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (tmp_path / "review_meta.json").write_bytes((out / "review_meta.json").read_bytes())
    split_csv = tmp_path / "labelled.csv"
    run_script(REVIEW, "import", "--review_csv", edited, "--split_csv", split_csv)
    table = read_split_csv(split_csv)
    expected = ["=cmd"] + [r["predicted_label"][1:] for r in rows[1:]]
    assert table["label"].tolist() == expected and set(expected) <= set(FORMULA_CLASSES)
    assert all(not p.startswith("'") for p in table["path"])
    raw = pd.read_csv(split_csv, dtype=str, keep_default_na=False)  # as a spreadsheet opens it: guarded
    assert raw["label"].tolist() == ["'" + label for label in expected]


# ============================================================================ missing and empty files

def test_import_of_a_missing_review_csv_is_one_clean_line(labelled, tmp_path):
    root, split_csv = labelled
    proc = run_import(tmp_path / "nope" / "review.csv", split_csv, root)
    assert_one_clean_error(proc, f"error: {tmp_path / 'nope' / 'review.csv'}: review CSV not found")


def test_export_of_a_missing_checkpoint_is_one_clean_line(tmp_path):
    proc = run_script(REVIEW, "export", "--checkpoints", tmp_path / "gone.pt", "--device", "cpu", check=False)
    assert_one_clean_error(proc, f"error: {tmp_path / 'gone.pt'}: checkpoint not found")


def test_an_empty_review_csv_is_named_in_the_error(labelled, tmp_path):
    root, split_csv = labelled
    empty = tmp_path / "rev" / "review.csv"
    empty.parent.mkdir()
    empty.write_text("")
    proc = run_import(empty, split_csv, root)
    assert_one_clean_error(proc, f"error: {empty}: the review CSV is empty")
    assert os.path.getsize(empty) == 0
