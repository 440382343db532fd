"""The R4VR safety cascade: two diverse models + MC-dropout uncertainty + disagreement decide
which images go to a person; measure how many wrong predictions stay undetected.

    python evaluate_safety.py --model_a results/train/resnet18_synthetic_noaug_s0/best.pt \\
                              --model_b results/train/vgg16_synthetic_noaug_s0/best.pt
    python evaluate_safety.py --model_a A.pt --model_b B.pt --target 0.001 --T 20 --score predictive_entropy

An image is referred to a person when the two models disagree or either model's
uncertainty (a score of the MC-dropout probabilities [T, N, C], default predictive entropy)
passes its threshold; otherwise the (agreed) prediction is accepted automatically. The
thresholds are calibrated on the validation split only: the pair with the smallest referral
rate whose undetected-error rate (wrong and not referred, over all images) is at or below
`--target` (paper: 0.1 %). They are then applied unchanged to every test split.

Reported per test split (and for valid): referral rate (the person's workload), accuracy of
the automatic decisions, undetected-error rate with an exact Clopper-Pearson upper bound,
all of it per class; a comparison of the mechanisms (model A alone, uncertainty only, model
diversity only, both); and a workload vs undetected-error sweep. Writes
results/safety/<run>/ with config.json, per_image.csv, thresholds.json, safety.json,
comparison.md and sweep.csv (figure: `python plot_results.py results/ --only safety_tradeoff`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import uncertainty
from datasets import MULTI_LABEL_RULES, ImageSet, load_image_sets, load_split_table
from models import load_trained_model
from utils import (atomic_write_csv, atomic_write_json, atomic_write_text, log, parse_config, require,
                   resolve_device, run_main, save_config, seed_everything)

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


@dataclass(frozen=True)
class Config:
    model_a: str = field(default="results/train/resnet18_synthetic_noaug_s0/best.pt", metadata={
        "help": "checkpoint of the primary model (train_model.py best.pt); its prediction is the automatic one"})
    model_b: str = field(default="results/train/vgg16_synthetic_noaug_s0/best.pt", metadata={
        "help": "checkpoint of a second, architecturally different model with the same classes"})
    dataset: str = field(default="", metadata={"help": "data set adapter; empty = the one model A was trained on"})
    data_dir: str = field(default="", metadata={"help": "data root; empty = model A's training data"})
    split_csv: str = field(default="", metadata={"help": "path,label,split CSV; empty = model A's training split"})
    per_class: int = field(default=0, metadata={"help": "synthetic images per class; 0 = model A's"})
    multi_label_rule: str = field(default="", metadata={
        "help": "Severstal multi-label rule; empty = model A's", "choices": ("",) + MULTI_LABEL_RULES})
    calib_split: str = field(default="valid", metadata={"help": "split the thresholds are calibrated on"})
    T: int = field(default=20, metadata={"help": "MC-dropout samples per image (paper: 20 NEU, 40 Severstal)"})
    score: str = field(default="predictive_entropy", metadata={
        "help": "uncertainty score (higher = less certain)", "choices": tuple(uncertainty.SCORES)})
    target: float = field(default=0.001, metadata={
        "help": "largest undetected-error rate allowed on the calibration split (paper: 0.1 %%)"})
    confidence: float = field(default=0.95, metadata={"help": "level of the Clopper-Pearson bound"})
    two_sided: bool = field(default=False, metadata={
        "help": "report the upper end of the two-sided interval instead of the one-sided upper bound"})
    max_candidates: int = field(default=1000, metadata={
        "help": "threshold candidates per model (all distinct validation values when fewer: exact search)"})
    sweep_points: int = field(default=51, metadata={"help": "quantile levels of the workload sweep"})
    batch_size: int = field(default=64, metadata={"help": "images per MC-dropout batch"})
    seed: int = field(default=0, metadata={"help": "seed of the dropout masks"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N"})
    out_dir: str = field(default="results/safety", metadata={"help": "parent folder of run folders"})
    run_name: str = field(default="", metadata={"help": "run folder name; empty = <run A>__<run B>"})

    def __post_init__(self):
        require(self.T >= 2, f"--T must be >= 2 MC samples, got {self.T}")
        require(0 <= self.target < 1, f"--target must be in [0, 1), got {self.target}")
        require(0 < self.confidence < 1, f"--confidence must be in (0, 1), got {self.confidence}")
        require(self.max_candidates >= 2, f"--max_candidates must be >= 2, got {self.max_candidates}")
        require(self.sweep_points >= 2, f"--sweep_points must be >= 2, got {self.sweep_points}")
        require(self.batch_size >= 1, f"--batch_size must be >= 1, got {self.batch_size}")
        require(self.per_class >= 0, f"--per_class must be >= 0, got {self.per_class}")
        require(bool(self.model_a) and bool(self.model_b), "--model_a and --model_b are both needed")


# ============================================================================ exact binomial bounds

def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (exact up to float rounding)."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    j = torch.arange(k + 1, dtype=torch.float64)
    log_pmf = (math.lgamma(n + 1) - torch.lgamma(j + 1) - torch.lgamma(n - j + 1)
               + j * math.log(p) + (n - j) * math.log1p(-p))
    return float(torch.logsumexp(log_pmf, 0).exp().clamp(0.0, 1.0))


def _bisect(fn, target: float, increasing: bool) -> float:
    """Solve fn(p) = target on [0, 1] for a monotone fn by bisection (to float precision)."""
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if (fn(mid) < target) == increasing:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-15:
            break
    return 0.5 * (lo + hi)


def clopper_pearson(k: int, n: int, confidence: float = 0.95, two_sided: bool = False) -> tuple[float, float]:
    """Exact (Clopper-Pearson) bounds (lower, upper) on a binomial rate from k events in n trials.

    One-sided (default): upper solves P(X <= k | p) = 1 - confidence, i.e. the Beta(k+1, n-k)
    quantile at `confidence`; the lower bound is 0. Two-sided: both ends at (1 - confidence) / 2,
    the usual exact interval. Computed by bisection on the binomial CDF (no scipy).
    """
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    alpha = (1 - confidence) / (2 if two_sided else 1)
    upper = 1.0 if k == n else _bisect(lambda p: binomial_cdf(k, n, p), alpha, increasing=False)
    if not two_sided or k == 0:
        lower = 0.0
    else:  # P(X >= k | p) = alpha
        lower = _bisect(lambda p: 1.0 - binomial_cdf(k - 1, n, p), alpha, increasing=True)
    return lower, upper


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


def sweep(s: Scores, calib: Scores, levels: np.ndarray) -> pd.DataFrame:
    """Workload vs undetected errors on `s` when thresholds are the calibration split's
    uncertainty quantiles at each level (0 = refer everything, 1 = the largest value).
    The cascade uses the same quantile level for both models."""
    rows = []
    for mode in SWEPT_MODES:
        for q in levels:
            ta = -math.inf if q <= 0 else float(np.quantile(calib.unc_a, q))
            tb = -math.inf if q <= 0 else float(np.quantile(calib.unc_b, q))
            referred = referred_mask(s, mode, ta, tb)
            m = safety_metrics(s.labels, decision(s, mode), referred)
            rows.append({"mode": mode, "level": float(q), "threshold_a": ta, "threshold_b": tb,
                         **{k: m[k] for k in ("referral_rate", "undetected_rate", "undetected",
                                              "automatic_accuracy", "n")}})
    for mode in ("model_a_alone", "disagreement"):
        m = safety_metrics(s.labels, decision(s, mode), referred_mask(s, mode, math.inf, math.inf))
        rows.append({"mode": mode, "level": math.nan, "threshold_a": math.inf, "threshold_b": math.inf,
                     **{k: m[k] for k in ("referral_rate", "undetected_rate", "undetected",
                                          "automatic_accuracy", "n")}})
    return pd.DataFrame(rows)


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
        raise ValueError(f"{path_a} and {path_b} have different classes: {names_a} vs {names_b}; "
                         "the cascade needs two models of the same task")
    return loaded


def data_spec(cfg: Config, meta_a: dict, meta_b: dict) -> dict:
    """The data to evaluate on: explicit flags, else what model A was trained on. Refuses two
    models trained on different splits unless the split is given explicitly."""
    keys = ("dataset", "data_dir", "split_csv", "per_class", "multi_label_rule", "seed")
    trained_a, trained_b = meta_a.get("config", {}), meta_b.get("config", {})
    explicit = bool(cfg.split_csv or cfg.data_dir)
    if not explicit:
        # the seed only picks the split of layouts without split folders or a split CSV
        seeded = not trained_a.get("split_csv") and trained_a.get("dataset") not in ("synthetic", None)
        differ = [k for k in keys if trained_a.get(k) != trained_b.get(k) and (k != "seed" or seeded)]
        if differ:
            raise ValueError(f"{cfg.model_a} and {cfg.model_b} were trained on different data ({differ} differ); "
                             "pass --dataset/--data_dir/--split_csv to evaluate both on one split")
    spec = {k: trained_a.get(k) for k in keys}
    spec["dataset"] = cfg.dataset or spec["dataset"] or meta_a.get("dataset", "synthetic")
    if explicit:
        spec["data_dir"], spec["split_csv"] = cfg.data_dir, cfg.split_csv
    spec["per_class"] = cfg.per_class or spec["per_class"] or 300
    spec["multi_label_rule"] = cfg.multi_label_rule or spec["multi_label_rule"] or "largest_area"
    spec["seed"] = spec["seed"] if spec["seed"] is not None else 0
    spec["data_dir"], spec["split_csv"] = spec["data_dir"] or "", spec["split_csv"] or ""
    return spec


def mc_outputs(model, meta: dict, data: ImageSet, T: int, batch_size: int, device: torch.device,
               seed: int) -> tuple[np.ndarray, torch.Tensor]:
    """MC-dropout probabilities [T, N, C] of one model on one split -> (prediction [N], probs)."""
    generator = torch.Generator().manual_seed(seed)  # CPU masks: the same draws on any device
    probs = uncertainty.mc_dropout_predict(model, data, meta["mean"], meta["std"], device, T,
                                           batch_size=batch_size, generator=generator)
    return probs.mean(0).argmax(1).numpy(), probs


def score_splits(cfg: Config, device: torch.device) -> tuple[dict[str, Scores], list[str], dict[str, list[str]]]:
    """Run both models with MC dropout on every split -> ({split: Scores}, class names, {split: paths})."""
    (model_a, meta_a), (model_b, meta_b) = load_pair(cfg.model_a, cfg.model_b, device)
    class_names = list(meta_a["class_names"])
    spec = data_spec(cfg, meta_a, meta_b)
    table, root = load_split_table(spec["dataset"], spec["data_dir"], spec["split_csv"], spec["seed"],
                                   spec["per_class"], spec["multi_label_rule"])
    if cfg.calib_split not in set(table["split"]):
        raise ValueError(f"the data has no {cfg.calib_split!r} split to calibrate on (found "
                         f"{sorted(set(table['split']))})")
    table = table[table["split"].isin([cfg.calib_split]) | table["split"].str.startswith("test")]
    score_fn = uncertainty.SCORES[cfg.score]
    sets_by_size: dict[int, dict[str, ImageSet]] = {}
    outputs = {}
    for tag, model, meta in (("a", model_a, meta_a), ("b", model_b, meta_b)):
        size = int(meta["image_size"])
        if size not in sets_by_size:
            sets_by_size[size] = load_image_sets(table, root, size, class_names)
        for split, data in sets_by_size[size].items():
            pred, probs = mc_outputs(model, meta, data, cfg.T, cfg.batch_size, device, cfg.seed)
            outputs[tag, split] = (pred, score_fn(probs).numpy().astype(np.float64), data.labels.numpy(),
                                   data.paths)
            log(f"{tag.upper()} {meta['model_name']} on {split}: MC accuracy "
                f"{(pred == data.labels.numpy()).mean():.4f} (T={cfg.T})")
    scores, paths = {}, {}
    for split in sorted({s for _, s in outputs}):
        pa, ua, labels, pth = outputs["a", split]
        pb, ub, _, _ = outputs["b", split]
        scores[split] = Scores(labels, pa, pb, ua, ub)
        paths[split] = pth
    return scores, class_names, paths


# ============================================================================ reporting

def _pct(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f} %"


def comparison_markdown(results: dict, thresholds: dict, cfg: Config) -> str:
    """The comparison of mechanisms per split as markdown tables."""
    kind = "two-sided" if cfg.two_sided else "one-sided"
    n_calib = next(iter(results[cfg.calib_split].values()))["n"]
    lines = [f"# Safety cascade: {Path(cfg.model_a).parent.name} (A) + {Path(cfg.model_b).parent.name} (B)", "",
             f"Thresholds calibrated on `{cfg.calib_split}` for an undetected-error rate <= {_pct(cfg.target, 3)}; "
             f"score {cfg.score}, T = {cfg.T}. Bound: {kind} {100 * cfg.confidence:g} % Clopper-Pearson.", "",
             f"With {n_calib} calibration images the target allows {max_undetected(cfg.target, n_calib)} undetected "
             f"error(s) there; a rate of {_pct(cfg.target, 3)} can only be told apart from 0 with at least "
             f"{math.ceil(1 / cfg.target) if cfg.target > 0 else 'infinitely many'} images.", ""]
    for split, per_mode in results.items():
        lines += [f"## {split} (n = {next(iter(per_mode.values()))['n']})", "",
                  "| mechanism | referral rate | automatic accuracy | undetected | undetected rate | upper bound | "
                  "errors caught | target met on calibration |",
                  "|---|---|---|---|---|---|---|---|"]
        for mode, m in per_mode.items():
            lines.append(f"| {MODE_TITLES[mode]} | {_pct(m['referral_rate'], 1)} | {_pct(m['automatic_accuracy'], 1)} "
                         f"| {m['undetected']} / {m['n']} | {_pct(m['undetected_rate'])} | "
                         f"{_pct(m['undetected_upper'])} | {_pct(m['errors_caught'], 1)} | "
                         f"{'yes' if thresholds[mode]['target_met'] else 'no'} |")
        lines.append("")
    cascade = {s: r["cascade"]["per_class"] for s, r in results.items()}
    for split, per_class in cascade.items():
        lines += [f"### cascade per class, {split}", "",
                  "| class | n | referral rate | automatic accuracy | undetected | upper bound |", "|---|---|---|---|---|---|"]
        for name, m in per_class.items():
            lines.append(f"| {name} | {m['n']} | {_pct(m['referral_rate'], 1)} | {_pct(m['automatic_accuracy'], 1)} "
                         f"| {m['undetected']} | {_pct(m['undetected_upper'])} |")
        lines.append("")
    return "\n".join(lines)


def per_image_table(scores: dict[str, Scores], paths: dict[str, list[str]], thresholds: dict,
                    class_names: list[str]) -> pd.DataFrame:
    """One row per image: both predictions and uncertainties, disagreement, cascade referral."""
    frames = []
    th = thresholds["cascade"]
    for split, s in scores.items():
        referred = referred_mask(s, "cascade", th["threshold_a"], th["threshold_b"])
        frames.append(pd.DataFrame({
            "split": split, "path": paths[split], "label": [class_names[i] for i in s.labels],
            "pred_a": [class_names[i] for i in s.pred_a], "pred_b": [class_names[i] for i in s.pred_b],
            "uncertainty_a": s.unc_a, "uncertainty_b": s.unc_b, "disagree": s.disagree,
            "referred": referred, "correct": s.pred_a == s.labels}))
    return pd.concat(frames, ignore_index=True)


def run_dir(cfg: Config) -> Path:
    name = cfg.run_name or f"{Path(cfg.model_a).parent.name}__{Path(cfg.model_b).parent.name}"
    return Path(cfg.out_dir) / name


def analyse(scores: dict[str, Scores], class_names: list[str], cfg: Config) -> tuple[dict, dict, pd.DataFrame]:
    """Calibrate every mechanism on cfg.calib_split, evaluate on every split, sweep -> (thresholds, results, sweep)."""
    calib = scores[cfg.calib_split]
    thresholds = {mode: calibrate_mode(calib, mode, cfg.target, cfg.max_candidates) for mode in MODES}
    order = [cfg.calib_split] + sorted(s for s in scores if s != cfg.calib_split)
    results = {split: evaluate_split(scores[split], thresholds, class_names, cfg.confidence, cfg.two_sided)
               for split in order}
    levels = np.linspace(0, 1, cfg.sweep_points)
    curve = pd.concat([sweep(scores[split], calib, levels).assign(split=split) for split in order],
                      ignore_index=True)
    return thresholds, results, curve


def main(cfg: Config) -> dict:
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    out = run_dir(cfg)
    save_config(cfg, out)
    scores, class_names, paths = score_splits(cfg, device)
    thresholds, results, curve = analyse(scores, class_names, cfg)
    atomic_write_csv(out / "per_image.csv", per_image_table(scores, paths, thresholds, class_names))
    atomic_write_json(out / "thresholds.json", {
        "score": cfg.score, "T": cfg.T, "target": cfg.target, "calib_split": cfg.calib_split,
        "model_a": cfg.model_a, "model_b": cfg.model_b, "class_names": class_names, "modes": thresholds})
    atomic_write_json(out / "safety.json", {"class_names": class_names, "target": cfg.target,
                                            "confidence": cfg.confidence, "two_sided": cfg.two_sided,
                                            "splits": results})
    atomic_write_csv(out / "sweep.csv", curve)
    atomic_write_text(out / "comparison.md", comparison_markdown(results, thresholds, cfg))
    for split, per_mode in results.items():
        m = per_mode["cascade"]
        log(f"{split}: cascade refers {_pct(m['referral_rate'], 1)}, automatic accuracy "
            f"{_pct(m['automatic_accuracy'], 1)}, undetected {m['undetected']}/{m['n']} = "
            f"{_pct(m['undetected_rate'])} (<= {_pct(m['undetected_upper'])} at {100 * cfg.confidence:g} %)")
    log(f"wrote {out}/comparison.md")
    return {"thresholds": thresholds, "results": results, "out_dir": str(out)}


if __name__ == "__main__":
    run_main(main, parse_config(Config, description=__doc__))
