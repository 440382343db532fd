"""Cost of the active-learning toolkit's CIFAR table: the CIFAR ResNet18 per epoch at 32 px, batch 96,
and the projected wall time of the whole table (docs/faithfulness_toolkit.md, "Cost").

    python benchmarks/bench_toolkit.py                       # CPU here, or CUDA when present
    python benchmarks/bench_toolkit.py --n 9600 --repeats 3  # more images timed (a GPU)
    python benchmarks/bench_toolkit.py --gpu_tflops 10       # the throughput assumed for a GPU projection from CPU

Times `training.train_one_epoch` (uint8 -> float, RandomCrop(32, padding 4) + flip, SGD Nesterov,
cross-entropy) of `resnet18_cifar` on `--n` random 32 px images in batches of 96, and `predict`
(evaluation) on the same images, and counts the floating-point operations of one training image,
one evaluated image and one released-VAAL iteration (64 labelled + 64 unlabelled images at full
width) with torch's FlopCounterMode. The table's work (configs/cifar10/al/RESNET18.yaml): 9
strategies x 3 seeds, 6 trainings (the initial 5,000 labelled images, then 5 episodes of 5,000
more: 10 % ... 60 % of CIFAR-10's 50,000 train images; the pool is the 45,000 left after the 10 %
validation), 200 epochs each, the ensemble's 3 members each trained, validation of the 5,000 held-out images
every 2 epochs, the 10,000 test images once a round, one forward pass over the pool per query
(MC dropout repeats only the head), and VAAL's 100 epochs of 45,000 // 64 iterations per query.
Projected time = that work / the measured rate on this device; the GPU time when measured on CPU
is the work's FLOPs / `--gpu_tflops` (an assumption, printed as such).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HIL_NO_PROGRESS", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from safehil.active import vaal  # noqa: E402
from safehil.data.augment import Augmenter  # noqa: E402
from safehil.data.datasets import ImageSet  # noqa: E402
from safehil.training.models import build_model  # noqa: E402
from safehil.training.training import make_optimizer, predict, train_one_epoch  # noqa: E402
from safehil.core.utils import resolve_device  # noqa: E402

POOL, VALID, TEST = 45_000, 5_000, 10_000   # CIFAR-10 train minus 10 % validation, the validation, the test split
LABELLED = tuple(5_000 * k for k in range(1, 7))  # INIT_L_RATIO 0.1 of 50,000, BUDGET_SIZE 5,000, MAX_ITER 5
EPOCHS, VALIDATE_EVERY = 200, 2              # the toolkit's epochs per round and validation period
STRATEGIES, ENSEMBLE, SEEDS = 9, 3, 3        # the ensemble strategy trains 3 members
VAAL_EPOCHS, VAAL_BATCH = 100, 64


def table_work() -> dict:
    """Image passes of the whole table: training images, evaluated images, VAAL iterations."""
    labelled = sum(LABELLED)
    runs = (STRATEGIES - 1 + ENSEMBLE) * SEEDS            # trained models per round, summed over the table
    train = runs * EPOCHS * labelled
    evaluated = runs * len(LABELLED) * ((EPOCHS // VALIDATE_EVERY) * VALID + TEST) \
        + STRATEGIES * SEEDS * (len(LABELLED) - 1) * POOL   # the queries: one pass over the pool each
    vaal_iterations = SEEDS * (len(LABELLED) - 1) * VAAL_EPOCHS * (POOL // VAAL_BATCH)
    return {"train_images": train, "evaluated_images": evaluated, "vaal_iterations": vaal_iterations}


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def training_image_flops(model) -> float:
    """FLOPs of forward + backward of one 32 px image (a batch of 4, divided)."""
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    model = model.cpu().train()
    return flops(lambda: F.cross_entropy(model(x), y).backward()) / 4


def eval_image_flops(model) -> float:
    x = torch.randn(4, 3, 32, 32)
    model = model.cpu().eval()
    with torch.no_grad():
        return flops(lambda: model(x)) / 4


def vaal_iteration_flops() -> float:
    """FLOPs of one released VAAL iteration (VAE step + discriminator step) at full width, batch 64 + 64,
    counted on 2 + 2 images and scaled (the networks cost the same per image)."""
    torch.manual_seed(0)
    vae, disc = vaal.VAE(32, vaal.LATENT_DIM, vaal.VAE_WIDTH, "released"), vaal.Discriminator(kaiming=True)
    x_l, x_u, noise = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32), torch.Generator().manual_seed(0)

    def one_iteration():
        vaal.released_vae_loss(vae, disc, x_l, x_u, noise, 1.0, 1.0).backward()
        vaal.released_discriminator_loss(vae, disc, x_l, x_u).backward()
    return flops(one_iteration) * VAAL_BATCH / 2


def time_epochs(model, data, device, batch_size, repeats) -> tuple[float, float]:
    """(best seconds of one training epoch, best seconds of one evaluation pass) over `data`."""
    optimizer = make_optimizer(model.parameters(), "sgd_nesterov", 0.025, 3e-4)
    augment = Augmenter("neu", base="crop_flip")
    generator = torch.Generator().manual_seed(0)
    warm = ImageSet(data.images[:2 * batch_size], data.labels[:2 * batch_size], data.paths[:2 * batch_size],
                    data.class_names)
    train_one_epoch(model, warm, optimizer, batch_size, 0.5, 0.25, device, augment, generator)
    train, test = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        train_one_epoch(model, data, optimizer, batch_size, 0.5, 0.25, device, augment, generator)
        if device.type == "cuda":
            torch.cuda.synchronize()
        train.append(time.perf_counter() - start)
        start = time.perf_counter()
        predict(model, data, 0.5, 0.25, device, batch_size=500)
        test.append(time.perf_counter() - start)
    return min(train), min(test)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=0, help="images per timed epoch; 0 = 960 on CPU, 19,200 on CUDA")
    parser.add_argument("--batch_size", type=int, default=96, help="the toolkit's batch")
    parser.add_argument("--repeats", type=int, default=2, help="epochs timed (best of)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--gpu_tflops", type=float, default=10.0,
                        help="sustained TFLOP/s assumed for the GPU projection when measured on CPU")
    args = parser.parse_args()
    device = resolve_device(args.device)
    n = args.n or (19_200 if device.type == "cuda" else 960)
    torch.manual_seed(0)
    data = ImageSet(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 10, (n,)),
                    [str(i) for i in range(n)], [str(c) for c in range(10)])
    model = build_model("resnet18_cifar", 10)
    per_train_image, per_eval_image = training_image_flops(model), eval_image_flops(model)
    per_vaal_iteration = vaal_iteration_flops()
    model = build_model("resnet18_cifar", 10).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    train_s, eval_s = time_epochs(model, data, device, args.batch_size, args.repeats)
    work = table_work()
    flop_total = (work["train_images"] * per_train_image + work["evaluated_images"] * per_eval_image
                  + work["vaal_iterations"] * per_vaal_iteration)
    measured_rate = per_train_image * n / train_s            # FLOP/s this device sustained while training
    result = {
        "device": str(device), "threads": torch.get_num_threads(), "images_timed": n, "batch_size": args.batch_size,
        "train_seconds_per_image": train_s / n, "eval_seconds_per_image": eval_s / n,
        "train_seconds_per_epoch_45000": train_s / n * POOL,
        "train_gflop_per_image": per_train_image / 1e9, "eval_gflop_per_image": per_eval_image / 1e9,
        "vaal_tflop_per_iteration": per_vaal_iteration / 1e12, **work,
        "table_pflop": flop_total / 1e15,
        "table_hours_on_this_device": flop_total / measured_rate / 3600,
    }
    if device.type == "cuda":
        result["table_hours_on_one_gpu"] = result["table_hours_on_this_device"]
        result["gpu_rate_basis"] = "measured"
    else:
        result["table_hours_on_one_gpu"] = flop_total / (args.gpu_tflops * 1e12) / 3600
        result["gpu_rate_basis"] = f"assumed {args.gpu_tflops:g} TFLOP/s sustained (not measured)"
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
