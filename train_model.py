"""Train ResNet18 / VGG16 / EfficientNet-B0 (or the tiny CNN) with and without the paper's
augmentations, and evaluate on every test split.

    python train_model.py                                   # paper constants, built-in data
    python train_model.py --image_size 64 --epochs 8 --passes plain+augmented    # the paper's use_aug epoch
    python train_model.py --dataset neu --data_dir /data/NEU --model vgg16 --weights imagenet
    python train_model.py --seeds 0,1,2 --image_size 64     # sweep -> mean +- std
    torchrun --nproc_per_node 4 train_model.py --dataset casting --data_dir /data/casting
    python train_model.py --resume True ...                 # continue an interrupted run
    python train_model.py --mmap_cache True --cache_dir /fast/cache ...   # data larger than RAM

Each epoch is one or two passes over the training set (--passes): plain (base augmentation
only), augmented (base + the paper's extra augmentation), plain+augmented (the paper's use_aug:
a plain pass then an augmented pass, twice the optimiser steps) or plain+plain (the same steps
without the extra augmentation, the control that separates the augmentation from the extra pass).
--restore names the weights kept as the model (best.pt): best_loss, best_accuracy (the paper's
Severstal model_acc.pth) or last (the paper's NEU code); --stopping accuracy_or_loss is the
paper's early-stopping counter (reset when validation accuracy, else validation loss, improves).
--train_half first|second trains on one of two disjoint halves of the train split, per class in
the split's file order (the paper's model pairs: NEU VGG16 on the first 138 images per class,
ResNet18 on the other 138); --balanced True first caps every class at the smallest class's count
(the paper's balanced Severstal pre-training set); --finetune_all True then fine-tunes on the whole
train split from the weights --restore kept (the paper's Severstal pairs; the first stage in
<run>/pretrain/). split.csv lists the images used, in order.

Writes results/train/<run>/ with config.json, split.csv (path,label,split of every image the
run used; evaluate_safety.py checks it), metrics.csv, best.pt, last.pt,
test_metrics.json (accuracy, loss, per-class precision/recall, confusion matrix for
each test split) and test_predictions.csv (split, path, label, predicted class index per
image). A sweep writes one run per seed (<run_name>_s<seed> with --run_name) and
results/train/<run>_sweep/summary.json. A run folder that holds another run's results,
or this run's finished ones, is refused (--run_name NAME for a new one, --overwrite True to
replace it, --resume True to continue or reuse a run with the same settings).
Every input is checked before training; bad ones stop the run with one message naming
each file (listed in <run>/bad_inputs.csv), or with --skip_bad_images True are left out
and listed in <run>/skipped_inputs.csv.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from safehil.settings.config import DataConfig, RunConfig, TrainConfig
from safehil.settings.run_folders import (INVOCATION_FIELDS, check_run_folder, claim_run_folder, run_folder,
                                          setting_differences)
from datasets import augmentation_style, decode_request, load_image_sets_checked, load_split_table, normalisation_for
from safehil.data.images import BadInputError
from models import build_model, count_parameters, ensure_imagenet_weights
from safehil.settings.presets import paper_default
from safehil.data.splits import CALIB_SPLIT, TRAIN_HALVES, split_name_ok, train_part, write_run_split
from safehil.core.utils import file_sha256
from safehil.safety.certificate import SEEN_IMAGES_KEY
from safehil.training.training import (OPTIMIZERS, RESTORES, SCHEDULES, STOPPING_RULES, epoch_passes, evaluate, fit, predict)
from utils import (MAX_SEED, InputError, atomic_write_csv, atomic_write_json, atomic_write_spreadsheet_csv,
                   cleanup_distributed, config_to_dict, flag, format_mean_std, is_main_process, load_checkpoint, log,
                   main_process_first, mean_std, parse_config, require, resolve_device, run_main, seed_everything,
                   setup_distributed)


@dataclass(frozen=True)
class Config(RunConfig, TrainConfig, DataConfig):
    """train_model.py's flags: its own below, then (config.py) RunConfig's `run` flags (device, out_dir, run_name ...),
    TrainConfig's `training` flags (model, lr, epochs ...) and DataConfig's `data` flags (dataset, data_dir ...)."""
    seed: int = flag(0, "seed of a single run", most=MAX_SEED)
    seeds: tuple[int, ...] | None = flag(None, "comma list: run a seed sweep", most=MAX_SEED)
    resume: bool = flag(False, "continue an interrupted run from its last.pt (with the settings of its config.json; "
                               "only --epochs may grow), or reuse a finished one")
    skip_bad_images: bool = flag(False, "leave out unreadable/corrupt/wrong-mode images, missing files and "
                                        "unknown labels (listed in <run>/skipped_inputs.csv) instead of stopping "
                                        "before training")
    mmap_cache: bool = flag(False, "keep decoded images in a memory-mapped file under --cache_dir (built once, reused "
                                   "by later runs; for data larger than RAM and shared by DDP ranks) instead of in RAM")
    cache_dir: str = flag("data/cache", "folder of the --mmap_cache files")
    optimizer: str = flag("adam", "adam (the paper's ResNet18 / VGG16) | adamw (the paper's EfficientNet-B0) | "
                                  "sgd_nesterov", choices=OPTIMIZERS)
    schedule: str = flag("constant", "learning rate: constant | cosine (per epoch) | plateau (x0.1 after 5 "
                                     "validations without val-loss gain, min 1e-6: the paper's EfficientNet-B0)",
                         choices=SCHEDULES)
    restore: str = flag("best_loss", "the weights kept as the model (best.pt): best_loss | best_accuracy (paper, "
                                     "Severstal) | last (paper, NEU)", choices=RESTORES)
    train_half: str = flag("all", "train on all of the train split, or on its first / second half (disjoint, per "
                                  "class in file order: the paper's model pairs)", choices=TRAIN_HALVES)
    balanced: bool = flag(False, "cap every class of the train split at the smallest class's count (first images "
                                 "in file order) before halving: the paper's Severstal pre-training set")
    finetune_all: bool = flag(False, "after training on --train_half / --balanced, fine-tune on the whole train split "
                                     "from the weights --restore kept (the paper's Severstal pre-training on balanced "
                                     "halves + fine-tuning); the first stage goes to <run>/pretrain/")
    stopping: str = flag("val_loss", "what resets the early-stopping counter: val_loss | accuracy_or_loss (paper: "
                                     "val accuracy improves, else val loss improves)", choices=STOPPING_RULES)
    # this script's defaults of inherited flags
    batch_size: int = flag(help="global batch size (paper: 16 NEU, 64 Severstal EfficientNet-B0)",
                           **paper_default("model_a.batch_size"))
    out_dir: str = flag("results/train", "parent folder of run folders")
    FLAG_HELP = {"run_name": "run folder name; empty = model_dataset_aug_sSEED"}

    def __post_init__(self):
        super().__post_init__()
        require(self.seed >= 0, f"--seed must be >= 0, got {self.seed}")
        require(self.seeds is None or (len(self.seeds) > 0 and min(self.seeds) >= 0),
                f"--seeds must be non-negative integers, got {self.seeds}")
        require(self.seeds is None or len(set(self.seeds)) == len(self.seeds),
                f"--seeds lists a seed twice: {self.seeds}")
        require(not self.mmap_cache or self.cache_dir.strip() != "", "--mmap_cache True needs a --cache_dir")
        require(not self.finetune_all or self.train_half != "all" or self.balanced,
                "--finetune_all True needs a part of the train split to pre-train on (--train_half first|second "
                "or --balanced True)")


# Fields that do not change what a run computes (where the decoded images are kept); with --resume
# also --epochs may differ: a run that stopped at its epoch limit can be extended.
NON_EXPERIMENT_FIELDS = ("mmap_cache", "cache_dir")


def _may_differ(cfg: Config) -> tuple[str, ...]:
    return NON_EXPERIMENT_FIELDS + (("epochs",) if cfg.resume else ())


def run_dir(cfg: Config) -> Path:
    """out_dir/run_name, default model_dataset_PASSES[_PART]_sSEED; another run's folder is refused (`claim_run_folder`)."""
    return run_folder(cfg, f"{cfg.model}_{cfg.dataset}_{cfg.passes}{_part_tag(cfg)}_s{cfg.seed}")


def _part_tag(cfg: Config) -> str:
    """'' for the whole train split, else e.g. '_first' or '_balanced_second' (part of the default run name)."""
    return (("_balanced" if cfg.balanced else "") + ("" if cfg.train_half == "all" else f"_{cfg.train_half}")
            + ("_finetuned" if cfg.finetune_all else ""))


def seed_run(cfg: Config, seed: int) -> Config:
    """One seed of a sweep: its own run folder (NAME_sSEED with --run_name NAME, else the default name)."""
    return replace(cfg, seed=seed, seeds=None, run_name=f"{cfg.run_name}_s{seed}" if cfg.run_name else "")


def sweep_dir(cfg: Config) -> Path:
    """out_dir/<run_name or model_dataset_PASSES>_sweep: the summary of a seed sweep."""
    return Path(cfg.out_dir) / ((cfg.run_name or f"{cfg.model}_{cfg.dataset}_{cfg.passes}{_part_tag(cfg)}")
                                + "_sweep")


def classification_report(logits: torch.Tensor, labels: torch.Tensor, class_names: list[str]) -> dict:
    """Accuracy, loss, per-class precision/recall and the confusion matrix (rows = true class)."""
    pred = logits.argmax(1).numpy()
    true = labels.numpy()
    ks = list(range(len(class_names)))
    precision, recall, _, support = precision_recall_fscore_support(true, pred, labels=ks, zero_division=0)
    return {
        "n": int(len(true)),
        "accuracy": float((pred == true).mean()) if len(true) else float("nan"),
        "loss": float(torch.nn.functional.cross_entropy(logits, labels)) if len(true) else float("nan"),
        "per_class": {c: {"precision": float(p), "recall": float(r), "support": int(s)}
                      for c, p, r, s in zip(class_names, precision, recall, support)},
        "confusion_matrix": confusion_matrix(true, pred, labels=ks).tolist(),
        "class_names": class_names,
    }


def train_one(cfg: Config) -> dict:
    """Train one seed; returns {test split: report} of the model it ends with.

    With --train_half / --balanced the model trains on that part of the train split; with
    --finetune_all it then goes on, from the weights --restore kept, on the whole train split
    (the paper's Severstal pre-training + fine-tuning): the first stage is written to
    <run>/pretrain/ (its split.csv, metrics, checkpoints and test metrics), the second to <run>/.
    """
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    out = claim_run_folder(cfg, run_dir(cfg), resuming=cfg.resume, ignore=_may_differ(cfg))
    if cfg.resume and (out / "last.pt").is_file():
        refuse_other_checkpoint(cfg, out / "last.pt")
    if cfg.weights == "imagenet":  # offline without the cached file: one line before any image is decoded
        ensure_imagenet_weights([cfg.model])
    sets, root = load_checked_data(cfg, out)
    for needed in ("train", "valid"):
        if needed not in sets or len(sets[needed]) == 0:
            raise InputError(f"the data has no {needed!r} images (splits found: "
                             f"{ {k: len(v) for k, v in sets.items()} })")
    partial = cfg.train_half != "all" or cfg.balanced
    part = dict(sets, train=sets["train"].subset(train_part(sets["train"].labels, cfg.train_half, cfg.balanced))) \
        if partial else sets
    class_names = sets["train"].class_names
    mean, std = normalisation_for(cfg.dataset, part["train"])
    model = build_model(cfg.model, len(class_names), cfg.weights, cfg.dropout, cfg.freeze)
    log(f"{out.name}: {cfg.model} ({count_parameters(model):,} trainable parameters) on {device}; "
        + ", ".join(f"{k} {len(v)}" for k, v in part.items()))
    extra = {"model_name": cfg.model, "class_names": class_names, "mean": mean, "std": std,
             "image_size": cfg.image_size, "canvas": sets["train"].canvas.without_margin().to_dict(),
             "dataset": cfg.dataset, "config": config_to_dict(cfg),
             "data_root": str(Path(root).resolve()),  # what the paths of the run's split.csv are relative to
             SEEN_IMAGES_KEY: seen_image_hashes(sets, root)}  # evaluate_safety.py's calibration must be unseen
    if cfg.finetune_all:
        fit_and_test(model, cfg, part, out / "pretrain", mean, std, device, extra)
        log(f"{out.name}: fine-tuning on the whole train split ({len(sets['train'])} images) from the "
            f"{cfg.restore} weights of the pre-training")
        return fit_and_test(model, cfg, sets, out, mean, std, device, extra)
    return fit_and_test(model, cfg, part, out, mean, std, device, extra)


def seen_image_hashes(sets: dict, root: Path) -> list[str]:
    """Content sha256 (file bytes) of every image training or early stopping can see (the train and
    valid splits, whole), sorted: a calibration image is unseen only when its content is not among them,
    whatever its path."""
    return sorted({file_sha256(Path(root) / p) for split in ("train", "valid") if split in sets
                   for p in sets[split].paths})


def fit_and_test(model, cfg: Config, sets: dict, out: Path, mean, std, device: torch.device, extra: dict) -> dict:
    """Train `model` on sets['train'] (early stopping on sets['valid']), then score every test split;
    writes out/split.csv (the images used, in order), the fit's files, test_metrics.json and
    test_predictions.csv. -> {test split: report}."""
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        write_run_split(out, sets)
    fit(model, sets["train"], sets["valid"], epochs=cfg.epochs, patience=cfg.patience, batch_size=cfg.batch_size,
        lr=cfg.lr, mean=mean, std=std, device=device, seed=cfg.seed,
        augment=epoch_passes(cfg.passes, augmentation_style(cfg.dataset), cfg.base_augmentation), out_dir=out,
        resume=cfg.resume, checkpoint_extra=extra, desc=out.name, optimizer=cfg.optimizer, schedule=cfg.schedule,
        restore=cfg.restore, stopping=cfg.stopping, class_weights=cfg.class_weights)
    class_names = sets["train"].class_names
    reports, predictions = {}, []
    for split in sorted(s for s in sets if s.startswith("test")):
        logits, labels, paths = predict(model, sets[split], mean, std, device)
        reports[split] = classification_report(logits, labels, class_names)
        predictions.append(pd.DataFrame({"split": split, "path": paths, "label": labels.numpy(),
                                         "predicted": logits.argmax(1).numpy()}))
        log(f"{out.name}: {split} accuracy {reports[split]['accuracy']:.4f}")
    if is_main_process():
        atomic_write_json(out / "test_metrics.json", reports)
        # per image, so two runs' predictions can be compared (the model pair's disagreement)
        atomic_write_csv(out / "test_predictions.csv", pd.concat(predictions) if predictions else
                         pd.DataFrame(columns=["split", "path", "label", "predicted"]))
    return reports


def refuse_other_checkpoint(cfg: Config, last: Path) -> None:
    """--resume continues `last` only when the settings recorded in the checkpoint itself match (its
    config.json could have been written by another run into the same folder)."""
    try:
        recorded = load_checkpoint(last).get("config") or {}
    except ValueError as e:
        raise InputError(f"{e}; pass --overwrite True to start the run again") from None
    differ = setting_differences(cfg, recorded, INVOCATION_FIELDS + _may_differ(cfg))
    if differ:
        raise InputError(f"{last}: was trained with other settings than this --resume ({'; '.join(differ)}); "
                         "rerun with its settings, or pass --overwrite True to start again")


def load_checked_data(cfg: Config, out: Path) -> tuple[dict, Path]:
    """Split table + decoded images, every input checked before training -> ({split: ImageSet},
    data root).

    Bad inputs stop the run with one message naming each file (full list: out/bad_inputs.csv),
    or with --skip_bad_images are left out and listed in out/skipped_inputs.csv. Rank 0
    generates the built-in data and builds a memory-mapped cache first; the other ranks then reuse it.
    """
    problems = [] if cfg.skip_bad_images else None
    with main_process_first():
        table, root = load_split_table(cfg.dataset, cfg.data_dir, cfg.split_csv, cfg.split_seed, cfg.per_class,
                                       cfg.multi_label_rule, problems=problems)
    table = table[table["split"] != CALIB_SPLIT]  # held out for evaluate_safety.py: never decoded here
    cache_dir = cfg.cache_dir if cfg.mmap_cache else None
    try:
        with main_process_first() if cache_dir else contextlib.nullcontext():
            sets, found = load_image_sets_checked(table, root, cfg.image_size, skip_bad=cfg.skip_bad_images,
                                                  cache_dir=cache_dir, source=cfg.split_csv, splits=split_name_ok,
                                                  **decode_request(cfg.dataset, cfg.geometry, cfg.base_augmentation))
    except BadInputError as e:
        if is_main_process():
            listing = atomic_write_spreadsheet_csv(out / "bad_inputs.csv",  # opened by a person: formula guard
                                                   pd.DataFrame(e.problems, columns=["path", "problem"]))
            raise InputError(f"{e}\n(full list: {listing})") from None
        raise
    if cfg.skip_bad_images and is_main_process():
        skipped = (problems or []) + found
        atomic_write_spreadsheet_csv(out / "skipped_inputs.csv", pd.DataFrame(skipped, columns=["path", "problem"]))
        log(f"{out.name}: skipped {len(skipped)} bad input(s), listed in {out / 'skipped_inputs.csv'}")
    return sets, Path(root)


def summarise_sweep(cfg: Config, per_seed: dict[int, dict]) -> dict:
    """{split: {'accuracy_mean', 'accuracy_std', 'per_seed'}} over the sweep's seeds."""
    splits = sorted({s for r in per_seed.values() for s in r})
    summary = {}
    for split in splits:
        accs = [per_seed[s][split]["accuracy"] for s in per_seed if split in per_seed[s]]
        m, sd = mean_std(accs)
        summary[split] = {"accuracy_mean": m, "accuracy_std": sd, "per_seed": accs,
                          "text": format_mean_std(accs, 100)}
    return summary


def main(cfg: Config) -> dict:
    setup_distributed(cfg.device)
    try:
        runs = [seed_run(cfg, s) for s in cfg.seeds] if cfg.seeds else [cfg]
        for run in runs:  # every folder of a sweep is checked before the first seed trains
            check_run_folder(run, run_dir(run), resuming=cfg.resume, ignore=_may_differ(cfg))
        if not cfg.seeds:
            return train_one(cfg)
        check_run_folder(cfg, sweep_dir(cfg), resuming=cfg.resume, ignore=_may_differ(cfg))
        per_seed = {run.seed: train_one(run) for run in runs}
        summary = summarise_sweep(cfg, per_seed)
        out = claim_run_folder(cfg, sweep_dir(cfg), resuming=cfg.resume, ignore=_may_differ(cfg))
        if is_main_process():
            atomic_write_json(out / "summary.json", summary)
        for split, s in summary.items():
            log(f"{split}: accuracy {s['text']} % over seeds {list(cfg.seeds)}")
        return summary
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    run_main(main, parse_config(Config, description=__doc__))
