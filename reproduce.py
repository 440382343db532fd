"""Every experiment of the project at small scale on the built-in data, then every figure and
results/REPORT.md (each headline number next to the paper's, figures embedded).

    python reproduce.py                    # CPU-sized: at most 15 minutes on 2 cores
    python reproduce.py --smoke True       # tiny sizes, about a minute (the test suite runs this)
    python reproduce.py --full True        # the papers' scale: 224 px, ResNet18 + VGG16, for a GPU
    python reproduce.py --steps safety,figures,report     # only some steps (the others' results stay)

Steps, in order: train (model A over seeds in three arms: plain, plain+augmented = the paper's
use_aug epoch, plain+plain = the step-matched control; model B for the cascade, on the other
half of the train split, and on model A's half for the disagreement comparison), data_generation (the HIL grid), mc_scores (both models), saliency (model A),
active_learning (every strategy), safety (the R4VR cascade of A and B), figures
(plot_results.py), report. Each step calls the experiment's own `main(Config(...))` and writes
where that script writes by default, under --out_dir. A rerun continues: finished training runs,
grid settings and active-learning runs are reused. reproduce.json records the scale, the run
folders and the seconds per step.

Settings (every flag, grouped; name=default [source of the default]):
  data: data_dir='', max_image_pixels=50000000, split_csv=''
  own: smoke=False, full=False,
      steps=train,strips,data_generation,mc_scores,saliency,active_learning,safety,figures,repor
      t, out_dir=results, dataset=synthetic, device=auto, cpu_threads=0, weights='', model_a='',
      model_b='', lr=0.0, lr_b=0.0, batch_size=0, batch_size_b=0, T=0, pool_per_class=0,
      recipe='', base_augmentation='', plan=False, overwrite=False
"""
from __future__ import annotations

import multiprocessing
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

import active_learning
import evaluate_safety
import get_mc_scores
import plot_results
from safehil.report import report
import saliency_map_uncertainties
import train_model
import train_model_data_generation as data_generation
from safehil.data.augment import BASE_AUGMENTATIONS
from safehil.safety.cascade import pair_disagreement
from safehil.settings.config import (MAX_THREADS, INVOCATION_FIELDS, DataConfig, DataFiles, empty_run_folder, holds_results, setting_differences)
from datasets import load_split_table
from models import MODELS, build_model, ensure_imagenet_weights
from safehil.settings.presets import preset_for, preset_record
from safehil.settings.recipes import RECIPES
from safehil.data.splits import stratified_split
from safehil.data.synthetic import default_synthetic_dir, generate_safety_splits, generate_severstal_strips
from utils import (InputError, atomic_write_csv, atomic_write_json, config_to_dict, flag, log, parse_config, progress_enabled,
                   read_json, require, resolve_device, run_main, setting_sources, with_sources)

# the cascade's model pair: disjoint halves of the train split (the R4VR code) or the same data, another
# architecture and seed
PAIRS = ("disjoint_halves", "same_data")
# model A's three augmentation arms (train_model --passes), the comparison of REPORT.md
ARMS = ("plain", "plain+augmented", "plain+plain")
CASCADE_ARM = "plain+augmented"   # the cascade's model A: the paper's use_aug training
STEPS = ("train", "strips", "data_generation", "mc_scores", "saliency", "active_learning", "safety", "figures", "report")


class _FromPreset:
    """The value of a `Scale` field that comes from the data set's paper preset (presets.py)."""

    def __repr__(self) -> str:
        return "PRESET"


PRESET = _FromPreset()


@dataclass(frozen=True)
class Scale:
    """Sizes of every experiment for one run of reproduce.py.

    A field left at PRESET takes the data set's paper value (`presets.Preset.value`: model A's
    protocol for lr, batch_size, epochs, patience; model B's for the same names + _b); the CPU
    scales set the sizes they shrink. The full scale sets nothing: it is the preset, plus this
    class's defaults of the fields no paper gives (`sal_max_images` ... `safety_per_class`).
    """
    name: str
    model_a: str = PRESET           # trained with and without augmentation; MC, saliency, cascade model A
    model_b: str = PRESET           # the cascade's second, different architecture
    weights: str = PRESET           # of every trained model: none | imagenet (with the paper's freezing) | PATH
    image_size: int = PRESET
    seeds: tuple[int, ...] = PRESET  # of the augmentation comparison
    lr: float = PRESET              # model A (and the data-generation and active-learning rounds at CPU scale)
    batch_size: int = PRESET
    epochs: int = PRESET
    patience: int = PRESET
    lr_b: float = PRESET            # model B
    batch_size_b: int = PRESET
    epochs_b: int = PRESET
    patience_b: int = PRESET
    optimizer: str = PRESET         # model A's optimiser (training.OPTIMIZERS) and rate schedule (SCHEDULES)
    schedule: str = PRESET
    optimizer_b: str = PRESET       # model B's
    schedule_b: str = PRESET
    stopping: str = PRESET          # what resets the early-stopping counter (training.STOPPING_RULES)
    restore: str = PRESET           # the weights each training keeps (training.RESTORES)
    freeze: bool | None = PRESET    # the paper's freezing; None = on only with pretrained weights
    pair: str = PRESET              # PAIRS: the cascade's two models on disjoint halves of train, or both on all
    half_a: str = PRESET            # model A's half with disjoint_halves (first | second)
    half_b: str = PRESET            # model B's half
    pretrain: bool = PRESET         # pre-train on the balanced half, then fine-tune on the whole train split
    dg_baseline_epochs: int = PRESET  # HIL: the baseline's maximum epochs and early-stopping patience
    dg_baseline_patience: int = PRESET
    T: int = PRESET                 # MC-dropout samples per image (MC scores, saliency, safety)
    shares: tuple[float, ...] = PRESET  # saliency: revealed shares in percent
    dg_initial: tuple[int, ...] = PRESET
    dg_steps: tuple[int, ...] = PRESET
    dg_pool_per_class: int | None = PRESET
    dg_epochs: int = PRESET
    dg_patience: int = PRESET
    dg_restore: str = PRESET        # HIL: the weights each fit hands on; what resets its counter; one optimiser per
    dg_stopping: str = PRESET       # setting (reuse) or per fit (new); the rate schedule; the steps' and the
    dg_step_optimizer: str = PRESET  # baseline's batch
    dg_schedule: str = PRESET
    dg_batch_size: int = PRESET
    dg_baseline_batch_size: int = PRESET
    dg_model_b: bool = PRESET       # HIL: model B's grid too (first arrival seed)
    mc_splits: tuple[str, ...] = PRESET  # MC scores: the splits scored, and the other model's training half
    mc_other_half: bool = PRESET
    sal_models: tuple[str, ...] = PRESET  # saliency: the networks (model_a, model_b), the images (test | own_half)
    sal_split: str = PRESET
    sal_dropout: bool = PRESET      # saliency: dropout on during the gradient
    base_augmentation: str = PRESET  # augment.BASE_AUGMENTATIONS
    al_recipe: str = PRESET         # recipes.RECIPES name of the active-learning rounds
    al_image_size: int = PRESET
    al_seeds: tuple[int, ...] = PRESET
    al_initial_share: float = PRESET
    al_step_share: float = PRESET
    al_final_share: float = PRESET
    # reproduce.py's own sizes (no paper gives them); these defaults are the full scale's
    sal_max_images: int = 0         # saliency: a random subset of this many test images; 0 = all
    al_strategies: tuple[str, ...] = ()  # empty = every strategy registered in acquisition.py
    al_epochs: int | None = None    # None: epochs, patience, lr and batch of every round are al_recipe's
    al_patience: int | None = None
    al_min_steps: int | None = None  # optimiser steps per round at least; None = active_learning.py's default
    al_workers: int = 1             # processes sharing the active-learning runs on a CPU (shards, one thread each)
    safety_per_class: int = 0       # > 0: the cascade's own large valid/test splits of the built-in data (per class)
    dg_seeds: tuple[int, ...] = (0, 1, 2)  # arrival-order seeds of the data-generation grid (the unit of its verdicts)
    dg_workers: int = 1             # processes sharing those seeds on a CPU (one thread each)
    # the built-in Severstal-like strips (step `strips`): per class (0 = skip), file height (width 6.25 x),
    # input height (whole strips), epochs of each model of the pair
    strips_per_class: int = 0
    strips_height: int = 64
    strips_image_size: int = 32
    strips_epochs: int = 8
    al_mc_samples: int | None = None  # MC-dropout passes of bald and dbal; None = al_recipe's (recipes.py)
    al_ensemble_size: int | None = None  # members of ensemble_variation_ratio; None = al_recipe's


# The CPU scale's active learning: rounds of 600+ optimiser steps (cut from 1,000 for the 15-minute budget)
# over 3 seeds cost ~10 CPU-s each, so it runs one strategy per family: uncertainty
# (entropy), MC-dropout Bayesian (bald) and diversity (coreset) against random. least_confidence, margin, dbal,
# ensemble_variation_ratio and vaal (~25-50 s per query on a CPU) are not run at this scale (REPORT.md says so).
CPU_STRATEGIES = ("random", "entropy", "bald", "coreset")
SCALES = {
    # the CPU scales train from random weights: freeze None (nothing frozen without pretrained weights); the rest
    # of the training protocol (stopping, restore, optimiser, pair and halves) is the data set's preset, and so is
    # the HIL step protocol (restore, stopping, optimiser reuse, schedule) and the saliency gradient's dropout.
    # Smaller than the paper's at the CPU scales, beside the preset's value: HIL batches 32 (paper 16; Severstal
    # baseline 64), model A's grid only (paper: both models), MC scores and saliency on model A's test images
    # (paper NEU: test + valid + the other model's training half; saliency on VGG16's own training half)
    "smoke": Scale("smoke", image_size=24, model_a="tiny_cnn", model_b="tiny_cnn", weights="none", freeze=None,
                   dg_baseline_epochs=1, dg_baseline_patience=1,
                   seeds=(0,),
                   epochs=1, patience=1, lr=3e-3, batch_size=32, epochs_b=1, patience_b=1, lr_b=3e-3,
                   batch_size_b=32, dg_initial=(4,), dg_steps=(4,), dg_pool_per_class=8, dg_epochs=1, dg_patience=1,
                   dg_batch_size=32, dg_baseline_batch_size=32, dg_model_b=False, mc_splits=("test",),
                   mc_other_half=False, sal_models=("model_a",), sal_split="test",
                   T=3, shares=(25.0, 75.0), sal_max_images=16, al_image_size=24, al_strategies=("random", "entropy"),
                   al_seeds=(0,), al_epochs=1, al_patience=1, al_ensemble_size=2, al_mc_samples=2,
                   al_final_share=0.3, al_min_steps=4, dg_seeds=(0,), strips_per_class=4, strips_height=32,
                   strips_image_size=16, strips_epochs=1),
    # measured on 2 idle CPU cores: tiny_cnn 1.4 s and resnet18 8 s per epoch at 64 px (1,080 train images);
    # tiny_cnn at 32 px ~15 CPU-ms per optimiser step (batch 32, validating every 50 steps). The train step's
    # budget (~300 s): model A's three arms on its half (540 images; 1 + 2 + 2 passes per epoch) over 3 seeds at
    # 12 epochs ~ 3 x 12 x 5 x 0.7 s = 126 s; model B (two passes per epoch) on each half at 9 epochs ~ 2 x 9 x 8 s
    # = 144 s (before the three arms and the halves: 25 and 18 epochs, 379 s in all).
    # Measured with make run on 2 CPU cores at epochs_b 9, HIL fine-tuning 4 / baseline 25 epochs and active-learning
    # rounds of 1,000 steps: 16.6 min (train 398 s, data generation 159 s, active learning 336 s), over the 15-minute
    # budget; so model B trains 6 epochs, HIL fine-tuning 3 (baseline 15) and each active-learning round 600 steps
    # (measured earlier: 600-step rounds end 7-11 points below 3,000-step ones at 108-324 images).
    "default": Scale("default", image_size=64, model_a="tiny_cnn", model_b="resnet18", weights="none", freeze=None,
                     dg_baseline_epochs=15, dg_baseline_patience=6,
                     seeds=(0, 1, 2), epochs=12, patience=6, lr=3e-3, batch_size=32, epochs_b=6, patience_b=8,
                     lr_b=5e-4, batch_size_b=32, dg_initial=(5, 10), dg_steps=(5, 10), dg_pool_per_class=30,
                     dg_epochs=3, dg_patience=2, dg_batch_size=32, dg_baseline_batch_size=32, dg_model_b=False,
                     mc_splits=("test",), mc_other_half=False, sal_models=("model_a",), sal_split="test",
                     shares=(5.0, 15.0, 25.0, 35.0, 55.0, 75.0, 95.0), sal_max_images=360,
                     al_image_size=32, al_strategies=CPU_STRATEGIES, al_epochs=1, al_patience=3, al_ensemble_size=2,
                     al_mc_samples=10, al_final_share=0.3, al_min_steps=600, al_workers=2, safety_per_class=500,
                     dg_seeds=(0, 1, 2), dg_workers=2, strips_per_class=40, strips_epochs=8),
    "full": Scale("full"),
}

# reproduce.py flag -> the Scale field it replaces when given (non-empty / non-zero)
SCALE_FLAGS = {"weights": "weights", "model_a": "model_a", "model_b": "model_b", "lr": "lr", "lr_b": "lr_b",
               "batch_size": "batch_size", "batch_size_b": "batch_size_b", "T": "T",
               "pool_per_class": "dg_pool_per_class", "recipe": "al_recipe", "base_augmentation": "base_augmentation"}


def resolve_scale(scale: Scale, dataset: str, given: dict[str, object] | None = None) -> tuple[Scale, dict[str, str]]:
    """(the scale with every PRESET field filled from `dataset`'s paper preset and the `given`
    flags applied, {field: where its value came from}). Precedence: a given flag, then the
    scale's own value, then the preset. A data set without a preset row is an InputError."""
    preset = preset_for(dataset) if any(getattr(scale, f.name) is PRESET for f in fields(scale)) else None
    values, sources = {}, {}
    for f in fields(scale):
        value = getattr(scale, f.name)
        if f.name == "name":
            continue
        if value is PRESET:
            values[f.name], source = preset.value(f.name)
            sources[f.name] = f"paper preset {dataset} ({preset.name}): {source}"
        elif value == f.default:
            sources[f.name] = "reproduce.Scale default (no paper value)"
        else:
            sources[f.name] = f"{scale.name} scale (reproduce.SCALES)"
    for flag_name, value in (given or {}).items():
        if value not in (None, "", 0):
            values[SCALE_FLAGS[flag_name]] = value
            sources[SCALE_FLAGS[flag_name]] = f"flag --{flag_name}"
    return replace(scale, **values), sources


@dataclass(frozen=True)
class Config(DataFiles):
    smoke: bool = flag(False, "tiny sizes: checks that everything runs (about a minute)")
    full: bool = flag(False, "the papers' scale: every setting from the data set's preset (presets.py: models, "
                             "ImageNet weights, lr, batch, T, grid, pool cap, AL recipe): for a GPU")
    steps: tuple[str, ...] = flag(STEPS, f"comma list of steps to run, of {STEPS}")
    out_dir: str = flag("results", "results root: <out_dir>/<experiment>/<run>/")
    dataset: str = flag("synthetic", "data set adapter of data_dir")
    device: str = flag("auto", "auto | cpu | cuda | cuda:N")
    cpu_threads: int = flag(0, "torch CPU threads of this process (set by utils.run_main); 0 = torch's default "
                               "(the parallel grid workers keep 1 each)", most=MAX_THREADS)
    # overrides of the scale's (with --full: the preset's) values; empty / 0 = the scale's
    weights: str = flag("", "none | imagenet | PATH for every trained model; empty = the scale's (full: imagenet "
                            "where the paper used it)")
    model_a: str = flag("", "model A; empty = the scale's", choices=("",) + tuple(MODELS))
    model_b: str = flag("", "model B of the cascade; empty = the scale's", choices=("",) + tuple(MODELS))
    lr: float = flag(0.0, "learning rate of model A (and of the data-generation and CPU-scale active-learning "
                          "rounds); 0 = the scale's (full: the preset's, 1e-3)")
    lr_b: float = flag(0.0, "learning rate of model B; 0 = the scale's (full: the preset's, 1e-3)")
    batch_size: int = flag(0, "training batch size of model A and the loops; 0 = the scale's (full: NEU 16, "
                              "Severstal 16)")
    batch_size_b: int = flag(0, "training batch size of model B; 0 = the scale's (full: NEU 16, Severstal "
                                "EfficientNet-B0 64)")
    T: int = flag(0, "MC-dropout samples; 0 = the scale's (full: NEU 20, Severstal 40)")
    pool_per_class: int = flag(0, "data-generation pool cap per class; 0 = the scale's (full: Severstal 195)")
    recipe: str = flag("", "active-learning training recipe; empty = the scale's", choices=("",) + tuple(RECIPES))
    base_augmentation: str = flag("", "paper | flip | none; empty = the scale's (full: CIFAR and casting flip)",
                                  choices=("",) + BASE_AUGMENTATIONS)
    plan: bool = flag(False, "print, per step, every resolved setting with its source and the work it will do "
                             "(with --full also a wall-time estimate from a few timed batches); train nothing")
    overwrite: bool = flag(False, "rerun the steps whose settings changed since their results were written "
                                  "(their run folders are replaced); the other steps' results are kept")
    FLAG_HELP = {"split_csv": "path,label,split CSV (with data_dir)"}

    def __post_init__(self):
        super().__post_init__()
        require(not (self.smoke and self.full), "--smoke and --full exclude each other")
        unknown = [s for s in self.steps if s not in STEPS]
        require(not unknown, f"--steps: unknown {unknown}; choose from {STEPS}")
        for name in ("batch_size", "batch_size_b", "T", "pool_per_class", "lr", "lr_b"):
            require(getattr(self, name) >= 0, f"--{name} must be >= 0 (0 = the scale's), got {getattr(self, name)}")
        require(self.T != 1, "--T must be >= 2 MC samples (or 0 = the scale's)")

    @property
    def scale_name(self) -> str:
        return "full" if self.full else "smoke" if self.smoke else "default"

    def resolved(self) -> tuple[Scale, dict[str, str]]:
        """(the scale's sizes with the data set's preset and every flag given, {field: source})."""
        return resolve_scale(SCALES[self.scale_name], self.dataset,
                             {name: getattr(self, name) for name in SCALE_FLAGS})

    @property
    def scale(self) -> Scale:
        return self.resolved()[0]


# ============================================================================ the experiments

# The evaluation steps (MC scores, saliency, safety) are recomputed from the checkpoints on every
# run, replacing their previous results; training and the grids continue (resume) instead.
RECOMPUTED = True


def data_fields(cfg: Config) -> dict:
    """The data flags of the experiments that train (those that load a checkpoint use its data)."""
    return {"dataset": cfg.dataset, "data_dir": cfg.data_dir, "split_csv": cfg.split_csv}


def arm_key(passes: str) -> str:
    """The train_configs key of model A's arm `passes` ('a_plain', 'a_plain+augmented', ...)."""
    return f"a_{passes}"


def step_config(config_cls, cfg: Config, from_scale: dict[str, str], **fixed):
    """`config_cls(...)` of one step: each flag of `from_scale` ({step flag: Scale field}) set to
    the resolved scale's value, the `fixed` ones as given; config.json records every value's
    source (the scale's source of the field, 'reproduce.py' for the fixed ones, 'default' for
    the rest: the script's own default)."""
    scale, sources = cfg.resolved()
    step = config_cls(**{flag_name: getattr(scale, field) for flag_name, field in from_scale.items()}, **fixed)
    labels = {flag_name: sources[field] for flag_name, field in from_scale.items()}
    labels.update({flag_name: "reproduce.py" for flag_name in fixed})
    return with_sources(step, labels)


TRAIN_A = dict(model="model_a", image_size="image_size", weights="weights", base_augmentation="base_augmentation",
               seeds="seeds", lr="lr", batch_size="batch_size", epochs="epochs", patience="patience",
               optimizer="optimizer", schedule="schedule", stopping="stopping", restore="restore", freeze="freeze",
               balanced="pretrain", finetune_all="pretrain")
TRAIN_B = dict(TRAIN_A, model="model_b", lr="lr_b", batch_size="batch_size_b", epochs="epochs_b",
               patience="patience_b", optimizer="optimizer_b", schedule="schedule_b")
del TRAIN_B["seeds"]


def train_configs(cfg: Config) -> dict[str, train_model.Config]:
    """Model A over seeds in each of the three ARMS; 'b': the cascade's model B (plain+augmented, seed 0)
    on the other half of the train split (pair disjoint_halves) or on all of it (same_data); with
    disjoint halves also 'b_same_data': model B on model A's half, the same-data pair for the comparison."""
    s = cfg.scale
    require(s.pair in PAIRS, f"unknown model pair {s.pair!r}; choose from {PAIRS}")
    halves = s.pair == "disjoint_halves"
    fixed = dict(device=cfg.device, out_dir=str(Path(cfg.out_dir) / "train"), resume=True, **data_fields(cfg))
    configs = {arm_key(arm): step_config(train_model.Config, cfg, TRAIN_A, passes=arm,
                                         train_half=s.half_a if halves else "all", **fixed) for arm in ARMS}
    b = dict(passes=CASCADE_ARM, seeds=None, seed=0, **fixed)
    configs["b"] = step_config(train_model.Config, cfg, TRAIN_B, train_half=s.half_b if halves else "all",
                               run_name=f"b_{s.model_b}_{cfg.dataset}_{s.half_b if halves else 'all'}_s0", **b)
    if halves:
        configs["b_same_data"] = step_config(train_model.Config, cfg, TRAIN_B, train_half=s.half_a,
                                             run_name=f"b_{s.model_b}_{cfg.dataset}_{s.half_a}_s0", **b)
    return configs


def cascade_a_config(cfg: Config) -> train_model.Config:
    """The run of the cascade's model A: the plain+augmented arm's first seed."""
    return replace(train_configs(cfg)[arm_key(CASCADE_ARM)], seeds=None, seed=cfg.scale.seeds[0])


def checkpoints(cfg: Config) -> tuple[Path, Path]:
    """best.pt (the weights each run's restore keeps) of cascade model A and of model B."""
    return (train_model.run_dir(cascade_a_config(cfg)) / "best.pt",
            train_model.run_dir(train_configs(cfg)["b"]) / "best.pt")


def pair_agreement(cfg: Config) -> dict:
    """{pair name: {test split: `cascade.pair_disagreement` of model A and that model B}}, from the runs'
    test_predictions.csv: the cascade's pair and, with disjoint halves, the same-data pair."""
    configs = train_configs(cfg)
    a = pd.read_csv(train_model.run_dir(cascade_a_config(cfg)) / "test_predictions.csv")
    out = {}
    for key, name in (("b", cfg.scale.pair), ("b_same_data", "same_data")):
        if key not in configs:
            continue
        b = pd.read_csv(train_model.run_dir(configs[key]) / "test_predictions.csv")
        out[name] = {split: pair_disagreement(part_a, b[b["split"] == split])
                     for split, part_a in a.groupby("split")}
    return out


def strips_configs(cfg: Config) -> dict[str, train_model.Config]:
    """The Severstal model pair on the built-in strips (Kaggle layout, `--dataset severstal_kaggle`,
    so its whole row runs: whole strips, ImageNet normalisation, jitter + gamma, multi-label rule)."""
    s = cfg.scale
    root = generate_severstal_strips(per_class=s.strips_per_class, seed=0, height=s.strips_height)
    base = train_model.Config(dataset="severstal_kaggle", data_dir=str(root), model=s.model_a,
                              image_size=s.strips_image_size, epochs=s.strips_epochs, patience=s.strips_epochs,
                              lr=s.lr, batch_size=s.batch_size, seed=0, device=cfg.device, weights="none",
                              base_augmentation=s.base_augmentation, passes=CASCADE_ARM,
                              out_dir=str(Path(cfg.out_dir) / "strips"), resume=True)
    return {"a": base, "b": replace(base, model=s.model_b, lr=s.lr_b,
                                    run_name=f"{s.model_b}_b_strips" if s.model_b == s.model_a else "")}


def step_strips(cfg: Config) -> dict:
    """Train the pair briefly on the strips; their test accuracy -> <out_dir>/strips/summary.json."""
    if not cfg.scale.strips_per_class:
        return {}
    summary = {}
    for tag, tcfg in strips_configs(cfg).items():
        test = train_model.main(tcfg)["test"]
        summary[tag] = {"model": tcfg.model, "run": str(train_model.run_dir(tcfg)), "test_accuracy": test["accuracy"],
                        "n_test": test["n"], "classes": test["class_names"]}
        log(f"strips: {tag.upper()} {tcfg.model} test accuracy {test['accuracy']:.3f} on {test['n']} whole strips "
            f"({len(test['class_names'])} classes, chance {1 / len(test['class_names']):.2f})")
    summary["config"] = {"per_class": cfg.scale.strips_per_class, "file_height": cfg.scale.strips_height,
                         "image_size": cfg.scale.strips_image_size, "epochs": cfg.scale.strips_epochs}
    atomic_write_json(Path(cfg.out_dir) / "strips" / "summary.json", summary)
    return summary


def step_train(cfg: Config, changed: dict | None = None) -> dict:
    configs = train_configs(cfg)
    for tcfg in configs.values():
        seeds = [train_model.seed_run(tcfg, k) for k in tcfg.seeds] if tcfg.seeds else [tcfg]
        reruns = [Path(train_model.run_dir(one)) for one in seeds if Path(train_model.run_dir(one)) in (changed or {})]
        if reruns:
            tcfg = rerun(tcfg, reruns[0], changed)
        train_model.main(tcfg)
    a, b = checkpoints(cfg)
    agreement = pair_agreement(cfg)
    s = cfg.scale
    atomic_write_json(Path(cfg.out_dir) / "train" / "pair_agreement.json",
                      {"pair": s.pair, "half_a": s.half_a, "half_b": s.half_b, "model_a": s.model_a,
                       "model_b": s.model_b, "checkpoint_a": str(a), "checkpoint_b": str(b), "disagreement": agreement})
    for name, splits in agreement.items():
        log(f"pair {name}: " + ", ".join(f"{split} disagreement {100 * v['disagreement']:.1f} %, both wrong "
                                         f"and agreeing {100 * v['agree_wrong']:.1f} %" for split, v in splits.items()))
    return {"model_a": str(a), "model_b": str(b), "pair": cfg.scale.pair}


DATA_GENERATION = dict(model="model_a", image_size="image_size", initial_samples="dg_initial", step_sizes="dg_steps",
                       pool_per_class="dg_pool_per_class", epochs="dg_epochs", patience="dg_patience",
                       baseline_epochs="dg_baseline_epochs",
                       baseline_patience="dg_baseline_patience", lr="lr", batch_size="dg_batch_size",
                       baseline_batch_size="dg_baseline_batch_size", restore="dg_restore", stopping="dg_stopping",
                       step_optimizer="dg_step_optimizer", schedule="dg_schedule", freeze="freeze",
                       weights="weights", base_augmentation="base_augmentation")


def data_generation_configs(cfg: Config) -> list[data_generation.Config]:
    """The HIL grid once per arrival-order seed of the scale (the seed is the unit of the verdicts);
    the all-data reference model only with the first."""
    first, *others = cfg.scale.dg_seeds
    fixed = dict(device=cfg.device, out_dir=str(Path(cfg.out_dir) / "data_generation"), **data_fields(cfg))
    return [step_config(data_generation.Config, cfg, DATA_GENERATION, seed=first, run_name="reproduce", **fixed)] + [
        step_config(data_generation.Config, cfg, DATA_GENERATION, seed=k, run_name=f"reproduce_s{k}",
                    full_data_reference=False, **fixed) for k in others]


def data_generation_b_configs(cfg: Config) -> list[data_generation.Config]:
    """Model B's grid (`dg_model_b`: both published grids), with the first arrival seed, no all-data reference."""
    if not cfg.scale.dg_model_b:
        return []
    fixed = dict(device=cfg.device, out_dir=str(Path(cfg.out_dir) / "data_generation"), **data_fields(cfg))
    return [step_config(data_generation.Config, cfg, dict(DATA_GENERATION, model="model_b"), seed=cfg.scale.dg_seeds[0],
                        run_name="reproduce_b", full_data_reference=False, **fixed)]


def step_data_generation(cfg: Config, changed: dict | None = None) -> dict:
    """The grid per arrival-order seed, then model B's (`data_generation_b_configs`); on a CPU with
    `dg_workers` > 1 the runs share that many processes of one thread each (the loop-time ratio is
    taken within a seed, so they may overlap)."""
    configs = [rerun(d, data_generation.run_dir(d), changed or {})
               for d in data_generation_configs(cfg) + data_generation_b_configs(cfg)]
    workers = min(cfg.scale.dg_workers, len(configs), os.cpu_count() or 1)
    if workers > 1 and resolve_device(cfg.device).type == "cpu":
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_quiet_worker) as pool:
            list(pool.map(data_generation.main, [replace(d, cpu_threads=1) for d in configs]))
    else:
        for dcfg in configs:
            data_generation.main(dcfg)
    return {"runs": [str(data_generation.run_dir(d)) for d in configs]}


def model_a_seed_checkpoints(cfg: Config) -> list[Path]:
    """best.pt of the cascade's model A arm at every training seed (the MC verdicts' unit), first seed first."""
    a = train_configs(cfg)[arm_key(CASCADE_ARM)]
    return [train_model.run_dir(replace(a, seeds=None, seed=k)) / "best.pt" for k in cfg.scale.seeds]


def mc_configs(cfg: Config) -> list:
    """MC scores of model A, model B, then model A's other training seeds."""
    a, b = checkpoints(cfg)
    others = [p for p in model_a_seed_checkpoints(cfg) if p != a]
    return [step_config(get_mc_scores.Config, cfg, {"T": "T"}, checkpoint=str(ckpt), device=cfg.device,
                        out_dir=str(Path(cfg.out_dir) / "mc_scores"), overwrite=RECOMPUTED)
            for ckpt in [a, b, *others]]


def step_mc_scores(cfg: Config) -> dict:
    runs = []
    for mcfg in mc_configs(cfg):
        get_mc_scores.main(mcfg)
        runs.append(str(get_mc_scores.run_dir(mcfg)))
    return {"runs": runs}


def saliency_config(cfg: Config) -> saliency_map_uncertainties.Config:
    return step_config(saliency_map_uncertainties.Config, cfg,
                       {"shares": "shares", "T": "T", "max_images": "sal_max_images"},
                       checkpoint=str(checkpoints(cfg)[0]), device=cfg.device,
                       out_dir=str(Path(cfg.out_dir) / "saliency"), overwrite=RECOMPUTED)


def step_saliency(cfg: Config) -> dict:
    scfg = saliency_config(cfg)
    saliency_map_uncertainties.main(scfg)
    return {"run": str(saliency_map_uncertainties.run_dir(scfg))}


ACTIVE_LEARNING = dict(model="model_a", image_size="al_image_size", seeds="al_seeds", recipe="al_recipe",
                       weights="weights", base_augmentation="base_augmentation", initial_share="al_initial_share",
                       step_share="al_step_share", final_share="al_final_share", ensemble_size="al_ensemble_size",
                       mc_samples="al_mc_samples")


def active_learning_config(cfg: Config) -> active_learning.Config:
    s = cfg.scale
    # the scale's own round training, or (al_epochs None, the full scale) all of the recipe's
    own_fit = {} if s.al_epochs is None else dict(epochs="al_epochs", patience="al_patience", lr="lr",
                                                  batch_size="batch_size")
    min_steps = {} if s.al_min_steps is None else {"min_steps": "al_min_steps"}
    strategies = {"strategies": "al_strategies"} if s.al_strategies else {}
    return step_config(active_learning.Config, cfg, {**ACTIVE_LEARNING, **own_fit, **min_steps, **strategies},
                       device=cfg.device, out_dir=str(Path(cfg.out_dir) / "active_learning"), run_name="reproduce",
                       **data_fields(cfg))


def _quiet_worker() -> None:
    os.environ["HIL_NO_PROGRESS"] = "1"  # one progress bar (the parent's) names the step


def step_active_learning(cfg: Config, changed: dict | None = None) -> dict:
    """Every (strategy, seed) run; on a CPU with `al_workers` > 1 the runs are shared out as shards
    to that many processes of one thread each (tiny models use a second thread poorly), then merged."""
    acfg = active_learning_config(cfg)
    if Path(active_learning.run_dir(acfg)) in (changed or {}):  # emptied once here, then the shards fill it
        empty_run_folder(active_learning.run_dir(acfg))
    workers = min(cfg.scale.al_workers, os.cpu_count() or 1)
    if workers > 1 and resolve_device(cfg.device).type == "cpu":
        shards = [replace(acfg, shard=f"{i}/{workers}", cpu_threads=1) for i in range(workers)]
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_quiet_worker) as pool:
            list(pool.map(active_learning.main, shards))
    active_learning.main(acfg)  # runs whatever is left (nothing after the shards) and merges every run
    return {"run": str(active_learning.run_dir(acfg))}


# At the papers' scale on real data the cascade calibrates on a split the models never saw: half of the
# test split (stratified, seed 0), named `calib`; the other half stays `test`. Train and valid (early
# stopping) are left as they are, so no image the models trained or stopped on enters the p-values.
PAPER_CALIB_SPLIT = "calib"


def paper_calibration_csv(cfg: Config) -> Path:
    return Path(cfg.out_dir) / "safety" / "split_with_calib.csv"


def write_paper_calibration_csv(cfg: Config) -> Path:
    """The models' split table with the test split halved into `calib` and `test` (stratified per class)."""
    table, _ = load_split_table(cfg.dataset, cfg.data_dir, cfg.split_csv, 0)
    test = table[table["split"] == "test"].drop(columns="split")
    require(len(test) >= 2, f"{cfg.data_dir}: the data has no test split to carve the calibration split from")
    halves = stratified_split(test, ratios=(0.5, 0.5, 0.0), seed=0, names=(PAPER_CALIB_SPLIT, "test", "unused"))
    rows = pd.concat([table[table["split"] != "test"][["path", "label", "split"]], halves], ignore_index=True)
    return atomic_write_csv(paper_calibration_csv(cfg), rows)


def safety_data(cfg: Config) -> dict:
    """The cascade's data: on the built-in set at a scale with `safety_per_class`, its own valid
    (calibration) and test splits of that many new images per class (synthetic.generate_safety_splits:
    3,000 per split at 500, enough for 0.1 % to be certifiable and testable; the other experiments
    keep the built-in set's splits); at the papers' scale on real data, the models' data with the
    calibration split carved from test (`write_paper_calibration_csv`); otherwise the models' own data."""
    if cfg.full and cfg.data_dir:
        return {"data_dir": cfg.data_dir, "split_csv": str(paper_calibration_csv(cfg)),
                "calib_split": PAPER_CALIB_SPLIT}
    if cfg.data_dir or cfg.split_csv or cfg.dataset != "synthetic" or not cfg.scale.safety_per_class:
        return {}
    root = default_synthetic_dir() / f"safety_n{cfg.scale.safety_per_class}_s0_px200"
    return {"data_dir": str(root), "split_csv": str(root / "splits.csv")}


def safety_config(cfg: Config) -> evaluate_safety.Config:
    a, b = checkpoints(cfg)
    return step_config(evaluate_safety.Config, cfg, {"T": "T"}, checkpoints=(str(a), str(b)), device=cfg.device,
                       out_dir=str(Path(cfg.out_dir) / "safety"), run_name="reproduce", overwrite=RECOMPUTED,
                       **safety_data(cfg))


def step_safety(cfg: Config) -> dict:
    if cfg.full and cfg.data_dir:
        write_paper_calibration_csv(cfg)
    elif safety_data(cfg):
        generate_safety_splits(per_class=cfg.scale.safety_per_class, seed=0, size=200)
    scfg = safety_config(cfg)
    evaluate_safety.main(scfg)
    return {"run": str(evaluate_safety.run_dir(scfg))}


def step_figures(cfg: Config) -> dict:
    written = plot_results.main(cfg.out_dir, Path(cfg.out_dir) / "figures")
    return {"figures": sorted(str(p) for p in written if p.suffix == ".png")}


# ============================================================================ the report

def run_folders(cfg: Config) -> report.RunFolders:
    """Where each step of this run writes (report.py reads them; it never imports this script)."""
    configs = train_configs(cfg)
    return report.RunFolders(
        train_sweeps={arm_key(arm): train_model.sweep_dir(configs[arm_key(arm)]) for arm in ARMS},
        pair_agreement=Path(cfg.out_dir) / "train" / "pair_agreement.json",
        strips=Path(cfg.out_dir) / "strips" / "summary.json",
        data_generation=data_generation.run_dir(data_generation_configs(cfg)[0]),
        data_generation_seeds=tuple(data_generation.run_dir(d) for d in data_generation_configs(cfg)),
        mc_scores=tuple(get_mc_scores.run_dir(m) for m in mc_configs(cfg)[:2]),
        mc_seeds=tuple(get_mc_scores.run_dir(m) for m in [mc_configs(cfg)[0], *mc_configs(cfg)[2:]]),
        saliency=saliency_map_uncertainties.run_dir(saliency_config(cfg)),
        active_learning=active_learning.run_dir(active_learning_config(cfg)),
        al_strategies=tuple(active_learning_config(cfg).strategies),
        safety=evaluate_safety.run_dir(safety_config(cfg)),
        figures=Path(cfg.out_dir) / "figures")


def write_report(cfg: Config, manifest: dict) -> Path:
    """REPORT.md of this run (report.py): the scale line, the timings and every step's results."""
    s = cfg.scale
    header = report.RunHeader(scale=s.name, image_size=s.image_size, model_a=s.model_a, model_b=s.model_b,
                              seeds=s.seeds, epochs=s.epochs, device=manifest.get("device"),
                              cpu_count=manifest.get("cpu_count"), data_dir=cfg.data_dir, dataset=cfg.dataset,
                              seconds=manifest.get("seconds", {}))
    return report.write_report(Path(cfg.out_dir) / "REPORT.md", run_folders(cfg), header)


# ============================================================================ rerun after an edit

def step_runs(cfg: Config, step: str) -> list[tuple[object, Path]]:
    """(config, run folder) of every run a step writes whose settings a rerun must match (the
    evaluation steps are recomputed every time, so they have none)."""
    if step == "train":
        runs = []
        for tcfg in train_configs(cfg).values():
            for one in ([train_model.seed_run(tcfg, k) for k in tcfg.seeds] if tcfg.seeds else [tcfg]):
                runs.append((one, train_model.run_dir(one)))
        return runs
    if step == "data_generation":
        return [(d, data_generation.run_dir(d)) for d in data_generation_configs(cfg) + data_generation_b_configs(cfg)]
    if step == "active_learning":  # its config.json holds the recipe's values resolved
        acfg = active_learning.resolve_recipe(active_learning_config(cfg))
        return [(acfg, active_learning.run_dir(acfg))]
    return []


def changed_runs(cfg: Config, step: str) -> dict[Path, list[str]]:
    """{run folder: its differing settings} of the step's runs whose config.json holds other settings."""
    changed = {}
    for run_cfg, folder in step_runs(cfg, step):
        saved_path = Path(folder) / "config.json"
        if not holds_results(Path(folder)) or not saved_path.is_file():
            continue
        # a resumed training may run to more epochs (train_model.py); the grids' own non-experiment fields
        ignore = INVOCATION_FIELDS + {"train": train_model.NON_EXPERIMENT_FIELDS + ("epochs",),
                                      "data_generation": data_generation.NON_EXPERIMENT_FIELDS,
                                      "active_learning": active_learning.NON_EXPERIMENT_FIELDS}[step]
        differ = setting_differences(run_cfg, read_json(saved_path), ignore)
        if differ:
            changed[Path(folder)] = differ
    return changed


def check_reruns(cfg: Config, steps: list[str]) -> dict[str, dict[Path, list[str]]]:
    """{step: changed runs} of the steps to run. Without --overwrite True, a changed run is refused
    here, before anything trains, with the flags of this script."""
    changed = {step: found for step in steps if (found := changed_runs(cfg, step))}
    if changed and not cfg.overwrite:
        first_step, runs = next(iter(changed.items()))
        folder, differ = next(iter(runs.items()))
        raise InputError(f"{folder}: step {first_step} holds results of other settings ({'; '.join(differ[:4])}); "
                         f"pass --overwrite True to rerun the steps whose settings changed (the others are kept), "
                         f"or another --out_dir")
    return changed


def rerun(run_cfg, folder: Path, changed: dict[Path, list[str]]):
    """`run_cfg` set to replace its run folder when its settings changed (`check_reruns`)."""
    if Path(folder) not in changed:
        return run_cfg
    log(f"reproduce: {folder}: settings changed ({'; '.join(changed[Path(folder)][:4])}): rerunning it")
    return replace(run_cfg, overwrite=True, **({"resume": False} if hasattr(run_cfg, "resume") else {}))


# ============================================================================ --plan

def _split_sizes(cfg: Config) -> tuple[dict[str, int], int]:
    """({split: images}, classes) of the data the training steps use (the built-in set is generated if missing)."""
    table, _ = load_split_table(cfg.dataset, cfg.data_dir, cfg.split_csv, 0, DataConfig.per_class)
    return {str(k): int(v) for k, v in table["split"].value_counts().items()}, int(table["label"].nunique())


def _shown_settings(step_cfg) -> str:
    """'name value [source]' of every setting reproduce.py sets (the rest are the script's defaults)."""
    sources = setting_sources(step_cfg)
    shown = [f"{k}={getattr(step_cfg, k)!r} [{src}]" for k, src in sources.items()
             if src not in ("default", "reproduce.py") and not src.startswith("paper preset R4VR NEU: ")]
    return "; ".join(shown)


def _seconds_per_image(cfg: Config, n_classes: int) -> float:
    """Training seconds per image of model A at the scale's size and batch on this device, from 3 timed
    batches after a warm-up one (the --plan --full estimate)."""
    s = cfg.scale
    device = resolve_device(cfg.device)
    model = build_model(s.model_a, n_classes).to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=s.lr)
    x = torch.rand(s.batch_size, 3, s.image_size, s.image_size, device=device)
    y = torch.randint(0, n_classes, (s.batch_size,), device=device)
    times = []
    for _ in range(4):
        t0 = time.perf_counter()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sum(times[1:]) / 3 / s.batch_size


def plan_text(cfg: Config, steps: list[str]) -> str:
    """Per step: the resolved settings with their source and the work (image passes, MC passes,
    grid tasks). Trains nothing."""
    s, sources = cfg.resolved()
    sizes, n_classes = _split_sizes(cfg)
    n_train, n_eval = sizes.get("train", 0), sum(v for k, v in sizes.items() if k != "train")
    lines = [f"reproduce.py plan: {s.name} scale, data set {cfg.dataset} ({', '.join(f'{k} {v}' for k, v in sizes.items())}"
             " images), nothing is trained", ""]
    passes_total = 0
    for step in steps:
        lines.append(f"== {step}")
        if step == "train":
            for name, t in train_configs(cfg).items():
                images = n_train // 2 if t.train_half != "all" else n_train
                per_epoch = images * (2 if "+" in t.passes else 1)
                work = per_epoch * t.epochs * len(t.seeds or [t.seed])
                passes_total += work
                lines.append(f"  {name}: up to {t.epochs} epochs x {per_epoch} image passes x "
                             f"{len(t.seeds or [t.seed])} seed(s) = {work:,} forward/backward image passes")
                lines.append(f"    {_shown_settings(t)}")
        elif step == "data_generation":
            configs = data_generation_configs(cfg)
            d = configs[0]
            tasks = len(d.initial_samples) * len(d.step_sizes) * len(configs)
            lines.append(f"  {tasks} grid tasks ({len(d.initial_samples)} initial x {len(d.step_sizes)} steps x "
                         f"{len(configs)} arrival seeds), each a baseline (<= {d.baseline_epochs} epochs) and "
                         f"fine-tuning steps (<= {d.epochs} epochs each) on a pool of <= "
                         f"{d.pool_per_class or 'all'} images per class")
            lines.append(f"    {_shown_settings(d)}")
        elif step == "mc_scores":
            configs = mc_configs(cfg)
            lines.append(f"  {len(configs)} checkpoints x T = {configs[0].T} dropout passes x {n_eval} images = "
                         f"{len(configs) * configs[0].T * n_eval:,} head passes")
            lines.append(f"    {_shown_settings(configs[0])}")
        elif step == "saliency":
            c = saliency_config(cfg)
            n = min(c.max_images or n_eval, n_eval)
            lines.append(f"  {len(c.shares)} shares x {len(c.orders)} orders x T = {c.T} passes x {n} images "
                         f"= {len(c.shares) * len(c.orders) * c.T * n:,} MC passes")
            lines.append(f"    {_shown_settings(c)}")
        elif step == "active_learning":
            a = active_learning_config(cfg)
            resolved = active_learning.resolve_recipe(a)
            rounds = int(round((a.final_share - a.initial_share) / a.step_share)) + 1
            lines.append(f"  {len(a.strategies)} strategies x {len(a.seeds)} seeds = {len(a.strategies) * len(a.seeds)} "
                         f"runs of {rounds} rounds (>= {a.min_steps} optimiser steps each)")
            if sizes.get("train"):
                counts = active_learning.round_counts(a, sizes["train"], sizes.get("valid", 0))
                lines.append(f"  labelled per round {', '.join(f'{n:,}' for n in counts)} (shares of "
                             f"{active_learning.share_base(a, sizes['train'], sizes.get('valid', 0)):,} images: "
                             f"share_of {resolved.share_of}); tested, validated and queried through view "
                             f"{resolved.eval_augmentation}, coreset / VAAL through {resolved.feature_augmentation}")
            lines.append(f"    {_shown_settings(a)}")
        elif step == "safety":
            c = safety_config(cfg)
            lines.append(f"  2 models x T = {c.T} dropout passes over the calibration and test splits")
            lines.append(f"    {_shown_settings(c)}")
        else:
            lines.append("  (no settings of its own)")
    if cfg.full and "train" in steps:
        seconds = _seconds_per_image(cfg, n_classes) * passes_total
        lines += ["", f"ESTIMATE (3 timed batches of {s.model_a} at {s.image_size} px, batch {s.batch_size}, on "
                      f"{resolve_device(cfg.device)}): the train step's {passes_total:,} image passes take about "
                      f"{seconds / 3600:.1f} h at most (early stopping ends runs sooner); an estimate, not a measurement"]
    lines += ["", "Sources: flag = given on the command line; <scale> scale = reproduce.SCALES; paper preset = "
                  "presets.PRESETS; settings not shown are the script's defaults (see its --help)."]
    return "\n".join(lines)


# ============================================================================ main

RUNNERS = {"train": step_train, "strips": step_strips, "data_generation": step_data_generation, "mc_scores": step_mc_scores,
           "saliency": step_saliency, "active_learning": step_active_learning, "safety": step_safety,
           "figures": step_figures}


TRAINING_STEPS = ("train", "strips", "data_generation", "active_learning")


def check_weights(cfg: Config, steps: list[str]) -> None:
    """Before anything trains: the ImageNet weights of both models are in the torch hub cache (or
    downloadable now); otherwise stop with where to put them, never train from random weights silently."""
    if cfg.scale.weights == "imagenet" and any(step in TRAINING_STEPS for step in steps):
        ensure_imagenet_weights([cfg.scale.model_a, cfg.scale.model_b])


def main(cfg: Config) -> dict:
    out = Path(cfg.out_dir)
    manifest_path = out / "reproduce.json"
    manifest = read_json(manifest_path) if manifest_path.is_file() else {}
    if manifest.get("scale", {}).get("name") not in (None, cfg.scale.name):
        manifest = {}  # another scale: its timings do not belong to this run
    scale, sources = cfg.resolved()
    manifest.update({"config": config_to_dict(cfg), "scale": asdict(scale), "scale_sources": sources, "device": str(resolve_device(cfg.device)),
                     "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                     "python": platform.python_version(), "torch": torch.__version__})
    manifest.setdefault("seconds", {})
    manifest.setdefault("runs", {})
    steps = [s for s in STEPS if s in cfg.steps]
    if cfg.plan:
        print(plan_text(cfg, steps))
        return {"plan": steps}
    changed = check_reruns(cfg, steps)
    check_weights(cfg, steps)
    if cfg.full:
        manifest["preset"] = preset_record(cfg.dataset)
    t_start = time.perf_counter()
    bar = tqdm(steps, desc="reproduce", disable=not progress_enabled(), position=0)
    for step in bar:
        bar.set_postfix(step=step, elapsed=f"{(time.perf_counter() - t_start) / 60:.1f} min")
        log(f"==== reproduce: {step} ({cfg.scale.name} scale)")
        t0 = time.perf_counter()
        if step == "report":
            manifest["seconds"]["report"] = 0.0
            atomic_write_json(manifest_path, manifest)
            path = write_report(cfg, manifest)
            manifest["runs"]["report"] = str(path)
        else:
            runner = RUNNERS[step]
            manifest["runs"][step] = runner(cfg, changed.get(step, {})) if step in changed else runner(cfg)
        manifest["seconds"][step] = time.perf_counter() - t0
        atomic_write_json(manifest_path, manifest)
    if "report" in steps:  # again, so the report states the report step's own time too
        write_report(cfg, manifest)
    total = time.perf_counter() - t_start
    log(f"reproduce: {len(steps)} step(s) in {total / 60:.1f} min -> {out / 'REPORT.md'}")
    return manifest


if __name__ == "__main__":
    run_main(main, parse_config(Config, description=__doc__))
