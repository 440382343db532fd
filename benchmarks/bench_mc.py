"""Speed of MC dropout: the fast call (trunk once, head T times) against one deterministic
forward pass of the same batch and against T plain full forward passes.

    python benchmarks/bench_mc.py                             # ResNet18, batch 64, T = 50
    python benchmarks/bench_mc.py --image_size 224 --device cuda
    python benchmarks/bench_mc.py --model vgg16 --image_size 64 --plain_repeats 1

Goals (issue 5): MC call <= 1.3x one forward pass; >= 30x faster than T plain passes.
The default input is 224 px on CUDA and 64 px on the CPU (T full ResNet18 passes at 224 px
take minutes on a small CPU); times are the median of the repeats.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HIL_NO_PROGRESS", "1")

import torch  # noqa: E402

from safehil.uq import uncertainty  # noqa: E402
from safehil.training.models import build_model  # noqa: E402
from safehil.training.training import _autocast  # noqa: E402
from safehil.core.utils import resolve_device  # noqa: E402


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of `repeats` calls of fn() (after the caller's warm-up)."""
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.no_grad()
def forward_once(model, x):
    with _autocast(x.device):
        return model(x).float().softmax(-1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18", help="network from models.MODELS")
    parser.add_argument("--image_size", type=int, default=0, help="input size; 0 = 224 on CUDA, 64 on the CPU")
    parser.add_argument("--batch_size", type=int, default=64, help="images per batch")
    parser.add_argument("--T", type=int, default=50, help="MC-dropout samples")
    parser.add_argument("--classes", type=int, default=6, help="number of classes")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of the forward and the MC call")
    parser.add_argument("--plain_repeats", type=int, default=1, help="timed runs of the T plain passes")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch's default)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = args.image_size or (224 if device.type == "cuda" else 64)
    torch.manual_seed(0)
    model = build_model(args.model, args.classes).to(device).eval()
    x = torch.randn(args.batch_size, 3, size, size, device=device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    generator = torch.Generator().manual_seed(0)
    fast_path = uncertainty.fast_path_available(model)

    def mc():
        return uncertainty.mc_dropout_probs(model, x, args.T, generator)

    def plain():
        return uncertainty.mc_dropout_probs(model, x, args.T, generator, use_fast=False)

    for fn in (lambda: forward_once(model, x), mc):  # warm-up (cudnn autotune, allocator)
        fn()
        fn()
    t_forward = timed(lambda: forward_once(model, x), device, args.repeats)
    t_mc = timed(mc, device, args.repeats)
    t_plain = timed(plain, device, args.plain_repeats)
    threads = torch.get_num_threads() if device.type == "cpu" else "-"
    print(f"{args.model}, batch {args.batch_size}, {size} px, T = {args.T}, device {device} "
          f"(threads {threads}), fast path {'on' if fast_path else 'off (plain passes)'}")
    print(f"one deterministic forward : {1000 * t_forward:9.1f} ms")
    print(f"MC call (fast)            : {1000 * t_mc:9.1f} ms")
    print(f"T plain full passes       : {1000 * t_plain:9.1f} ms")
    print(f"MC call / one forward     : {t_mc / t_forward:6.2f}x   (goal <= 1.3x)")
    print(f"T plain passes / MC call  : {t_plain / t_mc:6.1f}x   (goal >= 30x)")


if __name__ == "__main__":
    main()
