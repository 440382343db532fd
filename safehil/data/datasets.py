"""Data-set layouts: one adapter per layout on disk (class folders and NEU, casting, Severstal
Kaggle with its run-length masks in either CSV, Severstal Supervisely with its bitmap and
polygon masks, CIFAR-10/100 through cifar.py), the `LAYOUTS` table (one row per `--dataset`
name: its adapter and the paper's settings for it), `scan_dataset` and
`load_split_table` turning any of them into a split table, and `ImageSet`, one split decoded
into uint8 tensors.

A new layout is one `register_layout(Layout(...))` row at the end of the layouts section.

Every adapter returns a table with columns `path` (relative to the data root), `label` (class
name) and, when the layout defines splits, `split`. `load_split_table` gives any data set a
`split` column (train/valid/test[/test_shifted]) and `load_image_sets` decodes it once into
`ImageSet`s holding uint8 images [N, C, H, W] (C = 1 for grey sources; H x W by the layout's
geometry: a square crop, a whole strip, or a letterboxed square; see cache.py).
"""
from __future__ import annotations

import base64
import io
import json
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw

from safehil.data.augment import image_mean_std
from safehil.data.cache import (Canvas, as_canvas, cached_images, decode_images_skipping_bad, image_headers, plan_canvas)
from safehil.data.cifar import scan_cifar_pngs, write_cifar_pngs
from safehil.data.elpv import installed_elpv_root, scan_elpv
from safehil.data.images import IMAGE_EXTENSIONS, BadInputError, warn_slivers
from safehil.data.splits import check_split_table, read_split_csv, stratified_split
from safehil.data.synthetic import generate_synthetic
from safehil.core.utils import InputError, log

MULTI_LABEL_RULES = ("largest_area", "lowest_class", "drop")
NEU_MEAN_STD = (0.095, 0.149)  # R4VR NEU data_utils.py: Normalize([0.095] * 3, [0.149] * 3)
# R4VR Severstal data_utils.py: Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)), ImageNet's
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# the active-learning toolkit's pycls/datasets/data.py getPreprocessOps (at the commit of its CIFAR table):
# Normalize([0.4914, 0.4822, 0.4465], [0.247, 0.2435, 0.2616]), the same pair for CIFAR-10 and CIFAR-100
CIFAR_MEAN_STD = ((0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616))


# ============================================================================ adapters

def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


BROKEN_LINK = "broken symbolic link (its target is missing, or it points back into a loop)"


def _broken_links(folder: Path) -> list[dict]:
    """{'path', 'problem'} of each symbolic link in `folder` that leads nowhere (dangling or a loop):
    neither a file nor a folder, so a plain listing would drop it without a word."""
    return [{"path": str(p), "problem": BROKEN_LINK} for p in sorted(folder.iterdir())
            if p.is_symlink() and not p.exists()]


def _refuse_case_twins(folders: list[Path]) -> None:
    """Class folders whose names differ only in case ('A' and 'a') would be merged into one class."""
    seen: dict[str, Path] = {}
    for folder in folders:
        twin = seen.setdefault(folder.name.lower(), folder)
        if twin is not folder:
            raise InputError(f"{folder.parent}: class folders {twin.name!r} and {folder.name!r} differ only in case "
                             f"and would be merged into one class {folder.name.lower()!r}; rename one of them")


def _table(rows: list[dict], root: Path, what: str) -> pd.DataFrame:
    if not rows:
        raise ValueError(f"{root}: no images found for the {what} layout")
    return pd.DataFrame(rows)


SPLIT_NAMES = ("train", "valid", "val", "test", "test_shifted")


def scan_class_folders(root: str | Path, problems: list[dict] | None = None) -> pd.DataFrame:
    """Plain `ROOT/<class>/*` or split folders `ROOT/<split>/<class>/*` (the NEU download).

    Class folder names are lower-cased so NEU's 'Crazing' (train) and 'crazing' (valid) are one
    class; two folders side by side that differ only in case are refused. A split folder named
    'val' is read as 'valid'. An empty class folder and a broken symbolic link (dangling or a
    loop) are errors, or, when a `problems` list is given, are skipped and appended to it as
    {'path', 'problem'}.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data folder not found")
    broken = _broken_links(root)
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    split_dirs = [d for d in subdirs if d.name.lower() in SPLIT_NAMES]
    rows = []
    if split_dirs:
        for split_dir in split_dirs:
            split = "valid" if split_dir.name.lower() == "val" else split_dir.name.lower()
            broken += _broken_links(split_dir)
            class_dirs = sorted(p for p in split_dir.iterdir() if p.is_dir())
            _refuse_case_twins(class_dirs)
            for class_dir in class_dirs:
                broken += _broken_links(class_dir)
                rows += _class_rows(root, class_dir, split, problems)
    else:
        _refuse_case_twins(subdirs)
        for class_dir in subdirs:
            broken += _broken_links(class_dir)
            rows += _class_rows(root, class_dir, None, problems)
    if broken and problems is None:
        raise BadInputError(broken)
    if broken:
        problems += [{**b, "problem": f"{b['problem']}: left out"} for b in broken]
    return _table(rows, root, "class-folder")


_NOT_DATA = ("thumbs.db", "desktop.ini")


def _class_rows(root: Path, class_dir: Path, split: str | None, problems: list[dict] | None = None) -> list[dict]:
    images = _list_images(class_dir)
    others = [p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() not in IMAGE_EXTENSIONS
              and not p.name.startswith(".") and p.name.lower() not in _NOT_DATA]
    if others:  # e.g. .webp or .gif files: say so instead of dropping them unseen
        log(f"{class_dir}: ignoring {len(others)} file(s) without an image extension "
            f"({', '.join(IMAGE_EXTENSIONS)}), e.g. {others[0].name}")
    if not images:
        message = f"class folder holds no images ({', '.join(IMAGE_EXTENSIONS)})"
        if problems is None:
            raise InputError(f"{class_dir}: {message}")
        problems.append({"path": str(class_dir), "problem": f"{message}: class left out"})
        return []
    rows = []
    for p in images:
        row = {"path": p.relative_to(root).as_posix(), "label": class_dir.name.lower()}
        if split:
            row["split"] = split
        rows.append(row)
    return rows


def scan_casting(root: str | Path) -> pd.DataFrame:
    """Casting product layout `ROOT/{train,test}/{def_front,ok_front}/*.jpeg` (a `casting_data/` level is optional)."""
    root = Path(root)
    if (root / "casting_data").is_dir():
        root_inner = root / "casting_data"
    else:
        root_inner = root
    rows = []
    for split in ("train", "test"):
        for label in ("def_front", "ok_front"):
            folder = root_inner / split / label
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder}: missing folder of the casting layout "
                                        "ROOT/{train,test}/{def_front,ok_front}/")
            for p in _list_images(folder):
                rows.append({"path": p.relative_to(root).as_posix(), "label": label, "split": split})
    return _table(rows, root, "casting")


def rle_area(encoded_pixels: str) -> int:
    """Number of pixels in a Kaggle run-length mask 'start length start length ...' (1-indexed)."""
    values = [int(v) for v in str(encoded_pixels).split()]
    if len(values) % 2:
        raise ValueError(f"run-length string has an odd number of values: {encoded_pixels[:40]!r}")
    return int(sum(values[1::2]))


def _pick_label(class_areas: dict[str, int], rule: str) -> str | None:
    """Image-level label from {class: defect area}; None means 'drop this image'."""
    if len(class_areas) == 1:
        return next(iter(class_areas))
    if rule == "largest_area":  # the defect covering most pixels is what an operator sees first
        return max(sorted(class_areas), key=lambda c: class_areas[c])
    if rule == "lowest_class":
        return sorted(class_areas)[0]
    if rule == "drop":
        return None
    raise ValueError(f"unknown multi-label rule {rule!r}; choose from {MULTI_LABEL_RULES}")


KAGGLE_COLUMNS = ("ImageId", "ClassId", "EncodedPixels")


def read_severstal_csv(csv_path: Path) -> tuple[pd.DataFrame, set[str]]:
    """Either Severstal Kaggle annotation file -> (defect rows ImageId, ClassId, EncodedPixels;
    every image name the file lists).

    The current file has one row per (image, defect class). The older one (header
    `ImageId_ClassId,EncodedPixels`) has four rows per image, `<image>_<class>`, with an empty
    EncodedPixels for a class the image lacks; the header tells them apart.
    """
    table = pd.read_csv(csv_path, dtype={"EncodedPixels": str})
    if "ImageId_ClassId" in table.columns and "EncodedPixels" in table.columns:
        parts = table["ImageId_ClassId"].astype(str).str.extract(r"^(.+)_(\d+)$")
        if parts[1].isna().any():
            bad = table["ImageId_ClassId"][parts[1].isna()].iloc[0]
            raise ValueError(f"{csv_path}: ImageId_ClassId {bad!r} is not <image name>_<class number>")
        table = pd.DataFrame({"ImageId": parts[0], "ClassId": parts[1].astype(int),
                              "EncodedPixels": table["EncodedPixels"]})
    missing = set(KAGGLE_COLUMNS) - set(table.columns)
    if missing:
        raise ValueError(f"{csv_path}: missing columns {sorted(missing)} (needs ImageId,ClassId,EncodedPixels "
                         "or the older ImageId_ClassId,EncodedPixels)")
    listed = set(table["ImageId"].astype(str))
    has_pixels = table["EncodedPixels"].fillna("").str.strip() != ""
    return table.loc[has_pixels, list(KAGGLE_COLUMNS)].reset_index(drop=True), listed


def scan_severstal_kaggle(root: str | Path, multi_label_rule: str = "largest_area") -> pd.DataFrame:
    """Severstal Kaggle layout: `ROOT/train.csv` + `ROOT/train_images/`.

    train.csv is either the current `ImageId,ClassId,EncodedPixels` or the older
    `ImageId_ClassId,EncodedPixels` (four rows per image, empty for no defect).
    Label = `defect_<ClassId>`; images without a defect are `no_defect`. Images with several
    classes follow `multi_label_rule`: 'largest_area' (default, the class with most mask
    pixels), 'lowest_class' (smallest ClassId) or 'drop' (leave the image out).
    """
    root = Path(root)
    csv_path, image_dir = root / "train.csv", root / "train_images"
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: Severstal annotation file not found")
    if not image_dir.is_dir():
        raise FileNotFoundError(f"{image_dir}: Severstal image folder not found")
    table, listed = read_severstal_csv(csv_path)
    areas: dict[str, dict[str, int]] = {}
    for i, row in enumerate(table.itertuples(index=False)):
        try:
            area = rle_area(row.EncodedPixels)
        except ValueError as e:
            raise ValueError(f"{csv_path}: defect row {i + 1}: {e}") from None
        per_image = areas.setdefault(row.ImageId, {})
        label = f"defect_{int(row.ClassId)}"
        per_image[label] = per_image.get(label, 0) + area
    images = _list_images(image_dir)
    rows = []
    for p in images:
        label = _pick_label(areas[p.name], multi_label_rule) if p.name in areas else "no_defect"
        if label is not None:
            rows.append({"path": p.relative_to(root).as_posix(), "label": label})
    unknown = sorted(listed - {p.name for p in images})
    if unknown:
        raise FileNotFoundError(f"{csv_path}: names {len(unknown)} images missing from {image_dir}, "
                                f"e.g. {unknown[0]}")
    return _table(rows, root, "Severstal Kaggle")


def decode_bitmap(bitmap: dict) -> tuple[np.ndarray, tuple[int, int]]:
    """A Supervisely `bitmap` geometry -> (bool mask [h, w], origin (x, y) of its top-left pixel).

    `data` is base64 of a zlib-compressed PNG; the mask is its alpha channel (Supervisely
    writes a palette PNG whose transparent index is the background) or, without alpha, its
    first channel; nonzero = defect.
    """
    png = zlib.decompress(base64.b64decode(bitmap["data"]))
    with Image.open(io.BytesIO(png)) as img:
        if "A" in img.getbands() or "transparency" in img.info:
            mask = np.asarray(img.convert("RGBA"))[..., 3] > 0
        else:
            mask = np.asarray(img.convert("RGB") if img.mode not in ("L", "1") else img)
            mask = (mask[..., 0] if mask.ndim == 3 else mask) > 0
    x, y = (int(v) for v in bitmap["origin"])
    return mask, (x, y)


def paint_object(canvas: np.ndarray, obj: dict) -> None:
    """Set the pixels of one Supervisely object (bitmap or polygon geometry) in the bool canvas [H, W]."""
    if "bitmap" in obj:
        mask, (x, y) = decode_bitmap(obj["bitmap"])
        h, w = canvas.shape
        part = mask[:max(0, h - y), :max(0, w - x)]       # a mask reaching past the image edge is cut
        canvas[y:y + part.shape[0], x:x + part.shape[1]] |= part
    elif "points" in obj:
        layer = Image.new("1", (canvas.shape[1], canvas.shape[0]), 0)
        draw = ImageDraw.Draw(layer)
        draw.polygon([tuple(map(float, p)) for p in obj["points"]["exterior"]], fill=1)
        for hole in obj["points"].get("interior", []):
            draw.polygon([tuple(map(float, p)) for p in hole], fill=0)
        canvas |= np.asarray(layer, dtype=bool)
    else:
        raise KeyError(f"object of class {obj.get('classTitle')!r} has neither a bitmap nor polygon points")


def supervisely_class_areas(annotation: dict, image_size: tuple[int, int]) -> dict[str, int]:
    """{classTitle: mask pixels} of one Supervisely annotation; objects of one class are united
    first (as in Kaggle's one mask per class). image_size (height, width) applies when the
    annotation has no `size`."""
    size = annotation.get("size") or {}
    height, width = int(size.get("height", image_size[0])), int(size.get("width", image_size[1]))
    canvases: dict[str, np.ndarray] = {}
    for obj in annotation.get("objects", []):
        name = str(obj["classTitle"])
        paint_object(canvases.setdefault(name, np.zeros((height, width), dtype=bool)), obj)
    return {name: int(canvas.sum()) for name, canvas in canvases.items()}


def scan_severstal_supervisely(root: str | Path, multi_label_rule: str = "largest_area") -> pd.DataFrame:
    """Supervisely/datasetninja export: `ROOT/<split>/img/*.jpg` + `ROOT/<split>/ann/<image name>.json`.

    Each annotation lists `objects` with a `classTitle` and a bitmap (base64 zlib PNG at
    `origin` [x, y]) or polygon geometry; no objects -> `no_defect`. Several classes follow
    `multi_label_rule` with each class's mask pixels as its area, so the labels equal the
    Kaggle layout's for the same masks.
    """
    root = Path(root)
    split_dirs = sorted(p for p in root.iterdir() if (p / "img").is_dir()) if root.is_dir() else []
    if not split_dirs:
        raise FileNotFoundError(f"{root}: no <split>/img folders of the Supervisely layout found")
    rows = []
    for split_dir in split_dirs:
        split = "valid" if split_dir.name.lower() == "val" else split_dir.name.lower()
        for img in _list_images(split_dir / "img"):
            ann_path = split_dir / "ann" / f"{img.name}.json"
            if not ann_path.is_file():
                raise FileNotFoundError(f"{ann_path}: annotation for {img} not found")
            try:
                annotation = json.loads(ann_path.read_text())
                areas = supervisely_class_areas(annotation, _image_height_width(img)) \
                    if annotation.get("objects") else {}
            except (json.JSONDecodeError, KeyError, AttributeError, TypeError, ValueError, zlib.error, OSError) as e:
                raise ValueError(f"{ann_path}: malformed annotation ({type(e).__name__}: {e})") from None
            label = _pick_label(areas, multi_label_rule) if areas else "no_defect"
            if label is not None:
                rows.append({"path": img.relative_to(root).as_posix(), "label": label, "split": split})
    return _table(rows, root, "Severstal Supervisely")


def _image_height_width(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:  # reads the header only
        return img.height, img.width


# ============================================================================ the layouts table

Scan = Callable[[Path, str, "list[dict] | None"], pd.DataFrame]


@dataclass(frozen=True)
class Layout:
    """One `--dataset` name: how its files are read, and the paper's settings for it.

    scan(root, multi_label_rule, problems) -> table (path, label[, split]); skippable layout
    problems go to `problems` when it is a list. augmentation: the `augment.Augmenter` style.
    mean_std: fixed (mean, std) on the [0, 1] scale, each a number or 3 per-channel numbers, or
    None to compute one scalar pair on the train split.
    builtin(per_class) -> (root, split CSV): the data used when no --data_dir is given, or None when the layout needs one.
    valid_share: the share of train carved out as the valid split when the layout has none.
    as_files(data_dir) -> folder: for layouts whose images are not files (CIFAR's pickled
    arrays), writes them once as image files and returns that folder, which then is the data
    root every path is relative to (see `data_root`); None for layouts of image files.
    default_root() -> folder: the data read when no --data_dir is given (an installed package's
    files: ELPV), or None.
    geometry: the default of --geometry (cache.GEOMETRIES or 'auto': crop square images, keep
    other shapes whole or letterboxed, with a warning). grayscale: True = read as grey (one
    stored channel), as the R4VR code does (`convert("L")`); None = grey when every file is.
    """
    name: str
    scan: Scan
    augmentation: str = "neu"
    mean_std: tuple[float, float] | None = None
    builtin: Callable[[int], tuple[Path, Path]] | None = None
    valid_share: float = 0.2
    as_files: Callable[[Path], Path] | None = None
    geometry: str = "crop"
    grayscale: bool | None = None
    default_root: Callable[[], Path] | None = None


LAYOUTS: dict[str, Layout] = {}
DATASETS = LAYOUTS.keys()  # the names in LAYOUTS (a live view), the scripts' --dataset choices


def register_layout(layout: Layout) -> Layout:
    """Add `layout` to LAYOUTS (DATASETS, a view of it, follows). A layout's paper settings (T, the
    model pair, ...) are its row in presets.PRESETS."""
    LAYOUTS[layout.name] = layout
    return layout


def layout_of(dataset: str) -> Layout:
    """The registered layout called `dataset`; an unknown name is an InputError listing the known ones."""
    if dataset not in LAYOUTS:
        raise InputError(f"unknown dataset {dataset!r}; choose from {tuple(LAYOUTS)}")
    return LAYOUTS[dataset]


def _class_folders(root: Path, multi_label_rule: str, problems: list[dict] | None) -> pd.DataFrame:
    return scan_class_folders(root, problems)


def _builtin_synthetic(per_class: int) -> tuple[Path, Path]:
    return generate_synthetic(per_class=per_class, seed=0)


register_layout(Layout("synthetic", _class_folders, builtin=_builtin_synthetic, grayscale=True))
register_layout(Layout("folders", _class_folders, geometry="auto"))  # a user's own images: never cut silently
register_layout(Layout("neu", _class_folders, mean_std=NEU_MEAN_STD, grayscale=True))
register_layout(Layout("casting", lambda root, rule, problems: scan_casting(root)))
# R4VR Severstal: Resize(256) only, so a 1600 x 256 strip stays whole; ImageNet's per-channel statistics
register_layout(Layout("severstal_kaggle", lambda root, rule, problems: scan_severstal_kaggle(root, rule),
                       augmentation="severstal", mean_std=IMAGENET_MEAN_STD, geometry="whole",
                       grayscale=True))
register_layout(Layout("severstal_supervisely", lambda root, rule, problems: scan_severstal_supervisely(root, rule),
                       augmentation="severstal", mean_std=IMAGENET_MEAN_STD, geometry="whole",
                       grayscale=True))
# the python-pickle downloads, written once as PNG files (cifar.py); 10 % of train validates and the
# toolkit's per-channel CIFAR statistics normalise (both the toolkit's)
register_layout(Layout("cifar10", lambda root, rule, problems: scan_cifar_pngs(root), valid_share=0.1,
                       mean_std=CIFAR_MEAN_STD, as_files=partial(write_cifar_pngs, name="cifar10")))
register_layout(Layout("cifar100", lambda root, rule, problems: scan_cifar_pngs(root), valid_share=0.1,
                       mean_std=CIFAR_MEAN_STD, as_files=partial(write_cifar_pngs, name="cifar100")))
# ELPV solar cells (elpv.py): the installed elpv-dataset package, or a --data_dir copy of its data folder; grey
# 300 x 300 squares; its own fixed splits (train/valid/calib/test of the clear cells, `ambiguous` of the unsure ones)
register_layout(Layout("elpv", lambda root, rule, problems: scan_elpv(root), grayscale=True,
                       default_root=installed_elpv_root))


def decode_request(dataset: str, geometry: str = "", base_augmentation: str = "paper") -> dict:
    """How a training script decodes `dataset`: {'geometry', 'channels', 'margin'} for
    `load_image_sets_checked`. geometry: the --geometry value or, when empty, the layout's
    default; channels 1 for a grey layout, else None (found from the files); margin: keep a
    crop's rotation margin when the base augmentation rotates ('paper', or '' = a recipe's)."""
    layout = layout_of(dataset)
    return {"geometry": geometry or layout.geometry, "channels": 1 if layout.grayscale else None,
            "margin": base_augmentation in ("paper", "")}


def checkpoint_canvas(meta: dict) -> Canvas:
    """The canvas a checkpoint's model was trained on, without the rotation margin (what its
    evaluation and deployment decode); a checkpoint from before geometries: 3-channel square crop."""
    return as_canvas(meta["canvas"]).without_margin() if meta.get("canvas") else as_canvas(int(meta["image_size"]))


def augmentation_style(dataset: str) -> str:
    """The `augment.Augmenter` style of a data set ('severstal' for the Severstal layouts, else 'neu')."""
    return layout_of(dataset).augmentation


# ============================================================================ one entry point

def data_root(dataset: str, data_dir: str | Path) -> Path:
    """The folder the table's paths are relative to: `data_dir`, or for a layout of arrays
    (CIFAR) the folder its images were written to as files (written on first use)."""
    layout = layout_of(dataset)
    if not data_dir and layout.default_root is not None:
        return layout.default_root()
    return layout.as_files(Path(data_dir)) if layout.as_files else Path(data_dir)


def scan_dataset(dataset: str, data_dir: str | Path, multi_label_rule: str = "largest_area",
                 problems: list[dict] | None = None) -> pd.DataFrame:
    """Run the adapter for `dataset` on `data_dir` -> table (path, label[, split]), paths
    relative to `data_root(dataset, data_dir)`.

    With a `problems` list, skippable layout problems (an empty class folder) are appended
    to it instead of raised.
    """
    return layout_of(dataset).scan(data_root(dataset, data_dir), multi_label_rule, problems)


def load_split_table(dataset: str = "synthetic", data_dir: str | Path = "", split_csv: str | Path = "",
                     seed: int = 0, per_class: int = 300,
                     multi_label_rule: str = "largest_area",
                     problems: list[dict] | None = None) -> tuple[pd.DataFrame, Path]:
    """Resolve a data set to (table with path,label,split, data root).

    Order of precedence: an explicit `split_csv`; the layout's built-in data (the synthetic
    set) when there is no `data_dir`; the layout's own splits (a missing `valid` split is
    carved from `train`, stratified for `seed`: the layout's `valid_share`, 20 %, CIFAR 10 %);
    otherwise a stratified 60/20/20 split for `seed`.
    """
    layout = layout_of(dataset)
    if layout.builtin is not None and not data_dir:
        root, default_csv = layout.builtin(per_class)
        return read_split_csv(split_csv or default_csv), root
    if not data_dir and layout.default_root is None:
        raise InputError(f"--dataset {dataset} needs --data_dir (the folder holding the images)")
    root = data_root(dataset, data_dir)
    if split_csv:
        return read_split_csv(split_csv), root
    table = layout.scan(root, multi_label_rule, problems)
    if "split" not in table.columns:
        return stratified_split(table, seed=seed), root
    if "valid" not in set(table["split"]):
        train = table[table["split"] == "train"].drop(columns="split")
        carved = stratified_split(train, ratios=(1 - layout.valid_share, layout.valid_share, 0.0), seed=seed)
        table = pd.concat([carved, table[table["split"] != "train"]], ignore_index=True)
    return table, root


# ============================================================================ decoded image sets

@dataclass
class ImageSet:
    """Decoded images of one split.

    images: uint8 [N, C, H, W], what the network sees at test time (C = 1 for grey sources,
    expanded to 3 channels on the device by `augment.to_model_input`); labels: int64 [N].
    source: None, or the stored uint8 [N, C, H + 2m, W + 2m] of which `images` is the centre
    view: a crop geometry's rotation margin m, so that training rotates the image before the
    crop (`batch_for_training`). canvas: how the files were decoded (cache.Canvas), or None.
    """
    images: torch.Tensor
    labels: torch.Tensor
    paths: list[str]
    class_names: list[str]
    name: str = ""
    source: torch.Tensor | None = None
    canvas: Canvas | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_stored(cls, stored: torch.Tensor, canvas: Canvas, labels: torch.Tensor, paths: list[str],
                    class_names: list[str], name: str = "") -> "ImageSet":
        """An ImageSet over decoded images `stored` [N, *canvas.stored_shape]: with a margin m,
        `images` is the centre [N, C, H, W] view of them (no copy) and `source` keeps them whole."""
        m = canvas.margin
        if not m:
            return cls(stored, labels, paths, class_names, name, None, canvas)
        view = stored[:, :, m:m + canvas.height, m:m + canvas.width]
        return cls(view, labels, paths, class_names, name, stored, canvas)

    def subset(self, indices) -> "ImageSet":
        idx = torch.as_tensor(indices, dtype=torch.long)
        paths = [self.paths[i] for i in idx.tolist()]
        if self.source is not None:
            return ImageSet.from_stored(gather_images(self.source, idx), self.canvas, self.labels[idx], paths,
                                        self.class_names, self.name)
        return ImageSet(self.images[idx], self.labels[idx], paths, self.class_names, self.name, None, self.canvas)

    def batch_for_training(self, idx: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(uint8 [B, C, H', W'] of images idx, with the rotation margin when there is one;
        (H, W) the network's input size), for `augment.to_model_input(..., size=(H, W))`."""
        return gather_images(self.images if self.source is None else self.source, idx), \
            tuple(self.images.shape[-2:])


def gather_images(images: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """images[idx] for uint8 [N, C, H, W] and indices [B] -> [B, C, H, W] (a copy).

    On CPU through numpy's take, which copies whole rows and is several times faster than
    torch's advanced indexing of uint8 tensors (and also reads memory-mapped caches).
    """
    if images.device.type != "cpu":
        return images[idx]
    rows = np.take(images.numpy(), np.asarray(idx, dtype=np.int64), axis=0)
    return torch.from_numpy(rows)


def load_image_sets(table: pd.DataFrame, root: str | Path, image_size: int,
                    class_names: list[str] | None = None, *,
                    cache_dir: str | Path | None = None, geometry: "str | Canvas | dict" = "crop",
                    channels: int | None = None, margin: bool = False) -> dict[str, ImageSet]:
    """Decode every split of `table` once -> {split: ImageSet}. Class order: sorted label names.

    Every bad input is found before anything is decoded or trained, and one BadInputError
    lists them all (`load_image_sets_checked` can skip them instead).
    `cache_dir`: memory-mapped cache files there, built once. geometry, channels and margin: as in
    `load_image_sets_checked`.
    """
    return load_image_sets_checked(table, root, image_size, class_names, cache_dir=cache_dir,
                                   geometry=geometry, channels=channels, margin=margin)[0]


def plan_table_canvas(table: pd.DataFrame, root: str | Path, image_size: int, geometry: str = "crop",
                      channels: int | None = None, margin: bool = False) -> Canvas:
    """The canvas of every split of `table` (one for all, so train and test match), planned from
    the files' headers (`cache.plan_canvas`); its warnings (a crop cutting non-square images,
    letterboxed odd shapes) are logged."""
    headers = image_headers([Path(root) / p for p in table["path"]])
    canvas, warnings = plan_canvas(headers, image_size, geometry, channels, margin)
    for warning in warnings:
        log(f"warning: {warning}")
    return canvas


def load_image_sets_checked(table: pd.DataFrame, root: str | Path, image_size: int,
                            class_names: list[str] | None = None, *, skip_bad: bool = False,
                            cache_dir: str | Path | None = None, source: str | Path = "",
                            splits: tuple[str, ...] | None = None, geometry: "str | Canvas | dict" = "crop",
                            channels: int | None = None, margin: bool = False
                            ) -> tuple[dict[str, ImageSet], list[dict]]:
    """Check `table`, then decode every split once -> ({split: ImageSet}, problems).

    Problems are `check_split_table`'s (missing files, unknown labels, ...) plus files that
    cannot be decoded (unreadable, empty, truncated, corrupt, wrong mode), each a dict
    {'path', 'problem'}. skip_bad=False: a BadInputError naming them all (table problems are
    raised before decoding starts); skip_bad=True: they are left out and returned.
    cache_dir: each split's uint8 images live in a memory-mapped file there (`cached_images`),
    built once and reused by later runs, instead of in RAM.
    geometry: a cache.Canvas (or its dict, e.g. a checkpoint's: decoded exactly so), or crop /
    whole / pad / auto, planned over all splits at `image_size` (`plan_table_canvas`; see
    `geometry_request` for a layout's default); channels 1 | 3 | None (= 1 when every file is
    grey); margin: keep a crop's rotation margin (training with rotation).
    """
    root = Path(root)
    table, problems = check_split_table(table, root, source, class_names, splits)
    if problems and not skip_bad:
        raise BadInputError(problems)
    class_names = list(class_names) if class_names else sorted(table["label"].unique())
    canvas = plan_table_canvas(table, root, image_size, geometry, channels, margin) if isinstance(geometry, str) \
        else as_canvas(geometry)
    warn_slivers([root / p for p in table["path"]], canvas.width / canvas.height)
    index = {c: i for i, c in enumerate(class_names)}
    sets, decode_problems = {}, []
    for split in table["split"].unique():
        part = table[table["split"] == split]
        paths = part["path"].tolist()
        if cache_dir:
            images, kept, failures = cached_images(paths, root, canvas, cache_dir, name=split)
        else:
            images, kept, failures = decode_images_skipping_bad([root / p for p in paths], canvas,
                                                                desc=f"decoding {split}")
        decode_problems += [{"path": str(root / paths[i]), "problem": m} for i, m in sorted(failures.items())]
        all_labels = torch.tensor([index[c] for c in part["label"]], dtype=torch.long)
        labels = all_labels[torch.as_tensor(kept, dtype=torch.long)]
        sets[split] = ImageSet.from_stored(images, canvas, labels, [paths[i] for i in kept], class_names, split)
    if decode_problems and not skip_bad:
        raise BadInputError(decode_problems)
    problems += decode_problems
    if problems:
        log(f"skipped {len(problems)} bad input(s), e.g. {problems[0]['path']}: {problems[0]['problem']}")
    if "train" in sets:
        empty = [c for i, c in enumerate(class_names) if not (sets["train"].labels == i).any()]
        if empty:
            log(f"warning: classes {empty} have no training images left")
    return sets, problems


def normalisation_for(dataset: str, train: ImageSet) -> tuple:
    """(mean, std) on the [0, 1] scale: the layout's fixed values (the paper's NEU constants,
    ImageNet's per-channel (3,) pairs for Severstal, the toolkit's per-channel CIFAR pair for
    cifar10/cifar100), else one scalar pair computed on the train split."""
    return layout_of(dataset).mean_std or image_mean_std(train.images)
