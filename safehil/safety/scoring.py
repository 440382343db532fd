"""Scoring image files with trained checkpoints alone: no training data, split table or data
root is needed, only the files and the checkpoints (which record class names, normalisation,
image size and network).

`find_images` lists the images under a folder (recursively), `load_models` loads one
checkpoint or a cascade pair, and `score_files` decodes the files a chunk at a time (memory
stays bounded for any folder size; unreadable files are listed, not fatal) and runs
MC dropout (`uncertainty.mc_dropout_probs`, the fast path) per batch on the model's device.
`predictions_table` turns the result into one row per image, with the cascade's referral
decision (`cascade.refer`) for a pair. predict.py (the deployment step) and `review.py export`
both score through here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from tqdm import tqdm

from safehil.safety import cascade, certificate
from safehil.uq import uncertainty
from safehil.data.augment import to_model_input
from safehil.data.cache import Canvas, decode_images_skipping_bad
from safehil.data.datasets import checkpoint_canvas
from safehil.data.images import IMAGE_EXTENSIONS, warn_slivers
from safehil.training.models import load_trained_model
from safehil.settings.presets import paper_T
from safehil.core.utils import InputError, log, progress_enabled

CHUNK_BATCHES = 8  # files decoded at once = batch_size * CHUNK_BATCHES (bounds the memory of a big folder)


# ============================================================================ inputs

def find_images(folder: str | Path, skipped: list[dict] | None = None) -> list[Path]:
    """Image files under `folder` (recursively, any depth; extensions of images.IMAGE_EXTENSIONS,
    any case), sorted. A missing folder or one without images is an InputError.

    Entries that are not searched are appended to `skipped` as {'path', 'reason'} (and logged
    when no list is given), never dropped unseen: a symbolic link to a folder (not followed: it
    may loop), a folder that cannot be read, a broken link, and a FIFO, socket or device.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: images folder not found (--images_dir)")
    files, left_out = [], []

    def unreadable(error: OSError):
        left_out.append({"path": str(error.filename), "reason": f"folder not searched: {error.strerror or error}"})

    for top, dirs, names in os.walk(folder, onerror=unreadable):
        for name in sorted(dirs):
            if os.path.islink(os.path.join(top, name)):
                left_out.append({"path": os.path.join(top, name),
                                 "reason": "symbolic link to a folder: not followed (it may loop); pass the folder it "
                                           "points to, or copy its images"})
        for name in names:
            path = Path(top) / name
            if path.is_file():
                if path.suffix.lower() in IMAGE_EXTENSIONS:
                    files.append(path)
            elif path.is_symlink() and not path.exists():
                left_out.append({"path": str(path), "reason": "broken symbolic link (its target is missing)"})
            else:
                left_out.append({"path": str(path), "reason": "not a regular file (a FIFO, socket or device)"})
    if skipped is not None:
        skipped += left_out
    elif left_out:
        log(f"{folder}: {len(left_out)} entr{'y' if len(left_out) == 1 else 'ies'} not searched, e.g. "
            f"{left_out[0]['path']}: {left_out[0]['reason']}")
    files.sort()
    if not files:
        raise InputError(f"{folder}: holds no images ({', '.join(IMAGE_EXTENSIONS)}), not even in subfolders")
    return files


def load_models(checkpoint_a: str | Path, checkpoint_b: str | Path = "", device: torch.device | str = "cpu"
                ) -> list[tuple[nn.Module, dict]]:
    """[(model, meta)] of one checkpoint, or of a pair with the same classes (`cascade.load_pair`)."""
    if checkpoint_b:
        return list(cascade.load_pair(checkpoint_a, checkpoint_b, torch.device(device)))
    if not Path(checkpoint_a).is_file():
        raise FileNotFoundError(f"{checkpoint_a}: checkpoint not found (train one with train_model.py)")
    return [load_trained_model(checkpoint_a, device)]


def checkpoint_mc_samples(meta: dict) -> int:
    """The paper's T for the data set a checkpoint was trained on (presets.py: 20, or 40 for
    Severstal); a data set without a preset row is an InputError (pass --T)."""
    dataset = meta.get("dataset") or meta.get("config", {}).get("dataset") or "synthetic"
    return paper_T(dataset)


def load_referral_rule(path: str | Path, models: list[tuple[nn.Module, dict]], score: str, T: int,
                       checkpoints: dict[str, str | Path] | None = None) -> cascade.ReferralRule:
    """`cascade.read_referral_rule` for the loaded `models` ([(model, meta)], one or a pair),
    checked against the run: the thresholds must be for `score` (else an InputError naming the
    flag) and, when they record their models, for `checkpoints` ({'a': path[, 'b': path]}, else an
    InputError). Certified only when `certificate.verified_rule` re-runs the decision from the
    file's evidence against these models, this score and this T; otherwise certified = False and
    a warning saying why."""
    class_names = list(models[0][1]["class_names"])
    rule = cascade.read_referral_rule(path, class_names, len(models) == 2, checkpoints)
    doc, _ = cascade.read_thresholds(path)
    applied = {role: certificate.applied_model(model, meta) for role, (model, meta) in zip("ab", models)}
    rule = certificate.verified_rule(rule, doc.get("evidence"), applied, score, T, class_names)
    return checked_rule(rule, path, score, T)


def checked_rule(rule: cascade.ReferralRule, path: str | Path, score: str, T: int) -> cascade.ReferralRule:
    """A rule checked against the run (`load_referral_rule`; also predict.py's sidecar rule): another
    score is an InputError; why it is not certified (another T among the reasons) is logged."""
    if rule.score != score:
        raise InputError(f"{path}: thresholds are for the score {rule.score!r}, not --score {score}; "
                         f"pass --score {rule.score}")
    for reason in rule.not_certified:
        log(f"warning: NOT CERTIFIED: {reason}; the undetected-error rate on new images is not guaranteed")
    if rule.certified:
        log(f"referral: {rule.mode} thresholds of {path}, certified: {rule.certificate}")
    return rule


# ============================================================================ scoring

@dataclass
class ModelOutputs:
    """One model's MC-dropout outputs on the scored files (numpy arrays [N])."""
    pred: np.ndarray         # int, argmax of the mean MC probabilities
    confidence: np.ndarray   # float, max of the mean MC probabilities
    uncertainty: np.ndarray  # float, the chosen uncertainty score (higher = less certain)
    probabilities: np.ndarray  # float [N, C], the mean of the MC probabilities


@dataclass
class FileScores:
    """`score_files` result: the files that were scored (input order), one ModelOutputs per
    model (same order as the models), and the files left out as {'path', 'reason'}."""
    files: list[Path]
    outputs: list[ModelOutputs]
    skipped: list[dict]


def _decode_chunk(chunk: list[Path], sizes: list[Canvas]) -> tuple[dict[Canvas, torch.Tensor], list[int], dict[int, str]]:
    """Decode `chunk` on every canvas the models need (geometry and size each was trained on) ->
    ({canvas: uint8 [K, C, H, W]}, the K indices decodable on every canvas, {index: reason} for the rest)."""
    decoded, failures = {}, {}
    for size in sizes:
        images, kept, failed = decode_images_skipping_bad(chunk, size, desc=f"decoding at {size.width}x{size.height} px")
        decoded[size] = (images, kept)
        failures.update(failed)
    good = [i for i in range(len(chunk)) if i not in failures]
    out = {}
    for size, (images, kept) in decoded.items():
        position = {index: row for row, index in enumerate(kept)}
        rows = [position[i] for i in good]
        out[size] = images if rows == list(range(len(images))) else images[torch.as_tensor(rows, dtype=torch.long)]
    return out, good, failures


@torch.no_grad()
def _mc_batch(model: nn.Module, meta: dict, images: torch.Tensor, T: int, score: str, device: torch.device,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 [B, C, H, W] -> (prediction [B], confidence [B], uncertainty [B], mean probabilities
    [B, C]) on the CPU."""
    x = to_model_input(images, meta["mean"], meta["std"], device)
    if hasattr(model, "mc_probs"):  # an exported graph (deploy.OnnxNetwork) draws the same masks itself
        probs = model.mc_probs(x, T, generator)
    else:
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        probs = uncertainty.mc_dropout_probs(model, x, T, generator).cpu()  # [T, B, C]
    mean = probs.mean(0)
    return mean.argmax(1), mean.max(1).values, uncertainty.SCORES[score](probs), mean


def score_files(files: list[Path], models: list[tuple[nn.Module, dict]], T: int, score: str = "predictive_entropy",
                batch_size: int = 64, device: torch.device | str = "cpu", seed: int = 0,
                desc: str = "scoring") -> FileScores:
    """MC-dropout prediction, confidence and uncertainty of every model for every decodable file.

    Files are decoded `batch_size * CHUNK_BATCHES` at a time as each model's training data was
    (its checkpoint's canvas: a centre crop, a whole strip, or letterboxed; `datasets.checkpoint_canvas`),
    so a model scores the whole image it was trained to see; a file that cannot be decoded is left out
    and listed with its reason. Each model draws its dropout masks from its own CPU generator
    seeded with `seed`, batch after batch, so the samples do not depend on the device and
    equal `cascade.mc_outputs` on the same images and batch size.
    """
    if score not in uncertainty.SCORES:
        raise ValueError(f"unknown score {score!r}; choose from {tuple(uncertainty.SCORES)}")
    device = torch.device(device)
    first = checkpoint_canvas(models[0][1]) if models else None
    warn_slivers(files, first.width / first.height if first else 1.0)
    generators = [torch.Generator().manual_seed(seed) for _ in models]
    sizes = list(dict.fromkeys(checkpoint_canvas(meta) for _, meta in models))
    chunk_size = batch_size * CHUNK_BATCHES
    scored, skipped = [], []
    columns = [([], [], [], []) for _ in models]
    bar = tqdm(total=len(files), desc=desc, unit="img", disable=not progress_enabled())
    for start in range(0, len(files), chunk_size):
        chunk = list(files[start:start + chunk_size])
        images, good, failures = _decode_chunk(chunk, sizes)
        skipped += [{"path": str(chunk[i]), "reason": reason} for i, reason in sorted(failures.items())]
        scored += [chunk[i] for i in good]
        for (model, meta), generator, column in zip(models, generators, columns):
            batch_images = images[checkpoint_canvas(meta)]
            for b in range(0, len(batch_images), batch_size):
                for values, part in zip(column, _mc_batch(model, meta, batch_images[b:b + batch_size], T, score,
                                                          device, generator)):
                    values.append(part)
        bar.update(len(chunk))
    bar.close()

    def joined(parts: list[torch.Tensor], dtype, empty=(0,)) -> np.ndarray:
        return torch.cat(parts).numpy().astype(dtype) if parts else np.empty(empty, dtype=dtype)
    outputs = [ModelOutputs(joined(p, np.int64), joined(c, np.float64), joined(u, np.float64),
                            joined(m, np.float64, (0, len(meta["class_names"]))))
               for (p, c, u, m), (_, meta) in zip(columns, models)]
    return FileScores(scored, outputs, skipped)


# ============================================================================ one row per image

def predictions_table(paths: list[str], class_names: list[str], outputs: list[ModelOutputs],
                      rule: cascade.ReferralRule | None = None, class_probabilities: bool = False,
                      top_k: int = 0) -> pd.DataFrame:
    """One row per image: path, predicted_label, confidence, uncertainty; with two models also
    predicted_label_b, confidence_b, uncertainty_b, disagreement; and `referred` (the
    referral rule of the thresholds; without one: the models disagree, or False for one model).
    class_probabilities: also prob_<class> per class, model A's mean MC probability (columns
    start with 'prob_', so a class name never makes a header a formula); top_k: also
    top<i>_label, top<i>_prob for i = 1..k (k at most the number of classes), model A's k most
    probable classes."""
    a = outputs[0]
    rows = pd.DataFrame({"path": list(paths), "predicted_label": [class_names[i] for i in a.pred],
                         "confidence": a.confidence, "uncertainty": a.uncertainty})
    mean = np.asarray(a.probabilities, dtype=np.float64).reshape(len(rows), len(class_names))
    if class_probabilities:
        for c, name in enumerate(class_names):
            rows[f"prob_{name}"] = mean[:, c]
    order = np.argsort(-mean, axis=1, kind="stable")  # ties: the lower class index first, as argmax
    for i in range(min(top_k, len(class_names))):
        rows[f"top{i + 1}_label"] = [class_names[j] for j in order[:, i]]
        rows[f"top{i + 1}_prob"] = mean[np.arange(len(rows)), order[:, i]]
    b = outputs[1] if len(outputs) > 1 else None
    if b is not None:
        rows["predicted_label_b"] = [class_names[i] for i in b.pred]
        rows["confidence_b"] = b.confidence
        rows["uncertainty_b"] = b.uncertainty
        rows["disagreement"] = a.pred != b.pred
    if rule is not None:
        rows["referred"] = cascade.refer(a.pred, b.pred if b is not None else a.pred, a.uncertainty,
                                         b.uncertainty if b is not None else a.uncertainty, rule)
    else:
        rows["referred"] = rows["disagreement"] if b is not None else False
    return rows


def skipped_table(skipped: list[dict]) -> pd.DataFrame:
    """The files left out as a table (path, reason), for skipped_inputs.csv."""
    return pd.DataFrame(skipped, columns=["path", "reason"])
