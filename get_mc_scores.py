"""MC-dropout scores of a trained model on chosen splits (default: every test split), and how
well they separate the model's wrong predictions from its right ones (the papers' box plots).

The papers' own images are not the test split alone: R4VR NEU's get_mc_scores.py scores the
test and valid folders and the other model's training half (972 images per model; here
`--extra_splits valid --train_half first|second`), R4VR Severstal's the validation files
(`--extra_splits valid`; the test split is scored too). `reproduce.py --full True` passes
those for both models of the pair.

    python get_mc_scores.py --checkpoint results/train/resnet18_synthetic_plain_s0/best.pt
    python get_mc_scores.py --checkpoint results/train/vgg16_neu/best.pt --T 20
    python get_mc_scores.py --checkpoint CKPT --splits test,test_shifted --run_name vgg16_shift

The data is what the checkpoint was trained on (train_model.py records it) unless
--dataset/--data_dir/--split_csv say otherwise. T defaults to the paper's: 20 for NEU-like
data (and the built-in synthetic set), 40 for Severstal. Writes results/mc_scores/<run>/:
  config.json       the resolved configuration (T, data, checkpoint)
  per_image.csv     split, path, label, prediction, correct, confidence, margin, every
                    score of uncertainty.SCORES (higher = less certain) and softmax_entropy:
                    the same network's deterministic softmax entropy, dropout off (what MC
                    dropout is compared against)
  summary.json      per split: accuracy, ECE, AURC and AUROC (wrong vs right) per score, the
                    mean of each score over correct and over wrong predictions, reliability bins;
                    with more than one split also 'pooled' (every image scored: the published set)
Figures (plot_results.py): entropy box plots correct vs wrong, reliability diagram,
risk-coverage curves.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from safehil.uq import uncertainty
from safehil.settings.config import CheckpointRun, RunConfig, trained_seed, trained_split_seed
from safehil.settings.run_folders import open_checkpoint_run, run_folder
from datasets import ImageSet, checkpoint_canvas, load_image_sets, load_split_table
from safehil.data.splits import PROBE_SPLITS, train_part
from safehil.training.training import predict
from utils import (MAX_SEED, InputError, atomic_write_csv, atomic_write_json, flag, fmt_num, log, mean_or_nan,
                   parse_config, require, run_main)


@dataclass(frozen=True)
class Config(RunConfig, CheckpointRun):
    """get_mc_scores.py's flags: its own below, then (config.py) RunConfig's `run` flags and CheckpointRun's
    `checkpoint` and `data` flags (checkpoint, T; the data empty = the checkpoint's)."""
    splits: tuple[str, ...] | None = flag(None, "comma list of splits to score; default every split whose name "
                                                "starts with 'test', and 'ambiguous' (ELPV's probe split)")
    extra_splits: tuple[str, ...] = flag((), "comma list of splits scored after --splits (or its default): e.g. valid, "
                                             "the R4VR box plots' validation images")
    train_half: str = flag("none", "also score this half of the train split (first | second, per class in file order, "
                                   "as train_model --train_half cuts it), as split train_<half>: with a model pair on "
                                   "disjoint halves, the other model's half (R4VR NEU get_mc_scores.py)",
                           choices=("none", "first", "second"))
    n_bins: int = flag(15, "confidence bins of the ECE and reliability diagram", most=1000)
    use_fast: bool = flag(True, "trunk once + head T times (same samples as T full passes, much faster)")
    seed: int = flag(0, "seed of the dropout masks", most=MAX_SEED)
    # this script's default of an inherited flag
    out_dir: str = flag("results/mc_scores", "parent folder of run folders")
    FLAG_HELP = {"batch_size": "images per MC-dropout batch",
                 "run_name": "run folder name; empty = the checkpoint's run folder"}

    def __post_init__(self):
        super().__post_init__()
        require(self.n_bins >= 1, f"--n_bins must be >= 1, got {self.n_bins}")
        require(self.seed >= 0, f"--seed must be >= 0, got {self.seed}")
        require(self.splits is None or len(self.splits) > 0, "--splits must name at least one split")


def load_splits(cfg: Config, meta: dict) -> dict[str, ImageSet]:
    """Decode the splits to score at the checkpoint's image size -> {split: ImageSet}."""
    table, root = load_split_table(cfg.dataset, cfg.data_dir, cfg.split_csv, trained_split_seed(meta), cfg.per_class,
                                   cfg.multi_label_rule)
    found = sorted(set(table["split"]))
    wanted = list(cfg.splits) if cfg.splits else [s for s in found if s.startswith("test") or s in PROBE_SPLITS]
    wanted += [s for s in cfg.extra_splits if s not in wanted]
    missing = [s for s in wanted if s not in found]
    if missing or not wanted:
        raise InputError(f"splits {missing or 'test*'} not in the data (found {found})")
    unknown = sorted(set(table[table["split"].isin(wanted)]["label"]) - set(meta["class_names"]))
    if unknown:
        raise InputError(f"labels {unknown} of the data are not classes of {cfg.checkpoint} "
                         f"({meta['class_names']})")
    decoded = wanted + (["train"] if cfg.train_half != "none" else [])
    if "train" in decoded and "train" not in found:
        raise InputError(f"--train_half {cfg.train_half}: the data has no train split (found {found})")
    sets = load_image_sets(table[table["split"].isin(decoded)], root, int(meta["image_size"]),
                           list(meta["class_names"]), geometry=checkpoint_canvas(meta))
    chosen = {s: sets[s] for s in wanted}
    if cfg.train_half != "none":
        half = sets["train"].subset(train_part(sets["train"].labels, cfg.train_half))
        half.name = f"train_{cfg.train_half}"
        chosen[half.name] = half
    return chosen


def split_table(split: str, data: ImageSet, probs: torch.Tensor, logits: torch.Tensor | None = None) -> pd.DataFrame:
    """One row per image from MC probabilities [T, N, C]: prediction of the mean, every score;
    with the deterministic logits [N, C] (dropout off) also their softmax entropy."""
    mean = probs.mean(0)
    pred = mean.argmax(1)
    names = data.class_names
    frame = pd.DataFrame({
        "split": split, "path": data.paths, "label": [names[i] for i in data.labels.tolist()],
        "prediction": [names[i] for i in pred.tolist()], "correct": (pred == data.labels).numpy(),
        "confidence": mean.max(1).values.numpy(), "margin": uncertainty.margin(probs).numpy()})
    for name, values in uncertainty.all_scores(probs).items():
        frame[name] = values.numpy()
    if logits is not None:
        frame["softmax_entropy"] = uncertainty.entropy(torch.softmax(logits.float(), dim=1)).numpy()
    return frame


def split_summary(frame: pd.DataFrame, mean_probs: torch.Tensor, labels: torch.Tensor, n_bins: int) -> dict:
    """Accuracy, ECE, reliability bins and, per score, AUROC (wrong vs right), AURC and the
    mean over correct / wrong predictions. mean_probs [N, C], labels [N]."""
    wrong = ~frame["correct"].to_numpy(bool)
    per_score = {}
    for name in uncertainty.SCORES:
        s = frame[name].to_numpy(np.float64)
        per_score[name] = {"auroc": uncertainty.score_auroc(s, wrong), "aurc": uncertainty.aurc(s, wrong),
                           "mean_correct": mean_or_nan(s[~wrong]), "mean_wrong": mean_or_nan(s[wrong])}
    return {
        "n": int(len(frame)), "n_wrong": int(wrong.sum()),
        "accuracy": float(1 - wrong.mean()) if len(frame) else math.nan,
        "ece": uncertainty.expected_calibration_error(mean_probs, labels, n_bins),
        "aurc": per_score["predictive_entropy"]["aurc"],
        "auroc": {k: v["auroc"] for k, v in per_score.items()},
        "scores": per_score,
        "reliability": uncertainty.reliability_diagram(mean_probs, labels, n_bins),
    }


POOLED = "pooled"  # summary.json: every scored image at once (the published box plots' set)


def run_dir(cfg: Config) -> Path:
    return run_folder(cfg, Path(cfg.checkpoint).resolve().parent.name)


def main(cfg: Config) -> dict:
    cfg, model, meta, device, out = open_checkpoint_run(cfg, run_dir)
    sets = load_splits(cfg, meta)
    path = "fast (trunk once)" if cfg.use_fast and uncertainty.fast_path_available(model) else "plain"
    log(f"{out.name}: {meta['model_name']} on {', '.join(f'{k} {len(v)}' for k, v in sets.items())}; "
        f"T = {cfg.T}, {path} MC dropout on {device}")
    generator = torch.Generator().manual_seed(cfg.seed)  # CPU masks: the same draws on any device
    frames, summary, mean_probs = [], {}, []
    for split, data in sets.items():
        probs = uncertainty.mc_dropout_predict(model, data, meta["mean"], meta["std"], device, cfg.T,
                                               cfg.batch_size, generator, cfg.use_fast, desc=f"MC {split}")
        logits = predict(model, data, meta["mean"], meta["std"], device, cfg.batch_size)[0]
        frame = split_table(split, data, probs, logits)
        frames.append(frame)
        summary[split] = split_summary(frame, probs.mean(0), data.labels, cfg.n_bins)
        mean_probs.append(probs.mean(0))
        s = summary[split]
        pe = s["scores"]["predictive_entropy"]
        log(f"{split}: accuracy {s['accuracy']:.4f} ({s['n_wrong']} wrong of {s['n']}), ECE {fmt_num(s['ece'])}, "
            f"mean entropy correct {fmt_num(pe['mean_correct'])} vs wrong {fmt_num(pe['mean_wrong'])} nats; AUROC "
            + ", ".join(f"{k} {fmt_num(v)}" for k, v in s["auroc"].items()))
    # the published box plots pool every image scored (R4VR NEU: test + valid + a train half); a probe split (ELPV's
    # ambiguous cells, labelled by the experts' majority) is never pooled into an accuracy
    kept = [k for k, split in enumerate(sets) if split not in PROBE_SPLITS]
    if len(kept) > 1:
        pooled = pd.concat([frames[k] for k in kept], ignore_index=True)
        summary[POOLED] = split_summary(pooled, torch.cat([mean_probs[k] for k in kept]),
                                        torch.cat([list(sets.values())[k].labels for k in kept]), cfg.n_bins)
        log(f"{POOLED} ({', '.join(list(sets)[k] for k in kept)}): accuracy {summary[POOLED]['accuracy']:.4f} ({summary[POOLED]['n_wrong']} "
            f"wrong of {summary[POOLED]['n']})")
    atomic_write_csv(out / "per_image.csv", pd.concat(frames, ignore_index=True))
    result = {"checkpoint": cfg.checkpoint, "model_name": meta["model_name"], "dataset": cfg.dataset, "T": cfg.T,
              "seed": cfg.seed, "trained_seed": trained_seed(meta), "class_names": list(meta["class_names"]), "splits": summary}
    atomic_write_json(out / "summary.json", result)
    log(f"wrote {out}/per_image.csv and summary.json")
    return result


if __name__ == "__main__":
    run_main(main, parse_config(Config, description=__doc__))
