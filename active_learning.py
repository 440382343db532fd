"""Deep active learning: every registered query strategy, one loop, test accuracy per labelled share
as mean +- std over seeds (the protocol of the deep-active-learning toolkits' CIFAR tables).

    python active_learning.py                                   # toolkit protocol, ResNet18, built-in data
    python active_learning.py --dataset casting --data_dir /data/casting    # the casting study
    python active_learning.py --model tiny_cnn --image_size 32 --lr 3e-3 --batch_size 32 \\
        --ensemble_size 3 --mc_samples 10 --cpu_threads 1                    # CPU-sized
    python active_learning.py --recipe toolkit --dataset cifar10 --data_dir D  # the toolkit's training recipe
    python active_learning.py --strategies random,bald --seeds 0,1,2,3,4     # a subset, more seeds
    python active_learning.py --shard 1/4 --run_name al                      # one of 4 processes/GPUs
    python active_learning.py --merge True --run_name al                     # only rebuild the tables

The pool is the train split (its labels are revealed only for queried images), the valid
split drives early stopping, the test split gives the accuracy. For every (strategy, seed):
  1. a random `initial_share` of the pool is labelled (the same images for every strategy
     of a seed, so the strategies start from one model);
  2. a model is trained on the labelled images with `training.fit` and tested: `--rounds
     from_scratch` builds a fresh model each round, `warm_start` goes on training the previous
     round's model with its optimiser state (the toolkit's loop: one model and optimiser for the
     whole run, the cosine schedule starting again each round). The fit settings (and the
     weights a round keeps, `--restore`: the best validation loss, or the last epoch's as the
     toolkit) come from `--recipe` (recipes.py), each one given explicitly overriding it.
     Every round trains at least `--min_steps` optimiser steps, so a few dozen labelled
     images (a few steps per epoch) are not stopped early before learning starts. A model
     whose best validation accuracy is at chance (not above the most frequent class's share
     + `--chance_margin`) does not end a round: it is retrained with a new seed and twice the
     steps, up to `--max_retrains` times, and the round records it (with a warning);
     `ensemble_variation_ratio` trains `ensemble_size` models with different seeds
     (member 0 is the model every other strategy trains); its reported accuracy is member 0's
     (`--ensemble_accuracy member0`) or the mean of the members' (`members_mean`, the toolkit's),
     and the ensemble's own (averaged softmax) accuracy is recorded too;
  3. the strategy picks `step_share` among the unlabelled images, they are labelled;
  4. repeat until `final_share` is labelled.
The shares count the pool, or with `--share_of pool_and_valid` (the toolkit's) the pool and the
valid split together: CIFAR-10's 45,000 + 5,000 give 5,000 labelled first and 5,000 per query.
The models are tested, validated and queried on the images themselves, or through
`--eval_augmentation` (the toolkit's eval ops: a random crop; bald draws a new crop in each of
its T passes, dbal one per image); coreset's features and VAAL's inputs go through
`--feature_augmentation` (the toolkit's train ops: crop + flip).
Each round records the labelled count and share, test accuracy and loss, the seconds of the
query that brought the labelled set to this size, the training seconds and steps, the
validation accuracy, the retrains and whether a model stayed at chance.

Writes results/active_learning/<run>/: config.json, runs/<strategy>_s<seed>.json (one per
finished strategy and seed: the resumable unit; a rerun skips them, an interrupted one
restarts), rounds.csv (every round of every finished run), summary.csv and table.md (per
labelled share, one markdown table: strategy rows sorted by mean test accuracy, mean +- std
over seeds, in %).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from safehil.active.acquisition import ENSEMBLE_STRATEGIES, STRATEGIES, Pool, query
from safehil.data.augment import BASE_AUGMENTATIONS, VIEW_AUGMENTATIONS, view_augmenter
from safehil.settings.config import MAX_MC_SAMPLES, DataConfig, GridRun, TrainConfig
from datasets import (ImageSet, augmentation_style, decode_request, load_image_sets_checked, load_split_table,
                      normalisation_for)
from models import fresh_model
from safehil.settings.presets import paper_default
from safehil.settings.recipes import ENSEMBLE_ACCURACIES, RECIPES, ROUNDS, SHARE_BASES
from safehil.training.runner import missing_tasks, run_grid
from safehil.training.training import (OPTIMIZERS, RESTORES, SCHEDULES, epoch_passes, evaluate, fit, labelled_set, predict, steps_per_epoch, synced_clock, view_generator)
from safehil.active.vaal import VARIANTS as VAAL_VARIANTS
from utils import (MAX_SEED, InputError, atomic_write_csv, atomic_write_text, flag, log, mean_std, parse_config,
                   progress_enabled, require, resolve_device, run_main)

# the `training.fit` settings a recipe fixes: a field left empty (None) takes the recipe's value
RECIPE_FIELDS = ("optimizer", "lr", "weight_decay", "schedule", "epochs", "batch_size", "early_stopping", "patience",
                 "restore")
# the round settings a recipe fixes besides fit's (empty = the recipe's)
ROUND_FIELDS = ("rounds", "mc_samples", "ensemble_size", "ensemble_accuracy", "vaal_variant", "eval_augmentation",
                "feature_augmentation", "share_of")
RETRAIN_SEED_STRIDE = 1_000_003  # seed offset of each retrain of a model stuck at chance


@dataclass(frozen=True)
class Config(GridRun, TrainConfig, DataConfig):
    """active_learning.py's flags: its own below (strategies, shares, recipe ...), then (config.py) GridRun's `run`
    flags (+ shard, merge), TrainConfig's `training` flags and DataConfig's `data` flags."""
    strategies: tuple[str, ...] = field(default_factory=lambda: tuple(STRATEGIES), metadata={
        "help": "comma list of query strategies; default every one registered in acquisition.py"})
    seeds: tuple[int, ...] = flag(help="comma list of seeds (toolkit: 3 runs)", most=MAX_SEED,
                                  **paper_default("active_learning.seeds"))
    initial_share: float = flag(help="share of the pool labelled at random at first",
                                **paper_default("active_learning.initial_share"))
    step_share: float = flag(help="share of the pool queried per round",
                             **paper_default("active_learning.step_share"))
    final_share: float = flag(help="stop once this share of the pool is labelled",
                              **paper_default("active_learning.final_share"))
    rounds: str | None = flag(None, "from_scratch = a fresh model each round | warm_start = go on training the "
                                    "previous round's model and optimiser (the toolkit's); empty = the recipe's "
                                    "(paper: from_scratch, toolkit: warm_start)")
    restore: str | None = flag(None, "weights a round keeps, tests and queries with: best_loss | best_accuracy | "
                                     "last (epoch); empty = the recipe's (paper: best_loss, toolkit: last)")
    ensemble_size: int | None = flag(None, "K models of ensemble_variation_ratio; empty = the recipe's (paper 5, "
                                           "toolkit 3)", most=100)
    ensemble_accuracy: str | None = flag(None, "the accuracy ensemble_variation_ratio reports: member0 | "
                                               "members_mean; empty = the recipe's (paper: member0, toolkit: "
                                               "members_mean)")
    mc_samples: int | None = flag(None, "MC-dropout samples T of bald and dbal; empty = the recipe's (paper 20, "
                                        "toolkit 25)", most=MAX_MC_SAMPLES)
    vaal_variant: str | None = flag(None, "VAAL as released | balanced (vaal.py); empty = the recipe's (paper: "
                                          "balanced, toolkit: released)")
    eval_augmentation: str | None = flag(None, "view the test, validation and scoring-query images (entropy, "
                                               "least_confidence, margin, bald, dbal, ensemble) are seen through: "
                                               "none = the image | crop = RandomCrop(S, padding 4), the toolkit's eval "
                                               "ops (bald draws a new crop per pass, dbal one per image) | crop_flip; "
                                               "empty = the recipe's (paper: none, toolkit: crop)")
    feature_augmentation: str | None = flag(None, "view of coreset's features and VAAL's inputs: none | crop | "
                                                  "crop_flip (the toolkit's train ops); empty = the recipe's (paper: "
                                                  "none, toolkit: crop_flip)")
    share_of: str | None = flag(None, "what the initial, step and final shares count: pool = the train split | "
                                      "pool_and_valid = train + valid (the toolkit's: 10 % of its 50,000 images = "
                                      "5,000 labelled, +5,000 per query); empty = the recipe's (paper: pool, "
                                      "toolkit: pool_and_valid)")
    recipe: str = flag("paper", "training recipe of every round (recipes.py): paper = Adam 1e-3, 100 epochs, "
                                "batch 16, early stopping patience 21 on val loss (R4VR's counter > 20), best val loss, "
                                "rounds from scratch; toolkit = SGD Nesterov 0.025, cosine, weight decay 3e-4, 200 "
                                "epochs, batch 96, no early stopping, last epoch, crop + flip, warm-started rounds, T "
                                "25, 3-member ensemble, test/valid/queries through a random crop, coreset and VAAL "
                                "through crop + flip, shares of train + valid. A flag given explicitly (--lr, "
                                "--epochs, --patience, --batch_size, --optimizer, --weight_decay, --schedule, "
                                "--early_stopping, --restore, --rounds, --mc_samples, --ensemble_size, "
                                "--ensemble_accuracy, --vaal_variant, --eval_augmentation, --feature_augmentation, "
                                "--share_of, --base_augmentation) overrides the recipe's value", choices=tuple(RECIPES))
    optimizer: str | None = flag(None, "adam | sgd_nesterov; empty = the recipe's")
    weight_decay: float | None = flag(None, "weight decay; empty = the recipe's")
    schedule: str | None = flag(None, "constant | cosine (per epoch); empty = the recipe's")
    early_stopping: bool | None = flag(None, "end a round's training when val loss stops improving; empty = the "
                                             "recipe's")
    min_steps: int = flag(1000, "optimiser steps every round trains at least, however few images are labelled "
                                "(epochs are raised to reach them; early stopping waits for them)", most=10_000_000)
    val_interval_steps: int = flag(50, "validate (early stopping, best weights, the chance check) once this many "
                                       "optimiser steps have passed since the last validation, not after every "
                                       "epoch: an epoch of a few labelled images is a few steps; 0 = every epoch",
                                   most=10_000_000)
    chance_margin: float = flag(0.05, "a model whose best validation accuracy is not above the most frequent "
                                      "class's share + this margin is stuck at chance and is retrained")
    max_retrains: int = flag(2, "retrains of a model stuck at chance (each with a new seed and twice the steps) "
                                "before the round goes on with a warning", most=100)
    # this script's defaults of inherited flags: empty = the recipe's
    epochs: int | None = flag(None, "maximum epochs per round; empty = the recipe's (paper 100, toolkit 200)")
    patience: int | None = flag(None, "early-stopping patience per round (val loss); empty = the recipe's (paper 21)")
    lr: float | None = flag(None, "learning rate; empty = the recipe's (paper 1e-3, toolkit 0.025)")
    batch_size: int | None = flag(None, "training batch size; empty = the recipe's (paper 16, toolkit 96)")
    base_augmentation: str = flag("", "paper | flip | crop_flip | none (see train_model.py); empty = the "
                                      "recipe's (paper: paper, toolkit: crop_flip)", choices=("",) + BASE_AUGMENTATIONS)
    out_dir: str = flag("results/active_learning", "parent folder of run folders")
    FLAG_HELP = {"model": "network (toolkit: ResNet18)",
                 "run_name": "run folder name; empty = model_dataset_pxSIZE",
                 "shard": "i/n: run only every n-th (strategy, seed) task starting at i (one process or GPU each)",
                 "merge": "only rebuild rounds.csv / summary.csv / table.md from the finished runs, train nothing"}

    def __post_init__(self):
        super().__post_init__()
        require(len(self.strategies) > 0, "--strategies needs at least one name")
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        require(not unknown, f"--strategies: unknown {unknown}; choose from {sorted(STRATEGIES)}")
        require(len(set(self.strategies)) == len(self.strategies), f"--strategies has duplicates: {self.strategies}")
        require(len(self.seeds) > 0 and len(set(self.seeds)) == len(self.seeds),
                f"--seeds needs distinct values, got {list(self.seeds)}")
        require(0 < self.initial_share < 1, f"--initial_share must be in (0, 1), got {self.initial_share}")
        require(0 < self.step_share < 1, f"--step_share must be in (0, 1), got {self.step_share}")
        require(self.initial_share <= self.final_share <= 1,
                f"--final_share must be in [initial_share, 1], got {self.final_share}")
        require(self.ensemble_size is None or self.ensemble_size >= 2,
                f"--ensemble_size must be >= 2, got {self.ensemble_size}")
        require(self.mc_samples is None or self.mc_samples >= 2, f"--mc_samples must be >= 2, got {self.mc_samples}")
        require(self.epochs is None or self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}")
        require(self.optimizer in (None,) + OPTIMIZERS,
                f"--optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        for name, valid in (("rounds", ROUNDS), ("restore", RESTORES), ("ensemble_accuracy", ENSEMBLE_ACCURACIES),
                            ("vaal_variant", tuple(VAAL_VARIANTS)), ("eval_augmentation", VIEW_AUGMENTATIONS),
                            ("feature_augmentation", VIEW_AUGMENTATIONS), ("share_of", SHARE_BASES)):
            require(getattr(self, name) in (None,) + valid,
                    f"--{name} must be one of {valid} (or empty: the recipe's), got {getattr(self, name)!r}")
        require(self.schedule in (None,) + SCHEDULES, f"--schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        require(self.weight_decay is None or self.weight_decay >= 0,
                f"--weight_decay must be >= 0, got {self.weight_decay}")
        require(self.min_steps >= 0, f"--min_steps must be >= 0, got {self.min_steps}")
        require(self.val_interval_steps >= 0, f"--val_interval_steps must be >= 0, got {self.val_interval_steps}")
        require(0 <= self.chance_margin < 1, f"--chance_margin must be in [0, 1), got {self.chance_margin}")
        require(self.max_retrains >= 0, f"--max_retrains must be >= 0, got {self.max_retrains}")


def resolve_recipe(cfg: Config) -> Config:
    """`cfg` with every empty (None) fit setting taken from `cfg.recipe`; explicit values win.
    Idempotent, so config.json and the run fingerprint hold the values that were used."""
    recipe = {**RECIPES[cfg.recipe].fit_kwargs(), **{k: getattr(RECIPES[cfg.recipe], k) for k in ROUND_FIELDS}}
    recipe["patience"] = max(1, recipe["patience"])  # a recipe without early stopping leaves patience unused (0)
    cfg = replace(cfg, **{k: v for k, v in recipe.items() if getattr(cfg, k) is None})
    return cfg if cfg.base_augmentation else replace(cfg, base_augmentation=RECIPES[cfg.recipe].augmentation)


def fit_settings(cfg: Config) -> dict:
    """The keyword arguments of `training.fit` for one round: the resolved recipe, min_steps and
    val_interval_steps."""
    cfg = resolve_recipe(cfg)
    return {**{k: getattr(cfg, k) for k in RECIPE_FIELDS}, "min_steps": cfg.min_steps,
            "val_interval_steps": cfg.val_interval_steps}


# Fields that do not change what one (strategy, seed) run computes; every other field must
# match between the invocations and shards that share a run folder (see `runner.check_fingerprint`).
NON_EXPERIMENT_FIELDS = ("strategies", "seeds", "device", "cpu_threads", "out_dir", "run_name", "shard", "merge")


def run_dir(cfg: Config) -> Path:
    """out_dir/run_name, or model_dataset_pxSIZE[_recipe][_rounds when not the recipe's]."""
    cfg = resolve_recipe(cfg)
    own_rounds = cfg.rounds != RECIPES[cfg.recipe].rounds
    name = cfg.run_name or (f"{cfg.model}_{cfg.dataset}_px{cfg.image_size}"
                            + ("" if cfg.recipe == "paper" else f"_{cfg.recipe}") + (f"_{cfg.rounds}" if own_rounds else ""))
    return Path(cfg.out_dir) / name


def task_name(strategy: str, seed: int) -> str:
    return f"{strategy}_s{seed}"


def parse_task(name: str) -> tuple[str, int]:
    """'least_confidence_s2' -> ('least_confidence', 2)."""
    strategy, seed = name.rsplit("_s", 1)
    return strategy, int(seed)


def all_tasks(cfg: Config) -> list[str]:
    """Task names in a fixed order, seed-major: a partial run has every strategy of seed 0 first."""
    return [task_name(s, seed) for seed in cfg.seeds for s in cfg.strategies]


# ============================================================================ the schedule

def labelled_counts(pool_size: int, initial_share: float, step_share: float, final_share: float) -> list[int]:
    """Labelled-set size per round: round(share * pool_size) for share = initial, initial + step, ...,
    up to final_share (the last round is exactly the final share). Strictly increasing."""
    shares, k = [], 0
    while True:
        share = initial_share + k * step_share
        if share > final_share + 1e-9:
            break
        shares.append(share)
        k += 1
    if final_share - shares[-1] > 1e-9:
        shares.append(final_share)
    counts = []
    for share in shares:
        n = int(round(share * pool_size))
        if n >= 1 and (not counts or n > counts[-1]):
            counts.append(n)
    if not counts:
        raise ValueError(f"a pool of {pool_size} images is too small for an initial share of {initial_share}")
    return counts


def share_base(cfg: Config, pool_size: int, valid_size: int) -> int:
    """The image count the shares are of: the pool, or (`share_of` pool_and_valid, the toolkit's)
    the pool and the validation split together."""
    return pool_size + valid_size if resolve_recipe(cfg).share_of == "pool_and_valid" else pool_size


def round_counts(cfg: Config, pool_size: int, valid_size: int) -> list[int]:
    """Labelled images per round (`labelled_counts` of `share_base`); the toolkit's CIFAR-10: 5,000,
    10,000, ..., 30,000 of 45,000 pool + 5,000 valid images. More than the pool holds is an InputError."""
    counts = labelled_counts(share_base(cfg, pool_size, valid_size), cfg.initial_share, cfg.step_share,
                             cfg.final_share)
    if counts[-1] > pool_size:
        raise InputError(f"--final_share {cfg.final_share} of {share_base(cfg, pool_size, valid_size)} images "
                         f"(--share_of {resolve_recipe(cfg).share_of}) is {counts[-1]} labelled images, but the pool "
                         f"holds {pool_size}: lower --final_share or give --share_of pool")
    return counts


def initial_labelled(pool_size: int, count: int, seed: int) -> torch.Tensor:
    """bool [pool_size] with `count` random images labelled; depends on the seed only (not the strategy)."""
    mask = torch.zeros(pool_size, dtype=torch.bool)
    mask[torch.randperm(pool_size, generator=torch.Generator().manual_seed(seed))[:count]] = True
    return mask


def member_seed(seed: int, round_index: int, member: int) -> int:
    """Seed of the weights and the training of one model: the same for every strategy of a seed."""
    return seed * 100_003 + round_index * 101 + member


# ============================================================================ one round

def chance_level(valid: ImageSet) -> float:
    """Validation accuracy of always answering the most frequent class (1/C when balanced)."""
    counts = torch.bincount(valid.labels, minlength=len(valid.class_names))
    return counts.max().item() / max(1, len(valid))


def best_val_accuracy(result) -> float:
    """Validation accuracy of the weights `fit` kept (`restore`'s choice: its best validation loss,
    best accuracy or last epoch)."""
    return next(row["val_accuracy"] for row in result.history if row["epoch"] == result.best_epoch)


def fit_past_chance(cfg: Config, model, train: ImageSet, valid: ImageSet, mean: float, std: float,
                    device: torch.device, seed: int, desc: str,
                    optimizer_state: dict | None = None) -> tuple[torch.nn.Module, dict, dict]:
    """Fit `model` (trained in place, its optimiser going on from `optimizer_state` when given)
    with the round's settings; while the validation accuracy of the weights it keeps is at chance
    (not above `chance_level(valid) + chance_margin`), retrain a fresh model with another seed
    and twice the steps, at most `max_retrains` times.
    -> (the last model, {'epochs_run', 'steps', 'seconds', 'val_accuracy', 'retrains', 'at_chance'},
    its optimiser state at the end)."""
    cfg = resolve_recipe(cfg)  # idempotent: callers may pass the flags as given
    settings = fit_settings(cfg)
    chance = chance_level(valid)
    seconds = 0.0
    for attempt in range(cfg.max_retrains + 1):
        s = seed + attempt * RETRAIN_SEED_STRIDE
        if attempt:  # a new start: a stuck model (dead units, a bad minimum) rarely recovers by itself
            model, optimizer_state = fresh_model(cfg, len(train.class_names), s), None
        scaled = {**settings, "epochs": settings["epochs"] * 2 ** attempt,
                  "min_steps": settings["min_steps"] * 2 ** attempt}
        result = fit(model, train, valid, **scaled, mean=mean, std=std, device=device, seed=s,
                     augment=epoch_passes(cfg.passes, augmentation_style(cfg.dataset), cfg.base_augmentation),
                     desc=desc, optimizer_state=optimizer_state, eval_augment=view_augmenter(cfg.eval_augmentation),
                     class_weights=cfg.class_weights)
        seconds += result.seconds
        accuracy = best_val_accuracy(result)
        stuck = accuracy <= chance + cfg.chance_margin
        if stuck:
            warnings.warn(f"{desc}: validation accuracy {accuracy:.3f} is at chance ({chance:.3f} + margin "
                          f"{cfg.chance_margin}) after {result.steps} steps (attempt {attempt + 1} of "
                          f"{cfg.max_retrains + 1})" + ("; retraining with a new seed and twice the steps"
                                                         if attempt < cfg.max_retrains else "; the round goes on"))
        if not stuck:
            break
    return model, {"epochs_run": result.steps // steps_per_epoch(len(train), settings["batch_size"]),
                   "steps": result.steps, "seconds": seconds,
                   "val_accuracy": accuracy, "retrains": attempt, "at_chance": stuck}, result.optimizer_state


def _cpu_copy(state):
    """A detached CPU copy of a (nested) state dict: the round-0 cache must not alias live tensors."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu().clone()
    if isinstance(state, dict):
        return {k: _cpu_copy(v) for k, v in state.items()}
    if isinstance(state, list):
        return [_cpu_copy(v) for v in state]
    return state


def train_models(cfg: Config, models: list | None, k: int, train: ImageSet, sets: dict, mean: float, std: float,
                 device: torch.device, seed: int, round_index: int, desc: str,
                 round_zero: dict | None = None, optimizer_states: list | None = None) -> tuple[list, dict, list]:
    """Fit k models on `train` (fresh, or under `rounds` warm_start going on with `models`, and a
    single model also with its `optimizer_states`: the toolkit's `tools/train_al.py` builds its
    optimiser once, `tools/ensemble_al.py` builds each member's anew every episode), none left at chance -> (models, round stats of member 0 + retrains and
    at_chance over all members, train seconds, the models' optimiser states).

    round_zero: {(seed, member): (state_dict, stats, optimiser state)}, shared by the tasks of one
    process. Round 0 trains the same models for every strategy of a seed (same initial images,
    same seeds), so they are trained once and reused; the records are the same as without the reuse."""
    cfg = resolve_recipe(cfg)
    num_classes = len(train.class_names)
    if round_zero is not None and any(key[0] != seed for key in round_zero):
        round_zero.clear()  # tasks run seed-major: keep one seed's models only
    warm = cfg.rounds == "warm_start" and bool(models)
    out, stats, states = [], [], []
    for j in range(k):
        s = member_seed(seed, round_index, j)
        if round_index == 0 and round_zero is not None and (seed, j) in round_zero:
            state, fitted, optimizer_state = round_zero[seed, j]
            model = fresh_model(cfg, num_classes, s)
            model.load_state_dict(state)
            model.to(device)
            optimizer_state = _cpu_copy(optimizer_state)
        else:
            model = models[j] if warm else fresh_model(cfg, num_classes, s)
            model, fitted, optimizer_state = fit_past_chance(
                cfg, model, train, sets["valid"], mean, std, device, s, f"{desc} m{j}",
                optimizer_states[j] if warm and optimizer_states and k == 1 else None)
            if round_index == 0 and round_zero is not None:
                round_zero[seed, j] = (_cpu_copy(model.state_dict()), fitted, _cpu_copy(optimizer_state))
        out.append(model)
        stats.append(fitted)
        states.append(optimizer_state)
    return out, {"epochs_run": stats[0]["epochs_run"], "steps": stats[0]["steps"],
                 "val_accuracy": stats[0]["val_accuracy"], "retrains": sum(f["retrains"] for f in stats),
                 "at_chance": any(f["at_chance"] for f in stats),
                 "train_seconds": sum(f["seconds"] for f in stats)}, states


def test_scores(models: list, test: ImageSet, mean: float, std: float, device: torch.device,
                ensemble_accuracy: str = "member0", view: str = "none", view_seed: int = 0) -> dict:
    """Accuracy and loss on the test split: of member 0, or with several models and `ensemble_accuracy`
    'members_mean' the mean over the members (the toolkit's report); with several models also
    member 0's and the ensemble's (averaged softmax) accuracy. view: the `VIEW_AUGMENTATIONS` name
    the test images are seen through (the toolkit tests through its eval ops, a random crop), member
    j's drawn from `view_generator(view_seed, j)`."""
    augment = view_augmenter(view)

    def views(j):
        return {"augment": augment, "generator": view_generator(view_seed, j)}

    metrics = [evaluate(m, test, mean, std, device, **views(j))
               for j, m in enumerate(models if ensemble_accuracy == "members_mean" else models[:1])]
    scores = {"test_accuracy": sum(m["accuracy"] for m in metrics) / len(metrics),
              "test_loss": sum(m["loss"] for m in metrics) / len(metrics)}
    if len(models) > 1:
        scores["member0_test_accuracy"] = metrics[0]["accuracy"]
        probs = torch.stack([predict(m, test, mean, std, device, **views(j))[0].softmax(1)
                             for j, m in enumerate(models)]).mean(0)
        scores["ensemble_test_accuracy"] = (probs.argmax(1) == test.labels).float().mean().item()
    return scores


def run_task(cfg: Config, strategy: str, seed: int, sets: dict, mean: float, std: float,
             device: torch.device, round_zero: dict | None = None) -> dict:
    """The whole active-learning loop for one strategy and seed -> {'rounds': [records], 'queried': [[idx]]}.

    One record per round: round, labelled, share, test_accuracy and test_loss (member 0, or the
    members' mean, `ensemble_accuracy`), member0_test_accuracy and ensemble_test_accuracy (ensemble
    strategies), round_start (from_scratch | warm_start: `--rounds`), query_seconds (the query that led to this
    round; 0 in round 0), train_seconds (all members and retrains), epochs_run, steps and
    val_accuracy (member 0), retrains (over all members) and at_chance (a member still at
    chance after its retrains).
    """
    cfg = resolve_recipe(cfg)
    pool = sets["train"]
    base = share_base(cfg, len(pool), len(sets["valid"]))
    counts = round_counts(cfg, len(pool), len(sets["valid"]))
    mask = initial_labelled(len(pool), counts[0], seed)
    k = cfg.ensemble_size if strategy in ENSEMBLE_STRATEGIES else 1
    generator = torch.Generator().manual_seed(seed * 7_919 + 17)
    name = task_name(strategy, seed)
    records, queried, models, optimizer_states, query_seconds = [], [], None, None, 0.0
    bar = tqdm(range(len(counts)), desc=name, leave=False, disable=not progress_enabled())
    for r in bar:
        labelled = labelled_set(pool, torch.nonzero(mask).flatten())  # ground-truth labels revealed
        models, fitted, optimizer_states = train_models(cfg, models, k, labelled, sets, mean, std, device, seed, r,
                                                        f"{name} round {r}", round_zero, optimizer_states)
        records.append({"strategy": strategy, "seed": seed, "round": r, "labelled": int(mask.sum()),
                        "share": int(mask.sum()) / base, "query_seconds": query_seconds, "round_start": cfg.rounds,
                        **fitted, **test_scores(models, sets["test"], mean, std, device, cfg.ensemble_accuracy,
                                                cfg.eval_augmentation, member_seed(seed, r, 0))})
        bar.set_postfix(n=records[-1]["labelled"], acc=f"{records[-1]['test_accuracy']:.3f}")
        if r + 1 == len(counts):
            break
        budget = counts[r + 1] - counts[r]
        t0 = synced_clock(device)
        picked = query(strategy, models, Pool(pool, mask.clone(), mean, std, device, cfg.mc_samples,
                                              max(cfg.batch_size, 128), cfg.vaal_variant,
                                              view_augmenter(cfg.eval_augmentation),
                                              view_augmenter(cfg.feature_augmentation)), budget, generator)
        query_seconds = synced_clock(device) - t0
        mask[picked] = True
        queried.append(picked.tolist())
    return {"rounds": records, "queried": queried}


# ============================================================================ tables

def summarise(rounds: pd.DataFrame) -> pd.DataFrame:
    """Per strategy and round: labelled, share, test accuracy mean/std over seeds, seeds, query seconds,
    retrains of models stuck at chance and runs still at chance after them (0 when not recorded)."""
    rows = []
    for (strategy, r), part in rounds.groupby(["strategy", "round"]):
        m, s = mean_std(part["test_accuracy"])
        rows.append({"strategy": strategy, "round": r, "share": part["share"].mean(),
                     "labelled": int(part["labelled"].iloc[0]), "accuracy_mean": m, "accuracy_std": s,
                     "seeds": len(part), "query_seconds_mean": part["query_seconds"].mean(),
                     "retrains": int(part["retrains"].sum()) if "retrains" in part else 0,
                     "at_chance": int(part["at_chance"].astype(bool).sum()) if "at_chance" in part else 0})
    return pd.DataFrame(rows).sort_values(["round", "accuracy_mean", "strategy"], ascending=[True, False, True])


def markdown_tables(summary: pd.DataFrame) -> str:
    """One markdown table per labelled share: strategies sorted by mean test accuracy, mean +- std in %,
    with the retrains of models stuck at chance and the runs that stayed at chance."""
    blocks = []
    for r, part in summary.groupby("round"):
        share, n = part["share"].iloc[0], part["labelled"].iloc[0]
        lines = [f"### {100 * share:.0f} % labelled ({n} images)", "",
                 "| strategy | test accuracy (%) | seeds | query s | retrained at chance | still at chance |",
                 "|---|---|---|---|---|---|"]
        for row in part.itertuples():
            lines.append(f"| {row.strategy} | {100 * row.accuracy_mean:.2f} +- {100 * row.accuracy_std:.2f} | "
                         f"{row.seeds} | {row.query_seconds_mean:.2f} | {getattr(row, 'retrains', 0)} | "
                         f"{getattr(row, 'at_chance', 0)} |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def merge_results(out: Path, finished: dict[str, dict], missing: list[str]) -> dict:
    """rounds.csv, summary.csv and table.md from the finished run files {task: saved}
    -> {'rounds', 'summary', 'missing'}."""
    if not finished:
        return {"rounds": pd.DataFrame(), "summary": pd.DataFrame(), "missing": missing}
    rounds = pd.DataFrame([r for saved in finished.values() for r in saved["rounds"]])
    rounds = rounds.sort_values(["strategy", "seed", "round"]).reset_index(drop=True)
    summary = summarise(rounds)
    atomic_write_csv(out / "rounds.csv", rounds)
    atomic_write_csv(out / "summary.csv", summary)
    atomic_write_text(out / "table.md", markdown_tables(summary))
    return {"rounds": rounds, "summary": summary, "missing": missing}


# ============================================================================ main

def load_data(cfg: Config) -> tuple[dict, float, float]:
    """{split: ImageSet} (train = the pool, valid, test) and the normalisation (mean, std)."""
    table, root = load_split_table(cfg.dataset, cfg.data_dir, cfg.split_csv, cfg.split_seed, cfg.per_class,
                                   cfg.multi_label_rule)
    sets, _ = load_image_sets_checked(table, root, cfg.image_size, source=cfg.split_csv,  # bad files: a clear error
                                      **decode_request(cfg.dataset, cfg.geometry, cfg.base_augmentation))
    for needed in ("train", "valid", "test"):
        if needed not in sets:
            raise InputError(f"the data has no {needed!r} split (found {sorted(sets)})")
    mean, std = normalisation_for(cfg.dataset, sets["train"])
    return sets, mean, std


def prepare(cfg: Config, out: Path, todo: list[str]) -> tuple[dict, float, float, torch.device, dict]:
    """What every (strategy, seed) task shares: (sets, mean, std, device, round-0 models), loaded once."""
    device = resolve_device(cfg.device)
    sets, mean, std = load_data(cfg)
    log(f"{out}: {len(todo)} run(s) on {device}; " + ", ".join(f"{k} {len(v)}" for k, v in sets.items()))
    return sets, mean, std, device, {}


def run_one(cfg: Config, task: str, shared: tuple) -> dict:
    """One (strategy, seed) task -> {'strategy', 'seed', 'rounds', 'queried'} (its run file's content)."""
    strategy, seed = parse_task(task)
    saved = {"strategy": strategy, "seed": seed, **run_task(cfg, strategy, seed, *shared)}
    last = saved["rounds"][-1]
    log(f"{task}: test accuracy {last['test_accuracy']:.4f} at {100 * last['share']:.0f} % labelled")
    stuck = [r["round"] for r in saved["rounds"] if r["at_chance"]]
    if stuck:
        log(f"WARNING {task}: round(s) {stuck} ended with a model at chance after {cfg.max_retrains} retrains")
    return saved


def main(cfg: Config) -> dict:
    """Run this shard's unfinished (strategy, seed) tasks, then merge every finished one
    -> {'rounds': DataFrame, 'summary': DataFrame, 'missing': [task names]}."""
    cfg = resolve_recipe(cfg)  # config.json and the fingerprint record the values used
    out, tasks = run_dir(cfg), all_tasks(cfg)
    finished = run_grid(cfg, out, tasks, partial(run_one, cfg), non_experiment_fields=NON_EXPERIMENT_FIELDS,
                        folder="runs", prepare=partial(prepare, cfg, out), required_keys=("strategy", "seed", "rounds"))
    merged = merge_results(out, finished, missing_tasks(tasks, finished))
    if len(merged["summary"]):
        log(markdown_tables(merged["summary"]))
    if merged["missing"]:
        log(f"not finished yet: {', '.join(merged['missing'])}")
    return merged


if __name__ == "__main__":
    run_main(main, parse_config(Config, description=__doc__))
