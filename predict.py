"""The deployment step: score a folder of new, unlabelled images with a trained checkpoint (or
the cascade's pair), from the checkpoints alone; the training data may be gone.

    python predict.py --checkpoints results/train/resnet18_synthetic_plain_s0/best.pt \\
        --images_dir /data/new_batch --out_dir results/predict/batch1
    python predict.py --checkpoints A.pt,B.pt \\
        --thresholds results/safety/<run>/thresholds.json --images_dir /data/new_batch --out_dir OUT
    python predict.py --checkpoints A.pt --images_dir /data/new_batch --out_dir OUT --score mutual_information --T 40
    python predict.py --onnx results/export/model.onnx --images_dir /data/new_batch --out_dir OUT   # ONNX Runtime

Class names, normalisation, image size and network come from the checkpoint. Every image
under --images_dir (any depth; png, jpg, jpeg, bmp, tif, tiff) is decoded like the training
images (shorter side to 256/224 of the image size, centre crop) and scored with MC dropout
(fast path: trunk once, head T times; T = the paper's for the checkpoint's data set unless
--T), in batches on the GPU when there is one. With two --checkpoints and --thresholds an image
is referred to a person when the models disagree or either uncertainty passes its threshold
(the cascade of evaluate_safety.py); one model with --thresholds uses model A's own threshold
(evaluate_safety.py --checkpoints A.pt certifies it; a pair's file also holds one). --onnx scores
the graphs of export.py with ONNX Runtime on the CPU instead, with its sidecar's classes,
normalisation, T and thresholds, drawing the same dropout masks (the same probabilities).
Writes to --out_dir:
  predictions.csv      path (relative to --images_dir), predicted_label, confidence (max mean
                       probability), uncertainty (--score), prob_<class> (model A's mean MC
                       probability of each class), top<i>_label / top<i>_prob (i = 1..--top_k);
                       with two models also predicted_label_b, confidence_b, uncertainty_b,
                       disagreement; referred
  summary.json         images found / scored / skipped, count per predicted class, referral rate
  skipped_inputs.csv   path, reason of every file that could not be read and every entry not
                       searched: a link to a folder, an unreadable folder, a broken link, a
                       FIFO (the run goes on)
  config.json          the resolved configuration
Text cells that a spreadsheet would run as a formula (starting with = @ + -) are written with a
leading ' (utils.protect_cell), as in review.csv.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from safehil.safety import cascade
from safehil.safety import scoring
from safehil.uq import uncertainty
from safehil.settings.config import MAX_MC_SAMPLES, ModelCheckpoints, OutputConfig
from safehil.core.locks import hold_folder
from utils import (MAX_SEED, InputError, atomic_write_json, atomic_write_spreadsheet_csv, flag, log, parse_config,
                   require, resolve_device, run_main, save_config, seed_everything)
from safehil.settings.presets import paper_values


MAX_TOP_K = 1000


@dataclass(frozen=True)
class Config(OutputConfig, ModelCheckpoints):
    """predict.py's flags: its own below, then (config.py) OutputConfig's `run` flags (device, out_dir, batch_size,
    cpu_threads) and ModelCheckpoints' `checkpoint` flag (one model or the pair)."""
    images_dir: str = flag("", "folder of the images to score, searched recursively")
    thresholds: str = flag("", "thresholds.json of evaluate_safety.py (of the same one model or pair): which "
                               "images go to a person; empty = none referred (with two models: those the models "
                               "disagree on)")
    T: int = flag(0, "MC-dropout samples per image; 0 = the paper's for the checkpoint's data set "
                     f"({paper_values('T')})", most=MAX_MC_SAMPLES)
    score: str = flag("predictive_entropy", "uncertainty score written (higher = less certain); with "
                                            "--thresholds it must be the one they were calibrated on",
                      choices=tuple(uncertainty.SCORES))
    seed: int = flag(0, "seed of the dropout masks", most=MAX_SEED)
    top_k: int = flag(3, "predictions.csv also lists model A's k most probable classes (top<i>_label, top<i>_prob); "
                         "0 = none", most=MAX_TOP_K)
    onnx: str = flag("", "MODEL.onnx of export.py: score it with ONNX Runtime instead of --checkpoints (classes, "
                         "normalisation, T, score and referral thresholds from its sidecar MODEL.json; needs "
                         "pip install -r requirements-onnx.txt)")
    # this script's default of an inherited flag
    out_dir: str = flag("results/predict", "folder for predictions.csv, summary.json, skipped_inputs.csv")
    FLAG_HELP = {"batch_size": "images per MC-dropout batch",
                 "checkpoints": "checkpoint of model A (best.pt of train_model.py): its prediction is the answer; "
                                "or A,B: the cascade's pair (same classes)"}

    def __post_init__(self):
        super().__post_init__()
        require(bool(self.images_dir), "--images_dir is needed (the folder of images to score)")
        require(self.T == 0 or self.T >= 2, f"--T must be >= 2 MC samples (or 0 = paper's), got {self.T}")
        require(self.seed >= 0, f"--seed must be >= 0, got {self.seed}")
        require(self.top_k >= 0, f"--top_k must be >= 0, got {self.top_k}")
        require(not (self.onnx and self.thresholds), "--onnx brings its thresholds in its sidecar; leave --thresholds "
                                                     "empty (export again with export.py --thresholds to change them)")


def summarise(rows, found: int, skipped: int, class_names: list[str], cfg: Config,
              rule: cascade.ReferralRule | None) -> dict:
    """summary.json: counts per predicted class (every class listed), referral and disagreement rates."""
    n = len(rows)
    counts = rows["predicted_label"].value_counts()
    summary = {"images_found": found, "scored": n, "skipped": skipped,
               "predicted_counts": {c: int(counts.get(c, 0)) for c in class_names},
               "score": cfg.score, "T": cfg.T, "checkpoints": list(cfg.checkpoints), "onnx": cfg.onnx or None,
               "referred": int(rows["referred"].sum()),
               "referral_rate": float(rows["referred"].mean()) if n else float("nan"),
               "thresholds": cfg.thresholds or None,
               "referral_rule": None if rule is None else {
                   "mode": rule.mode, "threshold_a": rule.threshold_a, "threshold_b": rule.threshold_b,
                   "certified": rule.certified, "not_certified": list(rule.not_certified), "alpha": rule.alpha,
                   "delta": rule.delta, "n": rule.n, "smallest_certifiable_alpha": rule.smallest_certifiable_alpha},
               "mean_confidence": float(rows["confidence"].mean()) if n else float("nan")}
    if "disagreement" in rows:
        summary["disagreement_rate"] = float(rows["disagreement"].mean()) if n else float("nan")
    return summary


def load_onnx(cfg: Config):
    """--onnx: the exported graphs for ONNX Runtime (on the CPU), the sidecar's referral rule, and
    cfg with T (0 = the sidecar's) -> (models, rule, cfg, device)."""
    from safehil.safety import deploy  # only here: the rest of predict.py needs no ONNX
    models, sidecar = deploy.load_bundle(cfg.onnx, cfg.cpu_threads)
    cfg = replace(cfg, T=cfg.T or int(sidecar["T"]), checkpoints=tuple(m["checkpoint"] for m in sidecar["models"]))
    rule = deploy.sidecar_rule(sidecar, deploy.sidecar_path(cfg.onnx), cfg.score, cfg.T, models)
    if rule is not None:
        rule = scoring.checked_rule(rule, deploy.sidecar_path(cfg.onnx), cfg.score, cfg.T)
    return models, rule, cfg, torch.device("cpu")


def main(cfg: Config) -> dict:
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    not_searched = []  # links, unreadable folders, FIFOs: listed in skipped_inputs.csv, never dropped unseen
    files = scoring.find_images(cfg.images_dir, not_searched)  # no images: nothing is created
    out = hold_folder(cfg.out_dir, "another --out_dir")  # created, writable and ours before anything is scored
    if (out / "predictions.csv").exists():
        raise InputError(f"{out}/predictions.csv exists already; pass another --out_dir (results are never "
                         "overwritten)")
    if cfg.onnx:
        models, rule, cfg, device = load_onnx(cfg)
    else:
        models = scoring.load_models(cfg.checkpoint_a, cfg.checkpoint_b, device)
        cfg = replace(cfg, T=cfg.T or scoring.checkpoint_mc_samples(models[0][1]))
        rule = scoring.load_referral_rule(cfg.thresholds, models, cfg.score, cfg.T,
                                          {"a": cfg.checkpoint_a, "b": cfg.checkpoint_b}) if cfg.thresholds else None
    class_names = list(models[0][1]["class_names"])
    save_config(cfg, out)
    log(f"scoring {len(files)} images under {cfg.images_dir} with "
        f"{' + '.join(m['model_name'] for _, m in models)} on {device}, T = {cfg.T}")
    result = scoring.score_files(files, models, cfg.T, cfg.score, cfg.batch_size, device, cfg.seed)
    root = Path(cfg.images_dir)
    paths = [p.relative_to(root).as_posix() for p in result.files]
    rows = scoring.predictions_table(paths, class_names, result.outputs, rule, class_probabilities=True,
                                     top_k=cfg.top_k)
    atomic_write_spreadsheet_csv(out / "predictions.csv", rows)  # opened in spreadsheets
    skipped = [{"path": Path(s["path"]).relative_to(root).as_posix(), "reason": s["reason"]}
               for s in not_searched + result.skipped]
    atomic_write_spreadsheet_csv(out / "skipped_inputs.csv", scoring.skipped_table(skipped))  # opened by a person
    summary = summarise(rows, len(files), len(result.skipped), class_names, cfg, rule)
    summary["not_searched"] = len(not_searched)
    atomic_write_json(out / "summary.json", summary)
    if skipped:
        log(f"skipped {len(result.skipped)} unreadable file(s) and {len(not_searched)} entr"
            f"{'y' if len(not_searched) == 1 else 'ies'} not searched (links, unreadable folders, FIFOs), listed in "
            f"{out}/skipped_inputs.csv, e.g. {skipped[0]['path']}: {skipped[0]['reason']}")
    referred = f", {summary['referred']} referred ({100 * summary['referral_rate']:.1f} %)" if rule else ""
    log(f"scored {len(rows)} of {len(files)} images{referred} -> {out}/predictions.csv; per class "
        + ", ".join(f"{c} {k}" for c, k in summary["predicted_counts"].items()))
    return summary


if __name__ == "__main__":
    run_main(main, parse_config(Config, description=__doc__))
