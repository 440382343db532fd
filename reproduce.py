"""Every experiment of the project at small scale on real inspection images (ELPV solar cells, the
elpv-dataset package; data licence CC BY-NC-SA 4.0), then every figure and results/REPORT.md (each
headline number next to the paper's, figures embedded). --smoke and --dataset synthetic run the
built-in synthetic data.

    python reproduce.py                    # CPU-sized: at most 15 minutes on 2 cores
    python reproduce.py --smoke True       # tiny sizes, about a minute (the test suite runs this)
    python reproduce.py --full True        # the papers' scale: 224 px, ResNet18 + VGG16, for a GPU
    python reproduce.py --steps safety,figures,report     # only some steps (the others' results stay)

Steps, in order: train (model A over seeds in three arms: plain, plain+augmented = the paper's
use_aug epoch, plain+plain = the step-matched control; model B for the cascade, on the other
half of the train split, and on model A's half for the disagreement comparison), data_generation
(the HIL grid; with --full model B's grid too), mc_scores (both models; with --full on the papers'
images: NEU test + valid + the other model's training half, Severstal valid + test), saliency
(model A on test; with --full the papers' networks and images: NEU's VGG16 on its own training
half, both Severstal models on test, the gradient with dropout on), active_learning (every strategy), safety (the R4VR cascade of A and B), experts (ELPV: the experts'
defect probabilities against the models' uncertainty, experts.py), cell_shift (ELPV: model A trained on
mono cells, its MC scores, saliency curve and one-model cascade on poly cells), figures
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
from safehil.settings.config import MAX_THREADS, DataConfig, DataFiles
from safehil.settings.run_folders import INVOCATION_FIELDS, empty_run_folder, holds_results, setting_differences
from datasets import decode_request, load_split_table, plan_table_canvas
from safehil.data.datasets import data_root, layout_of
from safehil.data.elpv import SHIFTED_SPLIT, cell_type_shift_table, read_elpv_labels
from safehil.uq.experts import expert_uncertainty_table, join_expert_levels, model_summary
from models import MODELS, build_model, ensure_imagenet_weights
from safehil.settings.presets import SCALES, SCRIPT_DEFAULT, Preset, Scale, paper_values, preset_record, scaled
from safehil.settings.recipes import RECIPES
from safehil.data.splits import PROBE_SPLITS, stratified_split, train_part
from safehil.data.synthetic import default_synthetic_dir, generate_safety_splits, generate_severstal_strips
from utils import (InputError, atomic_write_csv, atomic_write_json, config_to_dict, flag, log, parse_config, progress_enabled,
                   read_json, require, resolve_device, run_main, setting_sources, with_sources)

# the cascade's model pair: disjoint halves of the train split (the R4VR code) or the same data, another
# architecture and seed
PAIRS = ("disjoint_halves", "same_data")
# model A's three augmentation arms (train_model --passes), the comparison of REPORT.md
ARMS = ("plain", "plain+augmented", "plain+plain")
CASCADE_ARM = "plain+augmented"   # the cascade's model A: the paper's use_aug training
DEFAULT_DATASET = "elpv"   # real inspection images (elpv.py); --smoke and the tests keep the built-in synthetic set
STEPS = ("train", "strips", "data_generation", "mc_scores", "saliency", "active_learning", "safety", "experts",
         "cell_shift", "figures", "report")


@dataclass(frozen=True)
class Config(DataFiles):
    """reproduce.py's flags: its own below and DataFiles' `data` flags (data_dir, split_csv; config.py). The
    override flags (weights ... base_augmentation) each name the setting they replace (`sets`, presets.py)."""
    smoke: bool = flag(False, "tiny sizes: checks that everything runs (about a minute)")
    full: bool = flag(False, "the papers' scale: every setting from the data set's preset (presets.py: models, "
                             "ImageNet weights, lr, batch, T, grid, pool cap, AL recipe): for a GPU")
    steps: tuple[str, ...] = flag(STEPS, f"comma list of steps to run, of {STEPS}")
    out_dir: str = flag("results", "results root: <out_dir>/<experiment>/<run>/")
    dataset: str = flag("", "data set adapter of data_dir; empty = elpv (the installed ELPV solar cells); with "
                            "--smoke True the built-in synthetic set, with --data_dir / --split_csv class folders")
    device: str = flag("auto", "auto | cpu | cuda | cuda:N")
    cpu_threads: int = flag(0, "torch CPU threads of this process (set by utils.run_main); 0 = torch's default "
                               "(the parallel grid workers keep 1 each)", most=MAX_THREADS)
    # overrides of the scale's (with --full: the preset's) values; empty / 0 = the scale's
    weights: str = flag("", "none | imagenet | PATH for every trained model; empty = the scale's (full: imagenet "
                            "where the paper used it)", sets="weights")
    model_a: str = flag("", "model A; empty = the scale's", choices=("",) + tuple(MODELS), sets="model_a.model")
    model_b: str = flag("", "model B of the cascade; empty = the scale's", choices=("",) + tuple(MODELS),
                        sets="model_b.model")
    lr: float = flag(0.0, "learning rate of model A (and of the data-generation and CPU-scale active-learning "
                          "rounds); 0 = the scale's (full: the preset's, 1e-3)", sets="model_a.lr")
    lr_b: float = flag(0.0, "learning rate of model B; 0 = the scale's (full: the preset's, 1e-3)", sets="model_b.lr")
    batch_size: int = flag(0, "training batch size of model A and the loops; 0 = the scale's (full: "
                              f"{paper_values('model_a.batch_size')})", sets="model_a.batch_size")
    batch_size_b: int = flag(0, "training batch size of model B; 0 = the scale's (full: "
                                f"{paper_values('model_b.batch_size')})", sets="model_b.batch_size")
    T: int = flag(0, f"MC-dropout samples; 0 = the scale's (full: {paper_values('T')})", sets="T")
    pool_per_class: int = flag(0, "data-generation pool cap per class; 0 = the scale's (full: "
                               f"{paper_values('data_generation.pool_per_class')})",
                               sets="data_generation.pool_per_class")
    recipe: str = flag("", "active-learning training recipe; empty = the scale's", choices=("",) + tuple(RECIPES),
                       sets="active_learning.recipe")
    base_augmentation: str = flag("", "paper | flip | none; empty = the scale's (full: CIFAR and casting flip)",
                                  choices=("",) + BASE_AUGMENTATIONS, sets="base_augmentation")
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
        if not self.dataset:  # resolved here, so config.json and every step name the data set
            own_files = self.smoke or self.data_dir or self.split_csv  # class folders / a split CSV, as before
            object.__setattr__(self, "dataset", "synthetic" if own_files else DEFAULT_DATASET)

    @property
    def scale_name(self) -> str:
        return "full" if self.full else "smoke" if self.smoke else "default"

    def given(self) -> dict[str, tuple[object, str]]:
        """{setting: (value, 'flag --NAME')} of each override flag given (non-empty / non-zero); a flag's
        `sets` metadata names the setting it replaces."""
        return {f.metadata["sets"]: (getattr(self, f.name), f"flag --{f.name}") for f in fields(self)
                if "sets" in f.metadata and getattr(self, f.name) not in (None, "", 0)}

    def resolved(self) -> tuple[Preset, dict[str, str]]:
        """(the data set's paper row with the scale's values and every flag given, {setting: source})."""
        return scaled(self.dataset, self.scale, self.given())

    @property
    def scale(self) -> Scale:
        """The scale's own sizes and what it replaces (presets.SCALES)."""
        return SCALES[self.scale_name]

    @property
    def settings(self) -> Preset:
        """Every setting of this run, by its one name (`cfg.settings.model_b.lr`)."""
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


def step_config(config_cls, cfg: Config, settings: tuple[str, ...], derived: dict[str, str] | None = None,
                **fixed):
    """`config_cls(...)` of one step: each of `settings` (by its one name: 'model_b.lr', 'T') given to the
    step's flag of that name after its group (--lr, --T); a setting left to the script's default is not
    given; `derived` ({flag: setting}) gives a flag of another name a setting's value. config.json
    records every value's source (the setting's, 'reproduce.py' for the `fixed` ones, 'default' for
    the rest: the script's own default)."""
    resolved, sources = cfg.resolved()
    given = {}
    for name in settings:
        value = resolved.value(name)[0]
        if value is not SCRIPT_DEFAULT:
            flag_name = name.rpartition(".")[2]
            require(flag_name not in given, f"reproduce.py: two settings for --{flag_name} of {config_cls}")
            given[flag_name] = (value, sources[name])
    given.update({flag_name: (resolved.value(name)[0], sources[name]) for flag_name, name in (derived or {}).items()})
    step = config_cls(**{k: v for k, (v, _) in given.items()}, **fixed)
    labels = {k: source for k, (_, source) in given.items()}
    labels.update({flag_name: "reproduce.py" for flag_name in fixed})
    return with_sources(step, labels)


def group(name: str) -> tuple[str, ...]:
    """The settings of one group of presets.Preset ('model_a' -> 'model_a.model', 'model_a.lr', ...)."""
    return tuple(s for s in Preset.settings() if s.startswith(name + "."))


# the row's shared settings each training takes under the same name
TRAINING_SHARED = ("image_size", "weights", "base_augmentation", "stopping", "restore", "freeze", "class_weights")


# train_model.py's --balanced and --finetune_all are both the setting `pretrain` (pre-train on the
# balanced half, then fine-tune on the whole train split)
PRETRAINING = {"balanced": "pretrain", "finetune_all": "pretrain"}


def train_configs(cfg: Config) -> dict[str, train_model.Config]:
    """Model A over seeds in each of the three ARMS; 'b': the cascade's model B (plain+augmented, seed 0)
    on the other half of the train split (pair disjoint_halves) or on all of it (same_data); with
    disjoint halves also 'b_same_data': model B on model A's half, the same-data pair for the comparison."""
    s = cfg.settings
    require(s.pair in PAIRS, f"unknown model pair {s.pair!r}; choose from {PAIRS}")
    halves = s.pair == "disjoint_halves"
    fixed = dict(device=cfg.device, out_dir=str(Path(cfg.out_dir) / "train"), resume=True, derived=PRETRAINING,
                 **data_fields(cfg))
    train_a = group("model_a") + TRAINING_SHARED + ("seeds",)
    configs = {arm_key(arm): step_config(train_model.Config, cfg, train_a, passes=arm,
                                         train_half=s.half_a if halves else "all", **fixed) for arm in ARMS}
    b = dict(passes=CASCADE_ARM, seeds=None, seed=0, **fixed)
    train_b = group("model_b") + TRAINING_SHARED
    model_b = s.model_b.model
    configs["b"] = step_config(train_model.Config, cfg, train_b, train_half=s.half_b if halves else "all",
                               run_name=f"b_{model_b}_{cfg.dataset}_{s.half_b if halves else 'all'}_s0", **b)
    if halves:
        configs["b_same_data"] = step_config(train_model.Config, cfg, train_b, train_half=s.half_a,
                                             run_name=f"b_{model_b}_{cfg.dataset}_{s.half_a}_s0", **b)
    return configs


def cascade_a_config(cfg: Config) -> train_model.Config:
    """The run of the cascade's model A: the plain+augmented arm's first seed."""
    return replace(train_configs(cfg)[arm_key(CASCADE_ARM)], seeds=None, seed=cfg.settings.seeds[0])


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
    for key, name in (("b", cfg.settings.pair), ("b_same_data", "same_data")):
        if key not in configs:
            continue
        b = pd.read_csv(train_model.run_dir(configs[key]) / "test_predictions.csv")
        out[name] = {split: pair_disagreement(part_a, b[b["split"] == split])
                     for split, part_a in a.groupby("split")}
    return out


def strips_configs(cfg: Config) -> dict[str, train_model.Config]:
    """The Severstal model pair on the built-in strips (Kaggle layout, `--dataset severstal_kaggle`,
    so its whole row runs: whole strips, ImageNet normalisation, jitter + gamma, multi-label rule)."""
    s, sizes = cfg.settings, cfg.scale
    a, b = s.model_a, s.model_b
    root = generate_severstal_strips(per_class=sizes.strips_per_class, seed=0, height=sizes.strips_height)
    base = train_model.Config(dataset="severstal_kaggle", data_dir=str(root), model=a.model,
                              image_size=sizes.strips_image_size, epochs=sizes.strips_epochs,
                              patience=sizes.strips_epochs, lr=a.lr, batch_size=a.batch_size, seed=0,
                              device=cfg.device, weights="none", base_augmentation=s.base_augmentation,
                              passes=CASCADE_ARM, out_dir=str(Path(cfg.out_dir) / "strips"), resume=True)
    return {"a": base, "b": replace(base, model=b.model, lr=b.lr,
                                    run_name=f"{b.model}_b_strips" if b.model == a.model else "")}


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
    s = cfg.settings
    atomic_write_json(Path(cfg.out_dir) / "train" / "pair_agreement.json",
                      {"pair": s.pair, "half_a": s.half_a, "half_b": s.half_b, "model_a": s.model_a.model,
                       "model_b": s.model_b.model, "checkpoint_a": str(a), "checkpoint_b": str(b),
                       "disagreement": agreement})
    for name, splits in agreement.items():
        log(f"pair {name}: " + ", ".join(f"{split} disagreement {100 * v['disagreement']:.1f} %, both wrong "
                                         f"and agreeing {100 * v['agree_wrong']:.1f} %" for split, v in splits.items()))
    return {"model_a": str(a), "model_b": str(b), "pair": cfg.settings.pair}


# the HIL grid's settings: its own, model A's lr, and the row's shared ones (the model: `data_generation_settings`)
DATA_GENERATION = group("data_generation") + ("model_a.lr", "image_size", "weights", "base_augmentation", "freeze",
                                               "class_weights")


def data_generation_settings(model: str) -> tuple[str, ...]:
    """The grid's settings with the model of 'model_a' or 'model_b'."""
    return DATA_GENERATION + (f"{model}.model",)


def data_generation_configs(cfg: Config) -> list[data_generation.Config]:
    """The HIL grid once per arrival-order seed of the scale (the seed is the unit of the verdicts);
    the all-data reference model only with the first."""
    first, *others = cfg.scale.dg_seeds
    fixed = dict(device=cfg.device, out_dir=str(Path(cfg.out_dir) / "data_generation"), **data_fields(cfg))
    settings = data_generation_settings("model_a")
    return [step_config(data_generation.Config, cfg, settings, seed=first, run_name="reproduce", **fixed)] + [
        step_config(data_generation.Config, cfg, settings, seed=k, run_name=f"reproduce_s{k}",
                    full_data_reference=False, **fixed) for k in others]


def data_generation_b_configs(cfg: Config) -> list[data_generation.Config]:
    """Model B's grid (`dg_model_b`: both published grids), with the first arrival seed, no all-data reference."""
    if not cfg.settings.dg_model_b:
        return []
    fixed = dict(device=cfg.device, out_dir=str(Path(cfg.out_dir) / "data_generation"), **data_fields(cfg))
    return [step_config(data_generation.Config, cfg, data_generation_settings("model_b"), seed=cfg.scale.dg_seeds[0],
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
    return [train_model.run_dir(replace(a, seeds=None, seed=k)) / "best.pt" for k in cfg.settings.seeds]


OTHER_HALF = {"first": "second", "second": "first"}


def other_half(cfg: Config, own: str) -> str:
    """The train half the other model of a disjoint pair trained on, when `mc_other_half` asks for it; else 'none'."""
    s = cfg.settings
    return OTHER_HALF[own] if s.mc_other_half and s.pair == "disjoint_halves" else "none"


def mc_configs(cfg: Config) -> list:
    """MC scores of model A, model B, then model A's other training seeds, each on the test splits, the
    `mc_extra_splits` and, with `mc_other_half`, the other model's training half (the R4VR NEU box plots' images)."""
    a, b = checkpoints(cfg)
    others = [p for p in model_a_seed_checkpoints(cfg) if p != a]
    s = cfg.settings
    own = [s.half_a, s.half_b] + [s.half_a] * len(others)
    return [step_config(get_mc_scores.Config, cfg, ("T",), {"extra_splits": "mc_extra_splits"}, checkpoint=str(ckpt),
                        train_half=other_half(cfg, half), device=cfg.device,
                        out_dir=str(Path(cfg.out_dir) / "mc_scores"), overwrite=RECOMPUTED)
            for ckpt, half in zip([a, b, *others], own)]


def step_mc_scores(cfg: Config) -> dict:
    runs = []
    for mcfg in mc_configs(cfg):
        get_mc_scores.main(mcfg)
        runs.append(str(get_mc_scores.run_dir(mcfg)))
    return {"runs": runs}


def saliency_configs(cfg: Config) -> list[saliency_map_uncertainties.Config]:
    """The saliency curves of each network of `sal_models` (R4VR NEU: VGG16 = model B; Severstal: both) on
    `sal_split`: test, or (own_half) the network's own training half of a disjoint pair (R4VR NEU)."""
    s = cfg.settings
    halves = {"model_a": s.half_a, "model_b": s.half_b}
    own = s.sal_split == "own_half" and s.pair == "disjoint_halves"
    return [step_config(saliency_map_uncertainties.Config, cfg, group("saliency") + ("T",),
                        {"gradient_dropout": "sal_dropout"},
                        checkpoint=str(checkpoints(cfg)[0 if key == "model_a" else 1]),
                        split="train" if own else "test", train_half=halves[key] if own else "none",
                        device=cfg.device, out_dir=str(Path(cfg.out_dir) / "saliency"), overwrite=RECOMPUTED)
            for key in s.sal_models]


def saliency_config(cfg: Config) -> saliency_map_uncertainties.Config:
    """The first of `saliency_configs` (the one REPORT.md reads)."""
    return saliency_configs(cfg)[0]


def step_saliency(cfg: Config) -> dict:
    runs = []
    for scfg in saliency_configs(cfg):
        saliency_map_uncertainties.main(scfg)
        runs.append(str(saliency_map_uncertainties.run_dir(scfg)))
    return {"run": runs[0], "runs": runs}


def active_learning_config(cfg: Config) -> active_learning.Config:
    """Its own settings (those left to the script's default are the recipe's), model A's model and, when
    the scale sets the rounds' epochs, model A's lr and batch too (the full scale: all the recipe's)."""
    own_fit = () if cfg.settings.active_learning.epochs is SCRIPT_DEFAULT else ("model_a.lr", "model_a.batch_size")
    return step_config(active_learning.Config, cfg,
                       group("active_learning") + ("model_a.model", "weights", "base_augmentation", "class_weights")
                       + own_fit,
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
# ELPV's own calib split holds 222 clear cells: they cannot certify the paper's 0.1 % (that needs 2,995 images; the
# smallest rate 222 certify is 1.34 %), so the CPU scales certify an undetected-error rate of 5 % there (the README's
# own-images target), declared before any ELPV result; --full keeps the paper's 0.1 %
OWN_CALIB_CPU_TARGET = 0.05


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
    keep the built-in set's splits); on data with a held-out `calib` split of its own (ELPV), that
    split; at the papers' scale on other real data, the models' data with the calibration split carved
    from test (`write_paper_calibration_csv`); otherwise the models' own data."""
    if has_own_calib_split(cfg):
        return {"calib_split": PAPER_CALIB_SPLIT, **({} if cfg.full else {"target": OWN_CALIB_CPU_TARGET})}
    if cfg.full and cfg.data_dir:
        return {"data_dir": cfg.data_dir, "split_csv": str(paper_calibration_csv(cfg)),
                "calib_split": PAPER_CALIB_SPLIT}
    if cfg.data_dir or cfg.split_csv or cfg.dataset != "synthetic" or not cfg.scale.safety_per_class:
        return {}
    root = default_synthetic_dir() / f"safety_n{cfg.scale.safety_per_class}_s0_px200"
    # its `valid` split is new images no model saw (calibrated on by name; evaluate_safety.py checks the content)
    return {"data_dir": str(root), "split_csv": str(root / "splits.csv"), "calib_split": "valid"}


def safety_config(cfg: Config) -> evaluate_safety.Config:
    a, b = checkpoints(cfg)
    return step_config(evaluate_safety.Config, cfg, ("T",), checkpoints=(str(a), str(b)), device=cfg.device,
                       out_dir=str(Path(cfg.out_dir) / "safety"), run_name="reproduce", overwrite=RECOMPUTED,
                       **safety_data(cfg))


def has_own_calib_split(cfg: Config) -> bool:
    """Whether the models' data (not the built-in set) holds a `calib` split of its own (ELPV's fixed splits)."""
    if not (cfg.data_dir or cfg.split_csv or layout_of(cfg.dataset).default_root is not None):
        return False
    table, _ = load_split_table(cfg.dataset, cfg.data_dir, cfg.split_csv, 0)
    return PAPER_CALIB_SPLIT in set(table["split"])


def step_safety(cfg: Config) -> dict:
    data = safety_data(cfg)
    if data.get("split_csv") == str(paper_calibration_csv(cfg)):
        write_paper_calibration_csv(cfg)
    elif data.get("data_dir"):
        generate_safety_splits(per_class=cfg.scale.safety_per_class, seed=0, size=200)
    scfg = safety_config(cfg)
    evaluate_safety.main(scfg)
    return {"run": str(evaluate_safety.run_dir(scfg))}


def experts_dir(cfg: Config) -> Path:
    return Path(cfg.out_dir) / "experts"


def step_experts(cfg: Config) -> dict:
    """ELPV only: the experts' uncertainty against each model's (experts.py) -> <out_dir>/experts/: rows_a.csv and
    rows_b.csv (one row per scored cell), expert_table.csv (per model and expert level) and summary.json
    (accuracy beside the majority baseline, recall per class, AUROCs)."""
    if cfg.dataset != "elpv":
        return {}
    levels = read_elpv_labels(data_root(cfg.dataset, cfg.data_dir))
    safety = pd.read_csv(evaluate_safety.run_dir(safety_config(cfg)) / "per_image.csv")
    out, tables, summary = experts_dir(cfg), [], {}
    for tag, mcfg in zip("ab", mc_configs(cfg)[:2]):
        mc = pd.read_csv(get_mc_scores.run_dir(mcfg) / "per_image.csv")
        rows = join_expert_levels(mc, levels, safety)
        atomic_write_csv(out / f"rows_{tag}.csv", rows)
        model = read_json(get_mc_scores.run_dir(mcfg) / "summary.json")["model_name"]
        tables.append(expert_uncertainty_table(rows).assign(model=f"{tag.upper()} {model}"))
        summary[tag] = {"model": model, **model_summary(rows)}
        s = summary[tag]
        log(f"experts: {tag.upper()} {model}: test accuracy {100 * s['accuracy']:.1f} % (majority baseline "
            f"{100 * s['majority_baseline']:.1f} %), recall " + ", ".join(f"{c} {100 * r:.0f} %" for c, r in
                                                                          s["recall"].items())
            + f"; AUROC unsure vs clear: MC {s['auroc_unsure_mc']:.3f}, softmax {s['auroc_unsure_softmax']:.3f}")
    atomic_write_csv(out / "expert_table.csv", pd.concat(tables, ignore_index=True))
    atomic_write_json(out / "summary.json", summary)
    return {"folder": str(out)}


SHIFT_TRAIN_TYPE = "mono"   # ELPV's cell-type shift: trained on mono cells, tested on poly ones


def cell_shift_dir(cfg: Config) -> Path:
    return Path(cfg.out_dir) / "cell_shift"


def cell_shift_configs(cfg: Config) -> dict:
    """The cell-type shift's runs (ELPV): model A as the cascade's (plain+augmented, first seed) on all
    of the mono cells' train split; its MC scores and saliency curve on the poly cells (test_shifted);
    the one-model cascade calibrated on the mono calib split, evaluated on mono test and poly cells."""
    out, csv = cell_shift_dir(cfg), cell_shift_dir(cfg) / f"split_{SHIFT_TRAIN_TYPE}.csv"
    train = replace(cascade_a_config(cfg), split_csv=str(csv), train_half="all", out_dir=str(out / "train"),
                    run_name=f"a_{SHIFT_TRAIN_TYPE}")
    checkpoint = str(train_model.run_dir(train) / "best.pt")
    mc = replace(mc_configs(cfg)[0], checkpoint=checkpoint, train_half="none", extra_splits=(),
                 out_dir=str(out / "mc_scores"))
    saliency = replace(saliency_config(cfg), checkpoint=checkpoint, split=SHIFTED_SPLIT, train_half="none",
                       out_dir=str(out / "saliency"))
    safety = replace(safety_config(cfg), checkpoints=(checkpoint,), out_dir=str(out / "safety"),
                     run_name=f"a_{SHIFT_TRAIN_TYPE}")
    return {"csv": csv, "train": train, "mc": mc, "saliency": saliency, "safety": safety}


def cell_shift_folders(cfg: Config) -> dict[str, Path]:
    """The run folder of each cell-shift run (train, mc, saliency, safety), for report.py."""
    runs = cell_shift_configs(cfg)
    return {"train": train_model.run_dir(runs["train"]), "mc": get_mc_scores.run_dir(runs["mc"]),
            "saliency": saliency_map_uncertainties.run_dir(runs["saliency"]),
            "safety": evaluate_safety.run_dir(runs["safety"])}


def step_cell_shift(cfg: Config) -> dict:
    """ELPV only: train on one cell type, test on the other (the real counterpart of test_shifted) ->
    <out_dir>/cell_shift/ (split CSV, training run, MC scores, saliency curve, one-model cascade)."""
    if cfg.dataset != "elpv":
        return {}
    runs = cell_shift_configs(cfg)
    table, _ = load_split_table(cfg.dataset, cfg.data_dir, "", 0)
    atomic_write_csv(runs["csv"], cell_type_shift_table(table, SHIFT_TRAIN_TYPE)[["path", "label", "split"]])
    train_model.main(runs["train"])
    get_mc_scores.main(runs["mc"])
    saliency_map_uncertainties.main(runs["saliency"])
    evaluate_safety.main(runs["safety"])
    return {"train": str(train_model.run_dir(runs["train"])), "mc": str(get_mc_scores.run_dir(runs["mc"])),
            "saliency": str(saliency_map_uncertainties.run_dir(runs["saliency"])),
            "safety": str(evaluate_safety.run_dir(runs["safety"]))}


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
        figures=Path(cfg.out_dir) / "figures", experts=experts_dir(cfg),
        cell_shift=cell_shift_folders(cfg) if cfg.dataset == "elpv" else None)


def write_report(cfg: Config, manifest: dict) -> Path:
    """REPORT.md of this run (report.py): the scale line, the timings and every step's results."""
    s = cfg.settings
    header = report.RunHeader(scale=cfg.scale.name, image_size=s.image_size, model_a=s.model_a.model,
                              model_b=s.model_b.model, seeds=s.seeds, epochs=s.model_a.epochs, device=manifest.get("device"),
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

def _split_table(cfg: Config) -> tuple[pd.DataFrame, Path]:
    """(split table, data root) the steps use (the built-in set is generated if missing)."""
    return load_split_table(cfg.dataset, cfg.data_dir, cfg.split_csv, 0, DataConfig.per_class)


def _split_sizes(table: pd.DataFrame) -> tuple[dict[str, int], int]:
    """({split: images}, classes) of a split table."""
    return {str(k): int(v) for k, v in table["split"].value_counts().items()}, int(table["label"].nunique())


def _half_size(table: pd.DataFrame, half: str) -> int:
    """Images in `half` (first | second | none = 0) of the train split, cut as train_model cuts it."""
    if half == "none":
        return 0
    train = table[table["split"] == "train"]
    return len(train_part(torch.as_tensor(pd.factorize(train["label"])[0]), half))


def _mc_images(table: pd.DataFrame, m) -> int:
    """Images get_mc_scores scores for config `m`: its splits (default: the test splits and probes), its
    extra splits and its train half."""
    sizes, _ = _split_sizes(table)
    splits = list(m.splits) if m.splits else [k for k in sizes if k.startswith("test") or k in PROBE_SPLITS]
    splits += [k for k in m.extra_splits if k not in splits]
    return sum(sizes.get(k, 0) for k in splits) + _half_size(table, m.train_half)


def _saliency_images(table: pd.DataFrame, c) -> int:
    """Images saliency_map_uncertainties reveals for config `c`: its split (or train half), capped at max_images."""
    n = _half_size(table, c.train_half) if c.train_half != "none" else int((table["split"] == c.split).sum())
    return min(c.max_images or n, n)


def _hil_passes(table: pd.DataFrame, d) -> tuple[int, int]:
    """(fewest, most) forward/backward image passes of one HIL grid run `d`: per setting the baseline
    (baseline_epochs x initial set), every step's fine-tuning (epochs x everything labelled so far) and,
    when asked, the all-data reference (baseline_epochs x the pool); fewest: every fit stops at its first
    chance (patience epochs), most: none stops early."""
    train = table[table["split"] == "train"]
    pool = [min(n, d.pool_per_class or n) for n in train["label"].value_counts().tolist()]
    per_epoch = 2 if "+" in d.passes else 1
    bounds = []
    for baseline_epochs, epochs in ((min(d.baseline_patience, d.baseline_epochs), min(d.patience, d.epochs)),
                                    (d.baseline_epochs, d.epochs)):
        total = baseline_epochs * sum(pool) if d.full_data_reference else 0
        for initial in d.initial_samples:
            for step in d.step_sizes:
                total += baseline_epochs * sum(min(p, initial) for p in pool)
                k = 1
                while initial + (k - 1) * step < max(pool):
                    total += epochs * sum(min(p, initial + k * step) for p in pool)
                    k += 1
        bounds.append(total * per_epoch)
    return bounds[0], bounds[1]


def _real_canvas(cfg: Config, table: pd.DataFrame, root: Path) -> tuple[int, int]:
    """(height, width) of model A's input at the run's image size and the data set's geometry, planned from
    the headers of up to 256 files (Severstal's whole strips: 256 x 1600 at 256 px, not a square)."""
    sample = table.sample(min(256, len(table)), random_state=0) if len(table) else table
    canvas = plan_table_canvas(sample, root, cfg.settings.image_size, decode_request(cfg.dataset)["geometry"])
    return canvas.height, canvas.width


def _shown_settings(step_cfg) -> str:
    """'name value [source]' of every setting reproduce.py sets (the rest are the script's defaults)."""
    sources = setting_sources(step_cfg)
    shown = [f"{k}={getattr(step_cfg, k)!r} [{src}]" for k, src in sources.items()
             if src not in ("default", "reproduce.py") and not src.startswith("paper preset R4VR NEU: ")]
    return "; ".join(shown)


def _seconds_per_image(cfg: Config, n_classes: int, canvas: tuple[int, int]) -> float:
    """Training seconds per image of model A on inputs of `canvas` (height, width) at its batch on this
    device, from 3 timed batches after a warm-up one (the --plan --full estimate)."""
    s = cfg.settings
    device = resolve_device(cfg.device)
    model = build_model(s.model_a.model, n_classes).to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=s.model_a.lr)
    x = torch.rand(s.model_a.batch_size, 3, *canvas, device=device)
    y = torch.randint(0, n_classes, (s.model_a.batch_size,), device=device)
    times = []
    for _ in range(4):
        t0 = time.perf_counter()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sum(times[1:]) / 3 / s.model_a.batch_size


def plan_text(cfg: Config, steps: list[str]) -> str:
    """Per step: the resolved settings with their source and the work (image passes, MC passes,
    grid tasks). Trains nothing."""
    s, sources = cfg.resolved()
    table, root = _split_table(cfg)
    sizes, n_classes = _split_sizes(table)
    n_train = sizes.get("train", 0)
    lines = [f"reproduce.py plan: {cfg.scale.name} scale, data set {cfg.dataset} "
             f"({', '.join(f'{k} {v}' for k, v in sizes.items())} images), nothing is trained",
             f"{cfg.scale.name} scale: {cfg.scale.why}; a value it replaces shows the paper's beside it", ""]
    passes_total, hil_range = 0, (0, 0)
    for step in steps:
        lines.append(f"== {step}")
        if step == "train":
            for name, t in train_configs(cfg).items():
                images = n_train // 2 if t.train_half != "all" else n_train
                # --finetune_all: the pre-training on the half, then as many epochs on the whole train split
                images += n_train if t.finetune_all else 0
                per_epoch = images * (2 if "+" in t.passes else 1)
                work = per_epoch * t.epochs * len(t.seeds or [t.seed])
                passes_total += work
                lines.append(f"  {name}: up to {t.epochs} epochs x {per_epoch} image passes"
                             + (" (pre-training on the half + fine-tuning on all)" if t.finetune_all else "")
                             + f" x {len(t.seeds or [t.seed])} seed(s) = {work:,} forward/backward image passes")
                lines.append(f"    {_shown_settings(t)}")
        elif step == "data_generation":
            configs = data_generation_configs(cfg)
            d = configs[0]
            tasks = len(d.initial_samples) * len(d.step_sizes) * len(configs)
            low, work = (sum(w) for w in zip(*(_hil_passes(table, g) for g in configs)))
            lines.append(f"  {d.model}: {tasks} grid tasks ({len(d.initial_samples)} initial x {len(d.step_sizes)} "
                         f"steps x {len(configs)} arrival seeds), each a baseline (<= {d.baseline_epochs} epochs, batch "
                         f"{d.baseline_batch_size}) and fine-tuning steps (<= {d.epochs} epochs each, batch "
                         f"{d.batch_size}, stop after {d.patience} without gain ({d.stopping}), keep {d.restore}, "
                         f"optimiser {d.step_optimizer}, {d.schedule} rate) on a pool of <= "
                         f"{d.pool_per_class or 'all'} images per class: {low:,} to {work:,} forward/backward image "
                         "passes")
            for b in data_generation_b_configs(cfg):
                b_low, b_work = _hil_passes(table, b)
                low, work = low + b_low, work + b_work
                lines.append(f"  {b.model} (model B, seed {b.seed}): {len(b.initial_samples) * len(b.step_sizes)} grid "
                             f"tasks, the same protocol: {b_low:,} to {b_work:,} forward/backward image passes")
            hil_range = (hil_range[0] + low, hil_range[1] + work)
            lines.append(f"    {_shown_settings(d)}")
        elif step == "mc_scores":
            configs = mc_configs(cfg)
            images = [_mc_images(table, m) for m in configs]
            scored = ", ".join(dict.fromkeys(
                f"{' + '.join(list(m.splits or ['test splits']) + list(m.extra_splits))}"
                + (f" + train half {m.train_half}" if m.train_half != "none" else "") for m in configs))
            lines.append(f"  {len(configs)} checkpoints x T = {configs[0].T} dropout passes over {scored} "
                         f"({' / '.join(str(n) for n in dict.fromkeys(images))} images) = "
                         f"{configs[0].T * sum(images):,} head passes")
            lines.append(f"    {_shown_settings(configs[0])}")
        elif step == "saliency":
            for c in saliency_configs(cfg):
                n = _saliency_images(table, c)
                where = c.split + (f" half {c.train_half}" if c.train_half != "none" else "")
                lines.append(f"  {Path(c.checkpoint).parent.name} on {where}: {len(c.shares)} shares x "
                             f"{len(c.orders)} orders x T = {c.T} passes x {n} images "
                             f"= {len(c.shares) * len(c.orders) * c.T * n:,} MC passes (gradient dropout "
                             f"{'on' if c.gradient_dropout else 'off'})")
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
    if cfg.full and (passes_total or hil_range[1]):
        canvas = _real_canvas(cfg, table, root)
        per_image = _seconds_per_image(cfg, n_classes, canvas)
        lines += ["", f"ESTIMATE (3 timed batches of {s.model_a.model} on {canvas[0]} x {canvas[1]} inputs (the "
                      f"data's canvas at {s.image_size} px), batch {s.model_a.batch_size}, on "
                      f"{resolve_device(cfg.device)}): the train step's {passes_total:,} image passes take about "
                      f"{per_image * passes_total / 3600:.1f} h at most (early stopping ends runs sooner), the HIL "
                      f"grids' {hil_range[0]:,} to {hil_range[1]:,} image passes {per_image * hil_range[0] / 3600:.1f} "
                      f"to {per_image * hil_range[1] / 3600:.1f} h; an estimate, not a measurement"]
    lines += ["", "Sources: flag = given on the command line; <scale> scale = presets.SCALES (paper = the value it "
                  "replaces); paper preset = "
                  "presets.PRESETS; settings not shown are the script's defaults (see its --help)."]
    return "\n".join(lines)


# ============================================================================ main

RUNNERS = {"train": step_train, "strips": step_strips, "data_generation": step_data_generation, "mc_scores": step_mc_scores,
           "saliency": step_saliency, "active_learning": step_active_learning, "safety": step_safety,
           "experts": step_experts, "cell_shift": step_cell_shift, "figures": step_figures}


TRAINING_STEPS = ("train", "strips", "data_generation", "active_learning", "cell_shift")


def check_weights(cfg: Config, steps: list[str]) -> None:
    """Before anything trains: the ImageNet weights of both models are in the torch hub cache (or
    downloadable now); otherwise stop with where to put them, never train from random weights silently."""
    s = cfg.settings
    if s.weights == "imagenet" and any(step in TRAINING_STEPS for step in steps):
        ensure_imagenet_weights([s.model_a.model, s.model_b.model])


def main(cfg: Config) -> dict:
    out = Path(cfg.out_dir)
    manifest_path = out / "reproduce.json"
    manifest = read_json(manifest_path) if manifest_path.is_file() else {}
    if manifest.get("scale", {}).get("name") not in (None, cfg.scale.name):
        manifest = {}  # another scale: its timings do not belong to this run
    settings, sources = cfg.resolved()
    scale = {**{k: v for k, v in asdict(cfg.scale).items() if k != "settings"},
             **{name: value for name in Preset.settings() if (value := settings.value(name)[0]) is not SCRIPT_DEFAULT}}
    manifest.update({"config": config_to_dict(cfg), "scale": scale, "scale_sources": sources,
                     "device": str(resolve_device(cfg.device)),
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
