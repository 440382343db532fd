"""Deep active learning: eight query strategies, one loop, test accuracy per labelled share
as mean +- std over seeds (the protocol of the deep-active-learning toolkits' CIFAR tables).

    python active_learning.py                                   # toolkit protocol, ResNet18, built-in data
    python active_learning.py --dataset casting --data_dir /data/casting    # the casting study
    python active_learning.py --model tiny_cnn --image_size 64 --per_class 100 \\
        --epochs 10 --patience 3 --ensemble_size 3 --mc_samples 10           # CPU-sized
    python active_learning.py --strategies random,bald --seeds 0,1,2,3,4     # a subset, more seeds
    python active_learning.py --shard 1/4 --run_name al                      # one of 4 processes/GPUs
    python active_learning.py --merge True --run_name al                     # only rebuild the tables

The pool is the train split (its labels are revealed only for queried images), the valid
split drives early stopping, the test split gives the accuracy. For every (strategy, seed):
  1. a random `initial_share` of the pool is labelled (the same images for every strategy
     of a seed, so the strategies start from one model);
  2. a model is trained on the labelled images with `training.fit` (from scratch each round;
     `--warm_start True` keeps training the previous round's model) and tested;
     `ensemble_variation_ratio` trains `ensemble_size` models with different seeds
     (member 0 is the model every other strategy trains, and gives its reported accuracy;
     the ensemble's own accuracy is recorded too);
  3. the strategy picks `step_share` of the pool among the unlabelled images, they are labelled;
  4. repeat until `final_share` is labelled.
Each round records the labelled count and share, test accuracy and loss, the seconds of the
query that brought the labelled set to this size, and the training seconds.

Writes results/active_learning/<run>/: config.json, runs/<strategy>_s<seed>.json (one per
finished strategy and seed: the resumable unit; a rerun skips them, an interrupted one
restarts), rounds.csv (every round of every finished run), summary.csv and table.md (per
labelled share, one markdown table: strategy rows sorted by mean test accuracy, mean +- std
over seeds, in %).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from acquisition import ENSEMBLE_STRATEGIES, STRATEGIES, Pool, query
from augment import Augmenter
from config import DataConfig, GridRun, TrainConfig
from datasets import ImageSet, augmentation_style, load_image_sets_checked, load_split_table, normalisation_for
from models import fresh_model
from runner import missing_tasks, run_grid
from training import evaluate, fit, labelled_set, predict, synced_clock
from utils import (InputError, atomic_write_csv, atomic_write_text, flag, log, mean_std, parse_config,
                   progress_enabled, require, resolve_device, run_main)

@dataclass(frozen=True)
class Config(GridRun, TrainConfig, DataConfig):
    strategies: tuple[str, ...] = field(default_factory=lambda: tuple(STRATEGIES), metadata={
        "help": "comma list of query strategies; default every one registered in acquisition.py"})
    seeds: tuple[int, ...] = flag((0, 1, 2), "comma list of seeds (toolkit: 3 runs)")
    initial_share: float = flag(0.1, "share of the pool labelled at random at first")
    step_share: float = flag(0.1, "share of the pool queried per round")
    final_share: float = flag(0.6, "stop once this share of the pool is labelled")
    warm_start: bool = flag(False, "keep training the previous round's model instead of retraining from scratch")
    ensemble_size: int = flag(5, "K models of ensemble_variation_ratio")
    mc_samples: int = flag(20, "MC-dropout samples T of bald and dbal")
    # this script's default of an inherited flag
    out_dir: str = flag("results/active_learning", "parent folder of run folders")
    FLAG_HELP = {"model": "network (toolkit: ResNet18)", "epochs": "maximum epochs per round",
                 "patience": "early-stopping patience per round (val loss)", "batch_size": "training batch size",
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
        require(self.ensemble_size >= 2, f"--ensemble_size must be >= 2, got {self.ensemble_size}")
        require(self.mc_samples >= 2, f"--mc_samples must be >= 2, got {self.mc_samples}")
        require(self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}")


# Fields that do not change what one (strategy, seed) run computes; every other field must
# match between the invocations and shards that share a run folder (see `runner.check_fingerprint`).
NON_EXPERIMENT_FIELDS = ("strategies", "seeds", "device", "cpu_threads", "out_dir", "run_name", "shard", "merge")


def run_dir(cfg: Config) -> Path:
    name = cfg.run_name or (f"{cfg.model}_{cfg.dataset}_px{cfg.image_size}" + ("_warm" if cfg.warm_start else ""))
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


def initial_labelled(pool_size: int, count: int, seed: int) -> torch.Tensor:
    """bool [pool_size] with `count` random images labelled; depends on the seed only (not the strategy)."""
    mask = torch.zeros(pool_size, dtype=torch.bool)
    mask[torch.randperm(pool_size, generator=torch.Generator().manual_seed(seed))[:count]] = True
    return mask


def member_seed(seed: int, round_index: int, member: int) -> int:
    """Seed of the weights and the training of one model: the same for every strategy of a seed."""
    return seed * 100_003 + round_index * 101 + member


# ============================================================================ one round

def train_models(cfg: Config, models: list | None, k: int, train: ImageSet, sets: dict, mean: float, std: float,
                 device: torch.device, seed: int, round_index: int, desc: str) -> tuple[list, dict]:
    """Fit k models on `train` (fresh, or continuing `models` under warm start) -> (models, fit stats)."""
    num_classes = len(train.class_names)
    out, epochs, seconds = [], [], 0.0
    for j in range(k):
        s = member_seed(seed, round_index, j)
        model = models[j] if (cfg.warm_start and models) else fresh_model(cfg, num_classes, s)
        result = fit(model, train, sets["valid"], epochs=cfg.epochs, patience=cfg.patience,
                     batch_size=cfg.batch_size, lr=cfg.lr, mean=mean, std=std, device=device, seed=s,
                     augment=Augmenter(augmentation_style(cfg.dataset), cfg.use_aug, cfg.base_augmentation),
                     desc=f"{desc} m{j}")
        out.append(model)
        epochs.append(len(result.history))
        seconds += result.seconds
    return out, {"epochs_run": epochs[0], "train_seconds": seconds}


def test_scores(models: list, test: ImageSet, mean: float, std: float, device: torch.device) -> dict:
    """Accuracy and loss of member 0 on the test split; with several models also the ensemble's accuracy."""
    metrics = evaluate(models[0], test, mean, std, device)
    scores = {"test_accuracy": metrics["accuracy"], "test_loss": metrics["loss"]}
    if len(models) > 1:
        probs = torch.stack([predict(m, test, mean, std, device)[0].softmax(1) for m in models]).mean(0)
        scores["ensemble_test_accuracy"] = (probs.argmax(1) == test.labels).float().mean().item()
    return scores


def run_task(cfg: Config, strategy: str, seed: int, sets: dict, mean: float, std: float,
             device: torch.device) -> dict:
    """The whole active-learning loop for one strategy and seed -> {'rounds': [records], 'queried': [[idx]]}.

    One record per round: round, labelled, share, test_accuracy, test_loss (member 0),
    ensemble_test_accuracy (ensemble strategies), query_seconds (the query that led to this
    round; 0 in round 0), train_seconds, epochs_run.
    """
    pool = sets["train"]
    counts = labelled_counts(len(pool), cfg.initial_share, cfg.step_share, cfg.final_share)
    mask = initial_labelled(len(pool), counts[0], seed)
    k = cfg.ensemble_size if strategy in ENSEMBLE_STRATEGIES else 1
    generator = torch.Generator().manual_seed(seed * 7_919 + 17)
    name = task_name(strategy, seed)
    records, queried, models, query_seconds = [], [], None, 0.0
    bar = tqdm(range(len(counts)), desc=name, leave=False, disable=not progress_enabled())
    for r in bar:
        labelled = labelled_set(pool, torch.nonzero(mask).flatten())  # ground-truth labels revealed
        models, fitted = train_models(cfg, models, k, labelled, sets, mean, std, device, seed, r, f"{name} round {r}")
        records.append({"strategy": strategy, "seed": seed, "round": r, "labelled": int(mask.sum()),
                        "share": int(mask.sum()) / len(pool), "query_seconds": query_seconds, **fitted,
                        **test_scores(models, sets["test"], mean, std, device)})
        bar.set_postfix(n=records[-1]["labelled"], acc=f"{records[-1]['test_accuracy']:.3f}")
        if r + 1 == len(counts):
            break
        budget = counts[r + 1] - counts[r]
        t0 = synced_clock(device)
        picked = query(strategy, models, Pool(pool, mask.clone(), mean, std, device, cfg.mc_samples,
                                              max(cfg.batch_size, 128)), budget, generator)
        query_seconds = synced_clock(device) - t0
        mask[picked] = True
        queried.append(picked.tolist())
    return {"rounds": records, "queried": queried}


# ============================================================================ tables

def summarise(rounds: pd.DataFrame) -> pd.DataFrame:
    """Per strategy and round: labelled, share, test accuracy mean/std over seeds, seeds, query seconds."""
    rows = []
    for (strategy, r), part in rounds.groupby(["strategy", "round"]):
        m, s = mean_std(part["test_accuracy"])
        rows.append({"strategy": strategy, "round": r, "share": part["share"].mean(),
                     "labelled": int(part["labelled"].iloc[0]), "accuracy_mean": m, "accuracy_std": s,
                     "seeds": len(part), "query_seconds_mean": part["query_seconds"].mean()})
    return pd.DataFrame(rows).sort_values(["round", "accuracy_mean", "strategy"], ascending=[True, False, True])


def markdown_tables(summary: pd.DataFrame) -> str:
    """One markdown table per labelled share: strategies sorted by mean test accuracy, mean +- std in %."""
    blocks = []
    for r, part in summary.groupby("round"):
        share, n = part["share"].iloc[0], part["labelled"].iloc[0]
        lines = [f"### {100 * share:.0f} % labelled ({n} images)", "",
                 "| strategy | test accuracy (%) | seeds | query s |", "|---|---|---|---|"]
        for row in part.itertuples():
            lines.append(f"| {row.strategy} | {100 * row.accuracy_mean:.2f} +- {100 * row.accuracy_std:.2f} | "
                         f"{row.seeds} | {row.query_seconds_mean:.2f} |")
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
    table, root = load_split_table(cfg.dataset, cfg.data_dir, cfg.split_csv, 0, cfg.per_class,
                                   cfg.multi_label_rule)
    sets, _ = load_image_sets_checked(table, root, cfg.image_size, source=cfg.split_csv)  # bad files: a clear error
    for needed in ("train", "valid", "test"):
        if needed not in sets:
            raise InputError(f"the data has no {needed!r} split (found {sorted(sets)})")
    mean, std = normalisation_for(cfg.dataset, sets["train"])
    return sets, mean, std


def prepare(cfg: Config, out: Path, todo: list[str]) -> tuple[dict, float, float, torch.device]:
    """What every (strategy, seed) task shares: (sets, mean, std, device), loaded once."""
    device = resolve_device(cfg.device)
    sets, mean, std = load_data(cfg)
    log(f"{out}: {len(todo)} run(s) on {device}; " + ", ".join(f"{k} {len(v)}" for k, v in sets.items()))
    return sets, mean, std, device


def run_one(cfg: Config, task: str, shared: tuple) -> dict:
    """One (strategy, seed) task -> {'strategy', 'seed', 'rounds', 'queried'} (its run file's content)."""
    strategy, seed = parse_task(task)
    saved = {"strategy": strategy, "seed": seed, **run_task(cfg, strategy, seed, *shared)}
    last = saved["rounds"][-1]
    log(f"{task}: test accuracy {last['test_accuracy']:.4f} at {100 * last['share']:.0f} % labelled")
    return saved


def main(cfg: Config) -> dict:
    """Run this shard's unfinished (strategy, seed) tasks, then merge every finished one
    -> {'rounds': DataFrame, 'summary': DataFrame, 'missing': [task names]}."""
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
