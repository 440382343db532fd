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
"""
from __future__ import annotations

import multiprocessing
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

import active_learning
import evaluate_safety
import get_mc_scores
import plot_results
import report
import saliency_map_uncertainties
import train_model
import train_model_data_generation as data_generation
from acquisition import STRATEGIES
from augment import BASE_AUGMENTATIONS
from cascade import pair_disagreement
from config import MAX_THREADS, DataFiles
from datasets import load_split_table
from models import MODELS, ensure_imagenet_weights
from presets import preset_for, preset_record
from recipes import RECIPES
from splits import stratified_split
from synthetic import default_synthetic_dir, generate_safety_splits, generate_severstal_strips
from utils import (atomic_write_csv, atomic_write_json, config_to_dict, flag, log, parse_config, progress_enabled,
                   read_json, require, resolve_device, run_main)

# the cascade's model pair: disjoint halves of the train split (the R4VR code) or the same data, another
# architecture and seed
PAIRS = ("disjoint_halves", "same_data")
# model A's three augmentation arms (train_model --passes), the comparison of REPORT.md
ARMS = ("plain", "plain+augmented", "plain+plain")
CASCADE_ARM = "plain+augmented"   # the cascade's model A: the paper's use_aug training
STEPS = ("train", "strips", "data_generation", "mc_scores", "saliency", "active_learning", "safety", "figures", "report")


@dataclass(frozen=True)
class Scale:
    """Sizes of every experiment for one run of reproduce.py."""
    name: str
    image_size: int
    model_a: str                    # trained with and without augmentation; MC, saliency, cascade model A
    model_b: str                    # the cascade's second, different architecture
    seeds: tuple[int, ...]          # of the augmentation comparison
    epochs: int
    patience: int
    lr: float                       # Adam learning rate of model A (and of the data-generation / AL loops)
    batch_size: int
    epochs_b: int
    patience_b: int
    lr_b: float
    dg_initial: tuple[int, ...]
    dg_steps: tuple[int, ...]
    dg_pool_per_class: int | None
    dg_epochs: int
    dg_patience: int
    T: int
    shares: tuple[float, ...]       # revealed shares in percent
    sal_max_images: int
    al_image_size: int
    al_strategies: tuple[str, ...]  # empty = every strategy registered in acquisition.py
    al_seeds: tuple[int, ...]
    al_epochs: int | None           # None: epochs, patience, lr and batch of every round are al_recipe's
    al_patience: int | None
    al_ensemble_size: int
    al_final_share: float
    al_min_steps: int | None = None  # optimiser steps per round at least; None = active_learning.py's default
    weights: str = "none"           # of every trained model: none | imagenet (with the paper's freezing) | PATH
    base_augmentation: str = "paper"  # augment.BASE_AUGMENTATIONS
    al_recipe: str = "paper"        # recipes.RECIPES name of the active-learning rounds
    al_initial_share: float = 0.1
    al_step_share: float = 0.1
    al_workers: int = 1             # processes sharing the active-learning runs on a CPU (shards, one thread each)
    safety_per_class: int = 0       # > 0: the cascade's own large valid/test splits of the built-in data (per class)
    dg_seeds: tuple[int, ...] = (0,)  # arrival-order seeds of the data-generation grid (the unit of its verdicts)
    pair: str = "disjoint_halves"   # PAIRS: the cascade's two models on disjoint halves of train, or both on all of it
    half_a: str = "second"          # model A's half with disjoint_halves (the paper's NEU: ResNet18 the second 138/class)
    half_b: str = "first"           # model B's half (the paper's NEU: VGG16 the first 138 per class)
    dg_workers: int = 1             # processes sharing those seeds on a CPU (one thread each)
    # the built-in Severstal-like strips (step `strips`): per class (0 = skip), file height (width 6.25 x),
    # input height (whole strips), epochs of each model of the pair
    strips_per_class: int = 0
    strips_height: int = 64
    strips_image_size: int = 32
    strips_epochs: int = 8


# The CPU scale's active learning: rounds of 1,000+ optimiser steps (within ~4 points of a 3,000-step model
# at 108-324 labelled images) over 3 seeds cost ~16 CPU-s each, so it runs one strategy per family: uncertainty (entropy), MC-dropout Bayesian (bald) and
# diversity (coreset) against random. least_confidence, margin, dbal, ensemble_variation_ratio and vaal
# (~25-50 s per query on a CPU) are not run at this scale (REPORT.md says so).
CPU_STRATEGIES = ("random", "entropy", "bald", "coreset")
SCALES = {
    "smoke": Scale("smoke", image_size=24, model_a="tiny_cnn", model_b="tiny_cnn", seeds=(0,), epochs=1, patience=1,
                   lr=3e-3, batch_size=32, epochs_b=1, patience_b=1, lr_b=3e-3, dg_initial=(4,), dg_steps=(4,),
                   dg_pool_per_class=8, dg_epochs=1, dg_patience=1, T=3, shares=(25.0, 75.0), sal_max_images=16,
                   al_image_size=24, al_strategies=("random", "entropy"), al_seeds=(0,), al_epochs=1,
                   al_patience=1, al_ensemble_size=2, al_final_share=0.3, al_min_steps=4, strips_per_class=4,
                   strips_height=32, strips_image_size=16, strips_epochs=1),
    # measured on 2 idle CPU cores: tiny_cnn 1.4 s and resnet18 8 s per epoch at 64 px (1,080 train images);
    # tiny_cnn at 32 px ~15 CPU-ms per optimiser step (batch 32, validating every 50 steps). The train step's
    # budget (~300 s): model A's three arms on its half (540 images; 1 + 2 + 2 passes per epoch) over 3 seeds at
    # 12 epochs ~ 3 x 12 x 5 x 0.7 s = 126 s; model B (two passes per epoch) on each half at 9 epochs ~ 2 x 9 x 8 s
    # = 144 s (before the three arms and the halves: 25 and 18 epochs, 379 s in all)
    "default": Scale("default", image_size=64, model_a="tiny_cnn", model_b="resnet18", seeds=(0, 1, 2), epochs=12,
                     patience=6, lr=3e-3, batch_size=32, epochs_b=9, patience_b=8, lr_b=5e-4, dg_initial=(5, 10),
                     dg_steps=(5, 10), dg_pool_per_class=30, dg_epochs=4, dg_patience=2, T=20,
                     shares=(5.0, 15.0, 25.0, 35.0, 55.0, 75.0, 95.0), sal_max_images=360, al_image_size=32,
                     al_strategies=CPU_STRATEGIES, al_seeds=(0, 1, 2), al_epochs=1, al_patience=3,
                     al_ensemble_size=2, al_final_share=0.3, al_min_steps=1000, al_workers=2,
                     safety_per_class=500, dg_seeds=(0, 1, 2), dg_workers=2,
                     strips_per_class=40, strips_epochs=8),
    "full": Scale("full", image_size=224, model_a="resnet18", model_b="vgg16", seeds=tuple(range(10)), epochs=100,
                  patience=10, lr=1e-3, batch_size=16, epochs_b=100, patience_b=10, lr_b=1e-3,
                  dg_initial=(5, 10, 15, 20), dg_steps=(2, 4, 6, 8, 10), dg_pool_per_class=None, dg_epochs=20,
                  dg_patience=3, dg_seeds=(0, 1, 2), T=20, shares=saliency_map_uncertainties.PAPER_SHARES,
                  sal_max_images=0,
                  al_image_size=224, al_strategies=(), al_seeds=(0, 1, 2), al_epochs=None,
                  al_patience=None, al_ensemble_size=5, al_final_share=0.6, weights="imagenet"),
}


def paper_scale(dataset: str) -> Scale:
    """The full scale with `dataset`'s paper preset (presets.py): model pair, weights, input size,
    batch, T, data-generation grid and pool cap, base augmentation, active-learning recipe."""
    p = preset_for(dataset)
    return replace(SCALES["full"], model_a=p.model_a, model_b=p.model_b, weights=p.weights, image_size=p.image_size,
                   batch_size=p.batch_size, T=p.T, dg_initial=p.dg_initial, dg_steps=p.dg_steps,
                   dg_pool_per_class=p.dg_pool_per_class, base_augmentation=p.base_augmentation,
                   al_recipe=p.al_recipe, al_image_size=p.al_image_size, al_seeds=p.al_seeds,
                   al_final_share=p.al_final_share)


@dataclass(frozen=True)
class Config(DataFiles):
    smoke: bool = flag(False, "tiny sizes: checks that everything runs (about a minute)")
    full: bool = flag(False, "the papers' scale with the data set's preset (presets.py: models, ImageNet weights, "
                             "batch, T, grid, pool cap, AL recipe): for a GPU")
    steps: tuple[str, ...] = flag(STEPS, f"comma list of steps to run, of {STEPS}")
    out_dir: str = flag("results", "results root: <out_dir>/<experiment>/<run>/")
    dataset: str = flag("synthetic", "data set adapter of data_dir")
    device: str = flag("auto", "auto | cpu | cuda | cuda:N")
    cpu_threads: int = flag(0, "torch CPU threads of this process (set by utils.run_main); 0 = torch's default "
                               "(the parallel grid workers keep 1 each)", most=MAX_THREADS)
    # overrides of the scale's (with --full: the preset's) values; empty / 0 = the scale's
    weights: str = flag("", "none | imagenet | PATH for every trained model; empty = the scale's (full: imagenet "
                            "where the paper used it)")
    model_a: str = flag("", "model A; empty = the scale's", choices=("",) + MODELS)
    model_b: str = flag("", "model B of the cascade; empty = the scale's", choices=("",) + MODELS)
    batch_size: int = flag(0, "training batch size; 0 = the scale's (full: NEU 16, Severstal 64)")
    T: int = flag(0, "MC-dropout samples; 0 = the scale's (full: NEU 20, Severstal 40)")
    pool_per_class: int = flag(0, "data-generation pool cap per class; 0 = the scale's (full: Severstal 195)")
    recipe: str = flag("", "active-learning training recipe; empty = the scale's", choices=("",) + tuple(RECIPES))
    base_augmentation: str = flag("", "paper | flip | none; empty = the scale's (full: CIFAR and casting flip)",
                                  choices=("",) + BASE_AUGMENTATIONS)
    FLAG_HELP = {"split_csv": "path,label,split CSV (with data_dir)"}

    def __post_init__(self):
        super().__post_init__()
        require(not (self.smoke and self.full), "--smoke and --full exclude each other")
        unknown = [s for s in self.steps if s not in STEPS]
        require(not unknown, f"--steps: unknown {unknown}; choose from {STEPS}")
        for name in ("batch_size", "T", "pool_per_class"):
            require(getattr(self, name) >= 0, f"--{name} must be >= 0 (0 = the scale's), got {getattr(self, name)}")
        require(self.T != 1, "--T must be >= 2 MC samples (or 0 = the scale's)")

    @property
    def scale(self) -> Scale:
        """The scale's sizes (with --full: the data set's paper preset), then every flag given."""
        scale = paper_scale(self.dataset) if self.full else SCALES["smoke" if self.smoke else "default"]
        given = {"weights": self.weights, "model_a": self.model_a, "model_b": self.model_b,
                 "batch_size": self.batch_size, "T": self.T, "dg_pool_per_class": self.pool_per_class,
                 "al_recipe": self.recipe, "base_augmentation": self.base_augmentation}
        return replace(scale, **{k: v for k, v in given.items() if v})


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


def train_configs(cfg: Config) -> dict[str, train_model.Config]:
    """Model A over seeds in each of the three ARMS; 'b': the cascade's model B (plain+augmented, seed 0)
    on the other half of the train split (pair disjoint_halves) or on all of it (same_data); with
    disjoint halves also 'b_same_data': model B on model A's half, the same-data pair for the comparison."""
    s = cfg.scale
    require(s.pair in PAIRS, f"unknown model pair {s.pair!r}; choose from {PAIRS}")
    halves = s.pair == "disjoint_halves"
    base = train_model.Config(model=s.model_a, image_size=s.image_size, epochs=s.epochs, patience=s.patience,
                              lr=s.lr, batch_size=s.batch_size, seeds=s.seeds, device=cfg.device, weights=s.weights,
                              base_augmentation=s.base_augmentation, train_half=s.half_a if halves else "all",
                              out_dir=str(Path(cfg.out_dir) / "train"), resume=True, **data_fields(cfg))
    configs = {arm_key(arm): replace(base, passes=arm) for arm in ARMS}
    b = replace(base, model=s.model_b, passes=CASCADE_ARM, seeds=None, seed=0, epochs=s.epochs_b,
                patience=s.patience_b, lr=s.lr_b)
    configs["b"] = replace(b, train_half=s.half_b if halves else "all",
                           run_name=f"b_{s.model_b}_{cfg.dataset}_{s.half_b if halves else 'all'}_s0")
    if halves:
        configs["b_same_data"] = replace(b, train_half=s.half_a,
                                         run_name=f"b_{s.model_b}_{cfg.dataset}_{s.half_a}_s0")
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


def step_train(cfg: Config) -> dict:
    configs = train_configs(cfg)
    for tcfg in configs.values():
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


def data_generation_configs(cfg: Config) -> list[data_generation.Config]:
    """The HIL grid once per arrival-order seed of the scale (the seed is the unit of the verdicts);
    the all-data reference model only with the first."""
    s = cfg.scale
    base = data_generation.Config(
        model=s.model_a, image_size=s.image_size, initial_samples=s.dg_initial, step_sizes=s.dg_steps,
        pool_per_class=s.dg_pool_per_class, epochs=s.dg_epochs, patience=s.dg_patience,
        baseline_epochs=s.epochs, baseline_patience=s.patience, lr=s.lr, batch_size=s.batch_size,
        weights=s.weights, base_augmentation=s.base_augmentation, device=cfg.device,
        out_dir=str(Path(cfg.out_dir) / "data_generation"), run_name="reproduce", **data_fields(cfg))
    first, *others = s.dg_seeds
    return [replace(base, seed=first)] + [replace(base, seed=k, run_name=f"reproduce_s{k}", full_data_reference=False)
                                          for k in others]


def step_data_generation(cfg: Config) -> dict:
    """The grid per arrival-order seed; on a CPU with `dg_workers` > 1 the seeds share that many
    processes of one thread each (the loop-time ratio is taken within a seed, so they may overlap)."""
    configs = data_generation_configs(cfg)
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
    return [get_mc_scores.Config(checkpoint=str(ckpt), T=cfg.scale.T, device=cfg.device,
                                 out_dir=str(Path(cfg.out_dir) / "mc_scores"), overwrite=RECOMPUTED)
            for ckpt in [a, b, *others]]


def step_mc_scores(cfg: Config) -> dict:
    runs = []
    for mcfg in mc_configs(cfg):
        get_mc_scores.main(mcfg)
        runs.append(str(get_mc_scores.run_dir(mcfg)))
    return {"runs": runs}


def saliency_config(cfg: Config) -> saliency_map_uncertainties.Config:
    s = cfg.scale
    return saliency_map_uncertainties.Config(
        checkpoint=str(checkpoints(cfg)[0]), shares=s.shares, T=s.T, max_images=s.sal_max_images,
        device=cfg.device, out_dir=str(Path(cfg.out_dir) / "saliency"), overwrite=RECOMPUTED)


def step_saliency(cfg: Config) -> dict:
    scfg = saliency_config(cfg)
    saliency_map_uncertainties.main(scfg)
    return {"run": str(saliency_map_uncertainties.run_dir(scfg))}


def active_learning_config(cfg: Config) -> active_learning.Config:
    s = cfg.scale
    # the scale's own round training, or (al_epochs None, the full scale) all of the recipe's
    # (the recipe's also decides T and the ensemble size then: toolkit 25 and 3, recipes.py)
    own_fit = {} if s.al_epochs is None else dict(epochs=s.al_epochs, patience=s.al_patience, lr=s.lr,
                                                  batch_size=s.batch_size, ensemble_size=s.al_ensemble_size,
                                                  mc_samples=max(2, s.T // 2))
    return active_learning.Config(
        model=s.model_a, image_size=s.al_image_size, seeds=s.al_seeds,
        strategies=s.al_strategies or tuple(STRATEGIES), recipe=s.al_recipe, weights=s.weights,
        base_augmentation=s.base_augmentation,
        initial_share=s.al_initial_share, step_share=s.al_step_share,
        final_share=s.al_final_share, device=cfg.device, out_dir=str(Path(cfg.out_dir) / "active_learning"), run_name="reproduce",
        **own_fit, **data_fields(cfg), **({} if s.al_min_steps is None else {"min_steps": s.al_min_steps}))


def _quiet_worker() -> None:
    os.environ["HIL_NO_PROGRESS"] = "1"  # one progress bar (the parent's) names the step


def step_active_learning(cfg: Config) -> dict:
    """Every (strategy, seed) run; on a CPU with `al_workers` > 1 the runs are shared out as shards
    to that many processes of one thread each (tiny models use a second thread poorly), then merged."""
    acfg = active_learning_config(cfg)
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
    return evaluate_safety.Config(checkpoints=(str(a), str(b)), T=cfg.scale.T, device=cfg.device,
                                  out_dir=str(Path(cfg.out_dir) / "safety"), run_name="reproduce",
                                  overwrite=RECOMPUTED, **safety_data(cfg))


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
    manifest.update({"config": config_to_dict(cfg), "scale": asdict(cfg.scale), "device": str(resolve_device(cfg.device)),
                     "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                     "python": platform.python_version(), "torch": torch.__version__})
    manifest.setdefault("seconds", {})
    manifest.setdefault("runs", {})
    steps = [s for s in STEPS if s in cfg.steps]
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
            manifest["runs"][step] = RUNNERS[step](cfg)
        manifest["seconds"][step] = time.perf_counter() - t0
        atomic_write_json(manifest_path, manifest)
    if "report" in steps:  # again, so the report states the report step's own time too
        write_report(cfg, manifest)
    total = time.perf_counter() - t_start
    log(f"reproduce: {len(steps)} step(s) in {total / 60:.1f} min -> {out / 'REPORT.md'}")
    return manifest


if __name__ == "__main__":
    run_main(main, parse_config(Config, description=__doc__))
