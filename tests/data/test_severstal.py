"""Severstal labels do not depend on the download: the same images and masks written in the Kaggle
CSV layout (current and older header) and in the Supervisely export (bitmap and polygon
geometries) give the same image-level labels, with `largest_area` measured in mask pixels."""
import base64
import io
import json
import zlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from safehil.data.datasets import decode_bitmap, scan_severstal_kaggle, scan_severstal_supervisely

HEIGHT, WIDTH = 32, 80


def box(top, left, height, width):
    """bool mask [HEIGHT, WIDTH] with one filled rectangle."""
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[top:top + height, left:left + width] = True
    return mask


# image -> list of (class id, region mask, geometry in the Supervisely export)
REPLICA = {
    # three small class-1 regions (3 x 9 px) beside one large class-4 region (72 px): counting
    # objects says class 1, counting pixels says class 4
    "a.jpg": [(1, box(2, 2, 3, 3), "bitmap"), (1, box(10, 2, 3, 3), "bitmap"), (1, box(20, 2, 3, 3), "bitmap"),
              (4, box(5, 30, 6, 12), "bitmap")],
    "b.jpg": [(2, box(4, 10, 5, 7), "polygon")],
    "c.jpg": [],
    # one class-3 region drawn as a polygon (64 px) against two class-2 bitmaps that overlap (49 px in all)
    "d.jpg": [(3, box(0, 50, 8, 8), "polygon"), (2, box(20, 20, 7, 7), "bitmap"), (2, box(20, 20, 5, 5), "bitmap")],
}
EXPECTED = {"a.jpg": "defect_4", "b.jpg": "defect_2", "c.jpg": "no_defect", "d.jpg": "defect_3"}


def rle_encode(mask):
    """Kaggle run-length string of a bool mask [H, W]: 1-indexed, top to bottom, then left to right."""
    flat = np.concatenate([[0], mask.flatten(order="F").astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(flat))
    starts, stops = edges[0::2] + 1, edges[1::2] + 1
    return " ".join(f"{s} {e - s}" for s, e in zip(starts, stops))


def bitmap_geometry(mask, palette=True):
    """Supervisely's bitmap of a region: its bounding-box crop as a PNG (palette with a transparent
    background, as Supervisely writes it, or a plain 8-bit mask), zlib-compressed, base64; origin [x, y]."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    crop = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(np.uint8)
    buffer = io.BytesIO()
    if palette:
        img = Image.fromarray(crop, mode="L")
        img.putpalette([0, 0, 0, 255, 255, 255])
        img.save(buffer, format="PNG", transparency=0)
    else:
        Image.fromarray(crop * 255, mode="L").save(buffer, format="PNG")
    return {"data": base64.b64encode(zlib.compress(buffer.getvalue())).decode(), "origin": [int(cols[0]), int(rows[0])]}


def polygon_points(mask):
    """The corner pixels [x, y] of a rectangular region (a polygon through pixel centres fills exactly it)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    x0, x1, y0, y1 = int(cols[0]), int(cols[-1]), int(rows[0]), int(rows[-1])
    return {"exterior": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]], "interior": []}


def write_images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(np.full((HEIGHT, WIDTH, 3), 128, dtype=np.uint8)).save(folder / name)


def write_kaggle(root, older=False):
    """The replica in the Kaggle layout: train.csv (current, or the older four-rows-per-image file) + train_images/."""
    write_images(root / "train_images", REPLICA)
    rows = []
    for name, regions in REPLICA.items():
        for class_id in (1, 2, 3, 4):
            masks = [m for c, m, _ in regions if c == class_id]
            encoded = rle_encode(np.logical_or.reduce(masks)) if masks else ""
            if older:
                rows.append({"ImageId_ClassId": f"{name}_{class_id}", "EncodedPixels": encoded})
            elif encoded:
                rows.append({"ImageId": name, "ClassId": class_id, "EncodedPixels": encoded})
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)


def write_supervisely(root):
    """The replica as a Supervisely export: train/img/*.jpg + train/ann/<image>.json, one object per region."""
    write_images(root / "train" / "img", REPLICA)
    (root / "train" / "ann").mkdir(parents=True)
    for name, regions in REPLICA.items():
        objects = []
        for i, (class_id, mask, geometry) in enumerate(regions):
            obj = {"classTitle": f"defect_{class_id}", "geometryType": geometry}
            if geometry == "bitmap":
                obj["bitmap"] = bitmap_geometry(mask, palette=i % 2 == 0)
            else:
                obj["points"] = polygon_points(mask)
            objects.append(obj)
        annotation = {"size": {"height": HEIGHT, "width": WIDTH}, "objects": objects}
        (root / "train" / "ann" / f"{name}.json").write_text(json.dumps(annotation))


def labels_by_image(table):
    return {path.rsplit("/", 1)[1]: label for path, label in zip(table["path"], table["label"])}


def test_both_severstal_layouts_give_the_same_labels_by_mask_pixels(tmp_path):
    write_kaggle(tmp_path / "kaggle")
    write_supervisely(tmp_path / "supervisely")
    kaggle = labels_by_image(scan_severstal_kaggle(tmp_path / "kaggle"))
    supervisely = labels_by_image(scan_severstal_supervisely(tmp_path / "supervisely"))
    assert kaggle == supervisely == EXPECTED


def test_both_severstal_layouts_agree_under_the_lowest_class_rule(tmp_path):
    write_kaggle(tmp_path / "kaggle")
    write_supervisely(tmp_path / "supervisely")
    kaggle = labels_by_image(scan_severstal_kaggle(tmp_path / "kaggle", "lowest_class"))
    supervisely = labels_by_image(scan_severstal_supervisely(tmp_path / "supervisely", "lowest_class"))
    assert kaggle == supervisely == {**EXPECTED, "a.jpg": "defect_1", "d.jpg": "defect_2"}


def test_older_kaggle_csv_with_four_rows_per_image_gives_the_same_labels(tmp_path):
    write_kaggle(tmp_path / "older", older=True)
    header = (tmp_path / "older" / "train.csv").read_text().splitlines()[0]
    assert header == "ImageId_ClassId,EncodedPixels"
    assert labels_by_image(scan_severstal_kaggle(tmp_path / "older")) == EXPECTED


def test_older_kaggle_csv_naming_a_missing_image_is_an_error(tmp_path):
    write_kaggle(tmp_path, older=True)
    (tmp_path / "train_images" / "c.jpg").unlink()   # listed only with empty rows, still listed
    with pytest.raises(FileNotFoundError, match="c.jpg"):
        scan_severstal_kaggle(tmp_path)


@pytest.mark.parametrize("palette", [True, False])
def test_bitmap_geometry_decodes_to_its_mask_and_origin(palette):
    mask = box(3, 7, 4, 5)
    mask[4, 8] = False   # a hole: the decoded mask is the pixels, not the bounding box
    decoded, origin = decode_bitmap(bitmap_geometry(mask, palette))
    assert origin == (7, 3)
    assert decoded.shape == (4, 5) and decoded.sum() == 19
    assert np.array_equal(decoded, mask[3:7, 7:12])


def test_supervisely_object_without_geometry_is_named(tmp_path):
    write_images(tmp_path / "train" / "img", ["x.jpg"])
    (tmp_path / "train" / "ann").mkdir()
    (tmp_path / "train" / "ann" / "x.jpg.json").write_text(json.dumps({"objects": [{"classTitle": "defect_1"}]}))
    with pytest.raises(ValueError, match="x.jpg.json.*neither a bitmap nor polygon"):
        scan_severstal_supervisely(tmp_path)


def test_malformed_supervisely_annotation_is_named(tmp_path):
    write_supervisely(tmp_path)
    (tmp_path / "train" / "ann" / "b.jpg.json").write_text("{not json")
    with pytest.raises(ValueError, match="b.jpg.json"):
        scan_severstal_supervisely(tmp_path)
