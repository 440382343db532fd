"""The built-in synthetic steel-defect set: six NEU-like defect classes drawn on a rolled-steel
texture (`render_synthetic_image`), and `generate_synthetic`, which writes them as PNGs with a
shifted test split and their split CSV; `generate_safety_splits` writes large extra valid and
test splits of the same distribution for the safety cascade (0.1 % is testable only on
thousands of images); `generate_severstal_strips` writes a Severstal-like set of 6.25 : 1 strips
(four defect classes and no defect, some images with two) in the Kaggle layout (`train.csv` with
run-length masks), so the whole-strip pipeline and the Severstal preset run end to end.
"""
from __future__ import annotations

import concurrent.futures as futures
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from tqdm import tqdm

from safehil.data.splits import stratified_split
from safehil.core.utils import atomic_write_csv, log, progress_enabled, repo_root

SYNTHETIC_CLASSES = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")

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


def synthetic_images(per_class: int, seed: int, shifted_per_class: int) -> list[tuple[str, str, int, bool]]:
    """Every image of the built-in set: (path relative to the data root, label, image seed, shifted)."""
    jobs = []
    for c, label in enumerate(SYNTHETIC_CLASSES):
        for i in range(per_class):
            jobs.append((f"{label}/{label}_{i:04d}.png", label, seed * 1_000_003 + c * 10_007 + i, False))
        for i in range(shifted_per_class):
            jobs.append((f"shifted/{label}/{label}_{i:04d}.png", label, seed * 1_000_003 + c * 10_007 + 5_000 + i,
                         True))
    return jobs


def synthetic_split_table(per_class: int = 300, seed: int = 0, shifted_per_class: int | None = None) -> pd.DataFrame:
    """The built-in set's split table (path, label, split), without rendering a pixel: per class
    a stratified 60/20/20 train/valid/test split for `seed`, plus the `test_shifted` images
    (`per_class // 3` per class by default). The image size does not enter it."""
    shifted_per_class = per_class // 3 if shifted_per_class is None else shifted_per_class
    jobs = synthetic_images(per_class, seed, shifted_per_class)
    main = pd.DataFrame([{"path": path, "label": label} for path, label, _, moved in jobs if not moved])
    shifted = pd.DataFrame([{"path": path, "label": label, "split": "test_shifted"}
                            for path, label, _, moved in jobs if moved])
    return pd.concat([stratified_split(main, seed=seed), shifted], ignore_index=True)


def default_synthetic_dir() -> Path:
    return repo_root() / "data" / "synthetic"


def generate_synthetic(root: str | Path | None = None, per_class: int = 300, seed: int = 0,
                       size: int = 200, shifted_per_class: int | None = None,
                       split_csv: str | Path | None = None) -> tuple[Path, Path]:
    """Write the built-in defect set as PNGs plus its split CSV; reuse it when already there.

    Layout: `root/<class>/<class>_<i>.png` (split 60/20/20 into train/valid/test) and
    `root/shifted/<class>/*.png` (split `test_shifted`, `per_class // 3` per class by default).
    The split CSV (`synthetic_split_table`) goes to `data_splits/synthetic_n<per_class>_s<seed>_px<size>.csv`;
    the default one (n300_s0_px200) is committed and left as it is when its content is the same.
    Returns (root, split_csv_path).
    """
    root = Path(root) if root else default_synthetic_dir() / f"n{per_class}_s{seed}_px{size}"
    shifted_per_class = per_class // 3 if shifted_per_class is None else shifted_per_class
    default_csv = repo_root() / "data_splits" / f"synthetic_n{per_class}_s{seed}_px{size}.csv"
    split_csv = Path(split_csv) if split_csv else default_csv
    done_marker = root / ".complete"
    if done_marker.is_file() and split_csv.is_file():
        return root, split_csv
    jobs = synthetic_images(per_class, seed, shifted_per_class)

    def work(job):
        path, label, image_seed, shifted = job
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(render_synthetic_image(label, image_seed, size, shifted)).save(root / path)

    with futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(tqdm(pool.map(work, jobs), total=len(jobs), desc="generating synthetic defects",
                  disable=not progress_enabled(), leave=False))
    table = synthetic_split_table(per_class, seed, shifted_per_class)
    if not (split_csv.is_file() and split_csv.read_text() == table.to_csv(index=False)):  # e.g. the committed one
        atomic_write_csv(split_csv, table)
    done_marker.write_text("ok\n")
    log(f"built-in synthetic data: {len(table)} images in {root}, splits in {split_csv}")
    return root, split_csv


# Image seeds of the safety splits start here: generate_synthetic's are below 2**40 for any seed < 10**6,
# so the safety images never repeat a training, validation or test image of the built-in set.
SAFETY_SEED_BASE = 1 << 40
SAFETY_SPLITS = ("valid", "test")


def safety_image_seed(seed: int, split_index: int, class_index: int, i: int) -> int:
    """The render seed of image i of one class and safety split (unique for i < 2**20)."""
    return SAFETY_SEED_BASE + seed * (1 << 28) + split_index * (1 << 24) + class_index * (1 << 20) + i


def generate_safety_splits(per_class: int = 500, seed: int = 0, size: int = 200, root: str | Path | None = None,
                           split_csv: str | Path | None = None) -> tuple[Path, Path]:
    """Write `per_class` new images per class for each of a large `valid` and `test` split (the
    distribution of the built-in set's train/valid/test, none of its images) and their split
    CSV; reuse them when already there. The safety cascade calibrates on this valid split and
    is tested on this test split: at the default 500 per class (3,000 per split) an
    undetected-error rate of 0.1 % can be certified (Learn then Test needs >= 2,995 calibration
    images without an error at delta 0.05) and bounded on test.
    Layout: `root/<split>/<class>/<class>_<i>.png` and its split CSV `root/splits.csv` (generated
    data beside its images, not in data_splits/).
    Returns (root, split_csv_path).
    """
    root = Path(root) if root else default_synthetic_dir() / f"safety_n{per_class}_s{seed}_px{size}"
    split_csv = Path(split_csv) if split_csv else root / "splits.csv"
    if (root / ".complete").is_file() and split_csv.is_file():
        return root, split_csv
    jobs = [(root / split / label / f"{label}_{i:04d}.png", label, split, safety_image_seed(seed, k, c, i))
            for k, split in enumerate(SAFETY_SPLITS) for c, label in enumerate(SYNTHETIC_CLASSES)
            for i in range(per_class)]

    def work(job):
        path, label, _, image_seed = job
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(render_synthetic_image(label, image_seed, size)).save(path)

    with futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(tqdm(pool.map(work, jobs), total=len(jobs), desc="generating safety splits",
                  disable=not progress_enabled(), leave=False))
    table = pd.DataFrame([{"path": p.relative_to(root).as_posix(), "label": label, "split": split}
                          for p, label, split, _ in jobs])
    atomic_write_csv(split_csv, table)
    (root / ".complete").write_text("ok\n")
    log(f"safety splits: {len(table)} images in {root}, splits in {split_csv}")
    return root, split_csv


# ============================================================================ Severstal-like strips

# Severstal's defect classes 1-4 (Kaggle ClassId) and its images without a defect, drawn procedurally:
# 1 = clusters of small pits, 2 = short cracks across the strip, 3 = long scratches along it, 4 = large patches.
STRIP_DEFECTS = (1, 2, 3, 4)
STRIP_ASPECT = 6.25            # Severstal strips are 1600 x 256
STRIP_SECOND_DEFECT = 0.2      # share of defect images that carry a second class elsewhere (the multi-label rule)


def rle_encode(mask: np.ndarray) -> str:
    """Kaggle run-length string of a bool mask [H, W]: 'start length ...', 1-indexed pixels
    numbered top to bottom, then left to right (column-major), as Severstal's train.csv."""
    flat = np.concatenate([[0], mask.T.reshape(-1).astype(np.int8), [0]])
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1      # 1-indexed starts and ends of the runs
    starts, ends = edges[0::2], edges[1::2]
    return " ".join(f"{s} {e - s}" for s, e in zip(starts, ends))


def _strip_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Grey strip texture in [0, 1] [height, width]: level + streaks along the strip + mottling + noise."""
    level = rng.uniform(0.3, 0.55)
    streaks = np.repeat(rng.normal(0, 0.02, (height, 1)), width, axis=1)
    coarse = rng.normal(0, 1, (height // 16 + 2, width // 16 + 2)).astype(np.float32)
    mottling = np.array(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))
    return level + streaks + 0.03 * mottling + rng.normal(0, rng.uniform(0.02, 0.05), (height, width))


def _draw_strip_defect(defect: int, rng: np.random.Generator, width: int, height: int, centre_x: float) -> np.ndarray:
    """A signed defect layer [height, width] of class `defect` around column `centre_x` (anywhere along the strip)."""
    layer = Image.new("F", (width, height), 0.0)
    draw = ImageDraw.Draw(layer)
    contrast = rng.uniform(0.15, 0.4)
    h = height
    if defect == 1:    # a cluster of small dark pits
        for _ in range(rng.integers(6, 16)):
            x, y = centre_x + rng.normal(0, 0.2 * h), rng.uniform(0.15 * h, 0.85 * h)
            r = rng.uniform(0.03, 0.06) * h
            draw.ellipse([x - r, y - r, x + r, y + r], fill=-contrast * 1.3)
    elif defect == 2:  # short cracks running across the strip
        for _ in range(rng.integers(1, 4)):
            x, y = centre_x + rng.normal(0, 0.15 * h), rng.uniform(0.1 * h, 0.5 * h)
            length = rng.uniform(0.3, 0.6) * h
            draw.line([x, y, x + rng.uniform(-0.1, 0.1) * h, y + length], fill=contrast,
                      width=max(1, int(0.04 * h)))
    elif defect == 3:  # long thin scratches along the strip
        for _ in range(rng.integers(1, 3)):
            y = rng.uniform(0.15 * h, 0.85 * h)
            length = rng.uniform(1.0, 2.5) * h
            tilt = rng.uniform(-0.05, 0.05) * length
            draw.line([centre_x - length / 2, y, centre_x + length / 2, y + tilt], fill=-contrast,
                      width=max(1, int(0.03 * h)))
    elif defect == 4:  # a large irregular dark patch
        cy, r = rng.uniform(0.35 * h, 0.65 * h), rng.uniform(0.25, 0.45) * h
        angles = np.sort(rng.uniform(0, 2 * math.pi, 9))
        radii = r * rng.uniform(0.6, 1.2, 9)
        draw.polygon([(centre_x + q * math.cos(a), cy + q * math.sin(a)) for a, q in zip(angles, radii)],
                     fill=-contrast)
    else:
        raise ValueError(f"unknown strip defect class {defect!r}; choose from {STRIP_DEFECTS}")
    return np.asarray(layer, dtype=np.float32)


def render_strip(defects: tuple[int, ...], seed: int, height: int = 64) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """One Severstal-like strip, fully determined by (defects, seed): (uint8 [height, 6.25 height],
    {class: bool mask [height, width]} of each drawn defect). Each defect sits at a random place
    along the strip, both ends included, and several defects sit apart from each other."""
    rng = np.random.default_rng(seed)
    width = int(round(height * STRIP_ASPECT))
    image = _strip_background(rng, width, height)
    masks = {}
    slots = rng.permutation(6)[:len(defects)]  # sixths of the strip: two defects never overlap much
    for defect, slot in zip(defects, slots):
        centre_x = (slot + rng.uniform(0.1, 0.9)) * width / 6
        layer = _draw_strip_defect(defect, rng, width, height, centre_x)
        image = image + layer
        masks[defect] = np.abs(layer) > 1e-3
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8), masks


def strip_jobs(per_class: int, seed: int) -> list[tuple[str, tuple[int, ...], int]]:
    """Every strip of the set: (file name, defect classes drawn, image seed); per_class strips of
    each defect class (a share STRIP_SECOND_DEFECT of them with a second class) and of no defect."""
    rng = np.random.default_rng(seed)
    jobs = []
    for primary in (*STRIP_DEFECTS, 0):
        for i in range(per_class):
            defects: tuple[int, ...] = ()
            if primary:
                defects = (primary,)
                if rng.uniform() < STRIP_SECOND_DEFECT:
                    defects += (int(rng.choice([d for d in STRIP_DEFECTS if d != primary])),)
            image_seed = seed * 1_000_003 + primary * 10_007 + i
            jobs.append((f"strip_{primary}_{i:04d}.png", defects, image_seed))
    return jobs


def default_strips_dir(per_class: int, seed: int, height: int) -> Path:
    return default_synthetic_dir() / f"severstal_n{per_class}_s{seed}_h{height}"


def generate_severstal_strips(root: str | Path | None = None, per_class: int = 40, seed: int = 0,
                              height: int = 64) -> Path:
    """Write the built-in Severstal-like set in the Kaggle layout; reuse it when already there.

    `root/train_images/strip_<class>_<i>.png` (grey strips of height x 6.25 height) and
    `root/train.csv` (ImageId, ClassId, EncodedPixels: one row per image and defect class, the
    mask run-length encoded as Kaggle's, column-major and 1-indexed; images without a defect
    have no row). `datasets.scan_severstal_kaggle` reads it like the real download: labels
    defect_1..4 and no_defect, two-class images by the multi-label rule. Returns root.
    """
    root = Path(root) if root else default_strips_dir(per_class, seed, height)
    if (root / ".complete").is_file() and (root / "train.csv").is_file():
        return root
    (root / "train_images").mkdir(parents=True, exist_ok=True)
    jobs = strip_jobs(per_class, seed)

    def work(job):
        name, defects, image_seed = job
        image, masks = render_strip(defects, image_seed, height)
        Image.fromarray(image).save(root / "train_images" / name)
        return [{"ImageId": name, "ClassId": d, "EncodedPixels": rle_encode(m)} for d, m in masks.items()]

    with futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        rows = [row for part in tqdm(pool.map(work, jobs), total=len(jobs), desc="generating strips",
                                     disable=not progress_enabled(), leave=False) for row in part]
    atomic_write_csv(root / "train.csv", pd.DataFrame(rows, columns=["ImageId", "ClassId", "EncodedPixels"]))
    (root / ".complete").write_text("ok\n")
    log(f"built-in Severstal-like strips: {len(jobs)} images ({sum(len(j[1]) > 1 for j in jobs)} with two classes) "
        f"in {root}")
    return root
