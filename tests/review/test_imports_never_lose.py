"""Labelled data is never lost or leaked, all
through the command line in-process on 16 px images: make_splits.py keeps the rows an import
appended, --copy_into keeps a class-folder root readable, an image already in a split (by
content) or a batch imported twice is refused, names are kept byte for byte, a symbolic-link
split CSV is written through, every CSV cell a spreadsheet would run is guarded, a hostile
review_meta.json is refused, and a failed import leaves nothing behind."""
import csv
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import make_splits
import review
from conftest import run_in_process
from safehil.data.splits import read_split_csv


def grey(path, seed, size=16):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8), "L").save(path)
    return path


def one_error_line(capsys, *needles) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.startswith("error: "), err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.fixture
def folders(tmp_path):
    """A class-folder root data/{a,b}/0..5.png split by make_splits.py into splits/s.csv: (root, csv)."""
    root = tmp_path / "data"
    for c, label in enumerate("ab"):
        for i in range(6):
            grey(root / label / f"{i}.png", seed=10 * c + i)
    assert run_in_process(make_splits, "--data_dir", root, "--out_dir", tmp_path / "splits", "--name", "s") == 0
    return root, tmp_path / "splits" / "s.csv"


def batch(folder, names, seed=100):
    """New images `names` in `folder` (outside any data root): their paths."""
    return [grey(folder / name, seed=seed + i) for i, name in enumerate(names)]


def review_files(folder, rows, data_root, class_names=("a", "b")):
    """review.csv (rows [(path, predicted, corrected)], written by review.py's own writer, formula
    guard included) and review_meta.json in `folder`, as an export leaves them -> review.csv."""
    table = pd.DataFrame(rows, columns=["path", "predicted_label", "corrected_label"])
    path = review.write_review_csv(folder / "review.csv", table)
    (folder / "review_meta.json").write_text(json.dumps({"class_names": list(class_names),
                                                         "data_root": str(data_root), "split_csv": ""}))
    return path


def run_import(review_csv, split_csv, root, *flags):
    return run_in_process(review, "import", "--review_csv", review_csv, "--split_csv", split_csv, "--data_dir", root,
                          *flags)


def files_under(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# ============================================================================ case 6

def test_rerunning_make_splits_keeps_the_labels_and_splits_an_import_appended(folders, tmp_path):
    root, split_csv = folders
    batch(root / "incoming", ["n0.png", "n1.png", "n2.png"])
    review_csv = review_files(tmp_path / "rev", [("incoming/n0.png", "a", ""), ("incoming/n1.png", "a", "b"),
                                                 ("incoming/n2.png", "b", "")], root)
    assert run_import(review_csv, split_csv, root) == 0
    imported = read_split_csv(split_csv).set_index("path").loc[[f"incoming/n{i}.png" for i in range(3)]]
    assert run_in_process(make_splits, "--data_dir", root, "--out_dir", split_csv.parent, "--name", "s") == 0
    again = read_split_csv(split_csv).set_index("path")
    assert again.loc[imported.index].equals(imported)  # labels a, b, b and split train: as imported
    assert "incoming" not in set(again["label"]) and len(again) == 15


# ============================================================================ case 7

def test_copy_into_a_class_folder_root_puts_each_image_in_the_folder_of_its_label(folders, tmp_path, capsys):
    root, split_csv = folders
    batch(tmp_path / "new", ["x.png", "y.png"])
    review_csv = review_files(tmp_path / "new", [("x.png", "a", ""), ("y.png", "a", "b")], tmp_path / "new")
    assert run_import(review_csv, split_csv, root, "--copy_into", "review_imports") == 0
    assert "2 image(s) copied into the folders of their labels" in capsys.readouterr().out
    assert not (root / "review_imports").exists()
    assert {"a/x.png", "b/y.png"} <= set(read_split_csv(split_csv)["path"])
    assert run_in_process(make_splits, "--data_dir", root, "--out_dir", tmp_path, "--name", "fresh") == 0
    fresh = read_split_csv(tmp_path / "fresh.csv").set_index("path")["label"]
    assert set(fresh) == {"a", "b"} and (fresh["a/x.png"], fresh["b/y.png"]) == ("a", "b")


# ============================================================================ case 10

def test_a_batch_imported_twice_is_refused_by_content_and_nothing_is_copied(folders, tmp_path, capsys):
    root, split_csv = folders
    batch(tmp_path / "new", ["x.png", "y.png"])
    review_csv = review_files(tmp_path / "new", [("x.png", "a", ""), ("y.png", "b", "")], tmp_path / "new")
    assert run_import(review_csv, split_csv, root, "--copy_into", "imports") == 0
    before, files = split_csv.read_bytes(), files_under(root)
    assert run_import(review_csv, split_csv, root, "--copy_into", "imports") == 1
    one_error_line(capsys, "2 problem(s), nothing imported", "'x.png' has the same content (sha256) as 'a/x.png', "
                   "already in split 'train'")
    assert split_csv.read_bytes() == before and files_under(root) == files


def test_an_image_whose_content_is_already_in_a_split_is_refused_whatever_its_name(folders, tmp_path, capsys):
    root, split_csv = folders
    valid = read_split_csv(split_csv).query("split == 'valid'")["path"].iloc[0]
    (tmp_path / "new").mkdir()
    shutil.copy(root / valid, tmp_path / "new" / "fresh_name.png")  # a validation image, renamed
    review_csv = review_files(tmp_path / "new", [("fresh_name.png", "a", "")], tmp_path / "new")
    assert run_import(review_csv, split_csv, root, "--copy_into", "imports") == 1
    one_error_line(capsys, f"'fresh_name.png' has the same content (sha256) as '{valid}', already in split 'valid'")
    assert not (root / "imports").exists()


def test_names_are_kept_byte_for_byte_a_leading_space_is_another_file(folders, tmp_path):
    root, split_csv = folders
    batch(root, [" n.png", "n.png", "\tt.png"])
    review_csv = review_files(tmp_path / "rev", [(" n.png", "a", "b"), ("\tt.png", "a", "")], root)
    assert run_import(review_csv, split_csv, root) == 0
    labels = read_split_csv(split_csv).set_index("path")["label"]
    assert labels[" n.png"] == "b" and labels["\tt.png"] == "a" and "n.png" not in labels


def test_a_split_csv_that_is_a_symbolic_link_is_written_through(folders, tmp_path):
    root, split_csv = folders
    link = tmp_path / "link.csv"
    link.symlink_to(split_csv)
    batch(root / "new", ["n.png"])
    assert run_import(review_files(tmp_path / "rev", [("new/n.png", "a", "")], root), link, root) == 0
    assert link.is_symlink() and "new/n.png" in set(read_split_csv(split_csv)["path"])


def test_make_splits_and_import_guard_every_cell_a_spreadsheet_would_run(tmp_path):
    root = tmp_path / "data"
    for i in range(5):
        grey(root / "=cmd" / f"{i}.png", seed=i)
        grey(root / "@sum" / f"{i}.png", seed=10 + i)
    assert run_in_process(make_splits, "--data_dir", root, "--out_dir", tmp_path, "--name", "f") == 0
    grey(root / "-1.png", seed=99)
    review_csv = review_files(tmp_path / "rev", [("-1.png", "=cmd", "")], root, ("=cmd", "@sum"))
    assert run_import(review_csv, tmp_path / "f.csv", root) == 0
    with open(tmp_path / "f.csv", newline="") as f:
        cells = [cell for row in csv.reader(f) for cell in row]
    assert not any(cell.startswith(("=", "@", "-", "+")) for cell in cells)
    table = read_split_csv(tmp_path / "f.csv")
    assert set(table["label"]) == {"=cmd", "@sum"} and table["path"].iloc[-1] == "-1.png"


# ============================================================================ case 11

def test_a_hostile_review_meta_with_the_file_system_root_is_refused(folders, tmp_path, capsys):
    root, split_csv = folders
    review_csv = review_files(tmp_path / "rev", [("etc/passwd", "a", "")], "/")
    before = split_csv.read_bytes()
    assert run_import(review_csv, split_csv, root, "--copy_into", "imports") == 1
    one_error_line(capsys, "review_meta.json: data_root '/' is the file-system root")
    assert split_csv.read_bytes() == before and not (root / "imports").exists()


def test_a_file_that_is_not_an_image_is_never_imported(folders, tmp_path, capsys):
    root, split_csv = folders
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "passwd.png").write_text("root:x:0:0:root:/root:/bin/bash\n")
    review_csv = review_files(tmp_path / "new", [("passwd.png", "a", "")], tmp_path / "new")
    assert run_import(review_csv, split_csv, root, "--copy_into", "imports") == 1
    one_error_line(capsys, "'passwd.png' is not an image")
    assert not (root / "imports").exists()


@pytest.mark.parametrize("field, value, needle", [
    ("class_names", "a,b", "class_names must be a JSON list"),
    ("class_names", ["a", "a"], "class_names must be distinct non-empty names"),
    ("data_root", 7, "data_root must be a str"),
])
def test_every_review_meta_field_import_reads_is_checked(folders, tmp_path, field, value, needle, capsys):
    root, split_csv = folders
    batch(root / "new", ["n.png"])
    review_csv = review_files(tmp_path / "rev", [("new/n.png", "a", "")], root)
    meta = json.loads((tmp_path / "rev" / "review_meta.json").read_text())
    (tmp_path / "rev" / "review_meta.json").write_text(json.dumps({**meta, field: value}))
    assert run_import(review_csv, split_csv, root) == 1
    one_error_line(capsys, needle)


# ============================================================================ case 12: failed imports leave nothing

def test_a_source_image_deleted_after_the_export_is_one_line_and_nothing_is_copied(folders, tmp_path, capsys):
    root, split_csv = folders
    gone, kept = batch(tmp_path / "new", ["gone.png", "kept.png"])
    review_csv = review_files(tmp_path / "new", [("gone.png", "a", ""), ("kept.png", "b", "")], tmp_path / "new")
    gone.unlink()
    before, files = split_csv.read_bytes(), files_under(root)
    assert run_import(review_csv, split_csv, root, "--copy_into", "imports") == 1
    one_error_line(capsys, "1 problem(s), nothing imported", "unknown path 'gone.png'", "deleted or moved since the "
                   "export?")
    assert split_csv.read_bytes() == before and files_under(root) == files


def test_a_250_character_name_that_collides_gets_a_shorter_free_name(folders, tmp_path):
    root, split_csv = folders
    name = "n" * 251 + ".png"  # 255 bytes: the longest name a file system takes
    grey(root / "a" / name, seed=500)  # the name is taken in the class folder (another image)
    batch(tmp_path / "new", [name])
    review_csv = review_files(tmp_path / "new", [(name, "a", "")], tmp_path / "new")
    assert run_import(review_csv, split_csv, root, "--copy_into", "imports") == 0
    copy = read_split_csv(split_csv)["path"].iloc[-1]
    assert copy.startswith("a/nnn") and copy.endswith("_1.png") and len(copy.split("/")[-1]) == 255


# ============================================================================ case 13: the README's round trip

def test_the_readmes_round_trip_for_a_folder_of_new_images_works_as_written(tiny_synthetic, checkpoint_pair, tmp_path,
                                                                           capsys):
    root, csv_path = tiny_synthetic
    mine, split_csv = tmp_path / "mine", tmp_path / "mine.csv"
    shutil.copytree(root, mine)
    shutil.copy(csv_path, split_csv)
    batch(tmp_path / "new_batch", ["p0.png", "p1.png", "p2.png"], seed=1000)
    out = tmp_path / "review" / "b1"
    assert run_in_process(review, "export", "--checkpoints", checkpoint_pair[0], "--images_dir",
                          tmp_path / "new_batch", "--only_referred", "False", "--T", 2, "--device", "cpu",
                          "--out_dir", out) == 0
    assert "--data_dir ITS_DATA_ROOT --copy_into" in (out / "review.html").read_text()  # the page's hint
    assert run_in_process(review, "import", "--review_csv", out / "review.csv", "--split_csv", split_csv,
                          "--data_dir", mine, "--copy_into", "new_batch") == 0  # as README.md writes it
    added = read_split_csv(split_csv).iloc[-3:]
    assert all(path.split("/")[0] == label for path, label in zip(added["path"], added["label"]))
    assert all((mine / path).is_file() for path in added["path"]) and not (mine / "new_batch").exists()
