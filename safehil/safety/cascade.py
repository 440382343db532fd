"""The safety cascade as a library: two diverse models + MC-dropout uncertainty + disagreement
decide which images go to a person (evaluate_safety.py measures it, review.py applies it).

Holds the mechanisms compared (`MODES`), the per-image scores of a model pair on one split
(`Scores`), the referral rule (`referred_mask`, `decision`), threshold calibration for a target
undetected-error rate, either fitted to the calibration split (`calibrate`, `calibrate_mode`) or
certified by Learn then Test along a path fixed before any score is seen (`fixed_path`,
`certify_mode`, `calibrate_modes`), the workload sweep along the calibration split's quantiles
(`quantile_path`, `sweep`), the
safety metrics with exact Clopper-Pearson bounds (`safety_metrics`, `evaluate_split`,
`clopper_pearson`), saved thresholds applied to new images (`ReferralRule`,
`read_referral_rule`, `refer`), and models -> scores (`load_pair`, `mc_outputs`).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from safehil.safety import risk_control
from safehil.uq import uncertainty
from safehil.data.datasets import ImageSet
from safehil.safety.risk_control import clopper_pearson  # the exact binomial bounds of the safety metrics
from safehil.training.models import load_trained_model
from safehil.core.utils import InputError, atomic_write_json, file_sha256, read_json

# The mechanisms compared. Each is (uses uncertainty of model A, of model B, uses disagreement,
# whose prediction is accepted automatically).
MODES = {
    "model_a_alone": (False, False, False, "a"),
    "uncertainty_a": (True, False, False, "a"),
    "uncertainty_b": (False, True, False, "b"),
    "disagreement": (False, False, True, "a"),
    "cascade": (True, True, True, "a"),
}
MODE_TITLES = {
    "model_a_alone": "model A alone (nothing referred)",
    "uncertainty_a": "uncertainty only (model A)",
    "uncertainty_b": "uncertainty only (model B)",
    "disagreement": "disagreement only (A vs B)",
    "cascade": "both: disagreement + uncertainty",
}
SWEPT_MODES = ("uncertainty_a", "uncertainty_b", "cascade")
# With one model there is no B and no disagreement: these are the mechanisms it has.
ONE_MODEL_MODES = ("model_a_alone", "uncertainty_a")


def headline_mode(two_models: bool) -> str:
    """The mechanism that decides the referral: the cascade for a pair, model A's uncertainty for one model."""
    return "cascade" if two_models else "uncertainty_a"
# How thresholds are chosen: certified by Learn then Test, or fitted to the calibration split.
CALIBRATION_METHODS = ("ltt", "empirical")


# ============================================================================ the cascade on scores

@dataclass
class Scores:
    """Per-image outputs of both models on one split (numpy arrays of length N)."""
    labels: np.ndarray        # int [N]
    pred_a: np.ndarray        # int [N], argmax of model A's mean MC probabilities
    pred_b: np.ndarray        # int [N]
    unc_a: np.ndarray         # float [N], uncertainty score of model A
    unc_b: np.ndarray         # float [N]

    @property
    def disagree(self) -> np.ndarray:
        return self.pred_a != self.pred_b

    def __len__(self) -> int:
        return len(self.labels)


def referred_mask(s: Scores, mode: str, threshold_a: float, threshold_b: float) -> np.ndarray:
    """bool [N]: which images the mechanism `mode` sends to a person (uncertainty above its
    threshold, or not a number)."""
    use_a, use_b, use_dis, _ = MODES[mode]
    referred = np.zeros(len(s), dtype=bool)
    if use_a:
        referred |= ~(s.unc_a <= threshold_a)
    if use_b:
        referred |= ~(s.unc_b <= threshold_b)
    if use_dis:
        referred |= s.disagree
    return referred


def decision(s: Scores, mode: str) -> np.ndarray:
    """int [N]: the automatic prediction of `mode` (model A's, or B's for uncertainty_b)."""
    return s.pred_b if MODES[mode][3] == "b" else s.pred_a


def max_undetected(target: float, n: int) -> int:
    """The most undetected errors out of n that keep the rate at or below `target`."""
    return math.floor(target * n + 1e-9)


def _candidates(values: np.ndarray, max_candidates: int) -> np.ndarray:
    """Sorted thresholds to try: -inf (refer every image) then the distinct values (or quantiles of them)."""
    distinct = np.unique(values[np.isfinite(values)]) if len(values) else np.array([])
    if len(distinct) > max_candidates - 1:
        idx = np.unique(np.round(np.linspace(0, len(distinct) - 1, max_candidates - 1)).astype(int))
        distinct = distinct[idx]  # always keeps the largest value
    return np.concatenate([[-np.inf], distinct])


def calibrate(uncertainties: list[np.ndarray], eligible: np.ndarray, wrong: np.ndarray, target: float,
              max_candidates: int = 1000) -> dict:
    """Thresholds (one per uncertainty array, 1 or 2 of them) with the smallest referral rate
    whose undetected-error rate stays at or below `target`.

    uncertainties: list of float [N]; an image is accepted when every score is <= its threshold
    and it is `eligible` (bool [N], e.g. the models agree). wrong: bool [N], the accepted
    decision would be wrong. Undetected-error rate = accepted and wrong, over all N.
    Exact over the candidate grid: a cumulative histogram over the threshold ranks counts
    accepted / undetected images for every threshold combination at once. Ties prefer fewer
    undetected errors, then smaller (more cautious) thresholds. Returns {'thresholds',
    'referral_rate', 'undetected_rate', 'undetected', 'n'}.
    """
    n = len(wrong)
    if n == 0:
        raise ValueError("cannot calibrate on an empty split")
    if not 1 <= len(uncertainties) <= 2:
        raise ValueError(f"calibrate takes 1 or 2 uncertainty arrays, got {len(uncertainties)}")
    cands = [_candidates(u[eligible], max_candidates) for u in uncertainties]
    shape = tuple(len(c) for c in cands)
    # rank r: the image is accepted at threshold index j exactly when r <= j
    ranks = [np.searchsorted(c, u, side="left") for c, u in zip(cands, uncertainties)]
    keep = eligible.copy()
    for r, k in zip(ranks, shape):
        keep &= r < k
    index = tuple(r[keep] for r in ranks)
    accepted = np.zeros(shape, dtype=np.int64)
    undetected = np.zeros(shape, dtype=np.int64)
    np.add.at(accepted, index, 1)
    np.add.at(undetected, index, wrong[keep].astype(np.int64))
    for axis in range(len(shape)):
        accepted = accepted.cumsum(axis)
        undetected = undetected.cumsum(axis)
    allowed = undetected <= max_undetected(target, n)
    rank_sum = sum(np.indices(shape))
    # lexicographic: most accepted, then fewest undetected, then the most cautious thresholds
    order = np.lexsort((rank_sum.ravel(), undetected.ravel(), -np.where(allowed, accepted, -1).ravel()))
    best = np.unravel_index(int(order[0]), shape)
    acc, und = int(accepted[best]), int(undetected[best])
    return {"thresholds": [float(c[i]) for c, i in zip(cands, best)], "referral_rate": 1 - acc / n,
            "undetected_rate": und / n, "undetected": und, "n": n}


def calibrate_mode(s: Scores, mode: str, target: float, max_candidates: int = 1000) -> dict:
    """Calibrate the thresholds of one mechanism on `s` -> {'threshold_a', 'threshold_b', ...}."""
    use_a, use_b, use_dis, _ = MODES[mode]
    eligible = ~s.disagree if use_dis else np.ones(len(s), dtype=bool)
    wrong = decision(s, mode) != s.labels
    arrays = [u for u, used in ((s.unc_a, use_a), (s.unc_b, use_b)) if used]
    out = {"threshold_a": math.inf, "threshold_b": math.inf}
    if arrays:
        res = calibrate(arrays, eligible, wrong, target, max_candidates)
        thresholds = iter(res["thresholds"])
        if use_a:
            out["threshold_a"] = next(thresholds)
        if use_b:
            out["threshold_b"] = next(thresholds)
    referred = referred_mask(s, mode, out["threshold_a"], out["threshold_b"])
    undetected = int((~referred & wrong).sum())
    out.update(referral_rate=float(referred.mean()), undetected_rate=undetected / len(s),
               target_met=undetected <= max_undetected(target, len(s)))
    return out


def safety_metrics(labels: np.ndarray, pred: np.ndarray, referred: np.ndarray, confidence: float = 0.95,
                   two_sided: bool = False) -> dict:
    """Workload and residual risk of one referral decision. All arrays [N].

    referral_rate: share sent to a person; automatic_accuracy: accuracy on the rest;
    undetected_rate: wrong and not referred, over all N, with its Clopper-Pearson bound;
    errors_caught: share of the model's wrong predictions that were referred.
    """
    n = len(labels)
    wrong = pred != labels
    auto = ~referred
    undetected = int((auto & wrong).sum())
    lower, upper = clopper_pearson(undetected, n, confidence, two_sided)
    n_auto, n_wrong = int(auto.sum()), int(wrong.sum())
    return {
        "n": n, "referred": int(referred.sum()), "referral_rate": float(referred.mean()) if n else math.nan,
        "automatic": n_auto,
        "automatic_accuracy": float((~wrong[auto]).mean()) if n_auto else math.nan,
        "undetected": undetected, "undetected_rate": undetected / n if n else math.nan,
        "undetected_lower": lower, "undetected_upper": upper,
        "errors": n_wrong, "errors_caught": float((wrong & referred).sum() / n_wrong) if n_wrong else math.nan,
        "accuracy": float((~wrong).mean()) if n else math.nan,
    }


def evaluate_split(s: Scores, thresholds: dict[str, dict], class_names: list[str], confidence: float = 0.95,
                   two_sided: bool = False) -> dict:
    """{mode: metrics + 'per_class': {class: metrics}} for every mechanism on one split."""
    out = {}
    for mode, th in thresholds.items():
        referred = referred_mask(s, mode, th["threshold_a"], th["threshold_b"])
        pred = decision(s, mode)
        metrics = safety_metrics(s.labels, pred, referred, confidence, two_sided)
        metrics["per_class"] = {
            name: safety_metrics(s.labels[s.labels == c], pred[s.labels == c], referred[s.labels == c],
                                 confidence, two_sided)
            for c, name in enumerate(class_names)}
        out[mode] = metrics
    return out


def quantile_path(calib: Scores, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The shared-quantile path: thresholds of model A and model B at the calibration split's
    uncertainty quantiles at each level. levels: float [L] in [0, 1] -> (threshold_a [L],
    threshold_b [L]); level 0 is -inf (refer every image), level 1 the largest value. Ascending
    levels run from the most to the least conservative thresholds."""
    levels = np.asarray(levels, dtype=float)

    def along(u: np.ndarray) -> np.ndarray:
        return np.where(levels <= 0, -np.inf, np.quantile(u, levels))

    return along(calib.unc_a), along(calib.unc_b)


def sweep(s: Scores, calib: Scores, levels: np.ndarray, modes: tuple[str, ...] = tuple(MODES)) -> pd.DataFrame:
    """Workload vs undetected errors on `s` along the shared-quantile path of the calibration
    split `calib` (`quantile_path`): the thresholds never come from `s` itself. `modes`: the
    mechanisms to sweep (ONE_MODEL_MODES for one model)."""
    rows = []
    path_a, path_b = quantile_path(calib, levels)
    for mode in (m for m in SWEPT_MODES if m in modes):
        for q, ta, tb in zip(levels, path_a, path_b):
            referred = referred_mask(s, mode, ta, tb)
            m = safety_metrics(s.labels, decision(s, mode), referred)
            rows.append({"mode": mode, "level": float(q), "threshold_a": float(ta), "threshold_b": float(tb),
                         **{k: m[k] for k in ("referral_rate", "undetected_rate", "undetected",
                                              "automatic_accuracy", "n")}})
    for mode in (m for m in ("model_a_alone", "disagreement") if m in modes):
        m = safety_metrics(s.labels, decision(s, mode), referred_mask(s, mode, math.inf, math.inf))
        rows.append({"mode": mode, "level": math.nan, "threshold_a": math.inf, "threshold_b": math.inf,
                     **{k: m[k] for k in ("referral_rate", "undetected_rate", "undetected",
                                          "automatic_accuracy", "n")}})
    return pd.DataFrame(rows)


# ============================================================================ certified thresholds

# The Learn-then-Test path is fixed before any score is seen: both thresholds run together over
# `upper * level ** PATH_POWER` for levels 0..1 (level 0 refers every image). The power puts most
# points near 0, where a confident model's scores lie; the bound `upper` is the largest value the
# score can take (`score_upper_bound`), so the path depends on the score's definition and the
# number of classes, never on the calibration images.
PATH_POWER = 4
# scores bounded by ln(C) (entropies of C-class probabilities); every other score of
# uncertainty.SCORES is a probability or a share and lies in [0, 1]
ENTROPY_SCORES = ("predictive_entropy", "expected_entropy", "mutual_information")


def score_upper_bound(score: str, num_classes: int) -> float:
    """The largest value of an uncertainty score of C-class probabilities: ln C for the entropies,
    1 for the others (variation ratio, 1 - margin, least confidence)."""
    return math.log(num_classes) if score in ENTROPY_SCORES else 1.0


def fixed_path(points: int, upper_a: float, upper_b: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The threshold path of Learn then Test, fixed in advance: levels float [L] = 0..1 and the
    thresholds of model A and B [L] at each level (`upper * level ** PATH_POWER`, -inf at level 0),
    ordered from the most to the least conservative."""
    levels = np.linspace(0.0, 1.0, points)
    along = np.where(levels <= 0, -np.inf, levels ** PATH_POWER)
    return levels, upper_a * along, upper_b * along


def path_errors(s: Scores, mode: str, path_a: np.ndarray, path_b: np.ndarray) -> np.ndarray:
    """int [L]: the undetected errors (wrong and not referred) of `mode` on `s` at each point of a
    path whose thresholds never fall (path_a, path_b float [L], ascending). Counted at once: an
    image is accepted from the first point where both its scores are within the thresholds."""
    use_a, use_b, use_dis, _ = MODES[mode]
    wrong = decision(s, mode) != s.labels
    if use_dis:
        wrong &= ~s.disagree
    first = np.zeros(len(s), dtype=np.int64)
    for used, path, u in ((use_a, path_a, s.unc_a), (use_b, path_b, s.unc_b)):
        if used:  # accepted at j exactly when u <= path[j]; NaN scores are never accepted
            rank = np.searchsorted(path, np.where(np.isnan(u), np.inf, u), side="left")
            first = np.maximum(first, np.where(np.isnan(u), len(path), rank))
    counts = np.bincount(first[wrong & (first < len(path_a))], minlength=len(path_a))
    return np.cumsum(counts)[:len(path_a)]


def certify_mode(calib: Scores, mode: str, alpha: float, delta: float, path_points: int = 1000,
                 score_bounds: tuple[float, float] = (1.0, 1.0)) -> tuple[dict, pd.DataFrame]:
    """Learn-then-Test thresholds of one mechanism, tested on the calibration split.

    The path: `path_points` points of `fixed_path` up to `score_bounds` (the largest value each
    model's score can take, `score_upper_bound`): fixed before the calibration scores are seen,
    as the theorem assumes; a mechanism without thresholds has a one-point path (itself). At each
    point the undetected errors on `calib` give the exact binomial p-value of H0: risk > alpha,
    and the fixed-sequence test keeps the least conservative point rejected at delta
    (risk_control.certify_counts). Guarantee: with probability >= 1 - delta over the draw of the
    calibration images (exchangeable with the new ones), the undetected-error rate on new images
    is <= alpha. tests/safety/test_cascade.py checks it over many simulated draws at alpha = 0.1 %.
    Not certified: thresholds that refer every image, marked certified = False, never passed
    off as certified. Returns ({'threshold_a', 'threshold_b', 'level', 'referral_rate',
    'undetected_rate', 'undetected', 'target_met', 'path', **certificate summary}, path table
    with one row per point: level, threshold_a, threshold_b, undetected, pvalue, chosen).
    """
    use_a, use_b, _, _ = MODES[mode]
    if use_a or use_b:
        levels, path_a, path_b = fixed_path(path_points, *score_bounds)
        path_a = path_a if use_a else np.full(path_points, math.inf)
        path_b = path_b if use_b else np.full(path_points, math.inf)
    else:
        levels, path_a, path_b = np.array([math.nan]), np.array([math.inf]), np.array([math.inf])
    errors = path_errors(calib, mode, path_a, path_b)
    cert = risk_control.certify_counts(errors, len(calib), alpha, delta)
    j = cert.index
    if j is not None:
        ta, tb, level = float(path_a[j]), float(path_b[j]), float(levels[j])
    else:  # refer every image the mechanism can refer
        ta, tb, level = (-math.inf if use_a else math.inf), (-math.inf if use_b else math.inf), float(levels[0])
    referred = referred_mask(calib, mode, ta, tb)
    undetected = int((~referred & (decision(calib, mode) != calib.labels)).sum())
    summary = {k: v for k, v in cert.to_dict().items() if k not in ("errors", "pvalues", "index")}
    chosen = {"threshold_a": ta, "threshold_b": tb, "level": level, "referral_rate": float(referred.mean()),
              "undetected_rate": undetected / len(calib), "undetected": undetected,
              "target_met": cert.certified, **summary,
              "path": {"kind": "fixed", "points": int(len(levels)), "power": PATH_POWER,
                       "upper_a": float(score_bounds[0]), "upper_b": float(score_bounds[1])}}
    path = pd.DataFrame({"mode": mode, "level": levels, "threshold_a": path_a, "threshold_b": path_b,
                         "undetected": errors, "pvalue": cert.pvalues,
                         "chosen": np.arange(len(errors)) == (-1 if j is None else j)})
    return chosen, path


def calibrate_modes(calib: Scores, method: str, alpha: float, delta: float, max_candidates: int = 1000,
                    score_bounds: tuple[float, float] = (1.0, 1.0), modes: tuple[str, ...] = tuple(MODES)
                    ) -> tuple[dict[str, dict], pd.DataFrame | None]:
    """Thresholds of every mechanism in `modes` (all; ONE_MODEL_MODES for one model) from the
    calibration split `calib` alone.

    method 'ltt': certified by Learn then Test (`certify_mode`, `max_candidates` points on the
    fixed path up to `score_bounds`); 'empirical': the least workload whose undetected-error rate
    on `calib` itself is <= alpha (`calibrate_mode`, no guarantee for new images; delta unused).
    Returns ({mode: thresholds and their summary}, the LTT path table or None).
    """
    if method == "empirical":
        return {mode: calibrate_mode(calib, mode, alpha, max_candidates) for mode in modes}, None
    if method != "ltt":
        raise ValueError(f"unknown calibration method {method!r}; choose from {CALIBRATION_METHODS}")
    certified = {mode: certify_mode(calib, mode, alpha, delta, max_candidates, score_bounds) for mode in modes}
    return ({mode: chosen for mode, (chosen, _) in certified.items()},
            pd.concat([path for _, path in certified.values()], ignore_index=True))


def calibration_summary(thresholds: dict[str, dict], method: str, alpha: float, delta: float, n: int,
                        calib_used_in_training: bool | None = None, mode: str = "cascade") -> dict:
    """What the thresholds of the deciding mechanism `mode` (`headline_mode`: the cascade for a
    pair, uncertainty_a for one model) promise, for thresholds.json and safety.json: method,
    mode, alpha, delta (None for 'empirical'), n, certified, the guarantee in words (with the
    path and what it assumes of the calibration split), and (ltt) the smallest alpha this n can
    certify and the images alpha needs.
    calib_used_in_training: whether the models' training or early stopping saw the calibration
    split (None: not known); the guarantee says so, since it needs images the models never saw."""
    if method == "empirical":
        return {"method": method, "mode": mode, "alpha": alpha, "delta": None, "n": n, "certified": False,
                "guarantee": f"none: the thresholds keep the undetected-error rate <= {alpha:g} on the {n} "
                             "calibration images themselves, with no guarantee for new images"}
    c = thresholds[mode]
    guarantee = c["guarantee"]
    if c["certified"]:
        p = c.get("path", {})
        guarantee += (f"; the {p.get('points', '?')}-point threshold path (a fixed grid up to the scores' bounds "
                      f"{p.get('upper_a', float('nan')):.4g} / {p.get('upper_b', float('nan')):.4g}) was fixed before "
                      "the calibration scores were seen; it holds for new images drawn like the calibration images "
                      "(same process, same models)")
        guarantee += {True: "; NOT for this run as it stands: the models' training or early stopping used the "
                            "calibration split, so its scores are optimistic",
                      False: "; the calibration split was used neither for training nor for early stopping",
                      None: "; it assumes the calibration split was used neither for training nor for early "
                            "stopping"}[calib_used_in_training]
    return {"method": method, "mode": mode, "alpha": alpha, "delta": delta, "n": n, "certified": c["certified"],
            "guarantee": guarantee, "smallest_certifiable_alpha": c["smallest_certifiable_alpha"],
            "images_needed": risk_control.required_calibration_size(alpha, delta),
            "path": c.get("path"), "calib_used_in_training": calib_used_in_training}


# ============================================================================ thresholds.json, written and read here only

THRESHOLDS_FORMAT = 2  # 1: no certificate (before models and data were bound to it); 2: certificate + sha256


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 over a model's parameters and buffers (names, shapes, dtypes, bytes): two files that
    hold the same weights (a copy, or the same weights saved with other metadata) hash alike."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tuple(tensor.shape)}:{t.dtype};".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def checkpoint_record(path: str | Path, model: torch.nn.Module | None = None) -> dict:
    """What a certificate records of one checkpoint: its path, file sha256 and (given the loaded
    model) weights sha256."""
    record = {"path": str(path), "sha256": file_sha256(path)}
    if model is not None:
        record["weights_sha256"] = weights_sha256(model)
    return record


def data_fingerprint(root: str | Path, paths: list[str], labels: list[str]) -> dict:
    """{'n', 'sha256'} of a split: sha256 over its sorted (path, label, sha256 of the file's bytes)
    rows, so a changed, added, removed or relabelled image changes it."""
    rows = sorted(zip(map(str, paths), map(str, labels)))
    digest = hashlib.sha256()
    for path, label in rows:
        digest.update(f"{path}\t{label}\t{file_sha256(Path(root) / path)}\n".encode())
    return {"n": len(rows), "sha256": digest.hexdigest()}


def _document_sha256(doc: dict) -> str:
    """sha256 over the canonical JSON of a thresholds document without its own 'sha256' key: every
    field, present and future (a one-model mode, a threshold path), is covered."""
    body = {k: v for k, v in doc.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_thresholds(path: str | Path, doc: dict) -> Path:
    """Write thresholds.json atomically with 'format' and a 'sha256' over everything else
    (`read_thresholds` detects any later edit). `doc` holds score, T, target, calib_split,
    calibration, class_names, modes and 'certificate': {'models': {role: checkpoint_record},
    'calibration_data': data_fingerprint, ...}; a writer may add fields (all are hashed)."""
    plain = json.dumps({**doc, "format": THRESHOLDS_FORMAT}, default=lambda o: o.tolist() if hasattr(o, "tolist")
                       else str(o))  # numpy / torch numbers and arrays as JSON, paths as text
    body = json.loads(plain)
    body["sha256"] = _document_sha256(body)
    return atomic_write_json(path, body)


def read_thresholds(path: str | Path) -> tuple[dict, list[str]]:
    """A thresholds.json -> (its document, reasons it cannot be trusted as certified: edited by
    hand since it was written, or written before certificates recorded their models).
    Not a JSON object: an InputError naming the file."""
    try:
        doc = read_json(path)
    except ValueError as e:
        raise InputError(str(e)) from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: not a thresholds.json of evaluate_safety.py (a JSON object expected)")
    if "sha256" not in doc or not isinstance(doc.get("certificate"), dict):
        return doc, [f"{path} records no hashes of the models it was calibrated for (written before "
                     "certificates were bound to their models); rerun evaluate_safety.py to certify"]
    if doc["sha256"] != _document_sha256(doc):
        return doc, [f"{path} was edited after evaluate_safety.py wrote it (its sha256 no longer matches the "
                     "content); rerun evaluate_safety.py instead of editing thresholds by hand"]
    return doc, []


def check_certificate(doc: dict, source: str | Path, checkpoints: dict[str, str | Path]) -> None:
    """Refuse (InputError, one line with the fix) thresholds applied to checkpoints other than the
    ones they were calibrated for. checkpoints: {role ('a', 'b'): path} given by the caller; each
    role must be recorded in the certificate with the same file sha256 (a retrained best.pt at the
    same path is another model). A swapped pair is named as such. Documents without a certificate
    are `read_thresholds`'s to flag, not refused here."""
    recorded = (doc.get("certificate") or {}).get("models") or {}
    if not recorded:
        return
    given = {role: file_sha256(p) for role, p in checkpoints.items() if p}
    names = {"a": "model A", "b": "model B"}
    wrong = [role for role, sha in given.items() if (recorded.get(role) or {}).get("sha256") != sha]
    if not wrong:
        return
    if set(given) == {"a", "b"} and all((recorded.get(o) or {}).get("sha256") == given[r]
                                        for r, o in (("a", "b"), ("b", "a"))):
        raise InputError(f"{source}: the two checkpoints are swapped (model A was {recorded['a'].get('path')}, "
                         f"model B {recorded['b'].get('path')}); pass them in that order")
    role = wrong[0]
    if role not in recorded:
        raise InputError(f"{source}: certifies no {names.get(role, role)} (it was calibrated for "
                         f"{', '.join(names.get(r, r) for r in recorded)} only); run evaluate_safety.py for the "
                         "models you apply it to")
    raise InputError(f"{source}: certified for {names.get(role, role)} = {recorded[role].get('path')} (sha256 "
                     f"{str(recorded[role].get('sha256'))[:12]}...), not {checkpoints[role]} (sha256 "
                     f"{given[role][:12]}...: another model, or the file was retrained); run evaluate_safety.py "
                     "for these checkpoints")


# ============================================================================ applying saved thresholds

@dataclass(frozen=True)
class ReferralRule:
    """Calibrated thresholds of one mechanism, read from evaluate_safety.py's thresholds.json."""
    mode: str                 # 'cascade' for a model pair, 'uncertainty_a' for model A alone
    threshold_a: float
    threshold_b: float
    score: str                # the uncertainty score the thresholds apply to
    T: int | None             # MC samples used in calibration (None: not recorded)
    certified: bool           # set only by certificate.verified_rule (the decision re-run); False: see not_certified
    source: str               # the file
    not_certified: tuple[str, ...] = ()  # why the rule is not certified, one sentence each
    alpha: float | None = None   # the certified (or targeted) undetected-error rate
    delta: float | None = None   # the certificate's failure probability (None: empirical)
    n: int | None = None         # calibration images
    smallest_certifiable_alpha: float | None = None  # what this n can certify (ltt)
    images_needed: int | None = None                 # calibration images alpha needs (ltt)

    @property
    def certificate(self) -> str:
        """The promise in one line: 'alpha = 0.01, delta = 0.05, n = 600 (certified)'."""
        if self.alpha is None:
            return "no certificate recorded"
        what = "certified" if self.certified else "NOT certified"
        return f"alpha = {self.alpha:g}, delta = {self.delta if self.delta is None else f'{self.delta:g}'}, " \
               f"n = {self.n} ({what})"


def read_referral_rule(path: str | Path, class_names: list[str], two_models: bool,
                       checkpoints: dict[str, str | Path] | None = None) -> ReferralRule:
    """The rule to apply from a thresholds.json: mechanism 'cascade' (disagreement + both
    uncertainties) for a pair, 'uncertainty_a' (model A's uncertainty alone) for one model.

    checkpoints ({'a': path[, 'b': path]}): the models it is applied to; thresholds certified for
    other checkpoints are refused (`check_certificate`). The rule returned is never certified:
    `certificate.verified_rule` re-runs the decision from the file's evidence against the models
    in use; `not_certified` holds why the file itself cannot be trusted (`read_thresholds`). Errors (an InputError naming the file): not a
    thresholds.json, no such mechanism, other classes, other checkpoints.
    """
    saved, distrust = read_thresholds(path)
    mode = headline_mode(two_models)
    try:
        th = saved["modes"][mode]
        ta, tb = float(th["threshold_a"]), float(th["threshold_b"])
    except (KeyError, TypeError, ValueError):
        if isinstance(saved, dict) and isinstance(saved.get("modes"), dict) and two_models:
            raise InputError(f"{path}: calibrated for one model (no cascade thresholds); pass that one checkpoint, "
                             "or calibrate the pair with evaluate_safety.py --checkpoints A,B") from None
        raise InputError(f"{path}: not a thresholds.json of evaluate_safety.py (no modes.{mode} with "
                         "threshold_a and threshold_b)") from None
    if saved.get("class_names") and list(saved["class_names"]) != list(class_names):
        raise InputError(f"{path}: thresholds were calibrated for classes {saved['class_names']}, "
                         f"the model has {list(class_names)}")
    if checkpoints and not distrust:
        check_certificate(saved, path, checkpoints)
    calibration = saved.get("calibration") or {}
    ltt = calibration.get("method", "ltt") == "ltt"
    # never certified here: certificate.verified_rule re-runs the decision from the file's evidence against
    # the models it is applied to (a stored 'certified' is never read)
    return ReferralRule(mode, ta, tb, str(saved.get("score") or "predictive_entropy"),
                        int(saved["T"]) if saved.get("T") else None, False, str(path), tuple(distrust),
                        alpha=th.get("alpha", calibration.get("alpha", saved.get("target"))),
                        delta=th.get("delta", calibration.get("delta")) if ltt else None,
                        n=th.get("n", calibration.get("n")))


def refer(pred_a: np.ndarray, pred_b: np.ndarray, unc_a: np.ndarray, unc_b: np.ndarray,
          rule: ReferralRule) -> np.ndarray:
    """bool [N]: the images `rule` sends to a person (`referred_mask` on unlabelled images; all
    arrays [N], pred_b = pred_a and unc_b anything for one model)."""
    scores = Scores(np.full(len(pred_a), -1), np.asarray(pred_a), np.asarray(pred_b), np.asarray(unc_a, float),
                    np.asarray(unc_b, float))
    return referred_mask(scores, rule.mode, rule.threshold_a, rule.threshold_b)


# ============================================================================ models -> scores

def load_pair(path_a: str | Path, path_b: str | Path, device: torch.device):
    """Load both checkpoints -> ((model_a, meta_a), (model_b, meta_b)); their class names must match."""
    loaded = []
    for path in (path_a, path_b):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: checkpoint not found (train one with train_model.py)")
        loaded.append(load_trained_model(path, device))
    names_a, names_b = loaded[0][1]["class_names"], loaded[1][1]["class_names"]
    if list(names_a) != list(names_b):
        raise InputError(f"{path_a} and {path_b} have different classes: {names_a} vs {names_b}; "
                         "the cascade needs two models of the same task")
    return loaded


def mc_outputs(model, meta: dict, data: ImageSet, T: int, batch_size: int, device: torch.device,
               seed: int) -> tuple[np.ndarray, torch.Tensor]:
    """MC-dropout probabilities [T, N, C] of one model on one split -> (prediction [N], probs)."""
    generator = torch.Generator().manual_seed(seed)  # CPU masks: the same draws on any device
    probs = uncertainty.mc_dropout_predict(model, data, meta["mean"], meta["std"], device, T,
                                           batch_size=batch_size, generator=generator)
    return probs.mean(0).argmax(1).numpy(), probs


def pair_disagreement(a: pd.DataFrame, b: pd.DataFrame) -> dict:
    """How often two models' predictions differ on the same images, and how many errors agreement hides.

    a, b: one row per image with columns path, label, predicted (class indices), e.g. two runs'
    test_predictions.csv for one split, matched on path. -> {'n', 'disagreement' (share of images
    where the predictions differ: what the cascade refers), 'agree_wrong' (share where both give the
    same wrong label: what disagreement cannot catch), 'wrong_a', 'wrong_b' (each model's error rate)}.
    """
    both = a[["path", "label", "predicted"]].merge(b[["path", "predicted"]], on="path", suffixes=("_a", "_b"))
    if len(both) != len(a) or len(both) != len(b):
        raise ValueError(f"the two prediction tables cover different images ({len(a)} and {len(b)} rows, "
                         f"{len(both)} in common)")
    n = len(both)
    differ = both["predicted_a"] != both["predicted_b"]
    wrong_a, wrong_b = both["predicted_a"] != both["label"], both["predicted_b"] != both["label"]
    share = (lambda mask: float(mask.mean())) if n else (lambda mask: math.nan)
    return {"n": int(n), "disagreement": share(differ), "agree_wrong": share(~differ & wrong_a),
            "wrong_a": share(wrong_a), "wrong_b": share(wrong_b)}
