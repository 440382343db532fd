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

Run folders: `run_folder` names one (a plain folder inside --out_dir) and `claim_run_folder`
takes it before anything is written: a folder that holds another run's results, or this run's
finished results, is refused with one line naming the differing settings, `--run_name` and
`--overwrite True`; `--resume True` continues only a run with the same settings.

A renamed flag keeps its old spelling for one release: `RENAMED_FLAGS = {"model_a": "checkpoints[0]"}`
on the Config (utils.apply_renamed_flags moves it onto the new flag and prints a note).

A subclass changes an inherited default by redeclaring the field (dataclasses keep its
position), and re-words an inherited flag's help with `FLAG_HELP = {"flag": "text"}`
(a plain class attribute, not a field). Each base checks its own fields in `__post_init__`;
a script's `__post_init__` calls `super().__post_init__()` first.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from safehil.data.augment import BASE_AUGMENTATIONS
from safehil.data.datasets import DATASETS, MULTI_LABEL_RULES, layout_of
from safehil.data.images import DEFAULT_MAX_IMAGE_PIXELS, pixel_limit
from safehil.core.locks import FOLDER_LOCK, hold_folder
from safehil.training.models import MODELS, load_trained_model
from safehil.settings.presets import paper_default, paper_T
from safehil.training.training import PASSES
from safehil.settings.cli import (MAX_SEED, check_flag_values, config_to_dict, flag, save_config, sources_field, with_sources)
from safehil.core.utils import (InputError, is_main_process, parse_shard, read_json, remove_stale_temp_files, require, resolve_device, seed_everything)

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
    T: int = flag(0, "MC-dropout samples per image; 0 = the paper preset's of the data set (presets.py: 20 NEU-like "
                     "and synthetic, 40 Severstal)", most=MAX_MC_SAMPLES)

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


# ============================================================================ run folders

# Fields that say where and how a run is invoked, never what it computes: they may differ between the
# invocations of one run folder (`claim_run_folder`, `runner.experiment_fingerprint`).
INVOCATION_FIELDS = ("device", "out_dir", "run_name", "overwrite", "resume", "max_image_pixels", "cpu_threads",
                     "shard", "merge")
# What a run writes before it has a result: a folder holding only these (or hidden files) holds no result.
BOOKKEEPING_FILES = ("config.json", "bad_inputs.csv", "skipped_inputs.csv", "split.csv")


def run_folder(cfg: RunConfig, default_name: str) -> Path:
    """out_dir/run_name (or out_dir/default_name): the run folder, refused (InputError) when the
    name would leave --out_dir (a default built from another path, e.g. a checkpoint's folder)."""
    name = cfg.run_name or default_name
    if not _plain_folder_name(name):
        raise InputError(f"the run folder name {name!r} is not a plain folder name inside --out_dir; "
                         "pass --run_name NAME")
    return Path(cfg.out_dir) / name


def holds_results(folder: Path) -> bool:
    """True when `folder` holds anything beyond the bookkeeping a run writes before its first result."""
    return folder.is_dir() and any(not p.name.startswith(".") and p.name not in BOOKKEEPING_FILES
                                   for p in folder.iterdir())


def _show(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _defaults(cfg) -> dict:
    """{field: default} of a config class, as config.json would store it."""
    out = {}
    for f in dataclasses.fields(cfg):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def setting_differences(cfg, saved: dict, ignore: tuple[str, ...]) -> list[str]:
    """'field: saved there, value now' for each setting of `cfg` (but `ignore`) that differs from the
    saved config.json dict; a field the file lacks (written before the flag existed) counts as its default."""
    now, defaults = config_to_dict(cfg), _defaults(cfg)
    out = []
    for key in now:
        if key in ignore:
            continue
        before = saved.get(key, defaults.get(key, "<absent>"))
        if before != now[key]:
            out.append(f"{key}: {_show(before)} there, {_show(now[key])} now")
    return out


def _check_out_dir(out_dir: Path) -> None:
    """Refuse an --out_dir that is (or lies under) a file."""
    for folder in (out_dir, *out_dir.parents):
        if folder.exists():
            if not folder.is_dir():
                raise InputError(f"--out_dir {out_dir}: {folder} is a file, not a folder; pass a folder")
            return


def check_run_location(cfg: RunConfig, out: Path) -> None:
    """Refuse (InputError) a run folder `out` that is not a folder directly inside --out_dir, or an
    --out_dir that is a file."""
    out = Path(out)
    _check_out_dir(Path(cfg.out_dir))
    if os.path.normpath(os.path.abspath(out.parent)) != os.path.normpath(os.path.abspath(cfg.out_dir)):
        raise InputError(f"{out}: the run folder must lie directly inside --out_dir {cfg.out_dir}; "
                         "pass --run_name NAME")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: is a file, not a run folder; pass another --run_name")


def empty_run_folder(out: Path) -> None:
    """Delete everything in the run folder `out` (what --overwrite True replaces)."""
    for entry in Path(out).iterdir():
        if entry.name == FOLDER_LOCK:  # held by this run: deleting it would let another run in
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def check_run_folder(cfg: RunConfig, out: Path, *, resuming: bool = False, ignore: tuple[str, ...] = ()) -> None:
    """Refuse (InputError, one line) to run in `out` when that would overwrite results; writes nothing.

    Allowed: a new or result-less folder (`holds_results`); a run folder with --overwrite True;
    with `resuming` (--resume True, or a grid that continues), a folder whose config.json has
    the same settings. Refused: a folder holding another run's results (the differing settings
    are named), this run's results without `resuming`, and results without a config.json (not
    a run folder). `ignore`: the script's fields that may differ between invocations of one
    run, besides INVOCATION_FIELDS.
    """
    out = Path(out)
    check_run_location(cfg, out)
    if not holds_results(out):
        return
    saved_path = out / "config.json"
    if not saved_path.is_file():
        raise InputError(f"{out}: holds files but no config.json, so it is not a run folder of these scripts; "
                         "pass another --run_name or --out_dir, or move the folder away")
    if cfg.overwrite:
        return
    try:
        saved = read_json(saved_path)
    except ValueError as e:
        raise InputError(f"{e}; pass --overwrite True to replace the run, or another --run_name") from None
    if not isinstance(saved, dict):
        raise InputError(f"{saved_path}: not a run's config (a JSON object expected); pass --overwrite True to "
                         "replace the run, or another --run_name")
    differ = setting_differences(cfg, saved, INVOCATION_FIELDS + tuple(ignore))
    resumable = any(f.name == "resume" for f in dataclasses.fields(cfg))
    if differ and resuming:
        how = "--resume True continues" if resumable else "a rerun continues"
        raise InputError(f"{out}: {how} a run only with its own settings, and {'; '.join(differ)} (see "
                         f"{saved_path}); rerun with those, pass --run_name NAME for a new run, or --overwrite True "
                         "to replace it")
    if differ:
        raise InputError(f"{out}: holds another run ({'; '.join(differ)}); pass --run_name NAME for a new run "
                         "folder, or --overwrite True to replace it")
    if not resuming:
        again = "--resume True continues or reuses it, " if resumable else ""
        raise InputError(f"{out}: already holds this run's results; {again}--overwrite True replaces them, "
                         "--run_name NAME writes a new run")


def claim_run_folder(cfg: RunConfig, out: Path, *, resuming: bool = False, ignore: tuple[str, ...] = ()) -> Path:
    """`check_run_folder`, then (on the main process only) hold the folder's lock for the rest of the
    process (`locks.hold_folder`: another run into it is refused, naming it), check again, empty the
    folder when --overwrite True replaces results, delete temp files a killed writer left, and
    write config.json."""
    out = Path(out)
    check_run_folder(cfg, out, resuming=resuming, ignore=ignore)
    if is_main_process():
        hold_folder(out)  # one run per folder: a second one is refused, naming this one
        check_run_folder(cfg, out, resuming=resuming, ignore=ignore)  # again, now that no other run can write
        if cfg.overwrite and holds_results(out):
            empty_run_folder(out)
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(out)
        save_config(cfg, out)
    return out


def open_checkpoint_run(cfg: CheckpointRun, run_dir):
    """The start of a script that scores one checkpoint into one run folder: the device, the seed,
    the model and its checkpoint dict, the config with its empty data fields taken from the
    checkpoint (`resolve_data`), and the run folder `run_dir(cfg)`, claimed (`claim_run_folder`).
    Returns (cfg, model, meta, device, out)."""
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    model, meta = load_trained_model(cfg.checkpoint, device)  # InputError / FileNotFoundError name the file
    cfg = resolve_data(cfg, meta)
    return cfg, model, meta, device, claim_run_folder(cfg, run_dir(cfg))
