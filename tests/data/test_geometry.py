"""Image geometry (cache.py): Severstal strips reach the network whole (a mark at either end is
in its input), a user's non-square class folders are never cut silently (auto keeps them whole
or letterboxed and says what a crop would cut), pad letterboxes, grey sources are cached as one
channel (a third of the bytes), and non-square batches flow through training, MC dropout and
saliency."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from safehil.uq import uncertainty
from conftest import RecordInput
from safehil.data.augment import Augmenter
from safehil.data.cache import Canvas, cached_images, decode_for_cache, plan_canvas
from safehil.data.datasets import decode_request, load_image_sets_checked, scan_severstal_kaggle
from safehil.training.models import build_model
from safehil.uq.saliency import saliency_map
from safehil.training.training import fit, predict


def network_input(image_set) -> torch.Tensor:
    """What the network receives at test time with mean 0, std 1: float [N, 3, H, W] in [0, 1]."""
    net = RecordInput(len(image_set.class_names))
    predict(net, image_set, mean=0.0, std=1.0, device=torch.device("cpu"))
    return torch.cat(net.seen)


def write_strip(path, mark_left: int | None, rng, width=1600, height=256):
    """A grey 1600 x 256 strip (RGB JPEG-like noise around 90) with a white 40-pixel mark starting at column mark_left."""
    image = rng.integers(80, 100, (height, width), dtype=np.uint8)
    if mark_left is not None:
        image[100:156, mark_left:mark_left + 40] = 255
    Image.fromarray(np.stack([image] * 3, -1)).save(path)


def test_a_mark_at_either_end_of_a_severstal_strip_reaches_the_network(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "train_images").mkdir()
    marks = {"left.png": 0, "right.png": 1560, "plain.png": None}
    for name, left in marks.items():
        write_strip(tmp_path / "train_images" / name, left, rng)
    # the RLE of the right mark (column-major, 1-indexed): its first column starts at 1560 * 256 + 101
    runs = " ".join(f"{(1560 + c) * 256 + 101} 56" for c in range(40))
    (tmp_path / "train.csv").write_text(f"ImageId,ClassId,EncodedPixels\nleft.png,1,101 56\nright.png,3,{runs}\n")
    table = scan_severstal_kaggle(tmp_path).assign(split="test")
    assert dict(zip(table["path"], table["label"])) == {"train_images/left.png": "defect_1",
                                                         "train_images/right.png": "defect_3",
                                                         "train_images/plain.png": "no_defect"}
    request = decode_request("severstal_kaggle")
    assert request["geometry"] == "whole" and request["channels"] == 1
    sets, _ = load_image_sets_checked(table, tmp_path, 32, **request)
    test = sets["test"]
    assert test.canvas == Canvas("whole", 32, 200, 1) and test.images.shape == (3, 1, 32, 200)  # 6.25 : 1 kept
    seen = network_input(test)
    assert seen.shape == (3, 3, 32, 200)
    by_name = {p.split("/")[-1]: seen[i, 0] for i, p in enumerate(test.paths)}
    # 40 of 1600 columns = the first / last 1 of 200; the mark rows 100-156 of 256 = rows 12.5-19.5 of 32
    assert by_name["left.png"][14:18, 0].min() > 0.9 and by_name["left.png"][14:18, -20:].max() < 0.5
    assert by_name["right.png"][14:18, -1].min() > 0.9 and by_name["right.png"][14:18, :20].max() < 0.5
    assert by_name["plain.png"].max() < 0.5
    # the old square crop kept only the middle of the strip: neither mark would have been seen
    crop, _ = load_image_sets_checked(table, tmp_path, 32, geometry="crop")
    assert network_input(crop["test"]).max() < 0.5


def write_folder(root, shapes, colour=False):
    """Class folders a/ and b/ with images of the given (width, height), noise in grey or colour."""
    rng = np.random.default_rng(1)
    rows = []
    for i, (w, h) in enumerate(shapes):
        label = "ab"[i % 2]
        (root / label).mkdir(parents=True, exist_ok=True)
        shape = (h, w, 3) if colour else (h, w)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / label / f"{i}.png")
        rows.append({"path": f"{label}/{i}.png", "label": label, "split": "train"})
    return pd.DataFrame(rows)


def test_auto_geometry_keeps_non_square_folders_whole_and_says_what_a_crop_would_cut(tmp_path, capsys):
    table = write_folder(tmp_path, [(96, 48)] * 4)            # 2 : 1 images: a square crop cuts half
    sets, _ = load_image_sets_checked(table, tmp_path, 32, **decode_request("folders"))
    assert sets["train"].canvas.geometry == "whole" and sets["train"].images.shape[-2:] == (32, 64)
    out = capsys.readouterr().out
    assert "4 of 4 images are not square" in out and "cut 50 %" in out and "using geometry whole" in out
    load_image_sets_checked(table, tmp_path, 32, geometry="crop")      # asked for: done, but said
    assert "cut 50 %" in capsys.readouterr().out


def test_auto_geometry_letterboxes_mixed_shapes_without_cutting(tmp_path):
    headers = [(96, 48, "L"), (48, 96, "L"), (64, 64, "L")]
    canvas, warnings = plan_canvas(headers, 32, "auto")
    assert canvas == Canvas("pad", 32, 32, 1) and "using geometry pad" in warnings[0]
    assert plan_canvas([(64, 64, "RGB")] * 3, 32, "auto") == (Canvas("crop", 32, 32, 3), [])


def test_pad_letterboxes_the_whole_image_into_the_square(tmp_path):
    image = np.full((40, 80), 200, np.uint8)
    image[:, :4] = 10                                            # the left edge must survive
    Image.fromarray(image).save(tmp_path / "wide.png")
    out = decode_for_cache(tmp_path / "wide.png", Canvas("pad", 40, 40, 1))
    assert out.shape == (1, 40, 40)
    assert (out[0, :10] == 0).all() and (out[0, -10:] == 0).all()   # 10 rows of zeros above and below
    assert out[0, 10:30, 0].max() < 60 and out[0, 12:28, 5:].min() > 150


def test_grey_sources_are_cached_as_one_channel_and_colour_as_three(tmp_path):
    grey = write_folder(tmp_path / "grey", [(32, 32)] * 4)
    colour = write_folder(tmp_path / "colour", [(32, 32)] * 4, colour=True)
    g, _, _ = cached_images(grey["path"].tolist(), tmp_path / "grey",
                            plan_canvas([(32, 32, "L")] * 4, 32)[0], tmp_path / "cache_g")
    c, _, _ = cached_images(colour["path"].tolist(), tmp_path / "colour",
                            plan_canvas([(32, 32, "RGB")] * 4, 32)[0], tmp_path / "cache_c")
    assert g.shape == (4, 1, 32, 32) and c.shape == (4, 3, 32, 32)
    grey_bytes = next((tmp_path / "cache_g").glob("*.u8")).stat().st_size
    colour_bytes = next((tmp_path / "cache_c").glob("*.u8")).stat().st_size
    assert grey_bytes == 4 * 32 * 32 and colour_bytes == 3 * grey_bytes
    meta = json.loads(next((tmp_path / "cache_g").glob("*.json")).read_text())
    assert meta["canvas"]["channels"] == 1
    assert np.array_equal(g[:, 0].numpy(), np.stack([np.asarray(Image.open(tmp_path / "grey" / p))
                                                      for p in grey["path"]]))


def test_a_crop_keeps_a_rotation_margin_whose_centre_is_the_crop(tmp_path):
    table = write_folder(tmp_path, [(80, 80)] * 2)
    plain, _ = load_image_sets_checked(table, tmp_path, 32, geometry="crop")
    margin, _ = load_image_sets_checked(table, tmp_path, 32, geometry="crop", margin=True)
    assert margin["train"].source.shape == (2, 1, 36, 36)          # 256/224 * 32 = 37 -> 2 pixels a side
    assert torch.equal(margin["train"].images, plain["train"].images)
    sub = margin["train"].subset([1])
    assert torch.equal(sub.images[0], plain["train"].images[1]) and sub.source.shape == (1, 1, 36, 36)


def test_strips_flow_through_training_mc_dropout_and_saliency(tmp_path):
    shapes = [(200, 32)] * 8
    table = write_folder(tmp_path, shapes)
    table.loc[6:, "split"] = "valid"
    sets, _ = load_image_sets_checked(table, tmp_path, 16, geometry="whole", margin=True)
    train, valid = sets["train"], sets["valid"]
    assert train.images.shape == (6, 1, 16, 100)
    model = build_model("tiny_cnn", 2)
    fit(model, train, valid, epochs=1, patience=1, batch_size=4, lr=1e-3, mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225), device=torch.device("cpu"), seed=0,
        augment=Augmenter("severstal", use_aug=True))
    probs = uncertainty.mc_dropout_predict(model, valid, 0.5, 0.25, "cpu", T=3)
    assert probs.shape == (3, 2, 2)
    x = torch.rand(2, 3, 16, 100)
    assert saliency_map(model, x).shape == (2, 16, 100)


def test_scoring_new_files_decodes_them_on_the_checkpoints_canvas(tmp_path):
    # predict.py and review.py export score files through scoring.score_files: a checkpoint trained on
    # whole strips must see whole strips (a mark at the far right end included), one channel expanded to 3
    from safehil.safety import scoring
    rng = np.random.default_rng(2)
    files = []
    for name, left in (("right.png", 1560), ("plain.png", None)):
        write_strip(tmp_path / name, left, rng)
        files.append(tmp_path / name)
    net = RecordInput(2)
    meta = {"mean": 0.0, "std": 1.0, "image_size": 32, "class_names": ["a", "b"], "canvas": Canvas("whole", 32, 200, 1, 4).to_dict()}
    scored = scoring.score_files(files, [(net, meta)], T=1, device="cpu")
    assert len(scored.files) == 2
    seen = torch.cat(net.seen)
    assert seen.shape == (2, 3, 32, 200)                      # the margin of a training canvas is not used here
    assert seen[0, :, 14:18, -1].min() > 0.9 and seen[1].max() < 0.5
