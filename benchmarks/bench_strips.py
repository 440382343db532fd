"""Whole Severstal strips against the 224 px square crop: images/s through decoding, augmentation
and one training step, and peak memory, as ratios strip / square.

    python benchmarks/bench_strips.py --cpu_threads 1                 # CPU, N = 8 (minutes at 1600 x 256)
    python benchmarks/bench_strips.py --n 256 --batch_size 32 --device cuda

Two cases, each in its own subprocess (so each peak memory is its own):
- strip:  1600 x 256 grey PNG strips (the built-in Severstal-like renderer at full size), geometry
  whole, one cached channel, Severstal's use_aug (ColorJitter in random order + gamma) after the
  rotation, batch ResNet18 training steps at 1600 x 256;
- square: 200 x 200 grey PNGs (the built-in NEU-like renderer), geometry crop 224 with the rotation
  margin (stored 256 x 256), NEU's use_aug (brightness gradient), ResNet18 steps at 224 x 224.
Stages: decode = file -> uint8 cache tensor (`cache.decode_images_skipping_bad`, threads as in a
run); augment = `to_model_input` with the Augmenter (uint8 -> float, rotation, crop, jitter or
gradient, 1 -> 3 channels, normalisation) on the device; step = forward + backward + Adam step.
Peak memory: the process's peak resident set (ru_maxrss) and, on CUDA, torch's peak allocated.
Also printed: stored bytes per image (one channel for grey sources against three).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HIL_NO_PROGRESS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

from safehil.data.augment import Augmenter, to_model_input  # noqa: E402
from safehil.data.cache import Canvas, crop_margin, decode_images_skipping_bad  # noqa: E402
from safehil.training.models import build_model  # noqa: E402
from safehil.data.synthetic import SYNTHETIC_CLASSES, render_strip, render_synthetic_image  # noqa: E402
from safehil.core.utils import resolve_device  # noqa: E402

CASES = {
    # name: (canvas, augmentation style, normalisation mean, std)
    "strip": (Canvas("whole", 256, 1600, 1), "severstal", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "square": (Canvas("crop", 224, 224, 1, crop_margin(224)), "neu", 0.095, 0.149),
}


def write_files(case: str, n: int, folder: Path) -> list[Path]:
    """n grey PNGs of the case's source size: 1600 x 256 strips or 200 x 200 squares."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        if case == "strip":
            image, _ = render_strip((1 + i % 4,), i, 256)
        else:
            image = render_synthetic_image(SYNTHETIC_CLASSES[i % 6], i, 200)
        path = folder / f"{i}.png"
        Image.fromarray(image).save(path)
        files.append(path)
    return files


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_case(case: str, n: int, batch_size: int, device: torch.device, steps: int) -> dict:
    """Time the three stages of one case -> {'decode', 'augment', 'step' (images/s), memory (MB)}."""
    canvas, style, mean, std = CASES[case]
    with tempfile.TemporaryDirectory() as tmp:
        files = write_files(case, n, Path(tmp))
        t0 = time.perf_counter()
        images, kept, failures = decode_images_skipping_bad(files, canvas)
        decode_s = time.perf_counter() - t0
    assert not failures and len(kept) == n
    augment, generator = Augmenter(style, use_aug=True), torch.Generator(device=device).manual_seed(0)
    size = (canvas.height, canvas.width)
    batches = [images[i:i + batch_size] for i in range(0, n, batch_size)]
    to_model_input(batches[0], mean, std, device, augment, generator, size)  # warm-up
    synchronize(device)
    t0 = time.perf_counter()
    inputs = [to_model_input(b, mean, std, device, augment, generator, size) for b in batches]
    synchronize(device)
    augment_s = time.perf_counter() - t0
    model = build_model("resnet18", 5).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    labels = torch.zeros(batch_size, dtype=torch.long, device=device)

    def step(x):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = F.cross_entropy(model(x).float(), labels[:len(x)])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train()
    step(inputs[0])  # warm-up (allocations, cuDNN choice)
    synchronize(device)
    t0 = time.perf_counter()
    done = 0
    for i in range(steps):
        x = inputs[i % len(inputs)]
        step(x)
        done += len(x)
    synchronize(device)
    step_s = time.perf_counter() - t0
    return {"case": case, "n": n, "input": f"{canvas.width}x{canvas.height}",
            "stored_bytes_per_image": int(np.prod(canvas.stored_shape)),
            "decode": n / decode_s, "augment": n / augment_s, "step": done / step_s,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=8, help="images per case")
    parser.add_argument("--batch_size", type=int, default=4, help="images per augmentation batch and training step")
    parser.add_argument("--steps", type=int, default=2, help="training steps timed per case")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--cpu_threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--case", default="", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = parser.parse_args()
    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    if args.case:
        print(json.dumps(run_case(args.case, args.n, args.batch_size, resolve_device(args.device), args.steps)))
        return
    results = {}
    for case in CASES:
        command = [sys.executable, __file__, "--case", case, *sys.argv[1:]]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results[case] = json.loads(out.strip().splitlines()[-1])
        r = results[case]
        print(f"{case:>6} {r['input']:>9}: decode {r['decode']:8.1f}  augment {r['augment']:8.1f}  "
              f"step {r['step']:7.2f} images/s; peak RSS {r['peak_rss_mb']:7.0f} MB"
              + (f", peak CUDA {r['peak_cuda_mb']:7.0f} MB" if r["peak_cuda_mb"] else "")
              + f"; {r['stored_bytes_per_image']:,} stored bytes per image", flush=True)
    s, q = results["strip"], results["square"]
    print(f"ratio strip / square: decode {s['decode'] / q['decode']:.2f}x, augment {s['augment'] / q['augment']:.2f}x, "
          f"step {s['step'] / q['step']:.2f}x images/s; peak RSS {s['peak_rss_mb'] / q['peak_rss_mb']:.2f}x"
          + (f", peak CUDA {s['peak_cuda_mb'] / q['peak_cuda_mb']:.2f}x" if q["peak_cuda_mb"] else "")
          + f"; stored bytes {s['stored_bytes_per_image'] / q['stored_bytes_per_image']:.2f}x "
          f"(pixels {1600 * 256 / 224 ** 2:.2f}x; a 3-channel strip would store "
          f"{3 * s['stored_bytes_per_image']:,} bytes)")
    print(f"device {args.device}, {torch.get_num_threads()} threads, N = {args.n}, batch {args.batch_size}, "
          f"{args.steps} steps timed")


if __name__ == "__main__":
    main()
