"""Helper of tests/training/test_distributed.py (not a test itself): train the tiny CNN on a toy set with
training.fit and let rank 0 save the final weights, so a 2-process gloo run can be compared with
a single-process run on the same global batch.

    python tests/training/ddp_worker.py OUT.pt [--batch_norm]                                  # one process
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/training/ddp_worker.py OUT.pt
    ... tests/training/ddp_worker.py OUT.pt --random --epochs 4 --run_dir DIR [--resume]      # resumable

Without --batch_norm the network has no batch norm, dropout is 0 and there is no augmentation:
then the only randomness is the shuffled order, which every rank shares, so the two runs must
agree up to float rounding. With --batch_norm each rank normalises with its own half batch.
With --random the head has dropout 0.5 and the paper's augmentation is on, so every rank draws
its own random streams; --run_dir DIR writes last.pt there and --resume continues from it.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from safehil.data.augment import Augmenter  # noqa: E402
from safehil.data.datasets import ImageSet  # noqa: E402
from safehil.training.models import build_model  # noqa: E402
from safehil.training.training import fit  # noqa: E402
from safehil.core.utils import cleanup_distributed, get_world_size, is_main_process, setup_distributed  # noqa: E402


def toy_set(n: int, seed: int, size: int = 16) -> ImageSet:
    """Two classes, bright left half vs bright right half, plus noise: uint8 [n, 3, size, size]."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    x = torch.rand(n, 1, size, size, generator=g) * 80
    half = size // 2
    x[labels == 0, :, :, :half] += 120
    x[labels == 1, :, :, half:] += 120
    return ImageSet(x.clamp(0, 255).to(torch.uint8).repeat(1, 3, 1, 1), labels,
                    [f"img{i}" for i in range(n)], ["left", "right"])


def make_model(batch_norm: bool, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)  # the same initial weights in every process
    model = build_model("tiny_cnn", 2, dropout=dropout)
    if not batch_norm:
        for i, m in enumerate(model.features):
            if isinstance(m, nn.BatchNorm2d):
                model.features[i] = nn.Identity()
    return model


def option(name: str, default: str | None) -> str | None:
    """The value after `name` on the command line, else `default`."""
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


def main() -> None:
    out = Path(sys.argv[1])
    batch_norm = "--batch_norm" in sys.argv
    random_draws = "--random" in sys.argv
    epochs = int(option("--epochs", "3"))
    setup_distributed()
    try:
        model = make_model(batch_norm, dropout=0.5 if random_draws else 0.0)
        result = fit(model, toy_set(96, 0), toy_set(32, 1), epochs=epochs, patience=epochs, batch_size=16, lr=3e-3,
                     mean=0.3, std=0.25, device=torch.device("cpu"), seed=5,
                     augment=Augmenter("neu", True) if random_draws else None, out_dir=option("--run_dir", None),
                     resume="--resume" in sys.argv,
                     checkpoint_extra={"model_name": "tiny_cnn", "class_names": ["left", "right"]})
        if is_main_process():
            torch.save({"model": model.state_dict(), "history": result.history,
                        "world_size": get_world_size()}, out)
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    main()
