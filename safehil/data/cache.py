"""Decoding image files into uint8 tensors [N, C, H, W] in parallel threads, by one of three
geometries (`Canvas`): into RAM (`decode_images_skipping_bad`) or into a memory-mapped cache file
built once and reused by later runs (`cached_images`). `plan_canvas` picks the canvas of a set
from the files' headers and warns when a centre crop would cut a large share of an image.

Geometries (`GEOMETRIES`), S = the image size:
- `crop`  shorter side resized to 256/224 * S, centre crop S x S (R4VR NEU: Resize 256, CenterCrop
  224; square images). With a rotation margin m the stored canvas is (S + 2m)^2 of the resized
  image, so training rotates the raw image before the crop, as the paper does (`datasets.ImageSet`).
- `whole` shorter side resized to S, aspect ratio kept, nothing cut (R4VR Severstal: Resize 256
  leaves a 1600 x 256 strip whole); the canvas has the set's most common aspect ratio, and an
  image of another shape is letterboxed into it (zeros around it), never cut.
- `pad`   letterbox into S x S: longer side to S, zeros around it, nothing cut.

Native size: an image already at the canvas size is taken as it is, neither resized nor cropped,
in every geometry (a 32 px CIFAR image reaches the network with all its pixels, as in the
active-learning toolkit; resizing it to 37 and cropping 32 would zoom it and drop its border).

Channels: grey sources are stored as one channel (C = 1: a third of the memory and bandwidth);
`augment.to_model_input` expands them to the 3 channels the networks take, on the device.
"""
from __future__ import annotations

import concurrent.futures as futures
import contextvars
import hashlib
import json
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from safehil.data.images import read_image
from safehil.core.utils import InputError, atomic_write_json, log, progress_enabled

GEOMETRIES = ("crop", "whole", "pad")
GREY_MODES = ("1", "L", "LA")   # PIL modes of a grey file: stored as one channel
SQUARE_TOLERANCE = 0.02         # a crop cutting at most 2 % of an image counts as no loss


def resize_size_for(image_size: int) -> int:
    """The paper resizes to 256 and crops 224; keep that 256/224 ratio at any size."""
    return int(round(image_size * 256 / 224))


@dataclass(frozen=True)
class Canvas:
    """What every decoded image of a set becomes: uint8 [channels, height + 2 margin, width + 2 margin].

    geometry: one of GEOMETRIES; height x width: the model's input; channels: 1 (grey sources,
    expanded to 3 on the device) or 3; margin: crop only, the pixels of the resized image kept
    on every side of the crop so that a training rotation happens before the crop (0 = none).
    """
    geometry: str
    height: int
    width: int
    channels: int = 3
    margin: int = 0

    def __post_init__(self):
        if self.geometry not in GEOMETRIES:
            raise ValueError(f"unknown geometry {self.geometry!r}; choose from {GEOMETRIES}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")

    @property
    def stored_shape(self) -> tuple[int, int, int]:
        """(C, H', W') of one stored image: the model's input plus the margin on every side."""
        return self.channels, self.height + 2 * self.margin, self.width + 2 * self.margin

    def to_dict(self) -> dict:
        return asdict(self)

    def without_margin(self) -> "Canvas":
        """The same canvas without the rotation margin (what evaluation and deployment decode)."""
        return replace(self, margin=0)


def as_canvas(value: "int | Canvas | dict") -> Canvas:
    """A Canvas from a Canvas, its dict (a checkpoint's `canvas`) or an int S (square crop, 3 channels)."""
    if isinstance(value, Canvas):
        return value
    if isinstance(value, dict):
        return Canvas(**{k: (int(v) if k != "geometry" else str(v)) for k, v in value.items()})
    return Canvas("crop", int(value), int(value))


def display_canvas(canvas: "int | Canvas | dict", size: int) -> Canvas:
    """The canvas for showing a person what a model on `canvas` sees: the same geometry and shape,
    3 channels, no margin, its shorter side `size` pixels (a whole strip stays a whole strip)."""
    canvas = as_canvas(canvas)
    scale = size / min(canvas.height, canvas.width)
    return Canvas(canvas.geometry, max(1, round(canvas.height * scale)), max(1, round(canvas.width * scale)), 3)


def crop_margin(image_size: int) -> int:
    """Pixels on every side of an S crop inside the 256/224 * S resized image."""
    return (resize_size_for(image_size) - image_size) // 2


# ============================================================================ headers and the plan

def image_header(path: Path) -> tuple[int, int, str] | None:
    """(width, height, PIL mode) read from the file's header, or None when it cannot be opened
    (the decoding step names the problem)."""
    try:
        with Image.open(path) as img:
            return img.size[0], img.size[1], img.mode
    except Exception:  # noqa: BLE001 - any unreadable file is reported by read_image later
        return None


def image_headers(paths: list[Path]) -> list[tuple[int, int, str] | None]:
    """`image_header` of every file, in parallel threads."""
    with futures.ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 2)) as pool:
        return list(pool.map(image_header, paths))


def crop_cut_share(width: int, height: int) -> float:
    """Share of an image's pixels a square centre crop of its shorter side cuts away: 1 - short/long."""
    return 1.0 - min(width, height) / max(width, height)


def plan_canvas(headers: list[tuple[int, int, str] | None], image_size: int, geometry: str = "crop",
                channels: int | None = None, margin: bool = False) -> tuple[Canvas, list[str]]:
    """The canvas of a set from its files' headers -> (Canvas, warnings to show the user).

    geometry: one of GEOMETRIES, or 'auto' = crop when every image is square (within 2 %), else
    whole when they share one aspect ratio, else pad; a warning says how much a crop would cut.
    An explicit crop of non-square images also warns with the share cut. channels: 1 or 3, or
    None = 1 when every file is grey (`GREY_MODES`), else 3. margin: keep a rotation margin
    around a crop (training with rotation).
    """
    known = [h for h in headers if h is not None]
    if channels is None:
        channels = 1 if known and all(mode in GREY_MODES for _, _, mode in known) else 3
    cuts = np.array([crop_cut_share(w, h) for w, h, _ in known]) if known else np.zeros(0)
    not_square = int((cuts > SQUARE_TOLERANCE).sum())
    aspects = Counter(round(w / h, 3) for w, h, _ in known)
    warnings = []
    cut_text = (f"{not_square} of {len(known)} images are not square; a centre crop would cut "
                f"{100 * cuts.max():.0f} % of the most cut one and {100 * cuts[cuts > SQUARE_TOLERANCE].mean():.0f} % "
                "of them on average" if not_square else "")
    if geometry == "auto":
        if not not_square:
            geometry = "crop"
        else:
            geometry = "whole" if len(aspects) == 1 else "pad"
            warnings.append(f"{cut_text}: using geometry {geometry} (nothing cut"
                            f"{'' if geometry == 'whole' else ', letterboxed to a square'}); "
                            "pass --geometry crop to crop them anyway")
    elif geometry == "crop" and not_square:
        warnings.append(f"{cut_text} (geometry crop); --geometry whole or pad keeps every pixel")
    if geometry not in GEOMETRIES:
        raise InputError(f"unknown geometry {geometry!r}; choose from {GEOMETRIES} or auto")
    if geometry == "crop":
        return Canvas("crop", image_size, image_size, channels, crop_margin(image_size) if margin else 0), warnings
    if geometry == "pad" or not aspects:
        return Canvas(geometry, image_size, image_size, channels), warnings
    aspect = aspects.most_common(1)[0][0]  # width / height of most images
    height, width = (image_size, int(round(image_size * aspect))) if aspect >= 1 else \
        (int(round(image_size / aspect)), image_size)
    others = sum(n for a, n in aspects.items() if a != aspect)
    if others:
        warnings.append(f"{others} of {len(known)} images do not have the set's aspect ratio {aspect:g} "
                        f"(width / height): letterboxed into the {width} x {height} canvas, nothing cut")
    return Canvas("whole", height, width, channels), warnings


# ============================================================================ one file

def _to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB or L PIL image -> uint8 [C, H, W]."""
    array = np.asarray(img, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _centre_crop(img: Image.Image, width: int, height: int) -> Image.Image:
    w, h = img.size
    left, top = (w - width) // 2, (h - height) // 2
    return img.crop((left, top, left + width, top + height))


def _letterbox(img: Image.Image, width: int, height: int) -> Image.Image:
    """Fit the whole image into width x height (aspect kept), centred on zeros."""
    w, h = img.size
    scale = min(width / w, height / h)
    new = (min(width, max(1, round(w * scale))), min(height, max(1, round(h * scale))))
    if new != img.size:
        img = img.resize(new, Image.BILINEAR)
    if new == (width, height):
        return img
    canvas = Image.new(img.mode, (width, height), 0)
    canvas.paste(img, ((width - new[0]) // 2, (height - new[1]) // 2))
    return canvas


def decode_for_cache(path: str | Path, canvas: "int | Canvas | dict") -> torch.Tensor:
    """File -> uint8 `canvas.stored_shape` [C, H + 2m, W + 2m] (an int S: [3, S, S], square crop).

    An image already at the canvas size (H x W) is taken as it is (native size; inside the
    margin, if any, are zeros, as a rotation of the raw image would show). Otherwise: crop =
    shorter side to 256/224 * S, centre crop S + 2m; whole and pad = the whole image fitted into
    H x W (letterboxed when its aspect ratio differs). One channel when canvas.channels == 1.
    """
    canvas = as_canvas(canvas)
    img = read_image(path)
    if canvas.channels == 1:
        img = img.convert("L")
    out_w, out_h = canvas.width + 2 * canvas.margin, canvas.height + 2 * canvas.margin
    if img.size == (canvas.width, canvas.height):
        if canvas.margin:
            img = _letterbox(img, out_w, out_h)  # same size: pasted in the middle of zeros
        return _to_tensor(img)
    if canvas.geometry == "crop":
        resize = resize_size_for(canvas.width)
        w, h = img.size
        scale = resize / min(w, h)
        img = img.resize((max(resize, round(w * scale)), max(resize, round(h * scale))), Image.BILINEAR)
        return _to_tensor(_centre_crop(img, out_w, out_h))
    return _to_tensor(_letterbox(img, out_w, out_h))


def _decode_into(out: torch.Tensor, paths: list[Path], canvas: Canvas, desc: str) -> dict[int, str]:
    """Decode files in parallel threads into out[i] (uint8 [N, *canvas.stored_shape], in RAM or
    memory-mapped).

    Returns {index: problem} for the files that could not be decoded (their slots stay as they were).
    """
    failures: dict[int, str] = {}

    def work(i):
        try:
            out[i] = decode_for_cache(paths[i], canvas)
        except (InputError, FileNotFoundError) as e:
            text = str(e)
            prefix = f"{paths[i]}: "
            failures[i] = text[len(prefix):] if text.startswith(prefix) else text

    context = contextvars.copy_context()  # the caller's image-size limit (images.pixel_limit) in every thread
    with futures.ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 2)) as pool:
        list(tqdm(pool.map(lambda i: context.copy().run(work, i), range(len(paths))), total=len(paths), desc=desc,
                  disable=not progress_enabled() or len(paths) < 200, leave=False))
    return failures


def decode_images_skipping_bad(paths: list[Path], canvas: "int | Canvas | dict", desc: str = "decoding images"
                               ) -> tuple[torch.Tensor, list[int], dict[int, str]]:
    """Decode into RAM, leaving out the files that fail.

    Returns (uint8 [K, C, H', W'] (`canvas.stored_shape`) of the K decodable files in order, their
    indices into `paths` [K], {index: problem} for the files left out).
    """
    canvas = as_canvas(canvas)
    out = torch.empty((len(paths), *canvas.stored_shape), dtype=torch.uint8)
    failures = _decode_into(out, paths, canvas, desc)
    kept = [i for i in range(len(paths)) if i not in failures]
    if failures:
        out = out[torch.as_tensor(kept, dtype=torch.long)]
    return out, kept, failures


# 2: native size; 3: geometries (crop / whole / pad), one channel for grey sources, rotation margin;
# 4: EXIF orientation applied (images.read_image).
CACHE_VERSION = 4  # bump when decode_for_cache changes, so old cache files are not reused


def _cache_key(root: Path, paths: list[str], canvas: Canvas) -> str:
    """sha1 of the data root, the ordered list of paths and the canvas (20 hex digits)."""
    h = hashlib.sha1(json.dumps({"version": CACHE_VERSION, "root": str(root.resolve()),
                                 "canvas": canvas.to_dict()}, sort_keys=True).encode())
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


def _open_mapped(path: Path, count: int, canvas: Canvas) -> torch.Tensor:
    """A read-only view uint8 [count, *canvas.stored_shape] of a cache file (copy-on-write: the file never changes)."""
    if count == 0:
        return torch.empty((0, *canvas.stored_shape), dtype=torch.uint8)
    array = np.memmap(path, dtype=np.uint8, mode="c", shape=(count, *canvas.stored_shape))
    return torch.from_numpy(array)


def _build_cache(files: list[Path], canvas: Canvas, data_path: Path, meta_path: Path, meta: dict,
                 desc: str) -> dict:
    """Decode `files` into `data_path` (only the decodable ones, in order), then write `meta_path`.

    The data goes to a temp file renamed into place, and the metadata (the 'complete' mark)
    is written last, atomically: a crash at any point leaves no cache that is read as valid.
    """
    n, per_image = len(files), int(np.prod(canvas.stored_shape))
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
            array = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(n, *canvas.stored_shape))
            failures = _decode_into(torch.from_numpy(array), files, canvas, desc)
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


def cached_images(paths: list[str], root: str | Path, canvas: "int | Canvas | dict", cache_dir: str | Path,
                  name: str = "images") -> tuple[torch.Tensor, list[int], dict[int, str]]:
    """Decoded images of `root/paths` from a memory-mapped cache file, built on first use.

    Returns (uint8 [K, C, H', W'] (`canvas.stored_shape`) mapped from disk: the K decodable
    files in order, their indices into `paths` [K], {index: problem} for the files that failed).
    The cache file `<cache_dir>/<name>_<W>x<H>c<C>_n<N>_<key>.u8` (+ `.json`) is keyed by the
    data root, the list of paths and the canvas, and rebuilt when any file's size or
    modification time changed since. Pages are read from disk on demand and belong to the OS
    page cache, so a set larger than RAM trains, and several processes (DDP ranks) share one copy.
    """
    canvas = as_canvas(canvas)
    root, cache_dir = Path(root), Path(cache_dir)
    files = [root / p for p in paths]
    safe_name = "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "images"
    _, stored_h, stored_w = canvas.stored_shape
    stem = (f"{safe_name}_{stored_w}x{stored_h}c{canvas.channels}_n{len(paths)}_"
            f"{_cache_key(root, paths, canvas)}")
    data_path, meta_path = cache_dir / f"{stem}.u8", cache_dir / f"{stem}.json"
    signature = _files_signature(files)
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    except (json.JSONDecodeError, OSError):
        meta = None
    per_image = int(np.prod(canvas.stored_shape))
    valid = (meta is not None and meta.get("signature") == signature and meta.get("n") == len(paths)
             and data_path.is_file() and data_path.stat().st_size == meta.get("kept", -1) * per_image)
    if valid:
        log(f"{name}: reusing the image cache {data_path} ({meta['kept']} images)")
    else:
        if meta is not None:
            log(f"{name}: images changed since {data_path} was built: rebuilding it")
        meta = _build_cache(files, canvas, data_path, meta_path,
                            {"version": CACHE_VERSION, "root": str(root.resolve()), "canvas": canvas.to_dict(),
                             "n": len(paths), "signature": signature},
                            desc=f"caching {name} -> {data_path.name}")
        log(f"{name}: built the image cache {data_path} ({meta['kept']} images, "
            f"{meta['kept'] * per_image / 1e9:.2f} GB, {meta['build_seconds']:.1f} s)")
    failures = {int(i): m for i, m in meta["failures"].items()}
    kept = [i for i in range(len(paths)) if i not in failures]
    return _open_mapped(data_path, len(kept), canvas), kept, failures
