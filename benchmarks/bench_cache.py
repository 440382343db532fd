"""Memory-mapped uint8 image cache (cache.cached_images): build time, read throughput, resident memory.

    python benchmarks/bench_cache.py                        # 10,000 images at 224 px = 1/10 of 100,000
    python benchmarks/bench_cache.py --n_images 100000       # the full size: 15 GB cache file, ~5 GB of PNGs
    python benchmarks/bench_cache.py --work_dir /fast/disk --keep True

Writes `n_images` PNG files (256 x 256 grayscale steel textures from the built-in synthetic
renderer; `unique_images` distinct ones, copied under different names so that generating
them stays cheap while every file is still decoded) and then measures:
1. build: decode + resize + crop every file into the memory-mapped cache (what the first
   `train_model.py --mmap_cache True` run does), images/s;
2. reuse: a second run finds the cache (stat of every file + open), seconds;
3. read: one training epoch of random batches (`gather_images`, as training.fit gathers them)
   with the file in the page cache (warm) and after evicting it (cold, posix_fadvise DONTNEED),
   next to the same gather from an in-RAM tensor of `ram_compare` images; MB/s and ratios;
4. resident memory of this process (VmRSS = RssAnon + RssFile, /proc/self/status) at each
   step: the anonymous part stays flat; the file-backed part is page cache that the kernel
   can drop, so a cache larger than RAM still trains.
It then extrapolates linearly to 100,000 images. Everything under work_dir is deleted
at the end unless --keep True.
"""
from __future__ import annotations

import gc
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from safehil.data.cache import cached_images  # noqa: E402
from safehil.data.datasets import gather_images  # noqa: E402
from safehil.data.synthetic import SYNTHETIC_CLASSES, render_synthetic_image  # noqa: E402
from safehil.settings.cli import parse_config
from safehil.core.utils import require  # noqa: E402

GB, MB = 1e9, 1e6
FULL = 100_000


@dataclass(frozen=True)
class Config:
    n_images: int = field(default=10_000, metadata={"help": "images in the generated set (the issue's target: 100,000)"})
    image_size: int = field(default=224, metadata={"help": "cached crop size in pixels"})
    source_size: int = field(default=256, metadata={"help": "side of the generated PNG files"})
    unique_images: int = field(default=120, metadata={"help": "distinct rendered images, copied to n_images files"})
    batch_size: int = field(default=64, metadata={"help": "batch of the random-read epoch"})
    read_images: int = field(default=0, metadata={"help": "images read per timed epoch; 0 = all"})
    ram_compare: int = field(default=2_000, metadata={"help": "images in the in-RAM tensor the reads are compared with"})
    work_dir: str = field(default="/tmp/hil_bench_cache", metadata={"help": "folder for the files and the cache"})
    keep: bool = field(default=False, metadata={"help": "keep the generated files and the cache"})
    seed: int = field(default=0, metadata={"help": "seed of the rendering and the read order"})

    def __post_init__(self):
        require(self.n_images >= 10, f"--n_images must be >= 10, got {self.n_images}")
        require(self.unique_images >= 1, f"--unique_images must be >= 1, got {self.unique_images}")
        require(16 <= self.image_size <= self.source_size, "--image_size must be in [16, source_size]")
        require(self.batch_size >= 1 and self.ram_compare >= 1 and self.read_images >= 0,
                "--batch_size and --ram_compare must be >= 1, --read_images >= 0")


def memory() -> dict[str, float]:
    """VmRSS, RssAnon and RssFile of this process in MB (Linux; zeros elsewhere)."""
    out = {"VmRSS": 0.0, "RssAnon": 0.0, "RssFile": 0.0}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key = line.split(":")[0]
            if key in out:
                out[key] = int(line.split()[1]) * 1024 / MB
    except OSError:
        pass
    return out


def show_memory(label: str) -> dict[str, float]:
    m = memory()
    print(f"  memory {label:<28} RSS {m['VmRSS']:8.0f} MB = anonymous {m['RssAnon']:7.0f} MB "
          f"+ file-backed {m['RssFile']:7.0f} MB", flush=True)
    return m


def generate_files(cfg: Config, root: Path) -> list[str]:
    """n_images PNGs under root/<class>/, copies of unique_images rendered ones -> relative paths."""
    pool = []
    for i in range(cfg.unique_images):
        label = SYNTHETIC_CLASSES[i % len(SYNTHETIC_CLASSES)]
        img = Image.fromarray(render_synthetic_image(label, cfg.seed * 100_003 + i, cfg.source_size))
        path = root / "pool" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path)
        pool.append((label, path.read_bytes()))
    paths = []
    for i in range(cfg.n_images):
        label, data = pool[i % len(pool)]
        rel = f"{label}/{i:06d}.png"
        (root / label).mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        paths.append(rel)
    return paths


def evict(path: Path) -> bool:
    """Drop a file's pages from the OS page cache (Linux posix_fadvise); False where impossible."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return True


def random_epoch(images: torch.Tensor, batch_size: int, count: int, seed: int) -> tuple[float, int]:
    """Gather `count` random images in batches like training.fit does -> (seconds, bytes read)."""
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:count]
    t0 = time.perf_counter()
    checksum = 0
    for start in range(0, len(order), batch_size):
        batch = gather_images(images, order[start:start + batch_size])
        checksum += int(batch[:, 0, 0, 0].sum())  # touch the result so nothing is skipped
    return time.perf_counter() - t0, len(order) * images[0].numel()


def main(cfg: Config) -> None:
    work = Path(cfg.work_dir)
    root, cache_dir = work / "images", work / "cache"
    per_image = 3 * cfg.image_size * cfg.image_size
    scale = FULL / cfg.n_images
    print(f"bench_cache: {cfg.n_images:,} images ({cfg.n_images / FULL:.0%} of {FULL:,}) of "
          f"{cfg.source_size} px -> cache at {cfg.image_size} px, {cfg.n_images * per_image / GB:.2f} GB "
          f"(100,000 images: {FULL * per_image / GB:.2f} GB); {os.cpu_count()} CPU cores; work dir {work}")
    if work.exists():
        shutil.rmtree(work)
    try:
        show_memory("at start")
        t0 = time.perf_counter()
        paths = generate_files(cfg, root)
        png_bytes = sum((root / p).stat().st_size for p in paths[:cfg.unique_images]) / cfg.unique_images
        print(f"  generated {len(paths):,} PNG files ({png_bytes * len(paths) / GB:.2f} GB) in "
              f"{time.perf_counter() - t0:.1f} s (setup, not measured)", flush=True)

        t0 = time.perf_counter()
        images, kept, failures = cached_images(paths, root, cfg.image_size, cache_dir, name="bench")
        build = time.perf_counter() - t0
        assert len(kept) == cfg.n_images and not failures
        data_file = next(cache_dir.glob("*.u8"))
        print(f"1 build  {build:8.1f} s  {cfg.n_images / build:8.0f} images/s  file {data_file.stat().st_size / GB:.2f} GB"
              f"  -> 100,000 images: ~{build * scale / 60:.0f} min at this rate", flush=True)
        mem_built = show_memory("after build")
        del images

        t0 = time.perf_counter()
        images, _, _ = cached_images(paths, root, cfg.image_size, cache_dir, name="bench")
        reuse = time.perf_counter() - t0
        print(f"2 reuse  {reuse:8.2f} s  (stat of {cfg.n_images:,} files + open; ~{reuse * scale:.1f} s for 100,000)")
        show_memory("after reopening")

        count = cfg.read_images or cfg.n_images
        warm_s, nbytes = random_epoch(images, cfg.batch_size, count, cfg.seed)
        mem_warm = show_memory("after a warm epoch")
        del images  # unmap first: pages mapped by a process cannot be evicted
        gc.collect()
        cold_ok = evict(data_file)
        images, _, _ = cached_images(paths, root, cfg.image_size, cache_dir, name="bench")  # fresh mapping
        cold_s, _ = random_epoch(images, cfg.batch_size, count, cfg.seed + 1)
        mem_cold = show_memory("after a cold epoch")
        n_ram = min(cfg.ram_compare, cfg.n_images)
        ram = images[:n_ram].clone()
        ram_s, ram_bytes = random_epoch(ram, cfg.batch_size, n_ram, cfg.seed)
        ram_rate = ram_bytes / ram_s
        print(f"3 read   random batches of {cfg.batch_size}, {count:,} images per epoch:")
        print(f"         in RAM (tensor of {n_ram:,}) {ram_rate / MB:9.0f} MB/s  {n_ram / ram_s:9.0f} images/s")
        print(f"         mmap, warm page cache  {nbytes / warm_s / MB:9.0f} MB/s  {count / warm_s:9.0f} images/s"
              f"  ratio to RAM {nbytes / warm_s / ram_rate:.2f}")
        label = "mmap, cold (evicted)  " if cold_ok else "mmap, second pass     "
        print(f"         {label} {nbytes / cold_s / MB:9.0f} MB/s  {count / cold_s:9.0f} images/s"
              f"  ratio to RAM {nbytes / cold_s / ram_rate:.2f}")
        print(f"4 memory anonymous RSS after build / warm / cold epoch: {mem_built['RssAnon']:.0f} / "
              f"{mem_warm['RssAnon']:.0f} / {mem_cold['RssAnon']:.0f} MB while the cache holds "
              f"{cfg.n_images * per_image / MB:.0f} MB; file-backed (page cache, reclaimable) up to "
              f"{max(mem_warm['RssFile'], mem_cold['RssFile']):.0f} MB")
        print(f"  extrapolated to 100,000 images: build ~{build * scale / 60:.0f} min once, a {FULL * per_image / GB:.1f} GB "
              f"file; an epoch reads {FULL * per_image / GB:.1f} GB, ~{FULL * per_image / (nbytes / warm_s) :.0f} s "
              f"warm / ~{FULL * per_image / (nbytes / cold_s):.0f} s cold at these rates; anonymous memory does "
              f"not grow with the set, so it fits a 24 GB machine (page cache holds what RAM allows).")
    finally:
        if not cfg.keep and work.exists():
            shutil.rmtree(work)


if __name__ == "__main__":
    main(parse_config(Config, description=__doc__))
