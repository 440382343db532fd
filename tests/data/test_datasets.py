"""Adapters on tiny replicas of each real layout, splits, the cache and the augmentations."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import ROOT
from safehil.data.augment import Augmenter
from safehil.data.cache import decode_for_cache
from safehil.data.datasets import (load_image_sets, load_split_table, rle_area, scan_casting, scan_class_folders, scan_severstal_kaggle)
from safehil.data.images import read_image
from safehil.data.splits import stratified_split
from safehil.data.synthetic import (SYNTHETIC_CLASSES, generate_safety_splits, render_synthetic_image, synthetic_split_table)


def write_image(path, value=128, size=(20, 16), mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(str(path))) % 2**32)
    arr = np.clip(rng.normal(value, 20, (size[1], size[0]) + ((3,) if mode == "RGB" else ())), 0, 255)
    Image.fromarray(arr.astype(np.uint8), mode).save(path)


def test_plain_class_folders(tmp_path):
    for c in ("Crazing", "Scratches"):
        for i in range(3):
            write_image(tmp_path / c / f"{i}.bmp")
    table = scan_class_folders(tmp_path)
    assert sorted(table["label"].unique()) == ["crazing", "scratches"]
    assert len(table) == 6 and "split" not in table.columns
    assert all(not p.startswith("/") for p in table["path"])


def test_neu_split_folders(tmp_path):
    for split in ("train", "valid", "test"):
        for c in ("Crazing", "Inclusion"):
            for i in range(2):
                write_image(tmp_path / split / c / f"{c}_{i}.bmp")
    table = scan_class_folders(tmp_path)
    assert set(table["split"]) == {"train", "valid", "test"}
    assert table.groupby("split").size().to_dict() == {"test": 4, "train": 4, "valid": 4}


def test_empty_class_folder_is_named(tmp_path):
    write_image(tmp_path / "a" / "0.png")
    (tmp_path / "b").mkdir()
    with pytest.raises(ValueError, match=r"[/\\]b: class folder holds no images"):
        scan_class_folders(tmp_path)


def test_casting_layout(tmp_path):
    for split in ("train", "test"):
        for label in ("def_front", "ok_front"):
            for i in range(3):
                write_image(tmp_path / "casting_data" / split / label / f"cast_{i}.jpeg", mode="RGB")
    table = scan_casting(tmp_path)
    assert len(table) == 12
    assert set(table["label"]) == {"def_front", "ok_front"} and set(table["split"]) == {"train", "test"}
    full, root = load_split_table("casting", tmp_path, seed=0)
    assert "valid" in set(full["split"]) and len(full) == 12  # valid carved from train


def test_casting_missing_folder_named(tmp_path):
    (tmp_path / "train" / "def_front").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="ok_front"):
        scan_casting(tmp_path)


def rle_decode(encoded_pixels: str, height: int, width: int) -> np.ndarray:
    """Kaggle run-length string -> bool mask [height, width]; pixels run top to bottom, then left to right."""
    mask = np.zeros(height * width, dtype=bool)
    values = [int(v) for v in encoded_pixels.split()]
    for start, length in zip(values[0::2], values[1::2]):
        mask[start - 1:start - 1 + length] = True
    return mask.reshape(width, height).T


def test_rle_area_counts_the_pixels_of_the_decoded_mask():
    # 1-indexed, top-to-bottom then left-to-right: pixel 1 is (0, 0), pixel 2 is (1, 0)
    mask = rle_decode("1 3 6 2", height=4, width=3)
    assert mask.sum() == 5 == rle_area("1 3 6 2")
    assert mask[0, 0] and mask[1, 0] and mask[2, 0] and not mask[3, 0]
    assert mask[1, 1] and mask[2, 1]
    with pytest.raises(ValueError, match="odd number"):
        rle_area("1 3 6")


@pytest.mark.parametrize("rule,expected", [("largest_area", "defect_3"), ("lowest_class", "defect_1")])
def test_severstal_kaggle(tmp_path, rule, expected):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        write_image(tmp_path / "train_images" / name, size=(64, 16), mode="RGB")
    pd.DataFrame({"ImageId": ["a.jpg", "b.jpg", "b.jpg"], "ClassId": [2, 1, 3],
                  "EncodedPixels": ["1 10", "1 5", "20 50"]}).to_csv(tmp_path / "train.csv", index=False)
    table = scan_severstal_kaggle(tmp_path, rule).set_index("path")["label"].to_dict()
    assert table == {"train_images/a.jpg": "defect_2", "train_images/b.jpg": expected,
                     "train_images/c.jpg": "no_defect"}
    dropped = scan_severstal_kaggle(tmp_path, "drop")
    assert "train_images/b.jpg" not in set(dropped["path"])


def test_severstal_kaggle_missing_image_named(tmp_path):
    (tmp_path / "train_images").mkdir()
    write_image(tmp_path / "train_images" / "a.jpg")
    pd.DataFrame({"ImageId": ["zzz.jpg"], "ClassId": [1], "EncodedPixels": ["1 2"]}).to_csv(
        tmp_path / "train.csv", index=False)
    with pytest.raises(FileNotFoundError, match="zzz.jpg"):
        scan_severstal_kaggle(tmp_path)


def test_unreadable_and_missing_images_are_named(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ValueError, match="broken.png"):
        read_image(bad)
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        read_image(tmp_path / "nothere.png")


def test_grayscale_replicated_to_three_channels(tmp_path):
    write_image(tmp_path / "g.png", size=(40, 30))
    x = decode_for_cache(tmp_path / "g.png", 24)
    assert x.shape == (3, 24, 24) and x.dtype == torch.uint8
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])


def test_stratified_split_is_deterministic_and_stratified():
    table = pd.DataFrame({"path": [f"{c}/{i}.png" for c in "ab" for i in range(50)],
                          "label": [c for c in "ab" for _ in range(50)]})
    s1 = stratified_split(table, (0.6, 0.2, 0.2), seed=1)
    s2 = stratified_split(table.sample(frac=1, random_state=0), (0.6, 0.2, 0.2), seed=1)
    assert s1.sort_values("path").equals(s2.sort_values("path"))
    counts = s1.groupby(["label", "split"]).size().unstack()
    assert (counts["train"] == 30).all() and (counts["valid"] == 10).all() and (counts["test"] == 10).all()
    capped = stratified_split(table, (0.6, 0.2, 0.2), seed=1, cap_per_class=10)
    assert len(capped) == 20


def test_synthetic_set_is_deterministic(tiny_synthetic, tmp_path):
    root, csv = tiny_synthetic
    table = pd.read_csv(csv)
    assert set(table["label"]) == set(SYNTHETIC_CLASSES)
    assert set(table["split"]) == {"train", "valid", "test", "test_shifted"}
    again = render_synthetic_image("scratches", 7, 64)
    assert np.array_equal(again, render_synthetic_image("scratches", 7, 64))
    assert not np.array_equal(again, render_synthetic_image("scratches", 8, 64))
    sets = load_image_sets(table, root, 32)
    assert sets["train"].images.shape == (72, 1, 32, 32)  # grey PNGs: one stored channel
    assert sets["train"].class_names == sorted(SYNTHETIC_CLASSES)


def test_safety_splits_are_new_images_of_the_built_in_set(tiny_synthetic, tmp_path):
    root, csv = tiny_synthetic                                   # per_class 20, 64 px, seed 0
    safety_root, safety_csv = generate_safety_splits(per_class=3, seed=0, size=64, root=tmp_path / "safety",
                                                     split_csv=tmp_path / "safety.csv")
    table = pd.read_csv(safety_csv)
    assert table.groupby(["split", "label"]).size().to_dict() == {
        (split, label): 3 for split in ("valid", "test") for label in SYNTHETIC_CLASSES}
    builtin = {read_image(root / p).tobytes() for p in pd.read_csv(csv)["path"]}
    safety = [read_image(safety_root / p).tobytes() for p in table["path"]]
    assert len(set(safety)) == len(safety) and not builtin & set(safety)   # no image repeats, none is reused
    again_root, _ = generate_safety_splits(per_class=3, seed=0, size=64, root=tmp_path / "again",
                                           split_csv=tmp_path / "again.csv")
    assert all(np.array_equal(read_image(safety_root / p), read_image(again_root / p)) for p in table["path"])


def test_augmenter_shape_dtype_and_repeatable():
    x = torch.rand(5, 3, 32, 32)
    for style in ("neu", "severstal"):
        aug = Augmenter(style, use_aug=True)
        a = aug(x, torch.Generator().manual_seed(3))
        b = aug(x, torch.Generator().manual_seed(3))
        c = aug(x, torch.Generator().manual_seed(4))
        assert a.shape == x.shape and a.dtype == torch.float32
        assert torch.equal(a, b) and not torch.equal(a, c)
        assert a.min() >= 0 and a.max() <= 1


def asymmetric_batch(n=16, size=16):
    """n copies of one known image [n, 3, size, size]: a bright bar at the top left, nothing else."""
    x = torch.zeros(n, 3, size, size)
    x[:, :, 2:4, 1:7] = 1.0
    return x


def test_base_augmentation_none_leaves_images_unchanged():
    x = asymmetric_batch()
    assert torch.equal(Augmenter("neu", use_aug=False, base="none")(x, torch.Generator().manual_seed(0)), x)


def test_base_augmentation_flip_only_flips_horizontally():
    x = asymmetric_batch(32)
    out = Augmenter("neu", use_aug=False, base="flip")(x, torch.Generator().manual_seed(0))
    same = (out == x).flatten(1).all(1)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    assert (same | flipped).all()                   # every image is exactly itself or its mirror image
    assert same.any() and flipped.any()


def test_base_augmentation_paper_rotates():
    x = asymmetric_batch(32)
    out = Augmenter("neu", use_aug=False, base="paper")(x, torch.Generator().manual_seed(0))
    neither = ~((out - x).abs().flatten(1).amax(1) < 1e-4) & ~((out - x.flip(-1)).abs().flatten(1).amax(1) < 1e-4)
    # a rotation moves the bar off its (mirrored) place (nearest neighbour, as torchvision's
    # RandomRotation: angles of a few degrees leave a small bar where it was)
    assert neither.float().mean() > 0.7
    assert torch.allclose(out.sum((1, 2, 3)), x.sum((1, 2, 3)), rtol=0.35)  # the bar is moved, not erased


def test_unknown_base_augmentation_is_refused():
    with pytest.raises(ValueError, match="base augmentation"):
        Augmenter("neu", base="rotate")


def test_committed_split_csv_of_the_builtin_set_is_what_generation_writes():
    committed = ROOT / "data_splits" / "synthetic_n300_s0_px200.csv"
    assert committed.read_text() == synthetic_split_table(300, 0).to_csv(index=False)
    table = pd.read_csv(committed)
    assert table.groupby("split").size().to_dict() == {"test": 360, "test_shifted": 600, "train": 1080, "valid": 360}
    assert table["path"].is_unique and (table.groupby("label").size() == 400).all()
