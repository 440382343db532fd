"""Human-in-the-loop data generation (the paper's Fig. 3 and Fig. 4): how much manual
labelling and compute a baseline model saves when it pre-labels each new batch.

    python train_model_data_generation.py                      # paper grid, ResNet18, 224 px
    python train_model_data_generation.py --model tiny_cnn --image_size 64 \\
        --per_class 100 --pool_per_class 40 --initial_samples 5,10,20 --step_sizes 2,6,10 \\
        --baseline_epochs 30 --baseline_patience 5 --cpu_threads 1          # CPU-sized
    python train_model_data_generation.py --shard 0/4 --run_name grid   # one of 4 processes/GPUs
    python train_model_data_generation.py --merge True --run_name grid  # combine the shards
    python train_model_data_generation.py --dataset severstal_kaggle --data_dir /data/severstal \\
        --step_sizes 5,10,15 --pool_per_class 195 --freeze False --step_optimizer new --schedule plateau \\
        --baseline_batch_size 64 --model efficientnet_b0 --weights imagenet   # the paper's Severstal grid

The process, for every setting (initial_samples x step_size, both per class):
  1. `initial_samples` images per class are labelled by hand; a baseline model is trained
     on them (`--baseline_epochs`, `--baseline_patience`).
  2. `step_size` new images per class arrive; the current model labels them; the operator
     corrects only the wrong ones (manual effort of the step = labels the operator changed,
     which for the simulated operator is the number of wrong predictions on the arriving images).
  3. The model is fine-tuned on everything labelled so far, then evaluated on the test split.
     As published (both papers' train_loop): a warm start from the weights the last fit left
     (`--restore last`: its last epoch, never a reloaded best), up to `--epochs` 20 with the
     accuracy-or-loss counter on the valid split (`--stopping`), stopping after `--patience` 4
     epochs without gain (the code's early_stopping=3 is counter > 3); NEU reuses one Adam for
     the baseline and every step (`--step_optimizer reuse`, constant rate), Severstal makes a new
     Adam and plateau schedule per fit (`--step_optimizer new --schedule plateau`, baseline batch
     64: `--baseline_batch_size`); `--from_scratch True` rebuilds the model every step instead.
  4. Repeat until the pool (the train split, capped at `--pool_per_class`) is used up.
Images arrive in one seeded random order per class, the same for every setting, so
settings differ only in how that stream is cut. Bookkeeping as published (the R4VR Severstal
train_model_sequentially.py): manual effort (`correction_effort`) counts the wrong predictions on
the arriving images, each once (a running sum; NEU's code re-counted earlier images, a bug not
copied); the hand-labelled initial set (`initial_labelled`) and the validation split every
fine-tune step uses (`validation_labelled`) are labelled data too and are reported beside it,
not inside it (`labelled_by_hand` = initial set + corrections). Compute time (`seconds`) is the
baseline training plus every step's prediction and fine-tuning; the operator's time (a person,
with review.py loop) is kept apart (`operator_seconds`), and so is the test evaluation of each
step. Two references sit beside the grid: labelling every pool image by hand (`hand_effort` =
pool size) and one model trained on the whole pool at once.

The operator is pluggable: `main(cfg, operator=...)` takes any callable with the
signature of `simulated_operator` (paths of the step's images, predicted labels [n],
ground-truth labels [n]) -> corrected labels [n]. The simulated one returns the ground
truth; an operator that exports the step for a person and reads back an edited review
CSV (review.py) plugs in the same way.

Writes results/data_generation/<run>/: config.json, settings/<setting>.json (one per finished
setting: the resumable unit), and the merged modeling_stats.json (setting -> labelled size ->
numbers) and runtime.csv (one row per setting). An interrupted run continues where it
stopped (finished settings are skipped; a half-done one restarts); shards share one run
folder (or are copied into one) and merge into the same result as an unsharded run
(timings aside). Severstal uses step sizes {5, 10, 15}; the defaults are the NEU grid.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from tqdm import tqdm

from safehil.settings.config import MAX_BATCH_SIZE, MAX_EPOCHS, MAX_PER_CLASS, DataConfig, GridRun, TrainConfig
from datasets import (ImageSet, augmentation_style, decode_request, load_image_sets, load_split_table,
                      normalisation_for)
from models import fresh_model
from safehil.settings.presets import paper_default
from safehil.training.runner import missing_tasks, run_grid
from safehil.training.training import (RESTORES, SCHEDULES, STOPPING_RULES, epoch_passes, evaluate, fit, labelled_set,
                                       predict, synced_clock)
from utils import (MAX_SEED, InputError, atomic_write_csv, atomic_write_json, flag, log, parse_config, progress_enabled,
                   require, resolve_device, run_main)


STEP_OPTIMIZERS = ("reuse", "new")  # one optimiser per setting (R4VR NEU) or one per fit (R4VR Severstal)


@dataclass(frozen=True)
class Config(GridRun, TrainConfig, DataConfig):
    """The HIL grid's flags: its own below (with its defaults of inherited epochs, patience, batch_size), then
    (config.py) GridRun's `run` flags (+ shard, merge), TrainConfig's `training` and DataConfig's `data` flags."""
    initial_samples: tuple[int, ...] = flag(help="grid: hand-labelled images per class in the baseline set",
                                            most=MAX_PER_CLASS, **paper_default("data_generation.initial_samples"))
    step_sizes: tuple[int, ...] = flag(help="grid: new images per class per step (paper: 2,4,6,8,10 NEU; 5,10,15 "
                                            "Severstal)", most=MAX_PER_CLASS,
                                            **paper_default("data_generation.step_sizes"))
    pool_per_class: int | None = flag(help="cap on pool images per class (drawn from the train split); None = the "
                                           "whole train split", most=MAX_PER_CLASS,
                                           **paper_default("data_generation.pool_per_class"))
    baseline_epochs: int = flag(help="maximum epochs of the baseline model and of the all-data reference model",
                                most=MAX_EPOCHS, **paper_default("data_generation.baseline_epochs"))
    baseline_patience: int = flag(help="early-stopping patience of those two", most=MAX_EPOCHS,
                                  **paper_default("data_generation.baseline_patience"))
    baseline_batch_size: int = flag(help="training batch of the baseline model and of the all-data reference model",
                                    most=MAX_BATCH_SIZE, **paper_default("data_generation.baseline_batch_size"))
    restore: str = flag(help="the weights each fit leaves in the model, i.e. what step k+1 fine-tunes: last (the "
                             "last epoch's: the papers' train_loop never reloads), best_loss or best_accuracy",
                        choices=RESTORES, **paper_default("data_generation.restore"))
    stopping: str = flag(help="what resets each fit's early-stopping counter: accuracy_or_loss (the papers' "
                              "train_loop) or val_loss", choices=STOPPING_RULES,
                              **paper_default("data_generation.stopping"))
    step_optimizer: str = flag(help="reuse = one Adam for the baseline and every step of a setting (its moments go "
                                    "on; R4VR NEU); new = a new Adam (and schedule) for every fit (R4VR Severstal)",
                               choices=STEP_OPTIMIZERS, **paper_default("data_generation.step_optimizer"))
    schedule: str = flag(help="rate schedule of each fit: constant (R4VR NEU) or plateau (R4VR Severstal: x0.1 when "
                              "the val loss stalls 5 epochs)", choices=SCHEDULES,
                              **paper_default("data_generation.schedule"))
    from_scratch: bool = flag(False, "rebuild the model every step instead of fine-tuning it (warm start)")
    full_data_reference: bool = flag(True, "also train one model on the whole pool at once (reference accuracy)")
    seed: int = flag(0, "seed of the arrival order, the models and training", most=MAX_SEED)
    # this script's defaults of inherited flags
    epochs: int = flag(help="maximum fine-tuning epochs per step", **paper_default("data_generation.epochs"))
    patience: int = flag(help="early-stopping patience per step: stop after this many epochs without gain (the "
                              "papers' early_stopping=3 is counter > 3: 4)",
                              **paper_default("data_generation.patience"))
    batch_size: int = flag(help="training batch of the fine-tuning steps (paper: 16; the Severstal baseline 64: "
                                "--baseline_batch_size)", **paper_default("data_generation.batch_size"))
    out_dir: str = flag("results/data_generation", "parent folder of run folders")
    FLAG_HELP = {"run_name": "run folder name; empty = model_dataset_pxSIZE_sSEED",
                 "shard": "i/n: run only every n-th task of the grid starting at i (one process or GPU each)",
                 "merge": "only merge the finished settings in the run folder into the final files, train nothing"}

    def __post_init__(self):
        super().__post_init__()
        for name in ("initial_samples", "step_sizes"):
            values = getattr(self, name)
            require(len(values) > 0, f"--{name} needs at least one value")
            require(all(v >= 1 for v in values), f"--{name} values must be >= 1, got {list(values)}")
            require(len(set(values)) == len(values), f"--{name} has duplicates: {list(values)}")
        require(self.pool_per_class is None or self.pool_per_class >= 2,
                f"--pool_per_class must be >= 2 or None, got {self.pool_per_class}")
        require(self.epochs >= 1 and self.baseline_epochs >= 1,
                f"--epochs and --baseline_epochs must be >= 1, got {self.epochs}, {self.baseline_epochs}")
        require(self.baseline_patience >= 1, f"--baseline_patience must be >= 1, got {self.baseline_patience}")
        require(self.baseline_batch_size >= 1, f"--baseline_batch_size must be >= 1, got {self.baseline_batch_size}")


# Fields that do not change what a setting computes: they may differ between the shards or
# the resumed invocations of one run. Every other field must match (see `runner.check_fingerprint`).
NON_EXPERIMENT_FIELDS = ("initial_samples", "step_sizes", "full_data_reference", "device", "cpu_threads",
                         "out_dir", "run_name", "shard", "merge")
FULL_DATA = "full_data"


def run_dir(cfg: Config) -> Path:
    name = cfg.run_name or (f"{cfg.model}_{cfg.dataset}_px{cfg.image_size}_s{cfg.seed}"
                            + ("_scratch" if cfg.from_scratch else ""))
    return Path(cfg.out_dir) / name


def setting_name(initial: int, step: int) -> str:
    return f"init{initial}_step{step}"


def parse_setting(name: str) -> tuple[int, int]:
    """'init5_step2' -> (5, 2)."""
    initial, step = name.removeprefix("init").split("_step")
    return int(initial), int(step)


def grid_tasks(cfg: Config) -> list[str]:
    """Every task of the run in a fixed order: the all-data reference (if asked), then each setting."""
    tasks = [FULL_DATA] if cfg.full_data_reference else []
    return tasks + [setting_name(i, s) for i in cfg.initial_samples for s in cfg.step_sizes]


# ============================================================================ the pool and its arrival order

def arrival_order(labels: torch.Tensor, seed: int, pool_per_class: int | None = None) -> dict[int, list[int]]:
    """Per class, the pool indices in the order they arrive: a seeded permutation of the
    indices of `labels` [N] with that class, cut to `pool_per_class`. {class: [indices]}."""
    generator = torch.Generator().manual_seed(seed)
    order = {}
    for c in sorted(set(labels.tolist())):
        members = torch.nonzero(labels == c).flatten()
        shuffled = members[torch.randperm(len(members), generator=generator)].tolist()
        order[c] = shuffled[:pool_per_class] if pool_per_class else shuffled
    return order


def arrival_schedule(order: dict[int, list[int]], initial: int, step: int) -> list[list[int]]:
    """Cut the per-class arrival order into [initial set, step 1, step 2, ...] of pool indices.

    The initial set holds the first `initial` images of each class; step k the next `step`
    of each class (fewer at the end when a class runs out). Every pool index appears in
    exactly one batch; the last batch empties the pool.
    """
    smallest = min(len(v) for v in order.values())
    if initial > smallest:
        raise ValueError(f"initial_samples {initial} is more than the smallest class holds in the pool "
                         f"({smallest} images); lower --initial_samples or raise --pool_per_class")
    batches = [[i for c in order for i in order[c][:initial]]]
    longest = max(len(v) for v in order.values())
    for start in range(initial, longest, step):
        batches.append([i for c in order for i in order[c][start:start + step]])
    return batches


# ============================================================================ the operator

Operator = Callable[[list[str], torch.Tensor, torch.Tensor], torch.Tensor]


def simulated_operator(paths: list[str], predicted: torch.Tensor, true_labels: torch.Tensor) -> torch.Tensor:
    """The paper's simulated operator: looks at the step's images (`paths`, predicted labels
    int64 [n]) and returns the corrected labels int64 [n]; it knows the ground truth
    `true_labels` [n], so every wrong prediction is fixed and every right one kept.

    Another operator (e.g. a person editing a review CSV) has the same signature and may
    ignore `true_labels`; the loop then trains on the labels it returns.
    """
    return true_labels.clone()


def check_operator_labels(corrected, n: int, num_classes: int) -> torch.Tensor:
    """The operator's answer as int64 [n] with every label a valid class index, else a clear error."""
    corrected = torch.as_tensor(corrected, dtype=torch.long).flatten()
    if len(corrected) != n:
        raise ValueError(f"the operator returned {len(corrected)} labels for {n} images")
    if n and (corrected.min() < 0 or corrected.max() >= num_classes):
        raise ValueError(f"the operator returned a label outside 0..{num_classes - 1}: {corrected.tolist()}")
    return corrected


# ============================================================================ effort counting

def count_changed(predicted: torch.Tensor, labels: torch.Tensor) -> int:
    """How many of the predicted labels [n] differ from `labels` [n]."""
    return int((torch.as_tensor(predicted) != torch.as_tensor(labels)).sum())


def add_cumulative_effort(records: list[dict]) -> list[dict]:
    """Fill `cumulative_effort` in step records, in order, as a running sum of their `effort`.

    Each correction is counted once, in the step where it was given (the paper's NEU code
    summed already-cumulative numbers, counting early corrections again in every step).
    """
    total = 0
    for record in records:
        total += int(record["effort"])
        record["cumulative_effort"] = total
    return records


# ============================================================================ one setting

def train_and_test(model, train: ImageSet, sets: dict, cfg: Config, mean: float, std: float,
                   device: torch.device, epochs: int, patience: int, seed: int, desc: str,
                   batch_size: int | None = None, optimizer_state: dict | None = None) -> dict:
    """Fit on `train` (early stopping on the valid split, `cfg.stopping`; the model keeps the
    `cfg.restore` weights) -> {'epochs_run', 'best_epoch', 'optimizer_state'}. `optimizer_state`:
    the previous fit's Adam state to go on from (`--step_optimizer reuse`), None = a new Adam."""
    result = fit(model, train, sets["valid"], epochs=epochs, patience=patience,
                 batch_size=batch_size or cfg.batch_size, lr=cfg.lr, mean=mean, std=std, device=device, seed=seed,
                 augment=epoch_passes(cfg.passes, augmentation_style(cfg.dataset), cfg.base_augmentation),
                 desc=desc, restore=cfg.restore, stopping=cfg.stopping, schedule=cfg.schedule,
                 optimizer_state=optimizer_state, class_weights=cfg.class_weights)
    return {"epochs_run": len(result.history), "best_epoch": result.best_epoch,
            "optimizer_state": result.optimizer_state}


def carried_optimizer(cfg: Config, fitted: dict) -> dict | None:
    """The optimiser state the next fit of the same model goes on from: the last fit's with
    --step_optimizer reuse (and a warm start), else None (a new Adam)."""
    return fitted.get("optimizer_state") if cfg.step_optimizer == "reuse" and not cfg.from_scratch else None


def score_on_test(model, sets: dict, mean: float, std: float, device: torch.device) -> dict:
    metrics = evaluate(model, sets["test"], mean, std, device)
    return {"test_accuracy": metrics["accuracy"], "test_loss": metrics["loss"]}


def train_baseline(cfg: Config, sets: dict, indices: list[int], mean: float, std: float, device: torch.device,
                   cache: dict | None = None, desc: str = "baseline") -> tuple[torch.nn.Module, dict, dict | None]:
    """The model trained on the hand-labelled initial set (pool `indices`), its step-0 record and
    the optimiser state the first step goes on from (`carried_optimizer`).

    The baseline depends only on the initial set, so settings that share it train it once:
    `cache` ({initial indices: (weights, record, optimiser state)}) hands later settings a copy of
    the weights, the record (seconds included) and the optimiser state of that one training. Training is deterministic for a
    seed, so the copy equals what a fresh training would give, and results do not depend on
    which settings ran in the same process.
    """
    pool = sets["train"]
    model = fresh_model(cfg, len(pool.class_names), cfg.seed)
    key = tuple(indices)
    if cache is not None and key in cache:
        weights, record, optimizer_state = cache[key]
        model.load_state_dict(weights)
        return model.to(device), record, copy.deepcopy(optimizer_state)  # Adam updates its moments in place
    t0 = synced_clock(device)
    fitted = train_and_test(model, labelled_set(pool, indices, pool.labels[indices].tolist()), sets, cfg, mean,
                            std, device, cfg.baseline_epochs, cfg.baseline_patience, cfg.seed, desc,
                            batch_size=cfg.baseline_batch_size)
    optimizer_state = carried_optimizer(cfg, fitted)
    record = {"step": 0, "labelled_size": len(indices), "new_images": len(indices), "hand_labelled": len(indices),
              "effort": 0, "wrong_predictions": None, "label_errors": 0, **fit_record(fitted),
              "seconds": synced_clock(device) - t0, "operator_seconds": 0.0,
              **score_on_test(model, sets, mean, std, device)}
    if cache is not None:
        cache[key] = ({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, dict(record),
                      copy.deepcopy(optimizer_state))
    return model, record, optimizer_state


def fit_record(fitted: dict) -> dict:
    """The numbers of a fit a step record keeps (the optimiser state is carried, not recorded)."""
    return {k: v for k, v in fitted.items() if k != "optimizer_state"}


def run_setting(cfg: Config, sets: dict, initial: int, step: int, mean: float, std: float,
                device: torch.device, operator: Operator = simulated_operator,
                baselines: dict | None = None) -> dict:
    """Simulate the loop for one (initial, step) setting -> {'summary': {...}, 'steps': [records]}.

    One record per step (step 0 = the hand-labelled baseline): labelled_size, new_images,
    hand_labelled (the initial set at step 0, else 0), effort (the labels the operator changed
    among the arriving images; 0 at step 0), wrong_predictions (model vs ground truth),
    label_errors (operator vs ground truth), cumulative_effort, test_accuracy, test_loss,
    epochs_run, best_epoch, seconds (compute: prediction + fine-tuning of the step, the
    baseline's training at step 0) and operator_seconds (the operator's call: a person's time
    with review.py loop; never inside seconds). Test evaluation is timed by neither.
    `baselines` is an optional cache shared between settings (see `train_baseline`).
    """
    pool = sets["train"]
    num_classes = len(pool.class_names)
    order = arrival_order(pool.labels, cfg.seed, cfg.pool_per_class)
    batches = arrival_schedule(order, initial, step)
    name = setting_name(initial, step)

    indices, labels = list(batches[0]), pool.labels[batches[0]].tolist()  # hand-labelled: ground truth
    model, baseline, optimizer_state = train_baseline(cfg, sets, indices, mean, std, device, baselines,
                                                      f"{name} baseline")
    records = [dict(baseline)]

    bar = tqdm(batches[1:], desc=name, leave=False, disable=not progress_enabled())
    for k, batch in enumerate(bar, start=1):
        t0 = synced_clock(device)
        arrived = pool.subset(batch)
        predicted = predict(model, arrived, mean, std, device)[0].argmax(1)
        t_operator = synced_clock(device)
        corrected = check_operator_labels(operator(arrived.paths, predicted.clone(), arrived.labels.clone()),
                                          len(batch), num_classes)
        t_fit = synced_clock(device)  # the operator's time (a person's, with review.py loop) is not compute time
        indices += batch
        labels += corrected.tolist()
        if cfg.from_scratch:
            model = fresh_model(cfg, num_classes, cfg.seed)
        # warm start: the model holds what the last fit's --restore kept (the papers: its last epoch)
        fitted = train_and_test(model, labelled_set(pool, indices, labels), sets, cfg, mean, std, device,
                                cfg.epochs, cfg.patience, cfg.seed + k, f"{name} step {k}",
                                optimizer_state=optimizer_state)
        optimizer_state = carried_optimizer(cfg, fitted)
        fitted = fit_record(fitted)
        seconds = (t_operator - t0) + (synced_clock(device) - t_fit)
        records.append({"step": k, "labelled_size": len(indices), "new_images": len(batch), "hand_labelled": 0,
                        "effort": count_changed(predicted, corrected),
                        "wrong_predictions": count_changed(predicted, arrived.labels),
                        "label_errors": count_changed(corrected, arrived.labels), **fitted, "seconds": seconds,
                        "operator_seconds": t_fit - t_operator, **score_on_test(model, sets, mean, std, device)})
        bar.set_postfix(effort=records[-1]["effort"], acc=f"{records[-1]['test_accuracy']:.3f}")
    add_cumulative_effort(records)
    return {"summary": summarise_setting(initial, step, records, hand_effort=len(indices),
                                         validation_labelled=len(sets["valid"])), "steps": records}


def summarise_setting(initial: int, step: int, records: list[dict], hand_effort: int,
                      validation_labelled: int = 0) -> dict:
    """One setting's totals, as published and beside it.

    correction_effort: the paper's manual effort, wrong predictions on the arriving images
    (every step's effort, counted once); initial_labelled: the hand-labelled initial set;
    validation_labelled: the validation split the fine-tuning uses; labelled_by_hand = initial +
    corrections (validation aside); hand_effort: the pool (a person labelling everything);
    effort_saved = 1 - labelled_by_hand / hand_effort. seconds: compute time as the paper's
    Fig. 4 (baseline training + every step's prediction and fine-tuning); loop_seconds without
    the baseline (which settings sharing an initial set share); operator_seconds apart.
    """
    corrections = records[-1]["cumulative_effort"]
    initial_labelled = records[0]["hand_labelled"]
    baseline_seconds = records[0]["seconds"]
    seconds = sum(r["seconds"] for r in records)
    return {
        "initial_samples": initial, "step_size": step, "steps": len(records) - 1,
        "correction_effort": corrections, "initial_labelled": initial_labelled,
        "validation_labelled": validation_labelled, "labelled_by_hand": initial_labelled + corrections,
        "hand_effort": hand_effort, "effort_saved": 1 - (initial_labelled + corrections) / hand_effort,
        "baseline_accuracy": records[0]["test_accuracy"], "final_accuracy": records[-1]["test_accuracy"],
        "final_loss": records[-1]["test_loss"], "seconds": seconds, "baseline_seconds": baseline_seconds,
        "loop_seconds": seconds - baseline_seconds, "operator_seconds": sum(r["operator_seconds"] for r in records),
    }


def run_full_data(cfg: Config, sets: dict, mean: float, std: float, device: torch.device) -> dict:
    """The reference: one model trained on the whole pool at once with ground-truth labels."""
    pool = sets["train"]
    order = arrival_order(pool.labels, cfg.seed, cfg.pool_per_class)
    indices = [i for c in order for i in order[c]]
    model = fresh_model(cfg, len(pool.class_names), cfg.seed)
    t0 = synced_clock(device)
    fitted = train_and_test(model, labelled_set(pool, indices, pool.labels[indices].tolist()), sets, cfg, mean,
                            std, device, cfg.baseline_epochs, cfg.baseline_patience, cfg.seed, "full data",
                            batch_size=cfg.baseline_batch_size)
    seconds = synced_clock(device) - t0
    return {"labelled_size": len(indices), "hand_effort": len(indices), **fit_record(fitted), "seconds": seconds,
            **score_on_test(model, sets, mean, std, device)}


# ============================================================================ merging

def merge_results(out: Path, finished: dict[str, dict], missing: list[str]) -> dict:
    """Combine the finished task files {task: saved} into modeling_stats.json and runtime.csv (atomically).

    modeling_stats.json: {'settings': {setting: {'summary': {...}, 'by_labelled_size':
    {labelled size: step record}}}, 'full_data': reference or None, 'hand_effort',
    'complete', 'missing'}. The result depends only on which tasks have finished, never on
    which process or shard ran them.
    """
    settings = sorted((v for k, v in finished.items() if k != FULL_DATA),
                      key=lambda s: (s["summary"]["initial_samples"], s["summary"]["step_size"]))
    stats = {
        "complete": not missing, "missing": missing,
        "hand_effort": settings[0]["summary"]["hand_effort"] if settings else None,
        "full_data": finished.get(FULL_DATA, {}).get("result"),
        "settings": {setting_name(s["summary"]["initial_samples"], s["summary"]["step_size"]): {
            "summary": s["summary"],
            "by_labelled_size": {str(r["labelled_size"]): r for r in s["steps"]}} for s in settings},
    }
    atomic_write_json(out / "modeling_stats.json", stats)
    columns = ["initial_samples", "step_size", "seconds", "correction_effort", "final_accuracy", "initial_labelled",
               "validation_labelled", "labelled_by_hand", "hand_effort", "effort_saved", "steps", "baseline_accuracy",
               "final_loss", "baseline_seconds", "loop_seconds", "operator_seconds"]
    atomic_write_csv(out / "runtime.csv", pd.DataFrame([s["summary"] for s in settings], columns=columns))
    return stats


# ============================================================================ main

def load_data(cfg: Config) -> tuple[dict, float, float]:
    """{split: ImageSet} (train = the pool, valid, test) and the normalisation (mean, std)."""
    table, root = load_split_table(cfg.dataset, cfg.data_dir, cfg.split_csv, cfg.split_seed, cfg.per_class,
                                   cfg.multi_label_rule)
    sets = load_image_sets(table, root, cfg.image_size, **decode_request(cfg.dataset, cfg.geometry, cfg.base_augmentation))
    for needed in ("train", "valid", "test"):
        if needed not in sets:
            raise InputError(f"the data has no {needed!r} split (found {sorted(sets)})")
    mean, std = normalisation_for(cfg.dataset, sets["train"])
    return sets, mean, std


def log_summary(stats: dict) -> None:
    for name, s in stats["settings"].items():
        s = s["summary"]
        log(f"{name}: manual effort {s['correction_effort']} corrections of the arriving images (+ "
            f"{s['initial_labelled']} initial, {s['validation_labelled']} validation; {s['hand_effort']} to label the "
            f"pool by hand), {s['steps']} steps, {s['seconds']:.1f} s compute, final test accuracy "
            f"{s['final_accuracy']:.4f}")
    if stats["full_data"]:
        log(f"all data at once: test accuracy {stats['full_data']['test_accuracy']:.4f}")
    if stats["missing"]:
        log(f"not finished yet: {', '.join(stats['missing'])}")


def prepare(cfg: Config, out: Path, todo: list[str]) -> dict:
    """What the tasks share, loaded once: {'sets', 'mean', 'std', 'device', 'baselines'} (the
    baseline cache: one baseline per initial set, shared by its step sizes)."""
    device = resolve_device(cfg.device)
    sets, mean, std = load_data(cfg)
    log(f"{out}: {len(todo)} task(s) on {device} (shard {cfg.shard}); "
        + ", ".join(f"{k} {len(v)}" for k, v in sets.items()))
    settings = [parse_setting(t) for t in todo if t != FULL_DATA]
    if settings:  # fail now, not after hours of training, when an initial set does not fit the pool
        arrival_schedule(arrival_order(sets["train"].labels, cfg.seed, cfg.pool_per_class),
                         max(i for i, _ in settings), 1)
    return {"sets": sets, "mean": mean, "std": std, "device": device, "baselines": {}}


def run_one(cfg: Config, operator: Operator, task: str, shared: dict) -> dict:
    """One task of the grid -> its file's content: {'result'} for the all-data reference,
    {'summary', 'steps'} for a setting."""
    sets, mean, std, device = shared["sets"], shared["mean"], shared["std"], shared["device"]
    if task == FULL_DATA:
        return {"result": run_full_data(cfg, sets, mean, std, device)}
    initial, step = parse_setting(task)
    return run_setting(cfg, sets, initial, step, mean, std, device, operator, shared["baselines"])


def main(cfg: Config, operator: Operator = simulated_operator) -> dict:
    """Run this shard's unfinished tasks, then merge every finished task -> modeling_stats dict."""
    out, tasks = run_dir(cfg), grid_tasks(cfg)
    finished = run_grid(cfg, out, tasks, partial(run_one, cfg, operator), non_experiment_fields=NON_EXPERIMENT_FIELDS,
                        folder="settings", prepare=partial(prepare, cfg, out))
    stats = merge_results(out, finished, missing_tasks(tasks, finished))
    log_summary(stats)
    return stats


if __name__ == "__main__":
    run_main(main, parse_config(Config, description=__doc__))
