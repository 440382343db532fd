"""The R4VR safety cascade: two diverse models + MC-dropout uncertainty + disagreement decide
which images go to a person; measure how many wrong predictions stay undetected.

    python evaluate_safety.py   # the pair resnet18 + vgg16 of train_model.py's default run names
    python evaluate_safety.py --checkpoints A.pt,B.pt --target 0.001 --T 20 --score predictive_entropy
    python evaluate_safety.py --checkpoints A.pt --target 0.01   # one model: referral by its uncertainty alone

An image is referred to a person when the two models disagree or either model's
uncertainty (a score of the MC-dropout probabilities [T, N, C], default predictive entropy)
passes its threshold; otherwise the (agreed) prediction is accepted automatically. The
thresholds are calibrated on the `calib` split only (make_splits.py holds it out from training
and early stopping; data without one fall back to `valid`, which certifies nothing when the
models early-stopped on it) and then
applied unchanged to every test split. `--calibration ltt` (default) certifies them by Learn then Test: with probability
>= 1 - `--delta` over the draw of the calibration images, the undetected-error rate (wrong and
not referred, over all images) is at most `--target` (paper: 0.1 %); with too few calibration
images it says so, names the smallest rate it can certify, and refers every image.
`--calibration empirical` takes the pair with the smallest referral rate whose undetected-error
rate on the validation split itself is at or below `--target` (no guarantee for new images).
With one checkpoint (`--checkpoints A.pt`) there is no disagreement: an image is referred when
model A's uncertainty passes its threshold, certified the same way (mechanisms: model A
alone, uncertainty only); predict.py and review.py apply that file to one model.

Reported per test split (and for valid): referral rate (the person's workload), accuracy of
the automatic decisions, undetected-error rate with an exact Clopper-Pearson upper bound,
all of it per class; a comparison of the mechanisms (model A alone, uncertainty only, model
diversity only, both); and a workload vs undetected-error sweep. Writes
results/safety/<run>/ with config.json, per_image.csv, thresholds.json, safety.json,
comparison.md, sweep.csv and (ltt) ltt_path.csv, the p-values along the path (figure:
`python plot_results.py results/ --only safety_tradeoff`).
thresholds.json holds the certificate's evidence (certificate.py): the per-image calibration
record (content sha256, label, predictions, scores), n, alpha, delta, the fixed path, and per model
its weights' sha256, classes, normalisation, canvas, dropout rates and the content sha256 of the
images it trained and early-stopped on; "certified" is the Learn-then-Test decision re-run from it
against the models in use, here and in predict.py, review.py and export.py's sidecar, never a stored
flag. A calibration image whose content a model trained or early-stopped on (under any path)
certifies nothing, said with the count. Each checkpoint's sha256 and a sha256 over the whole file
are kept too: other checkpoints are refused, an edited file is uncertified.
Refused before anything is scored, whatever data flags are given: calibration or test images
that either model trained on (each run's split.csv, or its split rebuilt from its settings;
the counts are named), --calib_split train or test*, and a "pair" that is one model (the same
file, or the same weights).
The cascade itself (mechanisms, calibration, metrics, bounds) lives in cascade.py.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from safehil.safety import certificate, scoring
from safehil.uq import uncertainty
from safehil.safety.cascade import (CALIBRATION_METHODS, MODE_TITLES, MODES, ONE_MODEL_MODES, Scores, calibrate_modes, calibration_summary, checkpoint_record, data_fingerprint, evaluate_split, file_sha256, headline_mode, max_undetected, mc_outputs, referred_mask, score_upper_bound, sweep, weights_sha256, write_thresholds)
from safehil.settings.config import (MAX_MC_SAMPLES, MODEL_A_DATA_HELP, CheckpointData, ModelCheckpoints, RunConfig,
                                     resolve_data, trained_split_seed)
from safehil.settings.run_folders import check_run_folder, claim_run_folder, run_folder
from datasets import checkpoint_canvas, load_image_sets, load_split_table
from safehil.data.splits import PROBE_SPLITS, RUN_SPLIT_FILE, check_split_table, read_split_csv
from utils import (MAX_SEED, InputError, atomic_write_csv, atomic_write_json, atomic_write_spreadsheet_csv,
                   atomic_write_text, flag, fmt_pct, log, parse_config, require, resolve_device, run_main,
                   seed_everything)
from safehil.settings.presets import paper_values


@dataclass(frozen=True)
class Config(RunConfig, CheckpointData, ModelCheckpoints):
    """evaluate_safety.py's flags: its own below, then (config.py) RunConfig's `run` flags, CheckpointData's `data`
    flags (empty = the checkpoint's) and ModelCheckpoints' `checkpoint` flag (the pair)."""
    checkpoints: tuple[str, ...] = flag(("results/train/resnet18_synthetic_plain_s0/best.pt",
                                         "results/train/vgg16_synthetic_plain_s0/best.pt"),
                                        "A,B: checkpoints of the primary model (train_model.py best.pt; its prediction "
                                        "is the automatic one) and of a second, architecturally different model with "
                                        "the same classes; A alone: referral from A's uncertainty only")
    calib_split: str = flag("calib", "split the thresholds are calibrated on: make_splits.py's calib split, held out "
                                     "from training and early stopping; data without one fall back to valid (images a "
                                     "model early-stopped on certify nothing)")
    T: int = flag(0, "MC-dropout samples per image; 0 = the paper's for model A's data set "
                     f"({paper_values('T')})", most=MAX_MC_SAMPLES)
    score: str = flag("predictive_entropy", "uncertainty score (higher = less certain)",
                      choices=tuple(uncertainty.SCORES))
    target: float = flag(0.001, "largest undetected-error rate allowed (paper: 0.1 %%): the certified bound alpha "
                                "(ltt) or the rate on the calibration split itself (empirical)")
    calibration: str = flag("ltt", "how thresholds are chosen: ltt = certified by Learn then Test (with probability "
                                   ">= 1 - delta the undetected-error rate is <= --target); empirical = least workload "
                                   "meeting --target on the calibration split itself (no guarantee)",
                            choices=CALIBRATION_METHODS)
    delta: float = flag(0.05, "ltt: the guarantee may fail for at most this share of calibration draws")
    confidence: float = flag(0.95, "level of the Clopper-Pearson bound")
    two_sided: bool = flag(False, "report the upper end of the two-sided interval instead of the one-sided upper bound")
    max_candidates: int = flag(1000, "threshold candidates per model (empirical: all distinct validation values when "
                                     "fewer: exact search; ltt: points on the shared-quantile path)", most=100_000)
    sweep_points: int = flag(51, "quantile levels of the workload sweep", most=10_000)
    seed: int = flag(0, "seed of the dropout masks", most=MAX_SEED)
    # this script's default of an inherited flag
    out_dir: str = flag("results/safety", "parent folder of run folders")
    FLAG_HELP = {**MODEL_A_DATA_HELP, "batch_size": "images per MC-dropout batch",
                 "run_name": "run folder name; empty = <run A>__<run B>"}

    def __post_init__(self):
        super().__post_init__()
        require(self.T == 0 or self.T >= 2, f"--T must be >= 2 MC samples (or 0 = the paper's), got {self.T}")
        require(0 <= self.target < 1, f"--target must be in [0, 1), got {self.target}")
        require(0 < self.delta < 1, f"--delta must be in (0, 1), got {self.delta}")
        require(self.target > 0 or self.calibration != "ltt",
                "--target 0 cannot be certified; give a positive rate or use --calibration empirical")
        require(0 < self.confidence < 1, f"--confidence must be in (0, 1), got {self.confidence}")
        require(self.max_candidates >= 2, f"--max_candidates must be >= 2, got {self.max_candidates}")
        require(self.sweep_points >= 2, f"--sweep_points must be >= 2, got {self.sweep_points}")
        require(self.calib_split != "train" and not self.calib_split.startswith("test")
                and self.calib_split not in PROBE_SPLITS,
                f"--calib_split {self.calib_split} is a training or test split; calibrate on a split neither model "
                "trained on and that is not tested on (default valid)")


DEFAULT_CALIB_SPLIT = "calib"


def resolved_calib_split(cfg: Config, table: pd.DataFrame) -> str:
    """--calib_split, or for the default `calib` on data without that split: `valid` (said in the log;
    when the models early-stopped on it, the content check certifies nothing)."""
    if cfg.calib_split == DEFAULT_CALIB_SPLIT and cfg.calib_split not in set(table["split"]) \
            and "valid" in set(table["split"]):
        log(f"the data has no {DEFAULT_CALIB_SPLIT!r} split (make_splits.py makes one): calibrating on 'valid'; "
            "images a model early-stopped on certify nothing (checked by content)")
        return "valid"
    return cfg.calib_split


def safety_table(cfg: Config, meta_a: dict, meta_b: dict | None) -> tuple[pd.DataFrame, Path]:
    """The calibration and test rows of the data model A (and B) was trained on (or of --dataset /
    --data_dir / --split_csv) -> (table path,label,split, data root)."""
    source = resolve_data(cfg, meta_a, meta_b, names=(cfg.checkpoint_a, cfg.checkpoint_b))
    table, root = load_split_table(source.dataset, source.data_dir, source.split_csv, trained_split_seed(meta_a),
                                   source.per_class, source.multi_label_rule)
    calib_split = resolved_calib_split(cfg, table)
    if calib_split not in set(table["split"]):
        raise InputError(f"{source.split_csv or source.data_dir or 'the data'}: no {calib_split!r} split to "
                         f"calibrate on (found {sorted(set(table['split']))}); pass --calib_split or add one")
    evaluated = table["split"].isin([calib_split, *PROBE_SPLITS]) | table["split"].str.startswith("test")
    table = table[evaluated]
    _, problems = check_split_table(table, root, source.split_csv, class_names=list(meta_a["class_names"]))
    if problems:  # before anything is decoded: a missing or foreign file is one message, not an errno line
        shown = "; ".join(f"{p['path']}: {p['problem']}" for p in problems[:3])
        raise InputError(f"{len(problems)} calibration or test row(s) cannot be scored ({shown}"
                         f"{'; ...' if len(problems) > 3 else ''}); fix or remove them in the split CSV")
    return table, Path(root)


def training_images(checkpoint: str | Path, meta: dict) -> set[str]:
    """The files (real absolute paths) a checkpoint was trained on: its run's split.csv (written by
    train_model.py), or for a run without one, its split rebuilt from the settings it recorded."""
    trained = meta.get("config", {})
    run_split = Path(checkpoint).parent / RUN_SPLIT_FILE
    if run_split.is_file() and meta.get("data_root"):
        table, root = read_split_csv(run_split), meta["data_root"]
    else:
        table, root = load_split_table(trained.get("dataset") or meta.get("dataset") or "synthetic",
                                       trained.get("data_dir") or "", trained.get("split_csv") or "",
                                       trained_split_seed(meta), int(trained.get("per_class") or 300),
                                       trained.get("multi_label_rule") or "largest_area")
    return {os.path.realpath(Path(root) / p) for p in table.loc[table["split"] == "train", "path"]}


def refuse_training_images(cfg: Config, pair, table: pd.DataFrame, root: Path) -> None:
    """Refuse (InputError naming the counts) calibration or test rows that either model trained on,
    whatever data flags were given: a certificate on training images certifies nothing."""
    files = [os.path.realpath(root / p) for p in table["path"]]
    calib = table["split"].to_numpy() == cfg.calib_split
    found = []
    for tag, path, (_, meta) in zip("AB", cfg.checkpoints, pair):
        trained = training_images(path, meta)
        seen = np.array([f in trained for f in files], dtype=bool)
        if seen.any():
            found.append(f"model {tag} ({path}) trained on {int(seen[calib].sum())} of the {int(calib.sum())} "
                         f"calibration images and {int(seen[~calib].sum())} of the {int((~calib).sum())} test images")
    if found:
        raise InputError("; ".join(found) + ": thresholds calibrated or tested on training images certify nothing. "
                         "Train both models on one split (the same --split_csv, or the same --split_seed) and "
                         "evaluate on that split")


def refuse_one_model(cfg: Config, pair) -> None:
    """Refuse a 'pair' that is one model: the same file, or two files holding the same weights (one
    checkpoint alone is the one-model mode, not refused)."""
    if len(pair) < 2:
        return
    same_file = os.path.realpath(cfg.checkpoint_a) == os.path.realpath(cfg.checkpoint_b)
    if same_file or file_sha256(cfg.checkpoint_a) == file_sha256(cfg.checkpoint_b) or \
            weights_sha256(pair[0][0]) == weights_sha256(pair[1][0]):
        how = "are the same file" if same_file else "hold the same weights"
        raise InputError(f"--checkpoints {cfg.checkpoint_a},{cfg.checkpoint_b}: the two {how}: the cascade needs two "
                         "different models (train a second, architecturally different one, or pass one checkpoint "
                         "for referral by its uncertainty alone)")


def score_splits(cfg: Config, device: torch.device, models=None, data=None) -> tuple[dict[str, Scores], list[str],
                                                                                    dict[str, list[str]]]:
    """Run the model(s) with MC dropout on every split -> ({split: Scores}, class names, {split: paths}).
    `models`: what `scoring.load_models` returned, when the caller loaded them already; `data`:
    what `safety_table` returned. One model: B is a copy of A (no disagreement), so only
    ONE_MODEL_MODES mean anything."""
    models = models or scoring.load_models(cfg.checkpoint_a, cfg.checkpoint_b, device)
    meta_a = models[0][1]
    class_names = list(meta_a["class_names"])
    table, root = data or safety_table(cfg, meta_a, models[1][1] if len(models) > 1 else None)
    score_fn = uncertainty.SCORES[cfg.score]
    sets_by_size: dict = {}  # {canvas: {split: ImageSet}}: each model's data decoded as it was trained
    outputs = {}
    for tag, (model, meta) in zip("ab", models):
        size = checkpoint_canvas(meta)
        if size not in sets_by_size:
            sets_by_size[size] = load_image_sets(table, root, size.height, class_names, geometry=size)
        for split, data in sets_by_size[size].items():
            pred, probs = mc_outputs(model, meta, data, cfg.T, cfg.batch_size, device, cfg.seed)
            outputs[tag, split] = (pred, score_fn(probs).numpy().astype(np.float64), data.labels.numpy(),
                                   data.paths)
            log(f"{tag.upper()} {meta['model_name']} on {split}: MC accuracy "
                f"{(pred == data.labels.numpy()).mean():.4f} (T={cfg.T})")
    scores, paths = {}, {}
    for split in sorted({s for _, s in outputs}):
        pa, ua, labels, pth = outputs["a", split]
        pb, ub, _, _ = outputs.get(("b", split), outputs["a", split])
        scores[split] = Scores(labels, pa, pb, ua, ub)
        paths[split] = pth
    return scores, class_names, paths


# ============================================================================ reporting

def comparison_markdown(results: dict, thresholds: dict, cfg: Config) -> str:
    """The comparison of mechanisms per split as markdown tables."""
    kind = "two-sided" if cfg.two_sided else "one-sided"
    n_calib = next(iter(results[cfg.calib_split].values()))["n"]
    mode = headline_mode(bool(cfg.checkpoint_b))
    title = (f"Safety cascade: {Path(cfg.checkpoint_a).parent.name} (A) + {Path(cfg.checkpoint_b).parent.name} (B)"
             if cfg.checkpoint_b else f"Referral from one model's uncertainty: {Path(cfg.checkpoint_a).parent.name}")
    lines = [f"# {title}", "",
             f"Thresholds calibrated on `{cfg.calib_split}` ({cfg.calibration}) for an undetected-error rate <= "
             f"{fmt_pct(cfg.target, 3)}; score {cfg.score}, T = {cfg.T}. Bound: {kind} {100 * cfg.confidence:g} % "
             "Clopper-Pearson.", ""]
    if cfg.calibration == "ltt":
        c = thresholds[mode]
        lines += [f"Guarantee of {MODE_TITLES[mode]}: {c['guarantee']}.",
                  f"Its workload on `{cfg.calib_split}`: {fmt_pct(c['referral_rate'], 1)} referred. "
                  f"Smallest rate certifiable with these {n_calib} images: {fmt_pct(c['smallest_certifiable_alpha'], 3)}.",
                  ""]
    else:
        lines += [f"With {n_calib} calibration images the target allows {max_undetected(cfg.target, n_calib)} "
                  f"undetected error(s) there; a rate of {fmt_pct(cfg.target, 3)} can only be told apart from 0 with "
                  f"at least {math.ceil(1 / cfg.target) if cfg.target > 0 else 'infinitely many'} images. These "
                  "thresholds carry no guarantee for new images.", ""]
    met = "certified (ltt)" if cfg.calibration == "ltt" else "target met on calibration"
    for split, per_mode in results.items():
        lines += [f"## {split} (n = {next(iter(per_mode.values()))['n']})", "",
                  "| mechanism | referral rate | automatic accuracy | undetected | undetected rate | upper bound | "
                  f"errors caught | {met} |",
                  "|---|---|---|---|---|---|---|---|"]
        for mode, m in per_mode.items():
            lines.append(f"| {MODE_TITLES[mode]} | {fmt_pct(m['referral_rate'], 1)} | {fmt_pct(m['automatic_accuracy'], 1)} "
                         f"| {m['undetected']} / {m['n']} | {fmt_pct(m['undetected_rate'], 2)} | "
                         f"{fmt_pct(m['undetected_upper'], 2)} | {fmt_pct(m['errors_caught'], 1)} | "
                         f"{'yes' if thresholds[mode]['target_met'] else 'no'} |")
        lines.append("")
    per_split = {s: r[mode]["per_class"] for s, r in results.items()}
    for split, per_class in per_split.items():
        lines += [f"### {MODE_TITLES[mode]} per class, {split}", "",
                  "| class | n | referral rate | automatic accuracy | undetected | upper bound |", "|---|---|---|---|---|---|"]
        for name, m in per_class.items():
            lines.append(f"| {name} | {m['n']} | {fmt_pct(m['referral_rate'], 1)} | {fmt_pct(m['automatic_accuracy'], 1)} "
                         f"| {m['undetected']} | {fmt_pct(m['undetected_upper'], 2)} |")
        lines.append("")
    return "\n".join(lines)


def per_image_table(scores: dict[str, Scores], paths: dict[str, list[str]], thresholds: dict,
                    class_names: list[str], mode: str = "cascade") -> pd.DataFrame:
    """One row per image: both predictions and uncertainties (one model: B = A), disagreement,
    referral by the deciding mechanism `mode`."""
    frames = []
    th = thresholds[mode]
    for split, s in scores.items():
        referred = referred_mask(s, mode, th["threshold_a"], th["threshold_b"])
        frames.append(pd.DataFrame({
            "split": split, "path": paths[split], "label": [class_names[i] for i in s.labels],
            "pred_a": [class_names[i] for i in s.pred_a], "pred_b": [class_names[i] for i in s.pred_b],
            "uncertainty_a": s.unc_a, "uncertainty_b": s.unc_b, "disagree": s.disagree,
            "referred": referred, "correct": s.pred_a == s.labels}))
    return pd.concat(frames, ignore_index=True)


def run_dir(cfg: Config) -> Path:
    """out_dir/<run A>__<run B>, or out_dir/<run A> for one model (or --run_name)."""
    return run_folder(cfg, "__".join(Path(c).parent.name for c in cfg.checkpoints))


def analyse(scores: dict[str, Scores], class_names: list[str],
            cfg: Config) -> tuple[dict, dict, pd.DataFrame, pd.DataFrame | None]:
    """Calibrate every mechanism on cfg.calib_split alone, evaluate on every split, sweep along the
    calibration split's quantiles -> (thresholds, results, sweep, LTT path table or None)."""
    calib = scores[cfg.calib_split]
    bound = score_upper_bound(cfg.score, len(class_names))  # the fixed path's end, from no image's score
    modes = tuple(MODES) if cfg.checkpoint_b else ONE_MODEL_MODES
    thresholds, path = calibrate_modes(calib, cfg.calibration, cfg.target, cfg.delta, cfg.max_candidates,
                                       (bound, bound), modes)
    order = [cfg.calib_split] + sorted(s for s in scores if s != cfg.calib_split)
    results = {split: evaluate_split(scores[split], thresholds, class_names, cfg.confidence, cfg.two_sided)
               for split in order}
    levels = np.linspace(0, 1, cfg.sweep_points)
    curve = pd.concat([sweep(scores[split], calib, levels, modes).assign(split=split) for split in order],
                      ignore_index=True)
    return thresholds, results, curve, path


def log_calibration(summary: dict, calib_split: str) -> None:
    """One line on what the thresholds promise; when n is too small, that and the smallest rate it certifies."""
    if summary["method"] == "empirical":
        log(f"calibration (empirical) on {calib_split}: {summary['guarantee']}")
    elif summary["certified"]:
        log(f"calibration (Learn then Test) on {calib_split}: {summary['guarantee']}")
    elif summary.get("decision_failed"):
        log(f"NOT CERTIFIED: {summary['n']} images on {calib_split} cannot certify an undetected-error rate <= "
            f"{summary['alpha']:g} at delta = {summary['delta']:g}; the smallest rate they can certify is "
            f"{summary['smallest_certifiable_alpha']:.4g} (--target {summary['alpha']:g} needs >= "
            f"{summary['images_needed']} images); every image is referred and nothing is certified"
            + "".join(f"; also: {r}" for r in summary.get("not_certified", [])[1:]))
    else:  # the decision certifies, but not for these models or these calibration images
        log(f"NOT CERTIFIED: {'; '.join(summary.get('not_certified') or [])}; nothing is certified")


def calibration_image_hashes(root: Path, paths: list[str]) -> list[str]:
    """Content sha256 (of the file bytes) of each calibration image, in the scores' order."""
    return [file_sha256(root / p) for p in paths]


def certify_run(cfg: Config, models, scores: dict[str, Scores], paths: dict[str, list[str]], root: Path,
                thresholds: dict, class_names: list[str]) -> tuple[dict | None, certificate.Verdict]:
    """The evidence of the deciding mechanism's certificate (None for --calibration empirical) and
    the verdict of re-running it against the models just scored (`certificate.verify`): the one
    answer every file of this run writes."""
    mode = headline_mode(len(models) == 2)
    applied_models = {role: certificate.applied_model(model, meta) for role, (model, meta) in zip("ab", models)}
    if cfg.calibration != "ltt":
        return None, certificate.verify(None, {})
    record = certificate.calibration_record(scores[cfg.calib_split],
                                            calibration_image_hashes(root, paths[cfg.calib_split]))
    ev = certificate.evidence(mode, cfg.target, cfg.delta, cfg.max_candidates, cfg.score, cfg.T, class_names,
                              {role: certificate.model_record(path, model, meta)
                               for role, path, (model, meta) in zip("ab", cfg.checkpoints, models)}, record)
    th = thresholds[mode]
    verdict = certificate.verify(ev, {"mode": mode, "threshold_a": th["threshold_a"], "threshold_b": th["threshold_b"],
                                      "score": cfg.score, "T": cfg.T, "class_names": class_names,
                                      "models": applied_models})
    return ev, verdict


def withhold_certificates(thresholds: dict, verdict: certificate.Verdict, decided: tuple[str, ...]) -> None:
    """Reasons beyond the Learn-then-Test decision itself (calibration images seen in training, a model
    without recorded training images) void every mechanism's certificate: certified and target_met
    become False, with the reasons in their guarantee."""
    extra = [r for r in verdict.reasons if r not in decided]
    if not extra:
        return
    for th in thresholds.values():
        if "certified" in th:
            th.update(certified=False, target_met=False, guarantee="not certified: " + "; ".join(extra))


def main(cfg: Config) -> dict:
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    # before the models load: another run's folder is refused at once (T = 0 and the default calib split are
    # resolved below)
    check_run_folder(cfg, run_dir(cfg), ignore=(("T",) if cfg.T == 0 else ())
                     + (("calib_split",) if cfg.calib_split == DEFAULT_CALIB_SPLIT else ()))
    # the models (a pair must fit together) load before anything is written
    models = scoring.load_models(cfg.checkpoint_a, cfg.checkpoint_b, device)
    cfg = replace(cfg, T=cfg.T or scoring.checkpoint_mc_samples(models[0][1]))
    mode = headline_mode(len(models) == 2)
    refuse_one_model(cfg, models)
    data = safety_table(cfg, models[0][1], models[1][1] if len(models) > 1 else None)
    cfg = replace(cfg, calib_split=resolved_calib_split(cfg, data[0]))
    refuse_training_images(cfg, models, *data)
    certificate_doc = {"models": {role: checkpoint_record(path, model)
                                  for role, path, (model, _) in zip("ab", cfg.checkpoints, models)},
                       "calibration_data": data_fingerprint(data[1], *(data[0].loc[data[0]["split"] == cfg.calib_split,
                                                                                 c].tolist() for c in ("path", "label"))),
                       "seed": cfg.seed}
    out = claim_run_folder(cfg, run_dir(cfg))
    scores, class_names, paths = score_splits(cfg, device, models, data)
    thresholds, results, curve, path = analyse(scores, class_names, cfg)
    ev, verdict = certify_run(cfg, models, scores, paths, data[1], thresholds, class_names)
    if ev is not None:
        withhold_certificates(thresholds, verdict, certificate.decide(ev).reasons)
    seen = None if any(m.get(certificate.SEEN_IMAGES_KEY) is None for m in (ev or {}).get("models", {}).values()) \
        or ev is None else verdict.seen_in_training > 0
    summary = calibration_summary(thresholds, cfg.calibration, cfg.target, cfg.delta, len(scores[cfg.calib_split]),
                                  seen, mode)
    summary.update(certified=verdict.certified, not_certified=list(verdict.reasons),
                   seen_in_training=verdict.seen_in_training,
                   decision_failed=ev is not None and not certificate.decide(ev).certified)
    if not verdict.certified and ev is not None:
        summary["guarantee"] = "not certified: " + "; ".join(verdict.reasons)
    log_calibration(summary, cfg.calib_split)
    atomic_write_spreadsheet_csv(out / "per_image.csv", per_image_table(scores, paths, thresholds, class_names, mode))
    write_thresholds(out / "thresholds.json", {
        "score": cfg.score, "T": cfg.T, "target": cfg.target, "calib_split": cfg.calib_split,
        "calibration": summary, "model_a": cfg.checkpoint_a, "model_b": cfg.checkpoint_b,
        "models": len(models), "class_names": class_names, "modes": thresholds, "certificate": certificate_doc,
        "evidence": ev, "certified": verdict.certified, "not_certified": list(verdict.reasons)})
    atomic_write_json(out / "safety.json", {"class_names": class_names, "target": cfg.target,
                                            "calibration": summary, "confidence": cfg.confidence,
                                            "two_sided": cfg.two_sided, "splits": results})
    atomic_write_csv(out / "sweep.csv", curve)
    if path is not None:
        atomic_write_csv(out / "ltt_path.csv", path)
    atomic_write_text(out / "comparison.md", comparison_markdown(results, thresholds, cfg))
    for split, per_mode in results.items():
        m = per_mode[mode]
        log(f"{split}: {MODE_TITLES[mode]} refers {fmt_pct(m['referral_rate'], 1)}, automatic accuracy "
            f"{fmt_pct(m['automatic_accuracy'], 1)}, undetected {m['undetected']}/{m['n']} = "
            f"{fmt_pct(m['undetected_rate'], 2)} (<= {fmt_pct(m['undetected_upper'], 2)} at {100 * cfg.confidence:g} %)")
    log(f"wrote {out}/comparison.md")
    return {"thresholds": thresholds, "results": results, "calibration": summary, "out_dir": str(out)}


if __name__ == "__main__":
    run_main(main, parse_config(Config, description=__doc__))
