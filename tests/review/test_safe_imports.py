"""An import can never corrupt the labelled data: the split CSV's data root is
checked, images outside it are refused or copied under it with names no file has, one image
twice (any spelling, one split or two) is refused at import and at training, and two imports at
once are serialised by the split CSV's lock, the second re-checking the file the first wrote."""
import json
import threading
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from safehil.core import locks
import review
import train_model
from conftest import run_in_process
from safehil.core.utils import InputError


def grey(path, seed, size=16):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8), "L").save(path)


@pytest.fixture
def outside_batch(tmp_path):
    """A data root with a labelled split CSV (a/0..3, b/0..3), and a review batch exported from a
    folder NEW outside it (as `review.py export --images_dir NEW` leaves it), whose x.png shares
    its name with a different image already under ROOT/imports: (root, split_csv, new, review_csv)."""
    root, new = tmp_path / "root", tmp_path / "new"
    rows = []
    for c, label in enumerate("ab"):
        for i in range(4):
            grey(root / label / f"{i}.png", 10 * c + i)
            rows.append({"path": f"{label}/{i}.png", "label": label, "split": "train" if i < 3 else "valid"})
    split_csv = tmp_path / "labelled.csv"
    pd.DataFrame(rows).to_csv(split_csv, index=False)
    grey(root / "imports" / "x.png", 99)
    grey(new / "x.png", 101)  # seeds unlike the labelled images: an identical image is refused by content
    grey(new / "sub" / "y.png", 102)
    batch = tmp_path / "batch"
    batch.mkdir()
    (batch / "review.csv").write_text("path,predicted_label,corrected_label\nx.png,a,b\nsub/y.png,b,\n")
    (batch / "review_meta.json").write_text(json.dumps({"class_names": ["a", "b"], "data_root": str(new),
                                                        "split_csv": ""}))
    return root, split_csv, new, batch / "review.csv"


def import_(review_csv, split_csv, *flags):
    return run_in_process(review, "import", "--review_csv", review_csv, "--split_csv", split_csv, *flags)


def test_the_split_csvs_data_root_is_checked_not_assumed(outside_batch, capsys):
    root, split_csv, new, review_csv = outside_batch
    before = split_csv.read_bytes()
    assert import_(review_csv, split_csv) == 1  # review_meta.json's root NEW is not the split CSV's
    err = capsys.readouterr().err
    assert f"8 of its 8 paths are not files under {new}" in err and "pass --data_dir" in err
    assert split_csv.read_bytes() == before


def test_images_outside_the_data_root_are_refused_with_the_fix(outside_batch, capsys):
    root, split_csv, new, review_csv = outside_batch
    before = split_csv.read_bytes()
    assert import_(review_csv, split_csv, "--data_dir", root) == 1
    err = capsys.readouterr().err
    assert f"2 image(s) are not under the data root {root}" in err and "--copy_into FOLDER" in err
    assert split_csv.read_bytes() == before


def test_copy_into_copies_under_the_root_with_collision_free_names_then_appends(outside_batch, capsys):
    root, split_csv, new, review_csv = outside_batch  # a class-folder root: copies go to their label's folder
    grey(root / "b" / "x.png", 98)  # another image already has the name x.png there
    kept = (root / "b" / "x.png").read_bytes()
    assert import_(review_csv, split_csv, "--data_dir", root, "--copy_into", "imports") == 0
    table = pd.read_csv(split_csv)
    added = table.iloc[8:]
    assert added["path"].tolist() == ["b/x_1.png", "b/y.png"] and added["label"].tolist() == ["b", "b"]
    assert (root / "b" / "x_1.png").read_bytes() == (new / "x.png").read_bytes()
    assert (root / "b" / "x.png").read_bytes() == kept  # the root's own image is untouched
    assert all((root / p).is_file() for p in table["path"])  # training finds every row


def test_one_image_twice_in_one_split_in_two_spellings_is_refused_at_training(outside_batch, tmp_path, capsys):
    root, split_csv, _, _ = outside_batch
    table = pd.read_csv(split_csv)
    table = pd.concat([table, pd.DataFrame([{"path": "./a/0.png", "label": "b", "split": "train"}])])
    table.to_csv(tmp_path / "twice.csv", index=False)
    code = run_in_process(train_model, "--model", "tiny_cnn", "--dataset", "folders", "--data_dir", root,
                          "--split_csv", tmp_path / "twice.csv", "--image_size", 16, "--epochs", 1, "--device", "cpu",
                          "--out_dir", tmp_path / "runs")
    assert code == 1
    err = capsys.readouterr().err
    assert "listed twice in split 'train': also as 'a/0.png'" in err and "Traceback" not in err


def test_a_second_import_at_once_waits_for_the_lock_and_rechecks_what_the_first_wrote(outside_batch, tmp_path):
    root, split_csv, _, _ = outside_batch
    grey(root / "new" / "n.png", 5)
    review_csv = tmp_path / "r2" / "review.csv"
    review_csv.parent.mkdir()
    review_csv.write_text("path,predicted_label,corrected_label\nnew/n.png,a,\n")
    holder = locks.acquire(f"{split_csv}.lock")  # the first import is between reading and writing
    outcome = []

    def second():
        try:
            review.import_review(review_csv, split_csv, "train", ["a", "b"], root)
            outcome.append("imported")
        except InputError as e:
            outcome.append(str(e))
    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive() and not outcome  # waiting for the lock
    with open(split_csv, "a") as f:  # the first import appends the same image ...
        f.write("new/n.png,b,train\n")
    holder.close()  # ... and lets go
    thread.join(30)
    assert "new/n.png is already in the labelled split CSV" in outcome[0]
    assert pd.read_csv(split_csv)["path"].tolist().count("new/n.png") == 1
