"""The smaller silent losses: EXIF orientation, entries a folder search skips,
the formula guard on listings a person opens, degenerate images, malformed Label Studio fields
and error listings without end."""
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from safehil.data import cache
import predict
import review
from conftest import copy_test_images, run_in_process
from safehil.data.images import read_image


@pytest.fixture(scope="module")
def folder(tiny_synthetic, tmp_path_factory):
    """Images to score: 3 test images of the tiny set."""
    return copy_test_images(tiny_synthetic, tmp_path_factory.mktemp("imgs"), 3)


def run_predict(checkpoint, images, out):
    return run_in_process(predict, "--checkpoints", checkpoint, "--images_dir", images, "--T", 2, "--device", "cpu",
                          "--out_dir", out)


def test_exif_orientation_is_applied_when_decoding(checkpoint_pair, tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (30, 60, 3), dtype=np.uint8)  # 60 wide, 30 high
    upright = np.rot90(pixels, k=-1).copy()  # what a viewer shows for EXIF orientation 6 (rotate 90 clockwise)
    images = tmp_path / "imgs"
    images.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(images / "tagged.jpg", exif=exif, quality=100)
    Image.fromarray(upright).save(images / "upright.jpg", quality=100)
    assert read_image(images / "tagged.jpg").size == (30, 60)
    assert cache.CACHE_VERSION >= 3  # caches decoded without EXIF are not reused
    assert run_predict(checkpoint_pair[0], images, tmp_path / "p") == 0
    rows = pd.read_csv(tmp_path / "p" / "predictions.csv").set_index("path")
    assert rows.loc["tagged.jpg", "uncertainty"] == pytest.approx(rows.loc["upright.jpg", "uncertainty"], abs=0.02)


def test_every_entry_a_folder_search_skips_is_listed(checkpoint_pair, folder, tmp_path, monkeypatch):
    images = tmp_path / "imgs"
    shutil.copytree(folder, images)
    (images / "linked").symlink_to(folder, target_is_directory=True)
    (images / "dangling.png").symlink_to(tmp_path / "gone.png")
    os.mkfifo(images / "pipe.png")
    (images / "locked").mkdir()
    real_scandir = os.scandir

    def scandir(path="."):  # an unreadable folder (as root, chmod alone would not stop the search)
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)
    monkeypatch.setattr(os, "scandir", scandir)
    assert run_predict(checkpoint_pair[0], images, tmp_path / "p") == 0
    listed = pd.read_csv(tmp_path / "p" / "skipped_inputs.csv").set_index("path")["reason"]
    assert json.loads((tmp_path / "p" / "summary.json").read_text())["not_searched"] == 4
    assert "symbolic link to a folder" in listed["linked"] and "broken symbolic link" in listed["dangling.png"]
    assert "not a regular file" in listed["pipe.png"] and "Permission denied" in listed["locked"]


def test_skipped_inputs_csv_is_formula_guarded(checkpoint_pair, folder, tmp_path):
    images = tmp_path / "imgs"
    shutil.copytree(folder, images)
    (images / "=HYPERLINK(1).png").write_bytes(b"not an image")
    assert run_predict(checkpoint_pair[0], images, tmp_path / "p") == 0
    assert "\n'=HYPERLINK(1).png," in (tmp_path / "p" / "skipped_inputs.csv").read_text()


def test_a_tiny_image_is_refused_and_a_sliver_warned_with_its_share(checkpoint_pair, folder, tmp_path, capsys):
    images = tmp_path / "imgs"
    shutil.copytree(folder, images)
    Image.new("L", (1, 1)).save(images / "dot.png")
    Image.new("L", (5000, 40), 128).save(images / "strip.png")
    assert run_predict(checkpoint_pair[0], images, tmp_path / "p") == 0
    out = capsys.readouterr().out
    assert "1 of 5 images (20.0 %) have an aspect ratio more than 10x off" in out and "strip.png, 5000 x 40: 0.8 %" in out
    listed = pd.read_csv(tmp_path / "p" / "skipped_inputs.csv").set_index("path")["reason"]
    assert "image too small: 1 x 1 pixels" in listed["dot.png"]


@pytest.fixture
def ls_batch(tmp_path):
    """A Label Studio batch folder (review.csv, review_meta.json) over a data root with a/0.png."""
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    Image.new("L", (16, 16)).save(root / "a" / "0.png")
    batch = tmp_path / "batch"
    batch.mkdir()
    (batch / "review.csv").write_text("path,predicted_label,corrected_label\na/0.png,a,\n")
    (batch / "review_meta.json").write_text(json.dumps({"class_names": ["a", "b"], "data_root": str(root),
                                                        "label_studio": {"document_root": str(tmp_path)}}))
    return batch


def ls_import(batch, tasks, split_csv):
    (batch / "export.json").write_text(json.dumps(tasks))
    return run_in_process(review, "import", "--review_csv", batch / "review.csv", "--label_studio_json",
                          batch / "export.json", "--split_csv", split_csv)


def test_label_studio_annotations_as_a_string_are_refused_not_confirmed(ls_batch, tmp_path, capsys):
    task = {"id": 7, "data": {"image": "/data/local-files/?d=data/a/0.png"}, "annotations": "b",
            "predictions": [{"result": [{"from_name": "label", "type": "choices", "value": {"choices": ["a"]}}]}]}
    assert ls_import(ls_batch, [task], tmp_path / "s.csv") == 1
    assert "task 7: annotations is a str, not a list" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()


def test_an_export_with_thousands_of_bad_tasks_lists_20_and_counts_the_rest(ls_batch, tmp_path, capsys):
    tasks = [{"id": i, "data": {"image": f"http://elsewhere/{i}.png"}} for i in range(5000)]
    assert ls_import(ls_batch, tasks, tmp_path / "s.csv") == 1
    err = capsys.readouterr().err
    assert "5000 problem(s), nothing imported" in err and "... and 4980 more" in err
    assert err.count("\n") < 30
