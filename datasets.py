"""Data sets: adapters for the real layouts, the built-in synthetic defect set, split
tables, the decoded uint8 image cache and the paper's batched augmentations.

Every adapter returns a split table: a pandas DataFrame with columns
`path` (relative to the data root), `label` (class name) and, when the layout
defines splits, `split`. `load_split_table` turns any data set into a table with
a `split` column (train/valid/test[/test_shifted]), and `load_image_sets` decodes
it once into `ImageSet`s holding uint8 tensors `[N, 3, S, S]`.
"""
from __future__ import annotations

import concurrent.futures as futures
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, UnidentifiedImageError
from tqdm import tqdm

from utils import InputError, atomic_write_csv, atomic_write_json, log, progress_enabled, repo_root

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DATASETS = ("synthetic", "folders", "neu", "casting", "severstal_kaggle", "severstal_supervisely")
SYNTHETIC_CLASSES = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")
SEVERSTAL_CLASSES = ("no_defect", "defect_1", "defect_2", "defect_3", "defect_4")
MULTI_LABEL_RULES = ("largest_area", "lowest_class", "drop")
NEU_MEAN_STD = (0.095, 0.149)


# ============================================================================ image files

# Modes that convert to 8-bit RGB without losing or inventing grey levels (alpha is dropped).
ACCEPTED_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX")


def image_mode_problem(mode: str) -> str | None:
    """Why a PIL image mode cannot go into the 8-bit RGB cache unchanged, or None when it can.

    'Wrong mode' means a conversion that would silently change the data: 16/32-bit and float
    images (PIL clips every value above 255, so a 16-bit frame turns almost white) and
    colour spaces that need a profile (CMYK, LAB, HSV, YCbCr).
    """
    if mode in ACCEPTED_MODES:
        return None
    if mode.startswith("I;16") or mode == "I":
        bits = "16-bit" if mode.startswith("I;16") else "32-bit integer"
        return (f"wrong image mode: {bits} grayscale (mode {mode}); the 8-bit cache would clip every value "
                "above 255. Convert it to 8 bit first (scale by 255 / the sensor's maximum)")
    if mode == "F":
        return ("wrong image mode: 32-bit float (mode F); the 8-bit cache would clip it to 0-255. "
                "Convert it to 8 bit first")
    if mode == "CMYK":
        return ("wrong image mode: CMYK (a print colour space); converting it without its colour profile "
                "changes the grey levels. Save it as grayscale or RGB")
    return f"wrong image mode: {mode}; use 8-bit grayscale or RGB (modes {', '.join(ACCEPTED_MODES)})"


def read_image(path: str | Path) -> Image.Image:
    """Open an image file as 3-channel RGB (grayscale is replicated); errors name the file.

    Raises FileNotFoundError for a missing file and InputError (a ValueError) for an
    unreadable, empty, truncated or corrupt file and for a wrong mode (`image_mode_problem`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file not found")
    try:
        with Image.open(path) as img:
            problem = image_mode_problem(img.mode)
            if problem is None:
                img.load()
                return img.convert("RGB")
    except PermissionError:
        raise InputError(f"{path}: cannot open the file (permission denied)") from None
    except UnidentifiedImageError:
        what = "empty file (0 bytes)" if path.stat().st_size == 0 else \
            "not an image (unknown format or a corrupt header)"
        raise InputError(f"{path}: {what}") from None
    except Image.DecompressionBombError as e:
        raise InputError(f"{path}: image too large to decode safely ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InputError(f"{path}: cannot decode image: the file is truncated or corrupt "
                         f"({type(e).__name__}: {e})") from None
    raise InputError(f"{path}: {problem}")


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _table(rows: list[dict], root: Path, what: str) -> pd.DataFrame:
    if not rows:
        raise ValueError(f"{root}: no images found for the {what} layout")
    return pd.DataFrame(rows)


# ============================================================================ adapters

SPLIT_NAMES = ("train", "valid", "val", "test", "test_shifted")


def scan_class_folders(root: str | Path, problems: list[dict] | None = None) -> pd.DataFrame:
    """Plain `ROOT/<class>/*` or split folders `ROOT/<split>/<class>/*` (the NEU download).

    Class folder names are lower-cased so NEU's 'Crazing' and 'crazing' are one class;
    a split folder named 'val' is read as 'valid'. An empty class folder is an error, or,
    when a `problems` list is given, is skipped and appended to it as {'path', 'problem'}.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data folder not found")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    split_dirs = [d for d in subdirs if d.name.lower() in SPLIT_NAMES]
    rows = []
    if split_dirs:
        for split_dir in split_dirs:
            split = "valid" if split_dir.name.lower() == "val" else split_dir.name.lower()
            for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
                rows += _class_rows(root, class_dir, split, problems)
    else:
        for class_dir in subdirs:
            rows += _class_rows(root, class_dir, None, problems)
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


def rle_decode(encoded_pixels: str, height: int = 256, width: int = 1600) -> np.ndarray:
    """Kaggle run-length string -> bool mask [height, width]; pixels run top to bottom, then left to right."""
    mask = np.zeros(height * width, dtype=bool)
    values = [int(v) for v in str(encoded_pixels).split()]
    for start, length in zip(values[0::2], values[1::2]):
        mask[start - 1:start - 1 + length] = True
    return mask.reshape(width, height).T


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


def scan_severstal_kaggle(root: str | Path, multi_label_rule: str = "largest_area") -> pd.DataFrame:
    """Severstal Kaggle layout: `ROOT/train.csv` (ImageId, ClassId, EncodedPixels) + `ROOT/train_images/`.

    Label = `defect_<ClassId>`; images without a row are `no_defect`. Images with several
    classes follow `multi_label_rule`: 'largest_area' (default, the class with most mask
    pixels), 'lowest_class' (smallest ClassId) or 'drop' (leave the image out).
    """
    root = Path(root)
    csv_path, image_dir = root / "train.csv", root / "train_images"
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: Severstal annotation file not found")
    if not image_dir.is_dir():
        raise FileNotFoundError(f"{image_dir}: Severstal image folder not found")
    table = pd.read_csv(csv_path)
    missing = {"ImageId", "ClassId", "EncodedPixels"} - set(table.columns)
    if missing:
        raise ValueError(f"{csv_path}: missing columns {sorted(missing)}")
    areas: dict[str, dict[str, int]] = {}
    for i, row in enumerate(table.itertuples(index=False)):
        try:
            area = rle_area(row.EncodedPixels) if isinstance(row.EncodedPixels, str) else 0
        except ValueError as e:
            raise ValueError(f"{csv_path}: row {i + 2}: {e}") from None
        per_image = areas.setdefault(row.ImageId, {})
        label = f"defect_{int(row.ClassId)}"
        per_image[label] = per_image.get(label, 0) + area
    rows = []
    for p in _list_images(image_dir):
        label = _pick_label(areas[p.name], multi_label_rule) if p.name in areas else "no_defect"
        if label is not None:
            rows.append({"path": p.relative_to(root).as_posix(), "label": label})
    unknown = sorted(set(areas) - {p.name for p in _list_images(image_dir)})
    if unknown:
        raise FileNotFoundError(f"{csv_path}: names {len(unknown)} images missing from {image_dir}, "
                                f"e.g. {unknown[0]}")
    return _table(rows, root, "Severstal Kaggle")


def scan_severstal_supervisely(root: str | Path, multi_label_rule: str = "largest_area") -> pd.DataFrame:
    """Supervisely/datasetninja export: `ROOT/<split>/img/*.jpg` + `ROOT/<split>/ann/<image name>.json`.

    Each annotation lists `objects` with a `classTitle`; no objects -> `no_defect`. Several
    classes follow `multi_label_rule` with the number of objects as the area.
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
                objects = json.loads(ann_path.read_text()).get("objects", [])
                counts: dict[str, int] = {}
                for obj in objects:
                    counts[str(obj["classTitle"])] = counts.get(str(obj["classTitle"]), 0) + 1
            except (json.JSONDecodeError, KeyError, AttributeError, TypeError) as e:
                raise ValueError(f"{ann_path}: malformed annotation ({type(e).__name__}: {e})") from None
            label = _pick_label(counts, multi_label_rule) if counts else "no_defect"
            if label is not None:
                rows.append({"path": img.relative_to(root).as_posix(), "label": label, "split": split})
    return _table(rows, root, "Severstal Supervisely")


# ============================================================================ splits

def stratified_split(table: pd.DataFrame, ratios=(0.6, 0.2, 0.2), seed: int = 0,
                     names=("train", "valid", "test"), cap_per_class: int | None = None) -> pd.DataFrame:
    """Assign a `split` column per class by `ratios` (deterministic for `seed`).

    Each class is shuffled with its own seeded permutation, optionally capped at
    `cap_per_class` images, then cut by cumulative ratios (rounding to nearest).
    """
    if abs(sum(ratios) - 1.0) > 1e-6 or any(r < 0 for r in ratios):
        raise ValueError(f"split ratios must be non-negative and sum to 1, got {ratios}")
    out = []
    rng = np.random.default_rng(seed)
    for label in sorted(table["label"].unique()):
        group = table[table["label"] == label].sort_values("path").reset_index(drop=True)
        order = rng.permutation(len(group))
        if cap_per_class is not None:
            order = order[:cap_per_class]
        group = group.iloc[order].copy()
        cuts = np.round(np.cumsum(ratios) * len(group)).astype(int)
        split = np.empty(len(group), dtype=object)
        start = 0
        for name, stop in zip(names, cuts):
            split[start:stop] = name
            start = stop
        group["split"] = split
        out.append(group)
    return pd.concat(out, ignore_index=True)[["path", "label", "split"]]


def file_hash(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def check_no_cross_split_duplicates(table: pd.DataFrame, root: str | Path) -> None:
    """Raise if two files with identical bytes sit in different splits (test leakage)."""
    root = Path(root)
    seen: dict[str, tuple[str, str]] = {}
    for row in table.itertuples(index=False):
        digest = file_hash(root / row.path)
        if digest in seen and seen[digest][1] != row.split:
            raise ValueError(f"identical images across splits: {seen[digest][0]} ({seen[digest][1]}) "
                             f"and {row.path} ({row.split}); remove one before splitting")
        seen.setdefault(digest, (row.path, row.split))


def read_split_csv(path: str | Path) -> pd.DataFrame:
    """Read a `path,label,split` CSV; errors name the file.

    Surrounding spaces are stripped (a label 'crazing ' would otherwise be a class of its
    own) and split 'val' is read as 'valid'. The index is the CSV row minus 2 (header, 1-based).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split CSV not found")
    try:
        table = pd.read_csv(path, dtype=str, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a readable CSV ({type(e).__name__}: {str(e).strip()})") from None
    missing = {"path", "label", "split"} - set(table.columns)
    if missing:
        raise InputError(f"{path}: split CSV lacks columns {sorted(missing)} (needs path,label,split)")
    table = table[["path", "label", "split"]].copy()
    for col in table.columns:
        table[col] = table[col].str.strip()
    table.loc[table["split"] == "val", "split"] = "valid"
    return table


# ============================================================================ synthetic data

def _steel_background(rng: np.random.Generator, size: int, gradient: float) -> np.ndarray:
    """Grey steel texture in [0, 1]: level + rolling streaks + low-frequency mottling + noise + ramp."""
    level = rng.uniform(0.35, 0.6)
    streaks = np.repeat(rng.normal(0, 0.025, (size, 1)), size, axis=1)  # rows = rolling direction
    coarse = rng.normal(0, 1, (size // 25 + 2, size // 25 + 2))
    mottling = np.array(Image.fromarray(coarse.astype(np.float32)).resize((size, size), Image.BICUBIC))
    noise = rng.normal(0, rng.uniform(0.02, 0.06), (size, size))
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
    ramp = (np.cos(angle) * xx + np.sin(angle) * yy) * gradient
    return level + streaks + 0.03 * mottling + noise + ramp


def _draw_defect(name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """A signed defect layer [size, size] (negative = darker); contrast varies so some are faint."""
    layer = Image.new("F", (size, size), 0.0)
    draw = ImageDraw.Draw(layer)
    contrast = rng.uniform(0.12, 0.45)

    def rand_pt():
        return tuple(rng.uniform(0, size, 2))

    if name == "crazing":  # fine network of short cracks in many directions
        for _ in range(rng.integers(25, 60)):
            x, y = rand_pt()
            for _ in range(rng.integers(2, 5)):
                a = rng.uniform(0, 2 * math.pi)
                length = rng.uniform(8, 22)
                nx, ny = x + length * math.cos(a), y + length * math.sin(a)
                draw.line([x, y, nx, ny], fill=-contrast, width=3)
                x, y = nx, ny
    elif name == "inclusion":  # a few dark elongated spots along the rolling direction
        for _ in range(rng.integers(1, 5)):
            x, y = rand_pt()
            w, h = rng.uniform(20, 60), rng.uniform(5, 11)
            draw.ellipse([x - w / 2, y - h / 2, x + w / 2, y + h / 2], fill=-contrast * 1.3)
    elif name == "patches":  # irregular dark or bright blotches
        sign = rng.choice([-1.0, 1.0])
        for _ in range(rng.integers(1, 4)):
            cx, cy = rand_pt()
            r = rng.uniform(12, 35)
            angles = np.sort(rng.uniform(0, 2 * math.pi, 9))
            radii = r * rng.uniform(0.5, 1.2, 9)
            draw.polygon([(cx + q * math.cos(a), cy + q * math.sin(a)) for a, q in zip(angles, radii)],
                         fill=sign * contrast)
        # soft edges: mode-F images cannot be Gaussian-blurred in PIL, so down- and up-sample
        layer = layer.resize((size // 6, size // 6), Image.BILINEAR).resize((size, size), Image.BICUBIC)
    elif name == "pitted_surface":  # many small pits
        for _ in range(rng.integers(25, 70)):
            x, y = rand_pt()
            r = rng.uniform(2.5, 4.5)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=-contrast * 1.2)
    elif name == "rolled-in_scale":  # scattered flakes stretched along the rolling direction
        for _ in range(rng.integers(8, 25)):
            x, y = rand_pt()
            w, h = rng.uniform(10, 24), rng.uniform(4, 8)
            pts = [(x + rng.uniform(-w, w) / 2, y + rng.uniform(-h, h) / 2) for _ in range(5)]
            draw.polygon(pts, fill=-contrast * rng.uniform(0.6, 1.3))
    elif name == "scratches":  # long thin straight or curved lines
        for _ in range(rng.integers(1, 4)):
            x, y = rand_pt()
            a = rng.uniform(0, 2 * math.pi)
            bend = rng.uniform(-0.03, 0.03)
            pts = []
            for _ in range(int(rng.uniform(60, 180) / 4)):
                pts.append((x, y))
                x, y, a = x + 4 * math.cos(a), y + 4 * math.sin(a), a + bend
            draw.line(pts, fill=-contrast, width=int(rng.integers(3, 6)))
    else:
        raise ValueError(f"unknown synthetic class {name!r}")
    return np.asarray(layer, dtype=np.float32)


def render_synthetic_image(label: str, seed: int, size: int = 200, shifted: bool = False) -> np.ndarray:
    """One synthetic defect image, uint8 [size, size], fully determined by (label, seed, shifted).

    The shifted variant has a strong illumination ramp (0.3-0.7 instead of 0-0.15) and is
    rotated by up to 45 degrees, which the training images never are.
    """
    rng = np.random.default_rng(seed)
    pad = int(size * 0.45) if shifted else 0  # render larger so a rotation leaves no empty corners
    canvas = size + 2 * pad
    image = _steel_background(rng, canvas, 0.0) + _draw_defect(label, rng, canvas)
    if shifted:
        rotated = Image.fromarray(image.astype(np.float32)).rotate(rng.uniform(-45, 45), Image.BILINEAR)
        image = np.asarray(rotated)[pad:pad + size, pad:pad + size]
    gradient = rng.uniform(0.3, 0.7) if shifted else rng.uniform(0.0, 0.15)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
    image = image + (np.cos(angle) * xx + np.sin(angle) * yy) * gradient
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def default_synthetic_dir() -> Path:
    return repo_root() / "data" / "synthetic"


def generate_synthetic(root: str | Path | None = None, per_class: int = 300, seed: int = 0,
                       size: int = 200, shifted_per_class: int | None = None,
                       split_csv: str | Path | None = None) -> tuple[Path, Path]:
    """Write the built-in defect set as PNGs plus its split CSV; reuse it when already there.

    Layout: `root/<class>/<class>_<i>.png` (split 60/20/20 into train/valid/test) and
    `root/shifted/<class>/*.png` (split `test_shifted`, `per_class // 3` per class by default).
    The split CSV goes to `data_splits/synthetic_n<per_class>_s<seed>.csv`.
    Returns (root, split_csv_path).
    """
    root = Path(root) if root else default_synthetic_dir() / f"n{per_class}_s{seed}_px{size}"
    shifted_per_class = per_class // 3 if shifted_per_class is None else shifted_per_class
    split_csv = Path(split_csv) if split_csv else repo_root() / "data_splits" / f"synthetic_n{per_class}_s{seed}_px{size}.csv"
    done_marker = root / ".complete"
    if done_marker.is_file() and split_csv.is_file():
        return root, split_csv
    jobs = []
    for c, label in enumerate(SYNTHETIC_CLASSES):
        for i in range(per_class):
            jobs.append((root / label / f"{label}_{i:04d}.png", label, seed * 1_000_003 + c * 10_007 + i, False))
        for i in range(shifted_per_class):
            jobs.append((root / "shifted" / label / f"{label}_{i:04d}.png", label,
                         seed * 1_000_003 + c * 10_007 + 5_000 + i, True))

    def work(job):
        path, label, image_seed, shifted = job
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(render_synthetic_image(label, image_seed, size, shifted)).save(path)

    with futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(tqdm(pool.map(work, jobs), total=len(jobs), desc="generating synthetic defects",
                  disable=not progress_enabled(), leave=False))
    main = pd.DataFrame([{"path": j[0].relative_to(root).as_posix(), "label": j[1]} for j in jobs if not j[3]])
    shifted = pd.DataFrame([{"path": j[0].relative_to(root).as_posix(), "label": j[1], "split": "test_shifted"}
                            for j in jobs if j[3]])
    table = pd.concat([stratified_split(main, seed=seed), shifted], ignore_index=True)
    atomic_write_csv(split_csv, table)
    done_marker.write_text("ok\n")
    log(f"built-in synthetic data: {len(table)} images in {root}, splits in {split_csv}")
    return root, split_csv


# ============================================================================ one entry point

@dataclass
class DataSpec:
    """Which data to load; the fields every script's Config shares."""
    dataset: str = "synthetic"
    data_dir: str = ""           # empty: the built-in synthetic data (generated on first use)
    split_csv: str = ""          # empty: the layout's own splits, else a stratified 60/20/20 split
    per_class: int = 300         # synthetic only
    multi_label_rule: str = "largest_area"
    seed: int = 0


def scan_dataset(dataset: str, data_dir: str | Path, multi_label_rule: str = "largest_area",
                 problems: list[dict] | None = None) -> pd.DataFrame:
    """Run the adapter for `dataset` on `data_dir` -> table (path, label[, split]).

    With a `problems` list, skippable layout problems (an empty class folder) are appended
    to it instead of raised.
    """
    if dataset in ("folders", "neu", "synthetic"):
        return scan_class_folders(data_dir, problems)
    if dataset == "casting":
        return scan_casting(data_dir)
    if dataset == "severstal_kaggle":
        return scan_severstal_kaggle(data_dir, multi_label_rule)
    if dataset == "severstal_supervisely":
        return scan_severstal_supervisely(data_dir, multi_label_rule)
    raise ValueError(f"unknown dataset {dataset!r}; choose from {DATASETS}")


def load_split_table(dataset: str = "synthetic", data_dir: str | Path = "", split_csv: str | Path = "",
                     seed: int = 0, per_class: int = 300,
                     multi_label_rule: str = "largest_area",
                     problems: list[dict] | None = None) -> tuple[pd.DataFrame, Path]:
    """Resolve a data set to (table with path,label,split, data root).

    Order of precedence: an explicit `split_csv`; the built-in synthetic set; the layout's
    own splits (a missing `valid` split is carved from `train`, 20 %); otherwise a stratified
    60/20/20 split for `seed`.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {DATASETS}")
    if dataset == "synthetic" and not data_dir:
        root, default_csv = generate_synthetic(per_class=per_class, seed=0)
        return read_split_csv(split_csv or default_csv), root
    if not data_dir:
        raise ValueError(f"dataset {dataset!r} needs --data_dir")
    root = Path(data_dir)
    if split_csv:
        return read_split_csv(split_csv), root
    table = scan_dataset(dataset, root, multi_label_rule, problems)
    if "split" not in table.columns:
        return stratified_split(table, seed=seed), root
    if "valid" not in set(table["split"]):
        train = table[table["split"] == "train"].drop(columns="split")
        carved = stratified_split(train, ratios=(0.8, 0.2, 0.0), seed=seed)
        table = pd.concat([carved, table[table["split"] != "train"]], ignore_index=True)
    return table, root


# ============================================================================ image cache

@dataclass
class ImageSet:
    """Decoded images of one split. images: uint8 [N, 3, S, S]; labels: int64 [N]."""
    images: torch.Tensor
    labels: torch.Tensor
    paths: list[str]
    class_names: list[str]
    name: str = ""

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices) -> "ImageSet":
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageSet(self.images[idx], self.labels[idx], [self.paths[i] for i in idx.tolist()],
                        self.class_names, self.name)


def gather_images(images: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """images[idx] for uint8 [N, 3, S, S] and indices [B] -> [B, 3, S, S] (a copy).

    On CPU through numpy's take, which copies whole rows and is several times faster than
    torch's advanced indexing of uint8 tensors (and also reads memory-mapped caches).
    """
    if images.device.type != "cpu":
        return images[idx]
    rows = np.take(images.numpy(), np.asarray(idx, dtype=np.int64), axis=0)
    return torch.from_numpy(rows)


def resize_size_for(image_size: int) -> int:
    """The paper resizes to 256 and crops 224; keep that 256/224 ratio at any size."""
    return int(round(image_size * 256 / 224))


def decode_for_cache(path: str | Path, image_size: int) -> torch.Tensor:
    """File -> uint8 [3, S, S]: shorter side resized to 256/224 * S, centre crop S."""
    img = read_image(path)
    resize = resize_size_for(image_size)
    w, h = img.size
    scale = resize / min(w, h)
    img = img.resize((max(resize, round(w * scale)), max(resize, round(h * scale))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - image_size) // 2, (h - image_size) // 2
    img = img.crop((left, top, left + image_size, top + image_size))
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


def _decode_into(out: torch.Tensor, paths: list[Path], image_size: int, desc: str) -> dict[int, str]:
    """Decode files in parallel threads into out[i] (uint8 [N, 3, S, S], in RAM or memory-mapped).

    Returns {index: problem} for the files that could not be decoded (their slots stay as they were).
    """
    failures: dict[int, str] = {}

    def work(i):
        try:
            out[i] = decode_for_cache(paths[i], image_size)
        except (InputError, FileNotFoundError) as e:
            text = str(e)
            prefix = f"{paths[i]}: "
            failures[i] = text[len(prefix):] if text.startswith(prefix) else text

    with futures.ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 2)) as pool:
        list(tqdm(pool.map(work, range(len(paths))), total=len(paths), desc=desc,
                  disable=not progress_enabled() or len(paths) < 200, leave=False))
    return failures


def decode_images(paths: list[Path], image_size: int, desc: str = "decoding images") -> torch.Tensor:
    """Decode files in parallel threads into uint8 [N, 3, S, S]; a BadInputError lists every file that fails."""
    out = torch.empty((len(paths), 3, image_size, image_size), dtype=torch.uint8)
    failures = _decode_into(out, paths, image_size, desc)
    if failures:
        raise BadInputError([{"path": str(paths[i]), "problem": m} for i, m in sorted(failures.items())])
    return out


def decode_images_checked(paths: list[Path], image_size: int, desc: str = "decoding images"
                          ) -> tuple[torch.Tensor, list[int], dict[int, str]]:
    """Decode into RAM, leaving out what fails -> (uint8 [K, 3, S, S], kept indices [K], {index: problem})."""
    out = torch.empty((len(paths), 3, image_size, image_size), dtype=torch.uint8)
    failures = _decode_into(out, paths, image_size, desc)
    kept = [i for i in range(len(paths)) if i not in failures]
    if failures:
        out = out[torch.as_tensor(kept, dtype=torch.long)]
    return out, kept, failures


def load_image_sets(table: pd.DataFrame, root: str | Path, image_size: int,
                    class_names: list[str] | None = None, *, skip_bad: bool = False,
                    cache_dir: str | Path | None = None,
                    problems: list[dict] | None = None) -> dict[str, ImageSet]:
    """Decode every split of `table` once -> {split: ImageSet}. Class order: sorted label names.

    Every bad input is found before anything trains (see `load_image_sets_checked`): by
    default one BadInputError lists them all; `skip_bad=True` leaves them out (appended to
    `problems` when given). `cache_dir`: memory-mapped cache files there, built once.
    """
    sets, found = load_image_sets_checked(table, root, image_size, class_names, skip_bad=skip_bad,
                                          cache_dir=cache_dir)
    if problems is not None:
        problems.extend(found)
    return sets


def load_image_sets_checked(table: pd.DataFrame, root: str | Path, image_size: int,
                            class_names: list[str] | None = None, *, skip_bad: bool = False,
                            cache_dir: str | Path | None = None, source: str | Path = "",
                            splits: tuple[str, ...] | None = None) -> tuple[dict[str, ImageSet], list[dict]]:
    """Check `table`, then decode every split once -> ({split: ImageSet}, problems).

    Problems are `check_split_table`'s (missing files, unknown labels, ...) plus files that
    cannot be decoded (unreadable, empty, truncated, corrupt, wrong mode), each a dict
    {'path', 'problem'}. skip_bad=False: a BadInputError naming them all (table problems are
    raised before decoding starts); skip_bad=True: they are left out and returned.
    cache_dir: each split's uint8 images live in a memory-mapped file there (`cached_images`),
    built once and reused by later runs, instead of in RAM.
    """
    root = Path(root)
    table, problems = check_split_table(table, root, source, class_names, splits)
    if problems and not skip_bad:
        raise BadInputError(problems)
    class_names = list(class_names) if class_names else sorted(table["label"].unique())
    index = {c: i for i, c in enumerate(class_names)}
    sets, decode_problems = {}, []
    for split in table["split"].unique():
        part = table[table["split"] == split]
        paths = part["path"].tolist()
        if cache_dir:
            images, kept, failures = cached_images(paths, root, image_size, cache_dir, name=split)
        else:
            images, kept, failures = decode_images_checked([root / p for p in paths], image_size,
                                                           desc=f"decoding {split}")
        decode_problems += [{"path": str(root / paths[i]), "problem": m} for i, m in sorted(failures.items())]
        labels = torch.tensor([index[c] for c in part["label"]], dtype=torch.long)[torch.as_tensor(kept, dtype=torch.long)]
        sets[split] = ImageSet(images, labels, [paths[i] for i in kept], class_names, split)
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


# ============================================================================ input checks

class BadInputError(InputError):
    """One or more bad inputs, all found before training; `.problems` lists {'path', 'problem'}."""

    def __init__(self, problems: list[dict], shown: int = 20):
        self.problems = list(problems)
        lines = [f"{p['path']}: {p['problem']}" for p in self.problems[:shown]]
        if len(self.problems) > shown:
            lines.append(f"... and {len(self.problems) - shown} more")
        hint = "(fix or remove them, or skip them with --skip_bad_images True)"
        if len(self.problems) == 1:
            message = f"{lines[0]} {hint}"
        else:
            message = f"{len(self.problems)} bad inputs {hint}:\n  " + "\n  ".join(lines)
        super().__init__(message)


def split_name_ok(name: str) -> bool:
    """The split names the scripts read: train, valid, test and test_<anything> (e.g. test_shifted)."""
    return name in ("train", "valid", "test") or name.startswith("test_")


def check_split_table(table: pd.DataFrame, root: str | Path, source: str | Path = "",
                      class_names: list[str] | None = None, splits=None) -> tuple[pd.DataFrame, list[dict]]:
    """Find, without decoding, rows that would break training or silently distort it.

    A problem is an empty path, label or split, a file that does not exist, a path listed in
    two different splits (test leakage), a split name rejected by `splits` (a tuple of names
    or a predicate; None accepts any), and an unknown label: outside `class_names` when
    given, else a label with no image in the train split (the model could never predict it).
    `source` (the split CSV) is named in the messages, with CSV row numbers.
    Returns (table without the problem rows, [{'path', 'problem'}]).
    """
    root = Path(root)
    csv_rows = str(source).lower().endswith(".csv")
    problems, bad = [], set()

    def row_of(idx) -> str:
        return f"{source} row {idx + 2}" if csv_rows and isinstance(idx, (int, np.integer)) else str(source)

    def flag(idx, path, text):
        bad.add(idx)
        if isinstance(path, str) and path:
            where, text = str(root / path), f"{text} (named in {row_of(idx)})" if source else text
        else:
            where = row_of(idx) if source else f"table row {idx}"
        problems.append({"path": where, "problem": text})

    if splits is not None and not callable(splits):
        allowed = tuple(splits)
        splits = lambda name: name in allowed  # noqa: E731
    first_split: dict[str, str] = {}
    for idx, path, label, split in zip(table.index, table["path"], table["label"], table["split"]):
        empty = [c for c, v in (("path", path), ("label", label), ("split", split))
                 if not isinstance(v, str) or not v]
        if empty:
            flag(idx, path, f"empty {' and '.join(empty)}")
            continue
        if splits is not None and not splits(split):
            flag(idx, path, f"unknown split {split!r}; use train, valid, test or test_<name>")
            continue
        if not (root / path).is_file():
            flag(idx, path, "file not found")
            continue
        if first_split.setdefault(path, split) != split:
            flag(idx, path, f"listed in split {first_split[path]!r} and again in {split!r}")
    keep = table.loc[[i for i in table.index if i not in bad]]
    if class_names is not None:
        known, why = set(class_names), f"not one of the model's classes {list(class_names)}"
    elif "train" in set(keep["split"]):
        known, why = set(keep.loc[keep["split"] == "train", "label"]), "no image of this label in the train split"
    else:
        known, why = set(keep["label"]), ""
    for idx, path, label in zip(keep.index, keep["path"], keep["label"]):
        if label not in known:
            flag(idx, path, f"unknown label {label!r}: {why}")
    keep = table.loc[[i for i in table.index if i not in bad]]
    return keep, problems


# ============================================================================ memory-mapped cache

CACHE_VERSION = 1  # bump when decode_for_cache changes, so old cache files are not reused


def _cache_key(root: Path, paths: list[str], image_size: int) -> str:
    """sha1 of the data root, the ordered list of paths and the image size (20 hex digits)."""
    h = hashlib.sha1(json.dumps({"version": CACHE_VERSION, "root": str(root.resolve()),
                                 "image_size": image_size}).encode())
    for p in paths:
        h.update(p.encode() + b"\0")
    return h.hexdigest()[:20]


def _files_signature(files: list[Path]) -> str:
    """sha1 over every file's size and modification time: changes when an image is replaced."""
    h = hashlib.sha1()
    for f in files:
        try:
            st = f.stat()
            h.update(f"{st.st_size}:{st.st_mtime_ns};".encode())
        except OSError:
            h.update(b"missing;")
    return h.hexdigest()


def _open_mapped(path: Path, count: int, image_size: int) -> torch.Tensor:
    """A read-only view uint8 [count, 3, S, S] of a cache file (copy-on-write: the file never changes)."""
    if count == 0:
        return torch.empty((0, 3, image_size, image_size), dtype=torch.uint8)
    array = np.memmap(path, dtype=np.uint8, mode="c", shape=(count, 3, image_size, image_size))
    return torch.from_numpy(array)


def _build_cache(files: list[Path], image_size: int, data_path: Path, meta_path: Path, meta: dict,
                 desc: str) -> dict:
    """Decode `files` into `data_path` (only the decodable ones, in order), then write `meta_path`.

    The data goes to a temp file renamed into place, and the metadata (the 'complete' mark)
    is written last, atomically: a crash at any point leaves no cache that is read as valid.
    """
    n, per_image = len(files), 3 * image_size * image_size
    data_path.parent.mkdir(parents=True, exist_ok=True)
    meta_path.unlink(missing_ok=True)
    free = shutil.disk_usage(data_path.parent).free
    if n * per_image > free:
        raise InputError(f"{data_path.parent}: the image cache needs {n * per_image / 1e9:.2f} GB, "
                         f"only {free / 1e9:.2f} GB are free; use --cache_dir on a larger disk")
    tmp = data_path.with_name(f".{data_path.name}.{os.getpid()}.tmp")
    t0 = time.perf_counter()
    failures: dict[int, str] = {}
    try:
        if n:
            array = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(n, 3, image_size, image_size))
            failures = _decode_into(torch.from_numpy(array), files, image_size, desc)
            kept = [i for i in range(n) if i not in failures]
            for j, i in enumerate(kept):  # move the good images together (only when some failed)
                if i != j:
                    array[j] = array[i]
            array.flush()
            del array
            os.truncate(tmp, len(kept) * per_image)
        else:
            tmp.write_bytes(b"")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, data_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    meta = {**meta, "failures": {str(i): m for i, m in sorted(failures.items())},
            "kept": n - len(failures), "build_seconds": round(time.perf_counter() - t0, 3)}
    atomic_write_json(meta_path, meta)
    return meta


def cached_images(paths: list[str], root: str | Path, image_size: int, cache_dir: str | Path,
                  name: str = "images") -> tuple[torch.Tensor, list[int], dict[int, str]]:
    """Decoded images of `root/paths` from a memory-mapped cache file, built on first use.

    Returns (uint8 [K, 3, S, S] mapped from disk: the K decodable files in order, their
    indices into `paths` [K], {index: problem} for the files that failed). The cache file
    `<cache_dir>/<name>_<S>px_n<N>_<key>.u8` (+ `.json`) is keyed by the data root, the list
    of paths and S, and rebuilt when any file's size or modification time changed since.
    Pages are read from disk on demand and belong to the OS page cache, so a set larger than
    RAM trains, and several processes (DDP ranks) share one copy.
    """
    root, cache_dir = Path(root), Path(cache_dir)
    files = [root / p for p in paths]
    safe_name = "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "images"
    stem = f"{safe_name}_{image_size}px_n{len(paths)}_{_cache_key(root, paths, image_size)}"
    data_path, meta_path = cache_dir / f"{stem}.u8", cache_dir / f"{stem}.json"
    signature = _files_signature(files)
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    except (json.JSONDecodeError, OSError):
        meta = None
    per_image = 3 * image_size * image_size
    valid = (meta is not None and meta.get("signature") == signature and meta.get("n") == len(paths)
             and data_path.is_file() and data_path.stat().st_size == meta.get("kept", -1) * per_image)
    if valid:
        log(f"{name}: reusing the image cache {data_path} ({meta['kept']} images)")
    else:
        if meta is not None:
            log(f"{name}: images changed since {data_path} was built: rebuilding it")
        meta = _build_cache(files, image_size, data_path, meta_path,
                            {"version": CACHE_VERSION, "root": str(root.resolve()), "image_size": image_size,
                             "n": len(paths), "signature": signature},
                            desc=f"caching {name} -> {data_path.name}")
        log(f"{name}: built the image cache {data_path} ({meta['kept']} images, "
            f"{meta['kept'] * per_image / 1e9:.2f} GB, {meta['build_seconds']:.1f} s)")
    failures = {int(i): m for i, m in meta["failures"].items()}
    kept = [i for i in range(len(paths)) if i not in failures]
    return _open_mapped(data_path, len(kept), image_size), kept, failures


# ============================================================================ normalisation + augmentation

def normalisation_for(dataset: str, train: ImageSet) -> tuple[float, float]:
    """(mean, std) on the [0, 1] scale: the paper's NEU constants, else computed on the train split.

    Large (e.g. memory-mapped) sets are summed in chunks in float64, never copied whole as floats.
    """
    if dataset == "neu":
        return NEU_MEAN_STD
    if train.images.numel() > 2**26:
        return _chunked_mean_std(train.images)
    x = train.images.float().div_(255)
    return float(x.mean()), float(x.std().clamp_min(1e-6))


def _chunked_mean_std(images: torch.Tensor, chunk: int = 512) -> tuple[float, float]:
    """Mean and sample std of uint8 images [N, ...] / 255, in float64, `chunk` images at a time."""
    total, total_sq, count = 0.0, 0.0, 0
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk].to(torch.float64).div_(255)
        total += float(x.sum())
        total_sq += float((x * x).sum())
        count += x.numel()
    mean = total / max(count, 1)
    var = max(total_sq - count * mean * mean, 0.0) / max(count - 1, 1)
    return mean, max(math.sqrt(var), 1e-6)


def rotate_batch(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image of x [B, C, H, W] by its own angle in degrees [B] (bilinear, zero fill)."""
    rad = degrees * (math.pi / 180)
    cos, sin = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def brightness_gradient(x: torch.Tensor, strength: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Add a linear brightness ramp to x [B, C, H, W] in [0, 1].

    The ramp runs along direction `angle` [B] (radians) from -strength/2 to +strength/2 [B]
    across the image, so brightness rises monotonically along that direction; clamped to [0, 1].
    """
    b, _, h, w = x.shape
    ys = torch.linspace(-0.5, 0.5, h, device=x.device, dtype=x.dtype).view(1, h, 1)
    xs = torch.linspace(-0.5, 0.5, w, device=x.device, dtype=x.dtype).view(1, 1, w)
    cos, sin = torch.cos(angle).view(b, 1, 1), torch.sin(angle).view(b, 1, 1)
    proj = cos * xs + sin * ys
    span = (cos.abs() + sin.abs()) * 0.5  # half extent of the projection so the ramp spans [-1/2, 1/2]
    ramp = proj / span.clamp_min(1e-6) * 0.5
    return (x + strength.view(b, 1, 1, 1) * ramp.unsqueeze(1)).clamp(0, 1)


def color_jitter(x: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor,
                 saturation: torch.Tensor) -> torch.Tensor:
    """Per-image brightness, contrast and saturation factors [B] applied to x [B, 3, H, W] in [0, 1]."""
    b = x.shape[0]
    x = (x * brightness.view(b, 1, 1, 1)).clamp(0, 1)
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    mean = grey.mean(dim=(1, 2, 3), keepdim=True)
    x = (contrast.view(b, 1, 1, 1) * x + (1 - contrast.view(b, 1, 1, 1)) * mean).clamp(0, 1)
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    return (saturation.view(b, 1, 1, 1) * x + (1 - saturation.view(b, 1, 1, 1)) * grey).clamp(0, 1)


def shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate hue of x [B, 3, H, W] by shift [B] (fraction of a turn) in YIQ space; grey stays grey."""
    angle = (shift * 2 * math.pi).view(-1, 1, 1)
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                          dtype=x.dtype, device=x.device)
    yiq = torch.einsum("ij,bjhw->bihw", to_yiq, x)
    i, q = yiq[:, 1], yiq[:, 2]
    cos, sin = torch.cos(angle), torch.sin(angle)
    yiq = torch.stack([yiq[:, 0], cos * i - sin * q, sin * i + cos * q], 1)
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_yiq), yiq).clamp(0, 1)


class Augmenter:
    """The paper's train-time augmentations, batched on tensors.

    style 'neu' (NEU, casting, folders, synthetic): rotation U(-30, 30) + horizontal flip;
    with use_aug also a brightness gradient of strength U(0, 0.5) in a random direction.
    style 'severstal': the same base; with use_aug ColorJitter(0.6, 0.6, 0.4, 0.05) and
    gamma U(0.4, 2.5). All randomness comes from `generator` (same device as the batch).
    """

    def __init__(self, style: str = "neu", use_aug: bool = False, rotation: float = 30.0):
        if style not in ("neu", "severstal", "none"):
            raise ValueError(f"unknown augmentation style {style!r}; choose neu, severstal or none")
        self.style, self.use_aug, self.rotation = style, use_aug, rotation

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """x float [B, 3, H, W] in [0, 1] -> augmented float [B, 3, H, W] in [0, 1]."""
        if self.style == "none":
            return x
        b, dev = x.shape[0], x.device

        def uniform(lo, hi):
            return torch.rand(b, generator=generator, device=generator.device).to(dev) * (hi - lo) + lo

        flip = torch.rand(b, generator=generator, device=generator.device).to(dev) < 0.5
        x = torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
        x = rotate_batch(x, uniform(-self.rotation, self.rotation))
        if self.use_aug and self.style == "neu":
            x = brightness_gradient(x, uniform(0.0, 0.5), uniform(0.0, 2 * math.pi))
        elif self.use_aug and self.style == "severstal":
            x = color_jitter(x, uniform(0.4, 1.6), uniform(0.4, 1.6), uniform(0.6, 1.4))
            x = shift_hue(x, uniform(-0.05, 0.05))
            x = x.clamp_min(1e-6) ** uniform(0.4, 2.5).view(b, 1, 1, 1)
        return x


def augmentation_style(dataset: str) -> str:
    return "severstal" if dataset.startswith("severstal") else "neu"


def to_model_input(images_uint8: torch.Tensor, mean: float, std: float, device: torch.device,
                   augment: Augmenter | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float normalised [B, 3, H, W] on `device`, augmented when given."""
    x = images_uint8.to(device, non_blocking=True).float().div_(255)
    if augment is not None:
        x = augment(x, generator)
    return (x - mean) / std
