"""Overhead of the real training epoch over bare forward+backward on the same batches.

    python benchmarks/bench_training.py                       # ResNet18, 64 px, CPU or CUDA
    python benchmarks/bench_training.py --model tiny_cnn --image_size 32 --n 512

Times `training.train_one_epoch` (uint8 cache -> float, augmentation, shuffling, loss,
NaN guard, progress bar) against a loop that only runs model forward, cross-entropy,
backward and the optimiser step on pre-made float batches. Goal: ratio <= 1.15.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HIL_NO_PROGRESS", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from safehil.data.augment import Augmenter  # noqa: E402
from safehil.data.datasets import ImageSet  # noqa: E402
from safehil.training.models import build_model  # noqa: E402
from safehil.training.training import train_one_epoch  # noqa: E402
from safehil.core.utils import resolve_device  # noqa: E402


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_epoch(model, batches, labels, optimizer, device) -> float:
    """Forward + loss + backward + step over pre-made float batches; returns seconds."""
    model.train()
    synchronize(device)
    t0 = time.perf_counter()
    for x, y in zip(batches, labels):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    synchronize(device)
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18", help="network from models.MODELS")
    parser.add_argument("--image_size", type=int, default=64, help="input size in pixels")
    parser.add_argument("--batch_size", type=int, default=32, help="batch size")
    parser.add_argument("--n", type=int, default=1024, help="images per epoch")
    parser.add_argument("--repeats", type=int, default=3, help="epochs timed (best of)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    images = torch.randint(0, 256, (args.n, 3, args.image_size, args.image_size), dtype=torch.uint8)
    labels = torch.randint(0, 6, (args.n,))
    data = ImageSet(images, labels, [str(i) for i in range(args.n)], [str(c) for c in range(6)])
    model = build_model(args.model, 6).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    batches = [((images[i:i + args.batch_size].float() / 255 - 0.5) / 0.25).to(device).contiguous(memory_format=fmt)
               for i in range(0, args.n, args.batch_size)]
    ys = [labels[i:i + args.batch_size].to(device) for i in range(0, args.n, args.batch_size)]
    augment = Augmenter("neu", use_aug=True)
    generator = torch.Generator().manual_seed(0)
    bare_epoch(model, batches[:2], ys[:2], optimizer, device)  # warm-up
    bare, real = [], []
    for _ in range(args.repeats):
        bare.append(bare_epoch(model, batches, ys, optimizer, device))
        synchronize(device)
        t0 = time.perf_counter()
        train_one_epoch(model, data, optimizer, args.batch_size, 0.5, 0.25, device, augment, generator)
        synchronize(device)
        real.append(time.perf_counter() - t0)
    b, r = min(bare), min(real)
    print(f"device {device}, {args.model} at {args.image_size} px, batch {args.batch_size}, {args.n} images")
    print(f"bare forward+backward: {b:.2f} s/epoch ({args.n / b:.0f} img/s)")
    print(f"real training epoch:   {r:.2f} s/epoch ({args.n / r:.0f} img/s)")
    print(f"overhead ratio real/bare: {r / b:.3f}  (goal <= 1.15)")


if __name__ == "__main__":
    main()
