"""The built-in Severstal-like strips (synthetic.generate_severstal_strips): 6.25 : 1 grey strips,
four defect classes and no defect, some images with two classes, written in the Kaggle layout
whose run-length masks decode (column-major, 1-indexed) to exactly the drawn defects, and read by
the Kaggle adapter under the multi-label rule like the real download."""
import numpy as np
import pandas as pd
from PIL import Image

from safehil.data.datasets import scan_severstal_kaggle
from safehil.data.synthetic import generate_severstal_strips, render_strip, rle_encode, strip_jobs


def rle_decode(encoded: str, height: int, width: int) -> np.ndarray:
    """Kaggle's reading of a run-length string: 1-indexed starts, pixels numbered down each column."""
    flat = np.zeros(height * width, bool)
    values = [int(v) for v in encoded.split()]
    for start, length in zip(values[0::2], values[1::2]):
        flat[start - 1:start - 1 + length] = True
    return flat.reshape(width, height).T


def test_run_length_code_is_column_major_and_one_indexed():
    mask = np.zeros((3, 4), bool)
    mask[0, 0] = mask[1, 0] = True        # pixels 1, 2 (down the first column)
    mask[2, 1] = mask[0, 2] = True        # pixel 6 ends column 2, pixel 7 starts column 3: one run
    assert rle_encode(mask) == "1 2 6 2"
    assert np.array_equal(rle_decode(rle_encode(mask), 3, 4), mask)


def test_strips_are_written_in_the_kaggle_layout_with_masks_that_decode_to_the_drawn_defects(tmp_path):
    root = generate_severstal_strips(tmp_path / "strips", per_class=6, seed=0, height=32)
    csv = pd.read_csv(root / "train.csv")
    assert list(csv.columns) == ["ImageId", "ClassId", "EncodedPixels"]
    jobs = {name: (defects, seed) for name, defects, seed in strip_jobs(6, 0)}
    assert len(list((root / "train_images").iterdir())) == len(jobs) == 30
    for name in ("strip_1_0000.png", "strip_4_0003.png"):
        image = np.asarray(Image.open(root / "train_images" / name))
        assert image.shape == (32, 200)                                   # 6.25 : 1
        defects, seed = jobs[name]
        _, masks = render_strip(defects, seed, 32)
        rows = csv[csv["ImageId"] == name]
        assert sorted(rows["ClassId"]) == sorted(defects)
        for row in rows.itertuples():
            assert np.array_equal(rle_decode(row.EncodedPixels, 32, 200), masks[row.ClassId])
    table = scan_severstal_kaggle(root, "largest_area")
    assert set(table["label"]) == {"defect_1", "defect_2", "defect_3", "defect_4", "no_defect"}
    assert (table["label"] == "no_defect").sum() == 6
    two = csv.groupby("ImageId").size()
    assert (two == 2).any()                                                # the multi-label rule has work
    dropped = scan_severstal_kaggle(root, "drop")
    assert len(dropped) == len(table) - int((two == 2).sum())


def test_defects_sit_anywhere_along_the_strip_including_its_ends():
    centres = []
    for seed in range(60):
        _, masks = render_strip((4,), seed, 32)
        columns = np.flatnonzero(masks[4].any(0))
        centres.append(columns.mean() / 200)
    centres = np.array(centres)
    assert centres.min() < 0.12 and centres.max() > 0.88           # outside the middle 224/1600 = 14 %
    assert ((centres < 0.43) | (centres > 0.57)).mean() > 0.7      # mostly where a centre crop cannot see
