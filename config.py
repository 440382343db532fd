"""Shared configuration: the frozen dataclass bases every script's `Config` is built from, and
the one resolver that fills "empty = the checkpoint's" data fields.

    @dataclass(frozen=True)
    class Config(RunConfig, TrainConfig, DataConfig):       # data, then training, then run flags
        out_dir: str = flag("results/train", "parent folder of run folders")   # a script's own default
        seed: int = flag(0, "seed of a single run")                            # a script's own flag

Bases (each field becomes a `--flag` through `utils.parse_config`; `--help` lists them in
groups named by GROUP):
  DataRoot        data_dir: its only declaration
  DataFiles       + split_csv: its only declaration
  DataConfig      + dataset, per_class, multi_label_rule: the data a model is trained on
  CheckpointData  + dataset, per_class, multi_label_rule with empty / 0 = "what the checkpoint was trained
                  on", filled by `resolve_data`
  CheckpointRun   + checkpoint, T (0 = the paper's): a script that scores one checkpoint
  TrainConfig     model, image_size, weights, freeze, dropout, epochs, patience, lr, use_aug,
                  base_augmentation
  OutputConfig    device, out_dir, batch_size
  RunConfig       + run_name: a script that writes one run folder out_dir/run_name/
  GridRun         + cpu_threads, shard, merge: a resumable grid of tasks

A subclass changes an inherited default by redeclaring the field (dataclasses keep its
position), and re-words an inherited flag's help with `FLAG_HELP = {"flag": "text"}`
(a plain class attribute, not a field). Each base checks its own fields in `__post_init__`;
a script's `__post_init__` calls `super().__post_init__()` first.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from augment import BASE_AUGMENTATIONS
from datasets import DATASETS, MULTI_LABEL_RULES, paper_mc_samples
from models import MODELS
from utils import InputError, flag, parse_shard, require


@dataclass(frozen=True)
class Flags:
    """Root of every config base: makes `super().__post_init__()` safe in any base order."""
    GROUP = None  # flags of a base without a GROUP are listed with the script's own

    def __post_init__(self):
        pass


# ============================================================================ data

@dataclass(frozen=True)
class DataRoot(Flags):
    """Where the images are (the only declaration of --data_dir)."""
    GROUP = "data"
    data_dir: str = flag("", "data root; empty = built-in synthetic data")


@dataclass(frozen=True)
class DataFiles(DataRoot):
    """Where the images and their split table are (the only declaration of --split_csv)."""
    split_csv: str = flag("", "path,label,split CSV; empty = the layout's splits")


@dataclass(frozen=True)
class DataConfig(DataFiles):
    """The data a model is trained on (train_model, active learning, data generation)."""
    dataset: str = flag("synthetic", "data set adapter", choices=DATASETS)
    per_class: int = flag(300, "synthetic images per class")
    multi_label_rule: str = flag("largest_area", "Severstal images with several defect classes",
                                 choices=MULTI_LABEL_RULES)

    def __post_init__(self):
        super().__post_init__()
        require(self.per_class >= 5, f"--per_class must be >= 5, got {self.per_class}")


@dataclass(frozen=True)
class CheckpointData(DataFiles):
    """Data fields where empty (or 0) means "what the checkpoint was trained on"; see `resolve_data`."""
    FLAG_HELP = {"data_dir": "data root; empty = the checkpoint's training data",
                 "split_csv": "path,label,split CSV; empty = the checkpoint's"}
    dataset: str = flag("", "data set adapter; empty = the checkpoint's")
    per_class: int = flag(0, "synthetic images per class; 0 = the checkpoint's")
    multi_label_rule: str = flag("", "Severstal multi-label rule; empty = the checkpoint's",
                                 choices=("",) + MULTI_LABEL_RULES)

    def __post_init__(self):
        super().__post_init__()
        require(self.per_class >= 0, f"--per_class must be >= 0, got {self.per_class}")


# help of the CheckpointData flags in the scripts that take the data of the first of two checkpoints
MODEL_A_DATA_HELP = {
    "dataset": "data set adapter; empty = the one model A was trained on",
    "data_dir": "data root; empty = model A's training data",
    "split_csv": "path,label,split CSV; empty = model A's training split",
    "per_class": "synthetic images per class; 0 = model A's",
    "multi_label_rule": "Severstal multi-label rule; empty = model A's",
}


@dataclass(frozen=True)
class CheckpointRun(CheckpointData):
    """A script that scores one trained checkpoint with MC dropout (get_mc_scores, saliency)."""
    GROUP = "checkpoint"
    checkpoint: str = flag("results/train/resnet18_synthetic_noaug_s0/best.pt",
                           "model checkpoint written by train_model.py (best.pt)")
    T: int = flag(0, "MC-dropout samples per image; 0 = the paper's (20 NEU-like and synthetic, 40 Severstal)")

    def __post_init__(self):
        super().__post_init__()
        require(bool(self.checkpoint), "--checkpoint is needed")
        require(self.T == 0 or self.T >= 2, f"--T must be >= 2 MC samples (or 0 = paper's), got {self.T}")


def trained_seed(meta: dict) -> int:
    """The seed a checkpoint was trained with: it picks the split of layouts without split folders."""
    return int(meta.get("config", {}).get("seed", 0) or 0)


def _check_same_data(meta_a: dict, meta_b: dict, names: tuple[str, str]) -> None:
    """Refuse two checkpoints trained on different data (the seed counts only where it picks the split)."""
    trained_a, trained_b = meta_a.get("config", {}), meta_b.get("config", {})
    seeded = not trained_a.get("split_csv") and trained_a.get("dataset") not in ("synthetic", None)
    keys = ("dataset", "data_dir", "split_csv", "per_class", "multi_label_rule") + (("seed",) if seeded else ())
    differ = [k for k in keys if trained_a.get(k) != trained_b.get(k)]
    if differ:
        raise InputError(f"{names[0]} and {names[1]} were trained on different data ({differ} differ); "
                         "pass --dataset/--data_dir/--split_csv to evaluate both on one split")


def resolve_data(cfg: CheckpointData, meta: dict, other_meta: dict | None = None,
                 names: tuple[str, str] = ("model A", "model B")):
    """`cfg` with every empty data field (and T = 0 of a CheckpointRun) filled from what the
    checkpoint `meta` was trained on; explicit flags win. --data_dir or --split_csv given
    replaces both paths. With `other_meta` (a second checkpoint, named by `names`), the two
    must have been trained on the same data unless a path is given explicitly."""
    trained = meta.get("config", {})
    explicit = bool(cfg.data_dir or cfg.split_csv)
    if other_meta is not None and not explicit:
        _check_same_data(meta, other_meta, names)
    dataset = cfg.dataset or trained.get("dataset") or meta.get("dataset") or "synthetic"
    changes = dict(dataset=dataset,
                   data_dir=cfg.data_dir if explicit else trained.get("data_dir") or "",
                   split_csv=cfg.split_csv if explicit else trained.get("split_csv") or "",
                   per_class=cfg.per_class or int(trained.get("per_class") or 300),
                   multi_label_rule=cfg.multi_label_rule or trained.get("multi_label_rule") or "largest_area")
    if isinstance(cfg, CheckpointRun):
        changes["T"] = cfg.T or paper_mc_samples(dataset)
    return replace(cfg, **changes)


# ============================================================================ training

@dataclass(frozen=True)
class TrainConfig(Flags):
    """How a model is built and trained with `training.fit`."""
    GROUP = "training"
    model: str = flag("resnet18", "network", choices=MODELS)
    image_size: int = flag(224, "crop size in pixels (resize is 256/224 of it)")
    weights: str = flag("none", "none | imagenet | PATH to a state dict")
    freeze: bool | None = flag(None, "paper's layer freezing; default: on only with pretrained weights")
    dropout: float | None = flag(None, "head dropout; default the paper's")
    epochs: int = flag(100, "maximum epochs")
    patience: int = flag(10, "early-stopping patience in epochs (val loss)")
    lr: float = flag(1e-3, "Adam learning rate")
    use_aug: bool = flag(False, "paper's extra augmentation (NEU: brightness gradient; Severstal: jitter + gamma)")
    base_augmentation: str = flag("paper", "train-time base augmentation: paper = rotation +-30 + horizontal flip, "
                                  "flip = horizontal flip only (the AL toolkit's), none (when a flip or rotation "
                                  "can change the class)", choices=BASE_AUGMENTATIONS)

    def __post_init__(self):
        super().__post_init__()
        # None: a script that takes the value from a named recipe (see active_learning.resolve_recipe)
        require(self.epochs is None or self.epochs >= 0, f"--epochs must be >= 0, got {self.epochs}")
        require(self.patience is None or self.patience >= 1, f"--patience must be >= 1, got {self.patience}")
        require(self.lr is None or self.lr > 0, f"--lr must be > 0, got {self.lr}")
        require(self.image_size >= 16, f"--image_size must be >= 16, got {self.image_size}")
        require(self.dropout is None or 0 <= self.dropout < 1, f"--dropout must be in [0, 1), got {self.dropout}")
        require(self.weights in ("none", "imagenet") or self.weights.strip() != "",
                "--weights must be none, imagenet or a PATH")


# ============================================================================ run

@dataclass(frozen=True)
class OutputConfig(Flags):
    """What a script runs on and where it writes."""
    GROUP = "run"
    device: str = flag("auto", "auto | cpu | cuda | cuda:N")
    out_dir: str = flag("results", "output folder")
    batch_size: int = flag(64, "images per batch")

    def __post_init__(self):
        super().__post_init__()
        require(re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device) is not None,
                f"--device must be auto, cpu, mps, cuda or cuda:N, got {self.device!r}")
        require(self.batch_size is None or self.batch_size >= 1, f"--batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class RunConfig(OutputConfig):
    """A script that writes one run folder, out_dir/run_name/."""
    run_name: str = flag("", "run folder name; empty = named after the settings")

    def __post_init__(self):
        super().__post_init__()
        require(self.run_name == "" or re.fullmatch(r"[\w.+=-]+", self.run_name) is not None,
                f"--run_name must be a plain folder name (letters, digits, . _ - + =), got {self.run_name!r}")


@dataclass(frozen=True)
class GridRun(RunConfig):
    """A resumable grid of tasks: one file per finished task, shards that merge into one result."""
    cpu_threads: int = flag(0, "torch CPU threads; 0 = torch's default (use 1 when other jobs share the cores)")
    shard: str = flag("0/1", "i/n: run only every n-th task starting at i (one process or GPU each)")
    merge: bool = flag(False, "only merge the finished tasks in the run folder into the final files, train nothing")

    def __post_init__(self):
        super().__post_init__()
        require(self.cpu_threads >= 0, f"--cpu_threads must be >= 0, got {self.cpu_threads}")
        parse_shard(self.shard)


if __name__ == "__main__":
    raise SystemExit("config.py is a library module; run one of the scripts instead.")
