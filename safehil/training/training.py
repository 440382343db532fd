"""The one fit loop every script uses, plus `predict`, `evaluate`, `labelled_set` (the training
set a human-in-the-loop run builds from its pool) and `synced_clock` (timing device work).

`fit` trains with cross-entropy on an in-memory `ImageSet` (uint8 images, augmented in
batches on the device), one or more passes over the training set per epoch (`epoch_passes`:
the R4VR paper's `use_aug` epoch is a plain pass then an augmented pass), and leaves the model
holding the weights `restore` names: the lowest validation loss (`best_loss`), the highest
validation accuracy (`best_accuracy`, the R4VR Severstal `model_acc.pth`) or the last epoch's
(`last`, the R4VR NEU code). Early stopping (`StoppingCounter`) counts validations without
improvement of the validation loss (`val_loss`) or, as the R4VR `train_loop` does, of the
accuracy else the loss (`accuracy_or_loss`), and stops after `patience` of them. It writes a
per-epoch metrics CSV, `best.pt` (the weights `restore` keeps) and a resumable `last.pt`, and
refuses NaN/inf losses. The optimiser is Adam (the R4VR paper), AdamW (R4VR's EfficientNet-B0)
or SGD with Nesterov momentum 0.9 (the active-learning toolkit), with an optional weight decay
and a constant, per-epoch cosine or plateau (ReduceLROnPlateau on the validation loss) rate;
early stopping can be switched off, and `min_steps` gives a training budget in optimiser steps
that does not shrink with the training set (named settings: `recipes.py`).
On CPU the run is bitwise repeatable for a seed; on CUDA it uses bf16 autocast and
channels_last. Under torchrun it wraps the model in DistributedDataParallel.

Distributed (torchrun): every rank draws the same shuffled order per epoch and keeps its
strided slice (what DistributedSampler(shuffle=True, drop_last=True) does), so one global
batch of `batch_size` is split into `batch_size // world_size` per rank and DDP averages
the gradients: without batch norm, dropout and augmentation the weights match a
single-process run up to float rounding. Batch norm normalises with per-rank statistics
(SyncBatchNorm on CUDA only; it does not run on CPU/gloo). Dropout and augmentation draw
from per-rank generators so ranks do not repeat each other's randomness; their states
are gathered into last.pt so a resumed DDP run continues every rank's stream.
"""
from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from safehil.data.augment import Augmenter, to_model_input
from safehil.data.datasets import ImageSet, gather_images
from safehil.core.utils import (InputError, all_gather_object, all_reduce_sum, atomic_write_csv, broadcast_object, check_checkpoint_matches, checkpoint_rng_state, get_rank, get_world_size, is_distributed, is_main_process, load_checkpoint, log, progress_enabled, remove_stale_temp_files, restore_rng_state, save_checkpoint)


OPTIMIZERS = ("adam", "adamw", "sgd_nesterov")
SCHEDULES = ("constant", "cosine", "plateau")
SGD_MOMENTUM = 0.9  # the toolkit's Nesterov momentum
# R4VR Severstal EfficientNet-B0: ReduceLROnPlateau(mode='min', factor=0.1, patience=5, threshold=1e-4,
# min_lr=1e-6) stepped on the validation loss (HiL ML/Severstal/train_model.py)
PLATEAU = {"factor": 0.1, "patience": 5, "threshold": 1e-4, "min_lr": 1e-6}
RESTORES = ("best_loss", "best_accuracy", "last")    # which weights fit leaves in the model (and best.pt)
STOPPING_RULES = ("val_loss", "accuracy_or_loss")    # what resets the early-stopping counter
# the passes over the training set that make one epoch (see `epoch_passes`)
PASSES = ("plain", "augmented", "plain+augmented", "plain+plain")


@dataclass
class FitResult:
    """What `fit` returns; the model itself is left holding the weights `restore` named."""
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0             # the epoch whose weights the model holds (restore's choice)
    best_val_loss: float = math.inf  # lowest validation loss of the run
    best_val_accuracy: float = -math.inf  # highest validation accuracy of the run
    stopped_early: bool = False
    seconds: float = 0.0
    steps: int = 0  # optimiser steps taken (on one rank; every pass of an epoch counts)
    restore: str = "best_loss"
    optimizer_state: dict | None = None  # the optimiser's state at the end (a warm-started next fit goes on from it)


@dataclass
class StoppingCounter:
    """The early-stopping counter: validations in a row without improvement (`without_gain`).

    rule 'val_loss': the counter resets when the validation loss falls below its lowest so far.
    rule 'accuracy_or_loss' (the R4VR `train_loop`, both data sets): it resets when the validation
    accuracy rises above its best so far, else when the validation loss falls below its best so
    far; as published, the loss record moves only in a validation whose accuracy did not improve.
    `fit` stops once `without_gain >= patience` (the published `counter > 20` is patience 21).
    """
    rule: str = "val_loss"
    best_loss: float = math.inf
    best_accuracy: float = -math.inf
    without_gain: int = 0

    def __post_init__(self):
        if self.rule not in STOPPING_RULES:
            raise ValueError(f"unknown stopping rule {self.rule!r}; choose from {STOPPING_RULES}")

    def update(self, loss: float, accuracy: float) -> bool:
        """Count one validation; True when it reset the counter."""
        if self.rule == "accuracy_or_loss" and accuracy > self.best_accuracy:
            self.best_accuracy = accuracy
        elif loss < self.best_loss:
            self.best_loss = loss
        else:
            self.without_gain += 1
            return False
        self.without_gain = 0
        return True

    def state(self) -> dict:
        return {"rule": self.rule, "best_loss": self.best_loss, "best_accuracy": self.best_accuracy,
                "without_gain": self.without_gain}


def epoch_passes(passes: str, style: str, base: str) -> tuple[Augmenter, ...]:
    """The augmenters of one epoch's passes over the training set, for `fit(augment=...)`.

    'plain': one pass with the base augmentation (`base`: rotation/flip per the layout);
    'augmented': one pass with base + the paper's `use_aug` augmentation of `style`;
    'plain+augmented': the R4VR epoch (a plain pass, then an augmented pass over the same images:
    twice the optimiser steps); 'plain+plain': the step-matched control without the augmentation.
    """
    if passes not in PASSES:
        raise ValueError(f"unknown passes {passes!r}; choose from {PASSES}")
    plain, augmented = Augmenter(style, False, base), Augmenter(style, True, base)
    return {"plain": (plain,), "augmented": (augmented,), "plain+augmented": (plain, augmented),
            "plain+plain": (plain, plain)}[passes]


def make_optimizer(params, name: str, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """'adam': Adam(lr) (the paper's); 'adamw': AdamW(lr) (the paper's EfficientNet-B0; weight decay
    torch's default 0.01 when `weight_decay` is 0, as published); 'sgd_nesterov': SGD(lr, momentum
    0.9, Nesterov) (the toolkit's); adam and sgd with L2 `weight_decay` (0 = none)."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, **({"weight_decay": weight_decay} if weight_decay else {}))
    if name == "sgd_nesterov":
        return torch.optim.SGD(params, lr=lr, momentum=SGD_MOMENTUM, nesterov=True, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose from {OPTIMIZERS}")


def cosine_factor(epoch_index: int, epochs: int) -> float:
    """Learning-rate multiplier of 0-based epoch `epoch_index` of `epochs`: 0.5 (1 + cos(pi e / epochs)),
    1 in the first epoch and falling towards 0 (torch's CosineAnnealingLR(T_max=epochs), eta_min 0,
    stepped once per epoch, in closed form)."""
    if epochs <= 0:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(epoch_index, epochs) / epochs))


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, epochs: int):
    """None for 'constant'; for 'cosine' a per-epoch LambdaLR following `cosine_factor` over `epochs`;
    for 'plateau' ReduceLROnPlateau(`PLATEAU`), which `fit` steps with each validation loss."""
    if schedule == "constant":
        return None
    if schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: cosine_factor(e, epochs))
    if schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", **PLATEAU)
    raise ValueError(f"unknown schedule {schedule!r}; choose from {SCHEDULES}")


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimiser steps of one epoch over n images (per rank under DDP, as `_epoch_order` slices)."""
    world = get_world_size()
    per_rank = (n // world) if world > 1 else n
    return math.ceil(per_rank / max(1, batch_size // world))


def epochs_for(epochs: int, min_steps: int, n: int, batch_size: int, passes: int = 1) -> int:
    """`epochs`, raised so that at least `min_steps` optimiser steps are taken on n images
    (`passes` passes over them per epoch)."""
    spe = steps_per_epoch(n, batch_size) * passes
    return max(epochs, math.ceil(min_steps / spe)) if spe else epochs


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _epoch_order(n: int, generator: torch.Generator) -> torch.Tensor:
    """A shuffled index order [n]; under DDP every rank draws the same order and keeps its slice."""
    order = torch.randperm(n, generator=generator)
    if is_distributed():
        world = get_world_size()
        usable = (n // world) * world  # equal batch counts on every rank, as DistributedSampler(drop_last)
        order = order[:usable][get_rank()::world]
    return order


# steps between two reads of the running loss (the progress bar and the NaN/inf check): each read makes
# the host wait for the device, so the step loop reads only every few dozen steps and once at the end
CHECK_EVERY = 25


def _check_finite(value: float, desc: str, batch: int) -> float:
    """`value` (the running loss sum, read from the device); a NaN/inf is a FloatingPointError."""
    if not math.isfinite(value):
        raise FloatingPointError(f"{desc}: loss became {value} by batch {batch} "
                                 "(lower --lr, check the input normalisation or the data)")
    return value


def train_one_epoch(model: nn.Module, train: ImageSet, optimizer: torch.optim.Optimizer, batch_size: int,
                    mean: float, std: float, device: torch.device, augment: Augmenter | None,
                    generator: torch.Generator, desc: str = "train",
                    augment_generator: torch.Generator | None = None,
                    class_weights: torch.Tensor | None = None) -> tuple[float, float]:
    """One pass over `train` in shuffled batches; returns (mean loss, accuracy) over all ranks.
    `class_weights` [C]: the cross-entropy's weight per class (None = every class 1).

    `generator` draws the shuffled order (the same on every rank); `augment_generator`
    (default: `generator`) draws the augmentation. The loss and correct counts are summed on
    the device (scalars, float64 / int64) and read every `CHECK_EVERY` steps (progress bar,
    NaN/inf check) and once at the end: the step loop does not wait for the device in between.
    """
    augment_generator = generator if augment_generator is None else augment_generator
    model.train()
    order = _epoch_order(len(train), generator)
    per_rank_batch = max(1, batch_size // get_world_size())
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)  # sum over images of the batch-mean loss
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    batches = range(0, len(order), per_rank_batch)
    bar = tqdm(batches, desc=desc, leave=False, disable=not progress_enabled())
    for step, start in enumerate(bar, 1):
        idx = order[start:start + per_rank_batch]
        raw, size = train.batch_for_training(idx)  # with a crop's rotation margin: rotated before the crop
        x = to_model_input(raw, mean, std, device, augment, augment_generator, size)
        y = train.labels[idx].to(device, non_blocking=True)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y,
                                   weight=None if class_weights is None else class_weights.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach().double() * len(idx)
        correct += (logits.argmax(1) == y).sum()
        seen += len(idx)
        if step % CHECK_EVERY == 0:
            bar.set_postfix(loss=f"{_check_finite(loss_sum.item(), desc, step - 1) / seen:.3f}")
    total_loss, n_correct = torch.stack([loss_sum, correct.double()]).tolist()  # the epoch's one read
    _check_finite(total_loss, desc, len(batches) - 1)
    total_loss, n_correct, seen = all_reduce_sum([total_loss, n_correct, seen], device)
    return total_loss / max(seen, 1), n_correct / max(seen, 1)


@torch.no_grad()
def predict(model: nn.Module, data: ImageSet, mean: float, std: float, device: torch.device,
            batch_size: int = 128, augment: Augmenter | None = None,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Forward pass in eval mode -> (logits float32 [N, C] on CPU, labels [N], paths).

    Deterministic on the images themselves; with `augment` (e.g. the toolkit's eval view, a random
    crop: `augment.view_augmenter`) each image is seen through one view drawn from `generator`."""
    model.eval()
    outputs = []
    for start in range(0, len(data), batch_size):
        x = to_model_input(data.images[start:start + batch_size], mean, std, device, augment, generator)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device):
            outputs.append(model(x).float().cpu())
    num_classes = len(data.class_names)
    logits = torch.cat(outputs) if outputs else torch.empty(0, num_classes)
    return logits, data.labels.clone(), list(data.paths)


def evaluate(model: nn.Module, data: ImageSet, mean: float, std: float, device: torch.device,
             batch_size: int = 128, augment: Augmenter | None = None,
             generator: torch.Generator | None = None) -> dict:
    """{'loss': mean cross-entropy, 'accuracy': share correct} on `data` (through `augment`'s view
    drawn from `generator` when given, see `predict`)."""
    logits, labels, _ = predict(model, data, mean, std, device, batch_size, augment, generator)
    if len(labels) == 0:
        return {"loss": math.nan, "accuracy": math.nan}
    return {"loss": F.cross_entropy(logits, labels).item(),
            "accuracy": (logits.argmax(1) == labels).float().mean().item()}


def view_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU generator for the random views of one evaluation, fixed by (seed, keys...): the same
    validation after a resume, different crops at each validation and round."""
    code = seed
    for key in keys:
        code = (code * 1_000_003 + key) % 2 ** 62
    return torch.Generator().manual_seed(code)


def labelled_set(pool: ImageSet, indices, labels=None) -> ImageSet:
    """The pool images `indices` ([n] ints) as a training set named 'labelled', with the labels
    they were given (`labels` [n], e.g. an operator's corrections) or, when None, their ground truth."""
    data = pool.subset(indices)
    if labels is not None:
        data.labels = torch.as_tensor(labels, dtype=torch.long)
    data.name = "labelled"
    return data


def synced_clock(device: torch.device) -> float:
    """Wall clock (s) after the device has finished its queued work, so differences time the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model


def _sync_buffers_from_rank0(model: nn.Module) -> None:
    """Copy rank 0's buffers (batch-norm running statistics) to every rank, so that all ranks
    evaluate, keep and save the same model (each rank updated them with its own batches)."""
    if is_distributed():
        for buf in model.buffers():
            torch.distributed.broadcast(buf, src=0)


def _rank_generators(seed: int) -> torch.Generator | None:
    """Under DDP: this rank's own augmentation generator (ranks must not repeat each other's
    draws); in a single process None, i.e. augmentation shares the shuffling generator."""
    if not is_distributed():
        return None
    return torch.Generator().manual_seed(seed * 1_000_003 + 7_919 * (get_rank() + 1))


def _load_resume_state(last_path: Path, device: torch.device, checkpoint_extra: dict | None, desc: str,
                       optimizer: str, schedule: str, restore: str, stopping: str, n_passes: int):
    """last.pt, checked against what this run trains (model name, class names, image size,
    optimiser, schedule, restore, stopping rule and passes per epoch; a last.pt without them was
    written by Adam at a constant rate, keeping the best validation loss, one pass per epoch)."""
    state = load_checkpoint(last_path, map_location=device)
    extra = checkpoint_extra or {}
    check_checkpoint_matches(state, last_path, **{k: extra.get(k) for k in ("model_name", "class_names",
                                                                            "image_size")})
    missing = [k for k in ("model", "optimizer", "best_model", "history", "epoch", "generator", "rng")
               if k not in state]
    if missing:
        raise ValueError(f"{last_path}: not a resumable last.pt (lacks {missing})")
    written = (state.get("optimizer_name", "adam"), state.get("schedule", "constant"))
    if written != (optimizer, schedule):
        raise ValueError(f"{last_path}: was trained with optimizer {written[0]} and schedule {written[1]}, this run "
                         f"asks for {optimizer} and {schedule}: resume with the same recipe or use another run folder")
    written = (state.get("restore", "best_loss"), state.get("stopping", {}).get("rule", "val_loss"),
               state.get("passes_per_epoch", 1))
    if written != (restore, stopping, n_passes):
        raise ValueError(f"{last_path}: was trained with restore/stopping/passes per epoch {written}, this run asks "
                         f"for {(restore, stopping, n_passes)}: resume with the same settings or use another run folder")
    return state


@dataclass
class _Run:
    """What one `fit` carries from epoch to epoch, and what last.pt saves of it."""
    optimizer: torch.optim.Optimizer
    scheduler: object                    # torch.optim.lr_scheduler.* or None (a constant rate)
    generator: torch.Generator           # shuffling (+ augmentation in a single process)
    augment_generator: torch.Generator | None  # this rank's augmentation under DDP
    counter: StoppingCounter
    best_state: dict                     # the weights `restore` keeps so far
    result: FitResult
    settings: dict                       # what a resume must match (optimiser, schedule, restore, passes)
    start_epoch: int = 1


def _check_fit_settings(train: ImageSet, passes: tuple, *, epochs: int, patience: int, batch_size: int, lr: float,
                        weight_decay: float, min_steps: int, val_interval_steps: int, optimizer: str, schedule: str,
                        restore: str) -> None:
    """ValueError (InputError for data with fewer than 2 classes) naming a setting `fit` cannot train with."""
    if (epochs < 0 or patience < 0 or batch_size < 1 or lr <= 0 or weight_decay < 0 or min_steps < 0
            or val_interval_steps < 0):
        raise ValueError(f"invalid fit settings: epochs={epochs}, patience={patience}, batch_size={batch_size}, "
                         f"lr={lr}, weight_decay={weight_decay}, min_steps={min_steps}, "
                         f"val_interval_steps={val_interval_steps}")
    if optimizer not in OPTIMIZERS or schedule not in SCHEDULES or restore not in RESTORES:
        raise ValueError(f"unknown optimizer {optimizer!r}, schedule {schedule!r} or restore {restore!r}; "
                         f"choose from {OPTIMIZERS}, {SCHEDULES} and {RESTORES}")
    if not passes:
        raise ValueError("augment: an empty tuple of passes trains nothing")
    if len(train) == 0:
        raise ValueError("the training split is empty")
    if len(train.class_names) < 2:
        raise InputError(f"the data holds {len(train.class_names)} class(es) {list(train.class_names)}: a classifier "
                         "needs at least 2 classes (check --data_dir / --split_csv)")


def _place_model(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` moved to `device` (channels_last on CUDA) -> the module the step loop calls: under
    torchrun a DistributedDataParallel wrapper (SyncBatchNorm on CUDA), else the model itself."""
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    if not is_distributed():
        return model
    return nn.parallel.DistributedDataParallel(
        nn.SyncBatchNorm.convert_sync_batchnorm(model) if device.type == "cuda" else model,
        device_ids=[device.index] if device.type == "cuda" else None)


def _warm_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float,
                    optimizer_state: dict | None) -> torch.optim.Optimizer:
    """`make_optimizer` over the trainable parameters, going on from an earlier fit's
    `optimizer_state` when given: its buffers (momentum, Adam moments), this fit's rate and decay."""
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], name, lr, weight_decay)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
        for group in optimizer.param_groups:  # keep the buffers, not the old run's (decayed) rate
            group["lr"], group["weight_decay"] = lr, weight_decay
            group.pop("initial_lr", None)
    return optimizer


def _resume(run: _Run, model: nn.Module, state: dict, last_path: Path, epochs: int, stopping: str) -> None:
    """Put last.pt's `state` (checked by `_load_resume_state`) into the model and `run`: weights,
    optimiser, scheduler, history, best weights, stopping counter, random streams of every rank."""
    try:
        model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        if run.scheduler is not None:
            run.scheduler.load_state_dict(state["scheduler"])  # the epoch count; the curve spans this run's epochs
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"{last_path}: does not fit this model/optimiser (another --model, "
                         f"--freeze or class count?): {str(e).splitlines()[0]}") from None
    run.best_state, result = state["best_model"], run.result
    result.history = state["history"]
    result.best_epoch, result.best_val_loss = state["best_epoch"], state["best_val_loss"]
    result.best_val_accuracy = state.get("best_val_accuracy", -math.inf)
    run.counter = StoppingCounter(**state["stopping"]) if "stopping" in state else \
        StoppingCounter(stopping, best_loss=state["best_val_loss"], without_gain=state["epochs_without_gain"])
    run.start_epoch = state["epoch"] + 1
    run.generator.set_state(state["generator"])
    ranks = state.get("rank_states") or []
    if len(ranks) == get_world_size():
        restore_rng_state(ranks[get_rank()]["rng"])
        if run.augment_generator is not None and ranks[get_rank()].get("augment_generator") is not None:
            run.augment_generator.set_state(ranks[get_rank()]["augment_generator"])
    else:
        restore_rng_state(state["rng"])
        if ranks:
            warnings.warn(f"{last_path} was written by {len(ranks)} ranks, this run has "
                          f"{get_world_size()}: dropout/augmentation streams restart, so the "
                          "result will not match the uninterrupted run bitwise")
    if state.get("stopped_early"):  # finished by early stopping; a run that hit --epochs may be extended
        run.start_epoch = epochs + 1
        result.stopped_early = True


def _resume_from(last_path: Path, run: _Run, model: nn.Module, device: torch.device, checkpoint_extra: dict | None,
                 desc: str, stopping: str, epochs: int) -> None:
    """Continue from last.pt when it exists (checked against this run's settings), else say so."""
    if not last_path.is_file():
        log(f"{desc}: --resume asked for, but {last_path} does not exist yet: starting from epoch 1")
        return
    settings = run.settings
    state = _load_resume_state(last_path, device, checkpoint_extra, desc, settings["optimizer_name"],
                               settings["schedule"], settings["restore"], stopping, settings["passes_per_epoch"])
    _resume(run, model, state, last_path, epochs, stopping)
    log(f"{desc}: resumed from {last_path} after epoch {state['epoch']}")


def _save_last(path: Path, model: nn.Module, run: _Run, *, epoch: int, finished: bool, stopped: bool,
               checkpoint_extra: dict | None) -> None:
    """last.pt: everything a resumed run needs (weights, optimiser, scheduler, history, best
    weights, counter, every rank's random streams) plus the settings a resume must match."""
    rank_states = all_gather_object({  # every rank's own random streams, for an exact DDP resume
        "rng": checkpoint_rng_state(),
        "augment_generator": None if run.augment_generator is None else run.augment_generator.get_state()}) \
        if is_distributed() else None
    if not is_main_process():
        return
    result = run.result
    save_checkpoint(path, {
        "model": model.state_dict(), "optimizer": run.optimizer.state_dict(), **run.settings,
        "scheduler": None if run.scheduler is None else run.scheduler.state_dict(), "best_model": run.best_state,
        "history": result.history, "best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
        "best_val_accuracy": result.best_val_accuracy, "epochs_without_gain": run.counter.without_gain,
        "stopping": run.counter.state(), "epoch": epoch, "generator": run.generator.get_state(),
        "rng": checkpoint_rng_state(), "rank_states": rank_states, "world_size": get_world_size(),
        "finished": finished, "stopped_early": stopped, **(checkpoint_extra or {})})


def _keep_if_better(run: _Run, model: nn.Module, val: dict, epoch: int, restore: str, out_dir: Path | None,
                    checkpoint_extra: dict | None) -> None:
    """Record one validation's bests; when `restore` keeps this epoch, copy its weights (and write best.pt)."""
    result = run.result
    keep = {"best_loss": val["loss"] < result.best_val_loss, "best_accuracy": val["accuracy"] >
            result.best_val_accuracy, "last": True}[restore]
    result.best_val_loss = min(result.best_val_loss, val["loss"])
    result.best_val_accuracy = max(result.best_val_accuracy, val["accuracy"])
    if keep:
        result.best_epoch = epoch
        run.best_state = copy.deepcopy(model.state_dict())
        if out_dir and is_main_process():
            save_checkpoint(out_dir / "best.pt", {"model": run.best_state, "epoch": epoch, "restore": restore,
                                                  "val_loss": val["loss"], "val_accuracy": val["accuracy"],
                                                  **(checkpoint_extra or {})})


def _train_passes(net: nn.Module, train: ImageSet, run: _Run, passes: tuple, *, batch_size: int, mean: float,
                  std: float, device: torch.device, desc: str,
                  class_weights: torch.Tensor | None = None) -> tuple[float, float]:
    """One epoch: a shuffled pass over `train` per entry of `passes` -> (mean loss, mean accuracy) over passes;
    `class_weights` [C] or None: the training loss's weight per class."""
    train_loss, train_acc = 0.0, 0.0
    for k, augmenter in enumerate(passes):  # every pass sees every image (the mean over passes is reported)
        loss_k, acc_k = train_one_epoch(net, train, run.optimizer, batch_size, mean, std, device, augmenter,
                                        run.generator, augment_generator=run.augment_generator,
                                        class_weights=class_weights, desc=desc + (f" pass {k + 1}/{len(passes)}" if len(passes) > 1 else ""))
        train_loss, train_acc = train_loss + loss_k / len(passes), train_acc + acc_k / len(passes)
    return train_loss, train_acc


CLASS_WEIGHTS = ("none", "balanced")


def balanced_class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse-frequency loss weights [C] of the labels [N]: n / (C x count_c), so every class
    weighs as much in the loss as in a balanced set (a class without images gets 0)."""
    counts = torch.bincount(labels.long(), minlength=num_classes).float()
    return torch.where(counts > 0, len(labels) / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))


def fit(model: nn.Module, train: ImageSet, valid: ImageSet, *, epochs: int, patience: int, batch_size: int,
        lr: float, mean: float, std: float, device: torch.device, seed: int,
        augment: Augmenter | tuple[Augmenter | None, ...] | None = None, out_dir: str | Path | None = None,
        resume: bool = False,
        checkpoint_extra: dict | None = None, desc: str = "fit", optimizer: str = "adam",
        weight_decay: float = 0.0, schedule: str = "constant", early_stopping: bool = True,
        min_steps: int = 0, val_interval_steps: int = 0, restore: str = "best_loss",
        stopping: str = "val_loss", optimizer_state: dict | None = None,
        eval_augment: Augmenter | None = None, class_weights: str = "none") -> FitResult:
    """Train `model` in place and leave it holding the weights `restore` names (see the module
    docstring for the rules) -> FitResult (`history`: one row per validation).

    `optimizer` / `lr` / `weight_decay` / `schedule`: `make_optimizer`, `make_scheduler` ('plateau'
    steps at each validation). `augment`: one Augmenter (or None) = one pass per epoch, a tuple
    (`epoch_passes`) = one shuffled pass per entry. `restore`: 'best_loss', 'best_accuracy' or
    'last'. At least `min_steps` optimiser steps (`epochs_for`); early stopping after `patience`
    validations without gain under `stopping`, never before `min_steps`. Validation after every
    epoch, or with `val_interval_steps` > 0 once that many steps have passed (and after the last
    epoch); through `eval_augment`'s view when given (`view_generator`). With `out_dir`:
    metrics.csv, best.pt (+ `checkpoint_extra`) and a resumable last.pt after each validation;
    `resume=True` continues from last.pt. `optimizer_state`: an earlier fit's
    `FitResult.optimizer_state` to go on from (its buffers; this fit's rate and decay).
    `class_weights`: 'none' (every class 1, the papers') or 'balanced' (`balanced_class_weights` of
    the training labels in the training loss; validation, early stopping and restore stay unweighted).
    """
    if class_weights not in CLASS_WEIGHTS:
        raise ValueError(f"unknown class_weights {class_weights!r}; choose from {CLASS_WEIGHTS}")
    weights = balanced_class_weights(train.labels, len(train.class_names)) if class_weights == "balanced" else None
    passes = tuple(augment) if isinstance(augment, (tuple, list)) else (augment,)
    _check_fit_settings(train, passes, epochs=epochs, patience=patience, batch_size=batch_size, lr=lr,
                        weight_decay=weight_decay, min_steps=min_steps, val_interval_steps=val_interval_steps,
                        optimizer=optimizer, schedule=schedule, restore=restore)
    epochs = epochs_for(epochs, min_steps, len(train), batch_size, len(passes))
    epoch_steps = steps_per_epoch(len(train), batch_size) * len(passes)
    torch.manual_seed(seed + get_rank())  # dropout draws from the global generator; one stream per rank
    net = _place_model(model, device)
    run_optimizer = _warm_optimizer(model, optimizer, lr, weight_decay, optimizer_state)
    run = _Run(optimizer=run_optimizer, scheduler=make_scheduler(run_optimizer, schedule, epochs),
               generator=torch.Generator().manual_seed(seed), augment_generator=_rank_generators(seed),
               counter=StoppingCounter(stopping), best_state=copy.deepcopy(model.state_dict()),
               result=FitResult(restore=restore), settings={"optimizer_name": optimizer, "schedule": schedule,
                                                            "restore": restore, "passes_per_epoch": len(passes)})
    out_dir = Path(out_dir) if out_dir else None
    last_path = out_dir / "last.pt" if out_dir else None
    if out_dir and is_main_process():
        remove_stale_temp_files(out_dir)  # half-written temp files of a killed run (even one killed in its first write)
    if resume and last_path:
        _resume_from(last_path, run, model, device, checkpoint_extra, desc, stopping, epochs)
    t0, result = time.perf_counter(), run.result
    # last.pt is written right after a validation, so a resumed run starts counting afresh
    last_epoch, steps_since_validation = (result.history[-1]["epoch"] if result.history else 0), 0
    for epoch in range(run.start_epoch, epochs + 1):
        t_epoch, lr_now = time.perf_counter(), run.optimizer.param_groups[0]["lr"]
        train_loss, train_acc = _train_passes(net, train, run, passes, batch_size=batch_size, mean=mean, std=std,
                                              device=device, desc=f"{desc} epoch {epoch}/{epochs}",
                                              class_weights=weights)
        if run.scheduler is not None and schedule != "plateau":
            run.scheduler.step()
        last_epoch, steps_since_validation = epoch, steps_since_validation + epoch_steps
        if steps_since_validation < val_interval_steps and epoch < epochs:
            continue
        steps_since_validation = 0
        _sync_buffers_from_rank0(model)
        val = broadcast_object(evaluate(model, valid, mean, std, device, augment=eval_augment,
                                        generator=view_generator(seed, epoch)))  # every rank decides alike
        result.history.append({"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                               "val_loss": val["loss"], "val_accuracy": val["accuracy"], "lr": lr_now,
                               "seconds": time.perf_counter() - t_epoch})
        if not math.isfinite(val["loss"]):
            raise FloatingPointError(f"{desc}: validation loss is {val['loss']} after epoch {epoch}")
        if schedule == "plateau":
            run.scheduler.step(val["loss"])
        _keep_if_better(run, model, val, epoch, restore, out_dir, checkpoint_extra)
        run.counter.update(val["loss"], val["accuracy"])
        # with few images an epoch is a few steps: patience counts only once min_steps are done
        stop = early_stopping and run.counter.without_gain >= patience and epoch * epoch_steps >= min_steps
        if out_dir:
            if is_main_process():
                atomic_write_csv(out_dir / "metrics.csv", pd.DataFrame(result.history))
            _save_last(last_path, model, run, epoch=epoch, finished=stop or epoch == epochs, stopped=stop,
                       checkpoint_extra=checkpoint_extra)
        log(f"{desc} epoch {epoch}: train loss {train_loss:.4f} acc {train_acc:.3f} | "
            f"val loss {val['loss']:.4f} acc {val['accuracy']:.3f}")
        if stop:
            result.stopped_early = True
            break
    model.load_state_dict(run.best_state)
    result.optimizer_state = run.optimizer.state_dict()
    result.steps = last_epoch * epoch_steps
    result.seconds = time.perf_counter() - t0
    return result
