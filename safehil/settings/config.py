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
  ModelCheckpoints checkpoints: one model or the cascade's pair (predict, evaluate_safety, review, export)
  CheckpointRun   + checkpoint, T (0 = the paper's): a script that scores one checkpoint
  TrainConfig     model, image_size, weights, freeze, dropout, epochs, patience, lr, passes (use_aug:
                  its deprecated spelling), base_augmentation
  OutputConfig    device, out_dir, batch_size, cpu_threads
  RunConfig       + run_name, overwrite: a script that writes one run folder out_dir/run_name/
  GridRun         + shard, merge: a resumable grid of tasks

Size-like flags carry an upper bound (`flag(..., most=N)`, stated in --help) and every number
must be finite: both are checked when a config is built (`utils.check_flag_values`), so a typo
exits with code 2 instead of allocating hundreds of GB.

Run folders (naming, claiming, refusing another run's results) live in `run_folders.py`.

A subclass changes an inherited default by redeclaring the field (dataclasses keep its
position), and re-words an inherited flag's help with `FLAG_HELP = {"flag": "text"}`
(a plain class attribute, not a field). Each base checks its own fields in `__post_init__`;
a script's `__post_init__` calls `super().__post_init__()` first.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, replace

from safehil.core.utils import InputError, parse_shard, require
from safehil.data.augment import BASE_AUGMENTATIONS
from safehil.data.datasets import DATASETS, MULTI_LABEL_RULES, layout_of
from safehil.data.images import DEFAULT_MAX_IMAGE_PIXELS, pixel_limit
from safehil.settings.cli import MAX_SEED, check_flag_values, flag, sources_field, with_sources
from safehil.settings.presets import paper_default, paper_T, paper_values
from safehil.training.models import MODELS
from safehil.training.training import CLASS_WEIGHTS, PASSES

# Upper bounds of the size-like flags: generous for the papers' settings (224 px, T = 40, batch 64),
# small enough that a typo fails at once instead of allocating hundreds of GB.
MAX_IMAGE_SIZE = 1024
MAX_MC_SAMPLES = 1000
MAX_BATCH_SIZE = 4096
MAX_EPOCHS = 10_000
MAX_PER_CLASS = 100_000
MAX_IMAGES = 10_000_000
MAX_THREADS = 1024


@dataclass(frozen=True)
class Flags:
    """Root of every config base: makes `super().__post_init__()` safe in any base order, and
    checks every field's value: finite numbers within their `most` bound."""
    GROUP = None  # flags of a base without a GROUP are listed with the script's own
    setting_sources: tuple[tuple[str, str], ...] = sources_field()  # not a flag: see utils.setting_sources

    def __post_init__(self):
        check_flag_values(self)


# ============================================================================ data

@dataclass(frozen=True)
class DataRoot(Flags):
    """Where the images are (the only declaration of --data_dir)."""
    GROUP = "data"
    data_dir: str = flag("", "data root; empty = built-in synthetic data")
    max_image_pixels: int = flag(DEFAULT_MAX_IMAGE_PIXELS, "images with more pixels (width x height, read from the "
                                 "header before decoding) are bad input", most=1_000_000_000)

    def __post_init__(self):
        super().__post_init__()
        require(self.max_image_pixels >= 1, f"--max_image_pixels must be >= 1, got {self.max_image_pixels}")

    def run_context(self):
        """The block a script runs in (`utils.run_main`): images above --max_image_pixels are bad input."""
        return pixel_limit(self.max_image_pixels)


@dataclass(frozen=True)
class DataFiles(DataRoot):
    """Where the images and their split table are (the only declaration of --split_csv)."""
    split_csv: str = flag("", "path,label,split CSV; empty = the layout's splits")


@dataclass(frozen=True)
class DataConfig(DataFiles):
    """The data a model is trained on (train_model, active learning, data generation)."""
    dataset: str = flag("synthetic", "data set adapter", choices=DATASETS)
    per_class: int = flag(300, "synthetic images per class", most=MAX_PER_CLASS)
    multi_label_rule: str = flag("largest_area", "Severstal images with several defect classes",
                                 choices=MULTI_LABEL_RULES)
    split_seed: int = flag(0, "seed of the stratified split carved where the data has no split CSV or split folders; "
                              "independent of --seed, so models trained with different seeds share one split",
                           most=MAX_SEED)

    def __post_init__(self):
        super().__post_init__()
        require(self.split_seed >= 0, f"--split_seed must be >= 0, got {self.split_seed}")
        require(self.per_class >= 5, f"--per_class must be >= 5, got {self.per_class}")
        require(bool(self.data_dir) or layout_of(self.dataset).builtin is not None
                or layout_of(self.dataset).default_root is not None,
                f"--dataset {self.dataset} needs --data_dir (the folder holding the images)")


@dataclass(frozen=True)
class CheckpointData(DataFiles):
    """Data fields where empty (or 0) means "what the checkpoint was trained on"; see `resolve_data`."""
    FLAG_HELP = {"data_dir": "data root; empty = the checkpoint's training data",
                 "split_csv": "path,label,split CSV; empty = the checkpoint's"}
    dataset: str = flag("", "data set adapter; empty = the checkpoint's")
    per_class: int = flag(0, "synthetic images per class; 0 = the checkpoint's", most=MAX_PER_CLASS)
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
class ModelCheckpoints(Flags):
    """One model or the cascade's pair, as `--checkpoints A.pt[,B.pt]` (a script that takes exactly
    one model has `--checkpoint`, see CheckpointRun). Model A's prediction is the answer; B, when
    given, is the cascade's second, different model with the same classes."""
    GROUP = "checkpoint"
    checkpoints: tuple[str, ...] = flag(("results/train/resnet18_synthetic_plain_s0/best.pt",),
                                        "checkpoint of model A (train_model.py best.pt), or A,B: the cascade's pair")

    def __post_init__(self):
        super().__post_init__()
        require(1 <= len(self.checkpoints) <= 2 and all(self.checkpoints),
                f"--checkpoints takes one checkpoint or two (A,B), got {','.join(self.checkpoints) or 'none'}")

    @property
    def checkpoint_a(self) -> str:
        return self.checkpoints[0]

    @property
    def checkpoint_b(self) -> str:
        """Model B's checkpoint; '' for one model."""
        return self.checkpoints[1] if len(self.checkpoints) > 1 else ""


@dataclass(frozen=True)
class CheckpointRun(CheckpointData):
    """A script that scores one trained checkpoint with MC dropout (get_mc_scores, saliency)."""
    GROUP = "checkpoint"
    checkpoint: str = flag("results/train/resnet18_synthetic_plain_s0/best.pt",
                           "model checkpoint written by train_model.py (best.pt)")
    T: int = flag(0, "MC-dropout samples per image; 0 = the paper preset's of the data set "
                     f"({paper_values('T')})", most=MAX_MC_SAMPLES)

    def __post_init__(self):
        super().__post_init__()
        require(bool(self.checkpoint), "--checkpoint is needed")
        require(self.T == 0 or self.T >= 2, f"--T must be >= 2 MC samples (or 0 = paper's), got {self.T}")


def trained_seed(meta: dict) -> int:
    """The seed a checkpoint was trained with (--seed)."""
    return int(meta.get("config", {}).get("seed", 0) or 0)


def trained_split_seed(meta: dict) -> int:
    """The seed that carved a checkpoint's split (layouts without split folders): its --split_seed;
    for a checkpoint written before split seeds existed, its training --seed (which carved it then)."""
    trained = meta.get("config", {})
    return int(trained.get("split_seed", trained.get("seed", 0)) or 0)


def _check_same_data(meta_a: dict, meta_b: dict, names: tuple[str, str]) -> None:
    """Refuse two checkpoints trained on different data (the seed counts only where it picks the split)."""
    trained_a, trained_b = meta_a.get("config", {}), meta_b.get("config", {})
    seeded = not trained_a.get("split_csv") and trained_a.get("dataset") not in ("synthetic", None)
    keys = ("dataset", "data_dir", "split_csv", "per_class", "multi_label_rule")
    differ = [k for k in keys if trained_a.get(k) != trained_b.get(k)]
    if seeded and trained_split_seed(meta_a) != trained_split_seed(meta_b):
        differ.append("split_seed")
    if differ:
        raise InputError(f"{names[0]} and {names[1]} were trained on different data ({differ} differ); "
                         "pass --dataset/--data_dir/--split_csv to evaluate both on one split")


def resolve_data(cfg: CheckpointData, meta: dict, other_meta: dict | None = None,
                 names: tuple[str, str] = ("model A", "model B")):
    """`cfg` with every empty data field (and T = 0 of a CheckpointRun) filled from what the
    checkpoint `meta` was trained on; explicit flags win. --data_dir given replaces both paths
    (a new root: its own split CSV or layout); --split_csv given alone keeps model A's data root,
    as the help says ("empty = model A's training data"). With `other_meta` (a second checkpoint,
    named by `names`), the two must have been trained on the same data unless a path is given
    explicitly."""
    trained = meta.get("config", {})
    explicit = bool(cfg.data_dir or cfg.split_csv)
    if other_meta is not None and not explicit:
        _check_same_data(meta, other_meta, names)
    dataset = cfg.dataset or trained.get("dataset") or meta.get("dataset") or "synthetic"
    changes = dict(dataset=dataset,
                   data_dir=cfg.data_dir or trained.get("data_dir") or "",
                   split_csv=cfg.split_csv if explicit else trained.get("split_csv") or "",
                   per_class=cfg.per_class or int(trained.get("per_class") or 300),
                   multi_label_rule=cfg.multi_label_rule or trained.get("multi_label_rule") or "largest_area")
    if isinstance(cfg, CheckpointRun):
        changes["T"] = cfg.T or paper_T(dataset)
    sources = {k: "the checkpoint's training config" for k, v in changes.items() if v != getattr(cfg, k)}
    if isinstance(cfg, CheckpointRun) and not cfg.T:
        sources["T"] = f"paper preset of --dataset {dataset} (presets.py)"
    return with_sources(replace(cfg, **changes), sources)


# ============================================================================ training

@dataclass(frozen=True)
class TrainConfig(Flags):
    """How a model is built and trained with `training.fit`."""
    GROUP = "training"
    model: str = flag("resnet18", "network", choices=MODELS)
    image_size: int = flag(224, "image size S in pixels: the crop side (resize is 256/224 of it), or the shorter "
                           "side of a whole image / the side of a padded one", most=MAX_IMAGE_SIZE)
    geometry: str = flag("", "how files become S-pixel inputs: crop (shorter side to 256/224 S, centre crop S), "
                         "whole (shorter side to S, aspect kept, nothing cut), pad (letterboxed into S x S), "
                         "auto (crop if square, else whole/pad, with a warning); empty = the data set's "
                         "(Severstal: whole, folders: auto, the others: crop)", choices=("", "crop", "whole", "pad", "auto"))
    weights: str = flag("none", "none | imagenet | PATH to a state dict")
    freeze: bool | None = flag(None, "paper's layer freezing; default: on only with pretrained weights")
    dropout: float | None = flag(None, "head dropout; default the paper's")
    epochs: int = flag(help="maximum epochs", most=MAX_EPOCHS, **paper_default("model_a.epochs"))
    patience: int = flag(help="early-stopping patience in epochs (val loss)", most=MAX_EPOCHS,
                         **paper_default("model_a.patience"))
    lr: float = flag(help="Adam learning rate", **paper_default("model_a.lr"))
    passes: str = flag("plain", "passes over the training set per epoch: plain = base augmentation only; augmented = "
                                "base + the paper's extra augmentation (NEU: brightness gradient; Severstal: jitter + "
                                "gamma); plain+augmented = the paper's use_aug epoch (a plain pass, then an augmented "
                                "pass: twice the steps); plain+plain = the step-matched control", choices=PASSES)
    use_aug: bool | None = flag(None, "deprecated spelling of --passes: True = plain+augmented (the paper's use_aug), "
                                      "False = plain")
    base_augmentation: str = flag("paper", "train-time base augmentation: paper = rotation +-30 + horizontal flip, "
                                  "flip = horizontal flip only, crop_flip = RandomCrop(size, padding 4) + flip "
                                  "(the AL toolkit's), none (when a flip or rotation can change the class)", choices=BASE_AUGMENTATIONS)
    class_weights: str = flag("none", "training-loss weight per class: none (the papers') | balanced (n / (classes x "
                                      "count) of the training labels: for imbalanced data such as ELPV, a deviation)",
                              choices=CLASS_WEIGHTS)

    def __post_init__(self):
        super().__post_init__()
        if self.use_aug is not None:  # the deprecated flag becomes --passes, so config.json holds one spelling
            meant = "plain+augmented" if self.use_aug else "plain"
            require(self.passes in ("plain", meant), f"--use_aug {self.use_aug} contradicts --passes {self.passes}; "
                                                     "give --passes alone (--use_aug is deprecated)")
            warnings.warn(f"--use_aug is deprecated: use --passes {meant}", FutureWarning, stacklevel=3)
            object.__setattr__(self, "passes", meant)
            object.__setattr__(self, "use_aug", None)
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
    batch_size: int = flag(64, "images per batch", most=MAX_BATCH_SIZE)
    cpu_threads: int = flag(0, "torch CPU threads (set by utils.run_main); 0 = torch's default (use 1 when other "
                               "jobs share the cores)", most=MAX_THREADS)

    def __post_init__(self):
        super().__post_init__()
        require(self.cpu_threads >= 0, f"--cpu_threads must be >= 0, got {self.cpu_threads}")
        require(re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device) is not None,
                f"--device must be auto, cpu, mps, cuda or cuda:N, got {self.device!r}")
        require(self.batch_size is None or self.batch_size >= 1, f"--batch_size must be >= 1, got {self.batch_size}")


def _plain_folder_name(name: str) -> bool:
    """A name that stays inside its parent folder: no separator, not '.' or '..'."""
    return re.fullmatch(r"[\w.+=-]+", name) is not None and name not in (".", "..")


@dataclass(frozen=True)
class RunConfig(OutputConfig):
    """A script that writes one run folder, out_dir/run_name/ (see `run_folder`, `claim_run_folder`)."""
    run_name: str = flag("", "run folder name; empty = named after the settings")
    overwrite: bool = flag(False, "replace a run folder that already holds results (another run's, or this "
                                  "run's finished ones): its files are deleted first")

    def __post_init__(self):
        super().__post_init__()
        require(self.run_name == "" or _plain_folder_name(self.run_name),
                f"--run_name must be a plain folder name inside --out_dir (letters, digits, . _ - + =; "
                f"not . or ..), got {self.run_name!r}")
        require(not (self.overwrite and getattr(self, "resume", False)),
                "--resume True and --overwrite True exclude each other (continue the run, or replace it)")


@dataclass(frozen=True)
class GridRun(RunConfig):
    """A resumable grid of tasks: one file per finished task, shards that merge into one result."""
    shard: str = flag("0/1", "i/n: run only every n-th task starting at i (one process or GPU each)")
    merge: bool = flag(False, "only merge the finished tasks in the run folder into the final files, train nothing")

    def __post_init__(self):
        super().__post_init__()
        parse_shard(self.shard)
        require(not (self.merge and self.overwrite), "--merge True and --overwrite True exclude each other")
