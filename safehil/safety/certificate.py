"""Certificates that are computed, never read: "certified" is the Learn-then-Test decision re-run
from its evidence against the artefacts in use, wherever it is shown.

evaluate_safety.py writes the evidence into thresholds.json (`evidence`): the per-image
calibration record (each image's content sha256, label, both predictions and both uncertainty
scores), n, alpha, delta, the fixed threshold path (points; its bound follows from the score and
the number of classes), the mechanism, score and T, and per model what the decision depends on
(`model_record`: weights sha256, class names, normalisation, canvas, dropout rates, and the content
sha256 of every image its training and early stopping saw). `verify` re-runs the decision from
that record and compares it and every hash with what the caller applies (`applied_model`: a loaded
checkpoint; deploy.py builds the same for an ONNX graph) -> a `Verdict`: certified only when the
decision certifies exactly the thresholds applied, every hash and setting agrees and no calibration
image's content was seen in training; otherwise the reasons, one sentence each. No stored
"certified" boolean is read anywhere.

Threat model (docs/reliability.md): this catches accidents, swapped or retrained models, stale
files and hand edits (a hash recomputed after an edit included); a forger who recomputes every
record consistently is not caught.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from safehil.safety import risk_control
from safehil.safety.cascade import MODES, Scores, certify_mode, score_upper_bound, weights_sha256

EVIDENCE_FORMAT = 1
# the key under which a training run records the content sha256 of every image it trained or early-stopped on
SEEN_IMAGES_KEY = "seen_images_sha256"
ROLE_NAMES = {"a": "model A", "b": "model B"}


# ============================================================================ what the decision depends on

def dropout_rates(model: nn.Module) -> list[float]:
    """The rates p of every dropout layer of `model`, sorted (what MC dropout samples with)."""
    return sorted(float(m.p) for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd))


def deployment_record(meta: dict, dropout: list[float]) -> dict:
    """What turns files into a model's probabilities besides its weights: class names, mean/std,
    the canvas (geometry and size, without the training-only margin) and the dropout rates."""
    from safehil.data.datasets import checkpoint_canvas  # the data layer, only for the canvas rule
    return {"class_names": [str(c) for c in meta["class_names"]],
            "mean": np.atleast_1d(np.asarray(meta["mean"], dtype=float)).tolist(),
            "std": np.atleast_1d(np.asarray(meta["std"], dtype=float)).tolist(), "canvas": checkpoint_canvas(meta).to_dict(),
            "dropout_p": sorted(float(p) for p in dropout)}


PROBE_IMAGES = 2
PROBE_TOLERANCE = 1e-3  # probabilities of the same weights in PyTorch and ONNX Runtime agree far closer


def probe_input(canvas: dict) -> torch.Tensor:
    """A fixed, normalised input of the model's canvas: float [PROBE_IMAGES, 3, H, W], seeded 0."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(PROBE_IMAGES, 3, int(canvas["height"]), int(canvas["width"]), generator=generator)


@torch.no_grad()
def probe_output(model: nn.Module, canvas: dict) -> list[list[float]]:
    """The deterministic network's (dropout off) softmax on `probe_input`: [PROBE_IMAGES][C], on the
    CPU in float32 (a GPU's TF32 convolutions would differ from ONNX Runtime by more than the
    tolerance). Recorded with the certificate, so a graph can be shown to compute the calibrated
    weights by running it."""
    if next(model.parameters()).device.type != "cpu":
        model = copy.deepcopy(model).cpu()
    was_training = model.training
    model.eval()
    try:
        probs = model(probe_input(canvas)).float().softmax(-1)
    finally:
        model.train(was_training)
    return probs.tolist()


def applied_model(model: nn.Module, meta: dict) -> dict:
    """A loaded checkpoint as `verify` compares it: weights sha256, deployment record and the
    training images it records (None: a checkpoint from before they were recorded)."""
    seen = meta.get(SEEN_IMAGES_KEY)
    return {"weights_sha256": weights_sha256(model), **deployment_record(meta, dropout_rates(model)),
            SEEN_IMAGES_KEY: None if seen is None else sorted(map(str, seen))}


def model_record(path, model: nn.Module, meta: dict) -> dict:
    """The evidence's record of one checkpoint: its path and file sha256 and its `probe_output`
    besides `applied_model`."""
    from safehil.core.utils import file_sha256
    record = applied_model(model, meta)
    return {"path": str(path), "sha256": file_sha256(path), **record, "probe": probe_output(model, record["canvas"])}


def calibration_record(scores: Scores, image_sha256: list[str]) -> dict:
    """The per-image calibration record as columns (each a list of length n): content sha256,
    label, both predictions (int) and both uncertainty scores (float; NaN kept)."""
    if len(image_sha256) != len(scores):
        raise ValueError(f"{len(image_sha256)} image hashes for {len(scores)} calibration scores")
    return {"sha256": list(map(str, image_sha256)), "label": scores.labels.astype(int).tolist(),
            "pred_a": scores.pred_a.astype(int).tolist(), "pred_b": scores.pred_b.astype(int).tolist(),
            "unc_a": scores.unc_a.astype(float).tolist(), "unc_b": scores.unc_b.astype(float).tolist()}


def evidence(mode: str, alpha: float, delta: float, path_points: int, score: str, T: int, class_names: list[str],
             models: dict[str, dict], record: dict) -> dict:
    """The evidence of one Learn-then-Test certificate (`verify` re-runs it): models {role: model_record}."""
    return {"format": EVIDENCE_FORMAT, "method": "ltt", "mode": mode, "alpha": float(alpha), "delta": float(delta),
            "n": len(record["label"]), "path_points": int(path_points), "score": score, "T": int(T),
            "class_names": [str(c) for c in class_names], "models": models, "calibration": record}


# ============================================================================ the decision, re-run

@dataclass(frozen=True)
class Verdict:
    """`verify`'s answer. threshold_a/b: what Learn then Test chooses from the evidence (-inf: refer
    every image); reasons: why it is not certified, one sentence each (empty when certified)."""
    certified: bool
    reasons: tuple[str, ...]
    threshold_a: float = math.inf
    threshold_b: float = math.inf
    alpha: float | None = None
    delta: float | None = None
    n: int | None = None
    smallest_certifiable_alpha: float | None = None
    images_needed: int | None = None
    seen_in_training: int = 0   # calibration images whose content a model trained or early-stopped on


def _scores(record: dict) -> Scores:
    """The calibration record's columns -> cascade.Scores (checked: equal lengths, known keys)."""
    cols = {k: np.asarray(record[k]) for k in ("label", "pred_a", "pred_b", "unc_a", "unc_b", "sha256")}
    n = len(cols["label"])
    if any(len(v) != n for v in cols.values()) or n == 0:
        raise ValueError("the calibration record's columns differ in length or are empty")
    return Scores(cols["label"].astype(np.int64), cols["pred_a"].astype(np.int64), cols["pred_b"].astype(np.int64),
                  cols["unc_a"].astype(np.float64), cols["unc_b"].astype(np.float64))


def decide(ev: dict) -> Verdict:
    """Learn then Test re-run from the evidence alone (its record, alpha, delta, mode and the path
    its score and classes fix) -> Verdict with the thresholds it chooses; no hash is compared."""
    try:
        mode, alpha, delta = str(ev["mode"]), float(ev["alpha"]), float(ev["delta"])
        if mode not in MODES or ev.get("method") != "ltt":
            raise ValueError(f"mechanism {mode!r}, method {ev.get('method')!r}")
        calib = _scores(ev["calibration"])
        bound = score_upper_bound(str(ev["score"]), len(ev["class_names"]))
        points = int(ev["path_points"])
        if points < 2 or not 0 < alpha < 1 or not 0 < delta < 1:
            raise ValueError(f"path_points {points}, alpha {alpha}, delta {delta}")
        chosen, _ = certify_mode(calib, mode, alpha, delta, points, (bound, bound))
    except (KeyError, TypeError, ValueError) as e:
        return Verdict(False, (f"the certificate's evidence is missing or malformed ({e}); rerun evaluate_safety.py",))
    recorded_n = ev.get("n")
    reasons = []
    if recorded_n != len(calib):
        reasons.append(f"the evidence says n = {recorded_n} but records {len(calib)} calibration images")
    if not chosen["certified"]:
        reasons.append(chosen["guarantee"])
    return Verdict(not reasons, tuple(reasons), float(chosen["threshold_a"]), float(chosen["threshold_b"]), alpha,
                   delta, len(calib), float(chosen["smallest_certifiable_alpha"]),
                   risk_control.required_calibration_size(alpha, delta))


def _differs(a, b) -> bool:
    """Two recorded values differ (numbers compared to 1e-9 relative, lists element-wise)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) != len(b) or any(_differs(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return set(a) != set(b) or any(_differs(a[k], b[k]) for k in a)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return not (a == b or math.isclose(a, b, rel_tol=1e-9))
    return a != b


def _probe_gap(a, b) -> float:
    """Largest absolute difference of two probe outputs (inf when either is missing or the shapes differ)."""
    try:
        x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        return float(np.abs(x - y).max()) if x.shape == y.shape and x.size else math.inf
    except (TypeError, ValueError):
        return math.inf


def _same_threshold(applied: float, chosen: float) -> bool:
    return applied == chosen or (math.isfinite(applied) and math.isfinite(chosen)
                                 and math.isclose(applied, chosen, rel_tol=1e-12))


def verify(ev: dict | None, applied: dict) -> Verdict:
    """Re-run the decision from the evidence `ev` and compare it with what is applied.

    applied: {'mode', 'threshold_a', 'threshold_b', 'score', 'T', 'class_names', 'models': {role:
    applied_model (or deploy.py's record of a graph: weights_sha256 None when its graph is not bound
    to weights)}}. Certified only when Learn then Test certifies exactly these thresholds for this
    mechanism, score, T and classes, each model's weights, normalisation, canvas and dropout rates
    are the ones calibrated, the models are the same roles, and no calibration image's content is
    among the images any model trained or early-stopped on (a model that records none is not
    certified either). -> Verdict (reasons name each disagreement)."""
    if not isinstance(ev, dict) or not ev:
        return Verdict(False, ("no certificate evidence (a thresholds.json from before certificates were re-run from "
                               "their evidence, or --calibration empirical); rerun evaluate_safety.py",))
    verdict = decide(ev)
    reasons = list(verdict.reasons)
    if verdict.n is None:
        return verdict
    if applied.get("mode") != ev["mode"]:
        reasons.append(f"the mechanism applied ({applied.get('mode')}) is not the one certified ({ev['mode']})")
    elif not (_same_threshold(float(applied["threshold_a"]), verdict.threshold_a)
              and _same_threshold(float(applied["threshold_b"]), verdict.threshold_b)):
        reasons.append(f"the thresholds applied (A {float(applied['threshold_a']):.6g}, B "
                       f"{float(applied['threshold_b']):.6g}) are not the ones Learn then Test chooses from the "
                       f"calibration record (A {verdict.threshold_a:.6g}, B {verdict.threshold_b:.6g})")
    if _differs(applied.get("T"), ev.get("T")):
        reasons.append(f"calibrated with T = {ev.get('T')} MC samples, this run uses T = {applied.get('T')} "
                       f"(pass --T {ev.get('T')})")
    if applied.get("score") != ev.get("score"):
        reasons.append(f"calibrated for the score {ev.get('score')}, this run uses {applied.get('score')}")
    if _differs(applied.get("class_names"), ev.get("class_names")):
        reasons.append(f"the class names in use {applied.get('class_names')} are not the calibrated "
                       f"{ev.get('class_names')}")
    recorded, given = ev.get("models") or {}, applied.get("models") or {}
    if set(recorded) != set(given):
        reasons.append(f"certified for {', '.join(ROLE_NAMES.get(r, r) for r in sorted(recorded)) or 'no model'}, "
                       f"applied to {', '.join(ROLE_NAMES.get(r, r) for r in sorted(given)) or 'no model'}")
    for role in sorted(set(recorded) & set(given)):
        rec, got, name = recorded[role], given[role], ROLE_NAMES.get(role, role)
        if got.get("probe") is not None:  # a graph: it must compute what the calibrated weights computed
            gap = _probe_gap(got["probe"], rec.get("probe"))
            if not gap <= PROBE_TOLERANCE:
                reasons.append(f"{name}'s graph does not compute the calibrated weights (its outputs on the fixed probe "
                               f"differ by {gap:.3g}): another model's graph")
        if got.get("weights_sha256") is None:
            reasons.append(f"{name}'s weights are not bound to the certificate ({got.get('why', 'unknown weights')})")
        elif got["weights_sha256"] != rec.get("weights_sha256"):
            reasons.append(f"{name}'s weights (sha256 {str(got['weights_sha256'])[:12]}...) are not the calibrated "
                           f"ones ({str(rec.get('weights_sha256'))[:12]}...)")
        for key, what in (("class_names", "class names"), ("mean", "normalisation mean"),
                          ("std", "normalisation std"), ("canvas", "geometry"), ("dropout_p", "dropout rates")):
            if _differs(got.get(key), rec.get(key)):
                reasons.append(f"{name}'s {what} {got.get(key)} differ from the calibrated {rec.get(key)}")
        if got.get(SEEN_IMAGES_KEY) is not None and _differs(sorted(got[SEEN_IMAGES_KEY]),
                                                             sorted(rec.get(SEEN_IMAGES_KEY) or [])):
            reasons.append(f"{name}'s recorded training images differ from those the certificate checked")
    calib = set(map(str, (ev.get("calibration") or {}).get("sha256") or []))
    seen_total = set()
    for role in sorted(recorded):
        seen = recorded[role].get(SEEN_IMAGES_KEY)
        if seen is None:
            reasons.append(f"{ROLE_NAMES.get(role, role)} ({recorded[role].get('path')}) records no content hashes "
                           "of the images it trained and early-stopped on, so the calibration images cannot be shown "
                           "unseen; retrain it with train_model.py")
            continue
        overlap = calib & set(map(str, seen))
        seen_total |= overlap
        if overlap:
            reasons.append(f"{len(overlap)} of the {len(calib)} calibration images are, by content, images "
                           f"{ROLE_NAMES.get(role, role)} trained or early-stopped on: calibrate on a split held out "
                           "from training and early stopping (make_splits.py's calib split)")
    reasons = tuple(dict.fromkeys(reasons))
    return Verdict(not reasons, reasons, verdict.threshold_a, verdict.threshold_b, verdict.alpha, verdict.delta,
                   verdict.n, verdict.smallest_certifiable_alpha, verdict.images_needed, len(seen_total))


def verified_rule(rule, ev: dict | None, applied_models: dict[str, dict], score: str, T: int,
                  class_names: list[str]):
    """A cascade.ReferralRule read from a file, certified or not by `verify` against the models in
    use ({role: applied_model or a graph's record}): certified only when the file itself is
    trustworthy (rule.not_certified empty) and the verdict certifies; alpha, delta and n are the
    evidence's (never the file's summary)."""
    from dataclasses import replace
    verdict = verify(ev, {"mode": rule.mode, "threshold_a": rule.threshold_a, "threshold_b": rule.threshold_b,
                          "score": score, "T": T, "class_names": list(class_names), "models": applied_models})
    reasons = tuple(dict.fromkeys(rule.not_certified + verdict.reasons))
    return replace(rule, certified=not reasons, not_certified=reasons,
                   alpha=verdict.alpha if verdict.alpha is not None else rule.alpha,
                   delta=verdict.delta if verdict.delta is not None else rule.delta,
                   n=verdict.n if verdict.n is not None else rule.n,
                   smallest_certifiable_alpha=verdict.smallest_certifiable_alpha,
                   images_needed=verdict.images_needed)
