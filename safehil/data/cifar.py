"""The CIFAR-10 / CIFAR-100 python-pickle layouts: reading their batches, and writing their images
once as PNG files so they flow through the same split tables, checks and image cache as every
other data set.

    cifar-10-batches-py/  data_batch_1..5, test_batch (dicts: data uint8 [N, 3072], labels), batches.meta (label_names)
    cifar-100-python/     train, test (data, fine_labels), meta (fine_label_names)

`data` holds the R, G and B planes of a 32x32 image one after the other. The files are read
with `pickle` directly (torchvision's CIFAR classes insist on the download's checksums).

Why PNG files and not an in-memory tensor: every script, check and output of the project
(split CSVs, bad-input checks, the memory-mapped cache, the review contact sheet, saliency
examples) works on image paths, so images that are files need no second code path. They are
written once (about half a minute for CIFAR's 60,000) to `data/cifar/<name>_<key>/` and reused.
Each PNG is the 32x32 image itself: at --image_size 32 (the toolkit's input) the cache takes an
image already at the target size as it is (`cache.decode_for_cache`, native size), so the network
sees CIFAR's exact pixels.
"""
from __future__ import annotations

import concurrent.futures as futures
import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from safehil.core.utils import InputError, atomic_write_csv, log, progress_enabled, repo_root


@dataclass(frozen=True)
class CifarVariant:
    """One CIFAR download: its folder name, batch files per split, label key and class-name file."""
    name: str
    folder: str
    batches: dict[str, tuple[str, ...]]
    label_key: str
    meta_file: str
    names_key: str


VARIANTS = {
    "cifar10": CifarVariant("cifar10", "cifar-10-batches-py",
                            {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
                            "labels", "batches.meta", "label_names"),
    "cifar100": CifarVariant("cifar100", "cifar-100-python", {"train": ("train",), "test": ("test",)},
                             "fine_labels", "meta", "fine_label_names"),
}
SIDE = 32
# 2: plain 32x32 PNG files (1 wrote them with a reflected border, which the native-size rule of
# cache.py made unnecessary); part of the folder key, so a folder of the old format is not reused
PNG_FORMAT = 2


def find_cifar_folder(data_dir: str | Path, variant: CifarVariant) -> Path:
    """The folder holding the batch files: `data_dir/<variant folder>/` or `data_dir` itself."""
    data_dir = Path(data_dir)
    first = variant.batches["train"][0]
    for folder in (data_dir / variant.folder, data_dir):
        if (folder / first).is_file():
            return folder
    raise InputError(f"{data_dir}: no {variant.name} python batches found; expected "
                     f"{data_dir / variant.folder / first} (the {variant.folder}/ folder of the python download) "
                     f"or --data_dir pointing at that folder itself")


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"{path}: CIFAR batch file missing")
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise InputError(f"{path}: not a readable CIFAR pickle ({type(e).__name__}: {e})") from None
    # the download pickles bytes keys under Python 2; the fields are plain ASCII names
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def read_cifar(folder: Path, variant: CifarVariant) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """The batches of `folder` -> ({split: (images uint8 [N, 32, 32, 3], labels int64 [N])}, class names)."""
    meta = _unpickle(folder / variant.meta_file)
    if variant.names_key not in meta:
        raise InputError(f"{folder / variant.meta_file}: lacks {variant.names_key!r}")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[variant.names_key]]
    splits = {}
    for split, files in variant.batches.items():
        images, labels = [], []
        for name in files:
            batch = _unpickle(folder / name)
            if "data" not in batch or variant.label_key not in batch:
                raise InputError(f"{folder / name}: a CIFAR batch needs 'data' and {variant.label_key!r}")
            data = np.asarray(batch["data"], dtype=np.uint8)
            if data.ndim != 2 or data.shape[1] != 3 * SIDE * SIDE:
                raise InputError(f"{folder / name}: 'data' must be uint8 [N, 3072], got {list(data.shape)}")
            images.append(data.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1))  # R, G, B planes -> HWC
            labels.append(np.asarray(batch[variant.label_key], dtype=np.int64))
        splits[split] = (np.concatenate(images), np.concatenate(labels))
        bad = splits[split][1][(splits[split][1] < 0) | (splits[split][1] >= len(names))]
        if len(bad):
            raise InputError(f"{folder}: {split} label {int(bad[0])} outside the {len(names)} class names")
    return splits, names


def _folder_key(folder: Path, variant: CifarVariant) -> str:
    """sha1 of PNG_FORMAT, the resolved folder and each batch file's size and modification time (12 hex digits)."""
    h = hashlib.sha1(f"{PNG_FORMAT}:{folder.resolve()}".encode())
    for name in (variant.meta_file, *[f for files in variant.batches.values() for f in files]):
        if not (folder / name).is_file():
            raise InputError(f"{folder / name}: {variant.name} file missing (the python download holds "
                             f"{variant.meta_file} and {', '.join(f for v in variant.batches.values() for f in v)})")
        st = (folder / name).stat()
        h.update(f"{name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:12]


def default_cifar_dir() -> Path:
    return repo_root() / "data" / "cifar"


def write_cifar_pngs(data_dir: str | Path, name: str, out_root: str | Path | None = None) -> Path:
    """Write the CIFAR download under `data_dir` as `<out>/<split>/<class>/<split>_<index>.png` once
    (plus `images.csv`: path, label, split) and return `<out>`; reused while the batch files are unchanged."""
    variant = VARIANTS[name]
    folder = find_cifar_folder(data_dir, variant)
    out = Path(out_root or default_cifar_dir()) / f"{name}_{_folder_key(folder, variant)}"
    if (out / ".complete").is_file() and (out / "images.csv").is_file():
        return out
    splits, class_names = read_cifar(folder, variant)
    rows, jobs = [], []
    for split, (images, labels) in splits.items():
        for i, (image, label) in enumerate(zip(images, labels)):
            path = f"{split}/{class_names[label]}/{split}_{i:05d}.png"
            rows.append({"path": path, "label": class_names[label], "split": split})
            jobs.append((out / path, image))

    def work(job):
        path, image = job
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path, compress_level=1)

    with futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(tqdm(pool.map(work, jobs), total=len(jobs), desc=f"writing {name} as PNG files",
                  disable=not progress_enabled(), leave=False))
    atomic_write_csv(out / "images.csv", pd.DataFrame(rows))
    (out / ".complete").write_text("ok\n")
    log(f"{name}: wrote {len(rows)} images of {folder} as PNG files to {out}")
    return out


def scan_cifar_pngs(root: Path) -> pd.DataFrame:
    """The table (path, label, split: train/test) of a folder written by `write_cifar_pngs`."""
    return pd.read_csv(Path(root) / "images.csv", dtype=str)
