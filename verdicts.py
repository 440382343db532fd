"""The verdict table of REPORT.md: each claim of the two papers tested on this run's results,
with a statistic, its 95 % interval and a verdict (reproduced / not reproduced / not testable
at this scale) under a rule stated next to it.

    rows = [augmentation_helps(noaug_per_seed, aug_per_seed), mc_dropout_separates(per_image), ...]
    lines = verdict_table(rows)         # markdown: the table, then every rule

Each claim function takes the results already read from disk (plain lists / DataFrames /
dicts, see each docstring) and returns one `Claim`. The paper's number is kept in its own
column with its own data set and model: the built-in synthetic data is not the papers' data,
so only the direction and shape of a result are compared, never the value.
Intervals come from stats.py; Clopper-Pearson bounds and the Learn-then-Test certificate
from evaluate_safety.py's safety.json / thresholds.json.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from stats import Interval, bootstrap_interval, paired_t_interval, t_interval
from utils import fmt_pct

REPRODUCED, NOT_REPRODUCED, NOT_TESTABLE = "reproduced", "not reproduced", "not testable at this scale"
PEAK_WINDOW = (15.0, 35.0)  # "about 25 %": the shares next to 25 % on the paper's 5, 15, ..., 95 % grid
LTT_IMAGES_NEEDED = 2995    # alpha 0.1 %, delta 0.05, zero errors (risk_control.py's sample-size rule)


@dataclass(frozen=True)
class Claim:
    """One row of the verdict table."""
    claim: str
    paper: str          # the paper's number, with its data set and model
    statistic: str      # ours, with its 95 % interval
    verdict: str        # REPRODUCED | NOT_REPRODUCED | NOT_TESTABLE
    why: str            # the verdict's reason in numbers (or what is missing)
    rule: str           # how the verdict is decided


def _directional(interval: Interval, positive: bool, min_n: int = 2) -> tuple[str, str]:
    """(verdict, why) for 'the interval excludes 0 on the paper's side' (positive: above 0)."""
    if interval.n < min_n or not math.isfinite(interval.low):
        return NOT_TESTABLE, f"n = {interval.n}: an interval needs at least {min_n}"
    if (interval.low > 0) if positive else (interval.high < 0):
        return REPRODUCED, f"the interval excludes 0 on the paper's side (n = {interval.n})"
    if (interval.high < 0) if positive else (interval.low > 0):
        return NOT_REPRODUCED, f"the interval excludes 0 on the opposite side (n = {interval.n})"
    return NOT_REPRODUCED, f"the interval includes 0 (n = {interval.n})"


# ============================================================================ claims

def augmentation_helps(without: list[float], with_aug: list[float]) -> Claim:
    """Accuracy on test_shifted per seed (same seed order) without / with the paper's augmentation."""
    rule = "paired t-interval of (with - without) over seeds; reproduced = it lies above 0"
    paper = "Severstal, ResNet18/EffNet-B0, 10 seeds: 0.84-0.88 without, 0.93-0.98 with"
    if len(without) != len(with_aug) or not without:
        return Claim("Augmentation raises accuracy on shifted images", paper, "n/a", NOT_TESTABLE,
                     "training results missing", rule)
    diff = paired_t_interval(with_aug, without)
    verdict, why = _directional(diff, positive=True)
    return Claim("Augmentation raises accuracy on shifted images (test_shifted)", paper,
                 f"with - without: {diff.text(100, 1)} points", verdict, why, rule)


def hil_effort_falls(settings: pd.DataFrame) -> Claim:
    """settings: one row per grid setting with initial_samples, step_size, total_effort."""
    rule = ("per step size, the change in total manual effort when the initial set doubles; t-interval over "
            "those pairs; reproduced = it lies below 0")
    paper = "Severstal, EffNet-B0 331-389 and ResNet18 438-497 images per setting, falling with the initial set"
    changes = []
    for _, part in settings.groupby("step_size"):
        effort = dict(zip(part["initial_samples"], part["total_effort"]))
        changes += [effort[2 * i] - effort[i] for i in effort if 2 * i in effort]
    change = t_interval(changes)
    verdict, why = _directional(change, positive=False)
    return Claim("HIL: manual effort falls as the initial set grows", paper,
                 f"effort change per doubling: {change.text(1, 1)} images", verdict, why, rule)


def hil_time_halves(settings: pd.DataFrame) -> Claim:
    """settings: one row per grid setting with initial_samples, step_size, seconds."""
    rule = ("per initial size, the compute-time ratio t(2 x step) / t(step); t-interval of the log ratios, "
            "back-transformed; reproduced = it lies below 1 (the paper: about 0.5)")
    paper = "Severstal on a GPU, 809-3,081 s per setting: roughly halves when the step doubles"
    logs = []
    for _, part in settings.groupby("initial_samples"):
        seconds = dict(zip(part["step_size"], part["seconds"]))
        logs += [math.log(seconds[2 * s] / seconds[s]) for s in seconds if 2 * s in seconds and seconds[s] > 0]
    log_ratio = t_interval(logs)
    ratio = Interval(math.exp(log_ratio.estimate) if logs else math.nan, math.exp(log_ratio.low),
                     math.exp(log_ratio.high), log_ratio.n)
    verdict, why = _directional(log_ratio, positive=False)
    why = why.replace("excludes 0", "excludes 1").replace("includes 0", "includes 1 (no change)")
    return Claim("HIL: compute time roughly halves when the step size doubles", paper,
                 f"time ratio per doubling: {ratio.text(1, 2)}", verdict, why, rule)


def _auroc(wrong: np.ndarray, score: np.ndarray) -> float:
    return float(roc_auc_score(wrong, score)) if 0 < wrong.sum() < len(wrong) else math.nan


def mc_dropout_separates(per_image: pd.DataFrame, model: str) -> Claim:
    """per_image: get_mc_scores.py's per_image.csv rows of one split (correct, predictive_entropy)."""
    rule = "AUROC of predictive entropy for wrong vs right, bootstrap over images; reproduced = it lies above 0.5"
    paper = "NEU/Severstal, ResNet18, VGG16, EffNet-B0: median entropy about 0 (right) vs 0.3-0.9 (wrong)"
    wrong = (~per_image["correct"].astype(bool)).to_numpy(int)
    entropy = per_image["predictive_entropy"].to_numpy(float)
    if not 0 < wrong.sum() < len(wrong):
        return Claim(f"MC dropout: wrong predictions are more uncertain ({model})", paper, "n/a", NOT_TESTABLE,
                     f"{wrong.sum()} wrong of {len(wrong)}: AUROC needs both", rule)
    auroc = bootstrap_interval(_auroc, (wrong, entropy), n_resamples=1000, seed=0)
    if auroc.low > 0.5:
        verdict, why = REPRODUCED, f"the interval lies above 0.5 ({wrong.sum()} wrong of {len(wrong)} images)"
    else:
        verdict, why = NOT_REPRODUCED, f"the interval reaches 0.5 ({wrong.sum()} wrong of {len(wrong)} images)"
    return Claim(f"MC dropout: wrong predictions are more uncertain ({model}, test)", paper,
                 f"AUROC {auroc.text(1, 3)}", verdict, why, rule)


def _peak_share(entropy: np.ndarray, shares: np.ndarray) -> float:
    """entropy [images, shares] -> the share with the highest mean entropy."""
    return float(shares[int(np.argmax(entropy.mean(0)))])


def saliency_entropy_peak(per_image: pd.DataFrame, reach: dict[str, float | None]) -> Claim:
    """per_image: saliency_map_uncertainties.py's per_image.csv (index, order, share, predictive_entropy);
    reach: {order: smallest share reaching the full-image accuracy, None = never}."""
    rule = (f"share of revealed pixels (saliency order) with the highest mean entropy, bootstrap over images; "
            f"reproduced = the interval lies within {PEAK_WINDOW[0]:g}-{PEAK_WINDOW[1]:g} % (the grid points "
            "next to 25 %)")
    paper = "NEU/Severstal, ResNet18: mean uncertainty peaks at about 25 % revealed, then falls"
    guided = per_image[per_image["order"] == "saliency"]
    if guided.empty:
        return Claim("Saliency: uncertainty peaks at about 25 % revealed", paper, "n/a", NOT_TESTABLE,
                     "saliency results missing", rule)
    table = guided.pivot_table(index="index", columns="share", values="predictive_entropy")
    shares = table.columns.to_numpy(float)
    if not (shares.min() < PEAK_WINDOW[0] and shares.max() > PEAK_WINDOW[1]):
        return Claim("Saliency: uncertainty peaks at about 25 % revealed", paper,
                     f"shares {', '.join(f'{x:g}' for x in shares)} %", NOT_TESTABLE,
                     f"the grid needs shares below {PEAK_WINDOW[0]:g} % and above {PEAK_WINDOW[1]:g} %", rule)
    peak = bootstrap_interval(lambda e: _peak_share(e, shares), (table.to_numpy(float),), n_resamples=1000, seed=0)
    inside = PEAK_WINDOW[0] <= peak.low and peak.high <= PEAK_WINDOW[1]
    reached = ", ".join(f"{o} {'never' if s is None else f'{s:g} %'}" for o, s in reach.items())
    return Claim("Saliency: uncertainty peaks at about 25 % revealed", paper,
                 f"peak at {peak.estimate:g} % [{peak.low:g}, {peak.high:g}]; full-image accuracy reached at: "
                 f"{reached}", REPRODUCED if inside else NOT_REPRODUCED,
                 f"the interval {'lies within' if inside else 'leaves'} {PEAK_WINDOW[0]:g}-{PEAK_WINDOW[1]:g} % "
                 f"({peak.n} images)", rule)


def strategy_differences(rounds: pd.DataFrame) -> pd.DataFrame:
    """rounds: active_learning.py's rounds.csv -> per strategy (not random) and share: the paired
    t-interval of its test accuracy minus random's over seeds (columns strategy, share, labelled,
    estimate, low, high, n)."""
    rows = []
    random = rounds[rounds["strategy"] == "random"].set_index(["round", "seed"])["test_accuracy"]
    for (strategy, r), part in rounds[rounds["strategy"] != "random"].groupby(["strategy", "round"]):
        part = part.set_index("seed")
        seeds = [s for s in part.index if (r, s) in random.index]
        diff = paired_t_interval(part.loc[seeds, "test_accuracy"].to_numpy(float),
                                 np.array([random[r, s] for s in seeds], float))
        rows.append({"strategy": strategy, "round": r, "share": float(part["share"].mean()),
                     "labelled": int(part["labelled"].iloc[0]), "estimate": diff.estimate, "low": diff.low,
                     "high": diff.high, "n": diff.n})
    return pd.DataFrame(rows)


def strategies_beat_random(rounds: pd.DataFrame) -> tuple[Claim, pd.DataFrame]:
    """rounds: active_learning.py's rounds.csv -> (the claim at the last share, every strategy x share)."""
    rule = ("per strategy, the paired t-interval over seeds of (its test accuracy - random's) at the last "
            "share; reproduced = every strategy's interval lies above 0")
    paper = ("CIFAR-10, ResNet18, 3 runs, 60 % labelled: DBAL 91.67, ..., random 89.80; every uncertainty "
             "strategy above random")
    if rounds.empty or "random" not in set(rounds["strategy"]):
        return Claim("Active learning: every strategy beats random", paper, "n/a", NOT_TESTABLE,
                     "active-learning results (with random) missing", rule), pd.DataFrame()
    diffs = strategy_differences(rounds)
    last = diffs[diffs["round"] == diffs["round"].max()].sort_values("estimate", ascending=False)
    if last.empty or last["n"].min() < 2:
        return Claim("Active learning: every strategy beats random", paper, "n/a", NOT_TESTABLE,
                     "fewer than 2 seeds per strategy", rule), diffs
    above = int((last["low"] > 0).sum())
    below = int((last["high"] < 0).sum())
    stat = "; ".join(f"{r.strategy} {100 * r.estimate:+.1f} [{100 * r.low:+.1f}, {100 * r.high:+.1f}]"
                     for r in last.itertuples())
    return Claim(f"Active learning: every strategy beats random ({fmt_pct(last['share'].iloc[0], 0)} labelled)",
                 paper, f"minus random, points: {stat}", REPRODUCED if above == len(last) else NOT_REPRODUCED,
                 f"{above} of {len(last)} above 0, {below} below 0, the rest include 0 "
                 f"({int(last['n'].min())} seeds)", rule), diffs


def cascade_undetected(safety: dict, thresholds: dict) -> Claim:
    """safety / thresholds: evaluate_safety.py's safety.json and thresholds.json."""
    alpha = float(safety.get("target", 0.001))
    rule = (f"the Learn-then-Test certificate on the calibration split (alpha {fmt_pct(alpha, 1)}, delta "
            f"{thresholds.get('calibration', {}).get('delta', 'n/a')}) holds with less than 100 % referred, and "
            f"the test split's one-sided 95 % Clopper-Pearson upper bound is below alpha; not testable when "
            f"either split has fewer than {LTT_IMAGES_NEEDED:,} images (even zero errors could not show "
            f"{fmt_pct(alpha, 1)})")
    paper = "R4VR (NEU/Severstal, two models): < 0.1 % wrong and undetected; workload not published"
    calibration = thresholds.get("calibration", {})
    splits = safety.get("splits", {})
    calib_split = thresholds.get("calib_split", "valid")
    if "test" not in splits or calib_split not in splits:
        return Claim("Safety cascade: < 0.1 % wrong and undetected", paper, "n/a", NOT_TESTABLE,
                     "safety results missing", rule)
    test, valid = splits["test"]["cascade"], splits[calib_split]["cascade"]
    certified = bool(calibration.get("certified"))
    stat = (f"undetected {calib_split} {valid['undetected']}/{valid['n']} = {fmt_pct(valid['undetected_rate'], 2)} "
            f"(<= {fmt_pct(valid['undetected_upper'], 2)}), test {test['undetected']}/{test['n']} = "
            f"{fmt_pct(test['undetected_rate'], 2)} (<= {fmt_pct(test['undetected_upper'], 2)}); LTT: alpha "
            f"{fmt_pct(alpha, 1)}, delta {calibration.get('delta')}, n {calibration.get('n')}, "
            f"{'certified' if certified else 'NOT certified'}, referral rate {fmt_pct(valid['referral_rate'])} "
            f"({calib_split}) / {fmt_pct(test['referral_rate'])} (test)")
    if min(valid["n"], test["n"]) < LTT_IMAGES_NEEDED:
        return Claim("Safety cascade: < 0.1 % wrong and undetected", paper, stat, NOT_TESTABLE,
                     f"{valid['n']} calibration and {test['n']} test images: 0.1 % needs >= "
                     f"{LTT_IMAGES_NEEDED:,} each", rule)
    ok = certified and valid["referral_rate"] < 1 and test["undetected_upper"] < alpha
    why = ("certified, and the test bound is below alpha" if ok else
           "; ".join(w for w, bad in (("not certified", not certified),
                                      ("everything referred", valid["referral_rate"] >= 1),
                                      ("the test bound is not below alpha", test["undetected_upper"] >= alpha))
                     if bad))
    return Claim("Safety cascade: < 0.1 % wrong and undetected", paper, stat,
                 REPRODUCED if ok else NOT_REPRODUCED, why, rule)


# ============================================================================ the table

def verdict_table(claims: list[Claim]) -> list[str]:
    """Markdown lines: the table (claim, paper's number, ours with 95 % interval, verdict, why), then the rules."""
    lines = ["| claim | paper (its own data and model; not comparable in value) | this run, 95 % interval | "
             "verdict | why |", "|---|---|---|---|---|"]
    lines += [f"| {c.claim} | {c.paper} | {c.statistic} | **{c.verdict}** | {c.why} |" for c in claims]
    lines += ["", "Verdict rules (every interval is a two-sided 95 % interval):", ""]
    lines += [f"- {c.claim}: {c.rule}." for c in claims]
    return lines


def strategy_table(diffs: pd.DataFrame) -> list[str]:
    """Markdown: each strategy minus random (points, paired t-interval over seeds) at every share."""
    if diffs.empty:
        return []
    shares = sorted(diffs["round"].unique())
    head = {r: f"{100 * diffs[diffs['round'] == r]['share'].iloc[0]:.0f} %" for r in shares}
    lines = ["| strategy - random (points) | " + " | ".join(head[r] for r in shares) + " |",
             "|---|" + "---|" * len(shares)]
    for strategy, part in diffs.groupby("strategy"):
        part = part.set_index("round")
        cells = []
        for r in shares:
            row = part.loc[r] if r in part.index else None
            cells.append("n/a" if row is None else
                         Interval(row["estimate"], row["low"], row["high"], int(row["n"])).text(100, 1))
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    raise SystemExit("verdicts.py is a library module; reproduce.py writes the verdict table into REPORT.md.")
