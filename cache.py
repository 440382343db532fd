"""Decoding image files into uint8 tensors [N, 3, S, S] (shorter side to 256/224 * S, centre crop
S, in parallel threads): into RAM (`decode_images_skipping_bad`) or into a memory-mapped cache
file built once and reused by later runs (`cached_images`).

Native size: an image that already is S x S is taken as it is, neither resized nor cropped, in
every layout (a 32 px CIFAR image reaches the network with all its pixels, as in the
active-learning toolkit; resizing it to 37 and cropping 32 would zoom it and drop its border).
"""
from __future__ import annotations

import concurrent.futures as futures
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from images import read_image
from utils import InputError, atomic_write_json, log, progress_enabled

def resize_size_for(image_size: int) -> int:
    """The paper resizes to 256 and crops 224; keep that 256/224 ratio at any size."""
    return int(round(image_size * 256 / 224))


def decode_for_cache(path: str | Path, image_size: int) -> torch.Tensor:
    """File -> uint8 [3, S, S]: an S x S image as it is (native size); any other shorter side
    resized to 256/224 * S, then centre crop S."""
    img = read_image(path)
    if img.size == (image_size, image_size):
        return _to_tensor(img)
    resize = resize_size_for(image_size)
    w, h = img.size
    scale = resize / min(w, h)
    img = img.resize((max(resize, round(w * scale)), max(resize, round(h * scale))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - image_size) // 2, (h - image_size) // 2
    return _to_tensor(img.crop((left, top, left + image_size, top + image_size)))


def _to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 [3, H, W]."""
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


def decode_images_skipping_bad(paths: list[Path], image_size: int, desc: str = "decoding images"
                               ) -> tuple[torch.Tensor, list[int], dict[int, str]]:
    """Decode into RAM, leaving out the files that fail.

    Returns (uint8 [K, 3, S, S] of the K decodable files in order, their indices into `paths` [K],
    {index: problem} for the files left out).
    """
    out = torch.empty((len(paths), 3, image_size, image_size), dtype=torch.uint8)
    failures = _decode_into(out, paths, image_size, desc)
    kept = [i for i in range(len(paths)) if i not in failures]
    if failures:
        out = out[torch.as_tensor(kept, dtype=torch.long)]
    return out, kept, failures


CACHE_VERSION = 2  # 2: native size. Bump when decode_for_cache changes, so old cache files are not reused


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
