"""The verdict table of REPORT.md: each claim as the two works published it (published.py, from
../shared/PAPER.md), tested on this run's results with a statistic, its 95 % interval and one
of four outcomes under a rule stated next to it.

    rows = augmentation_claims(arms) + hil_claims(grids) + mc_claims(per_seed) + ...
    lines = verdict_table(rows)         # markdown: the table, then every rule

Outcomes, against the published effect size d (`judge`):
  reproduced    the interval excludes the null (0, or 0.5 for an AUROC, 1 for a ratio) on the
                paper's side;
  contradicted  it lies on the other side of the null, or holds the null but excludes d (or,
                where d is comparable in value, such as a time ratio, lies on the paper's side
                but excludes d);
  inconclusive  it holds both the null and d: the row says how many seeds or images would
                decide it if the observed estimate and spread stayed;
  not testable at this scale  too few seeds / images / grid points to build the interval.
A claim that a difference is level (the toolkit's ensemble variation ratio and VAAL against
random) is judged by `judge_level`: reproduced inside +- the smallest published winning gap,
contradicted when the interval excludes 0.

Each claim function takes results already read from disk (plain lists / DataFrames / dicts, see
each docstring) and returns `Claim`s. The built-in synthetic data is not the papers' data: d is
the paper's number on its own data and model, used to tell "no evidence" from "evidence against",
never as a value to match (except where the number is structural, marked comparable).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from safehil.report import published as pub
from safehil.safety.risk_control import clopper_pearson, required_calibration_size
from safehil.report.stats import Interval, bootstrap_interval, paired_t_interval, t_interval, units_to_decide
from safehil.core.utils import fmt_pct

REPRODUCED, CONTRADICTED, INCONCLUSIVE = "reproduced", "contradicted", "inconclusive"
NOT_TESTABLE = "not testable at this scale"
OUTCOMES = (REPRODUCED, CONTRADICTED, INCONCLUSIVE, NOT_TESTABLE)
N_BOOTSTRAP = 1000


@dataclass(frozen=True)
class Power:
    """A rule's operating characteristics at this run's own scale (simulated or closed form)."""
    reproduce: float    # P(reproduced | the effect named in `at`), the rule's power
    contradict: float   # P(contradicted | no effect, as the rule defines it)
    at: str             # the effect and spread the two were computed at, in words
    needed: str = ""    # the seeds / images that would give power 0.8 ("" when this run has it)

    def text(self) -> str:
        return f"P(reproduced) {self.reproduce:.2f}, P(contradicted, no effect) {self.contradict:.2f} ({self.at})"


@dataclass(frozen=True)
class Claim:
    """One row of the verdict table. Rows with no published counterpart set ours=True (their
    `source` then names what the row rests on); power: the rule's operating characteristics at
    this run's scale (None: no interval could be built)."""
    claim: str
    source: str         # the published file the claim and d come from (ours: what the row rests on)
    paper: str          # the published number d, with its data set and model ("none" for ours)
    statistic: str      # this run's statistic with its interval (the level named where not two-sided 95 %)
    verdict: str        # one of OUTCOMES
    why: str            # the verdict's reason in numbers (or what is missing; not testable: what would do)
    rule: str           # how the verdict is decided
    ours: bool = False  # no published counterpart: our own row
    power: Power | None = None


# ============================================================================ the outcomes

def _fmt(x: float, scale: float, digits: int) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x * scale:.{digits}f}"


def judge(interval: Interval, d: float, null: float = 0.0, side: int = 1, comparable: bool = False,
          kind: str = "t", unit: str = "seeds", scale: float = 1.0, digits: int = 2,
          show=None) -> tuple[str, str]:
    """(verdict, why) of an interval against the null and the published effect d.

    side: +1 when the paper's effect lies above the null, -1 below. d: the published value (NaN:
    the paper gives a direction only). comparable: d is comparable in value across data sets, so a
    paper-side interval that excludes d contradicts it. kind / unit: how the interval was built
    ('t' over seeds, 'bootstrap' over images) for the number of units that would decide an
    inconclusive row. scale / digits: how numbers are written in `why`; show: a function that
    writes a number instead (e.g. a log ratio as its ratio).
    """
    if interval.n < 2 or not (math.isfinite(interval.low) and math.isfinite(interval.high)):
        return NOT_TESTABLE, f"n = {interval.n} {unit}: no interval"
    n0, dd = (show(null), show(d)) if show else (_fmt(null, scale, digits), _fmt(d, scale, digits))
    paper_side = interval.low > null if side > 0 else interval.high < null
    other_side = interval.high < null if side > 0 else interval.low > null
    has_d = math.isfinite(d)
    if other_side:
        return CONTRADICTED, f"the interval lies on the other side of {n0} ({interval.n} {unit})"
    if paper_side:
        if has_d and interval.excludes(d):
            if comparable:
                return CONTRADICTED, f"on the paper's side of {n0} but excludes the published {dd} ({interval.n} {unit})"
            size = "smaller" if abs(interval.high - null) < abs(d - null) else "larger"
            return REPRODUCED, (f"excludes {n0} on the paper's side ({interval.n} {unit}); {size} than the paper's "
                                f"{dd}, which is not comparable in value")
        return REPRODUCED, f"excludes {n0} on the paper's side ({interval.n} {unit})"
    if has_d and interval.excludes(d):
        return CONTRADICTED, f"holds {n0} but excludes the paper's {dd} ({interval.n} {unit})"
    distance = max(abs(interval.estimate - null), abs(interval.estimate - d) if has_d else 0.0)
    m = units_to_decide(interval, distance, kind)
    holds = f"holds both {n0} and the paper's {dd}" if has_d else f"holds {n0} (the paper gives no size)"
    return INCONCLUSIVE, (f"{holds} ({interval.n} {unit}); "
                          + (f"about {m:,} {unit} would decide it at the observed spread" if m else
                             "no number of units decides it at the observed estimate"))


def judge_level(interval: Interval, margin: float, kind: str = "t", unit: str = "seeds",
                scale: float = 100.0, digits: int = 1) -> tuple[str, str]:
    """(verdict, why) of 'level with the reference' (a difference of about 0): reproduced when the
    interval lies within +- margin, contradicted when it excludes 0, else inconclusive."""
    if interval.n < 2 or not (math.isfinite(interval.low) and math.isfinite(interval.high)):
        return NOT_TESTABLE, f"n = {interval.n} {unit}: no interval"
    m_text = _fmt(margin, scale, digits)
    if interval.excludes(0.0):
        return CONTRADICTED, f"the interval excludes 0: not level ({interval.n} {unit})"
    if -margin < interval.low and interval.high < margin:
        return REPRODUCED, f"the interval lies within +-{m_text} ({interval.n} {unit})"
    est = abs(interval.estimate)
    m = units_to_decide(interval, max(est, margin - est), kind)
    return INCONCLUSIVE, (f"holds 0 and reaches beyond +-{m_text} ({interval.n} {unit}); "
                          + (f"about {m:,} {unit} would decide it at the observed spread" if m else
                             "no number of units decides it"))


def _claim(claim: str, source: str, paper: str, statistic: str, verdict_why: tuple[str, str], rule: str) -> Claim:
    return Claim(claim, source, paper, statistic, verdict_why[0], verdict_why[1], rule)


def _missing(claim: str, source: str, paper: str, why: str, rule: str) -> Claim:
    return Claim(claim, source, paper, "n/a", NOT_TESTABLE, why, rule)


RULE_3 = ("reproduced = the interval excludes {null} on the paper's side; contradicted = it lies on the other side, "
          "or holds {null} but excludes the paper's d; inconclusive = it holds both")


# ============================================================================ augmentation

AUG_TITLE = "Augmentation: the paper's epoch (plain + augmented pass) beats plain (test)"
AUG_PASS_TITLE = "Augmentation: the gain is the augmentation, not the extra pass (test)"
AUG_SHIFTED_TITLE = "Ours: augmentation on test_shifted (no published counterpart)"


def augmentation_claims(arms: dict[str, list[float]]) -> list[Claim]:
    """arms: test accuracy per seed (same seed order) of model A's arms 'plain', 'plain+augmented'
    and 'plain+plain' (train_model --passes) on the normal test split -> two claims: the gain,
    and the gain beyond the extra pass (with the share the extra pass alone explains)."""
    d = pub.augmentation_gain()
    paper = (f"Severstal, ResNet18/EffNet-B0 pre/fine, {pub.AUGMENTATION_SEEDS} seeds: gain +{100 * d:.1f} points "
             "(+7.7 to +13.0)")
    rule = "paired t-interval of the accuracy difference over seeds (the seed is the unit); " + RULE_3.format(null=0)
    plain, aug, control = (list(arms.get(k) or []) for k in ("plain", "plain+augmented", "plain+plain"))
    out = []
    if not plain or len(plain) != len(aug):
        out.append(_missing(AUG_TITLE, pub.SOURCES["augmentation"], paper, "plain / plain+augmented results missing",
                            rule))
    else:
        gain = paired_t_interval(aug, plain)
        out.append(_claim(AUG_TITLE, pub.SOURCES["augmentation"], paper,
                          f"plain+augmented - plain: {gain.text(100, 1)} points",
                          judge(gain, d, unit="seeds", scale=100, digits=1), rule))
    paper_pass = f"the paper attributes its whole +{100 * d:.1f} points to the augmentation (no step-matched control)"
    rule_pass = ("paired t-interval over seeds of plain+augmented - plain+plain (same optimiser steps); "
                 + RULE_3.format(null=0) + "; the extra pass's share = (plain+plain - plain) / (plain+augmented - plain)")
    if not control or len(control) != len(aug) or not plain:
        out.append(_missing(AUG_PASS_TITLE, pub.SOURCES["augmentation"], paper_pass,
                            "the step-matched plain+plain arm was not trained", rule_pass))
    else:
        beyond = paired_t_interval(aug, control)
        extra = paired_t_interval(control, plain)
        total = float(np.mean(aug) - np.mean(plain))
        share = extra.estimate / total if abs(total) > 1e-12 else math.nan
        out.append(_claim(AUG_PASS_TITLE, pub.SOURCES["augmentation"], paper_pass,
                          f"plain+augmented - plain+plain: {beyond.text(100, 1)} points; the extra pass alone "
                          f"(plain+plain - plain): {extra.text(100, 1)} points = {fmt_pct(share, 0)} of the gain",
                          judge(beyond, d, unit="seeds", scale=100, digits=1), rule_pass))
    return out


def augmentation_shifted_claim(plain: list[float], augmented: list[float]) -> Claim:
    """Our own extra row: accuracy on test_shifted per seed, plain vs plain+augmented."""
    rule = "paired t-interval over seeds; direction only (no published number); " + RULE_3.format(null=0)
    source = "this run's test_shifted split"
    if not plain or len(plain) != len(augmented):
        return replace(_missing(AUG_SHIFTED_TITLE, source, "none (the R4VR code has no shifted split)",
                                "test_shifted results missing", rule), ours=True)
    diff = paired_t_interval(augmented, plain)
    return replace(_claim(AUG_SHIFTED_TITLE, source, "none (the R4VR code has no shifted split)",
                          f"plain+augmented - plain: {diff.text(100, 1)} points",
                          judge(diff, math.nan, unit="seeds", scale=100, digits=1), rule), ours=True)


# ============================================================================ HIL data generation

HIL_TIME_TITLE = "HIL: compute time roughly halves when the step doubles"
HIL_INITIAL_TITLE = "HIL: manual effort does not fall as the initial set grows"
HIL_STEP_TITLE = "HIL: manual effort is flat or rises with the step"


def _effort(grid: pd.DataFrame) -> pd.Series:
    """Manual effort of each setting: the wrongly predicted arriving images (the initial set left out)."""
    if "correction_effort" in grid:
        return grid["correction_effort"].astype(float)
    return (grid["total_effort"] - grid["initial_effort"]).astype(float)


def _arriving(grid: pd.DataFrame) -> pd.Series:
    """Images that arrive after the initial set: the pool (hand_effort) minus the initial images."""
    initial = next((grid[c] for c in ("initial_labelled", "initial_effort") if c in grid), None)
    if initial is None:
        initial = grid["total_effort"] - grid["correction_effort"]
    return (grid["hand_effort"] - initial).astype(float)


def _loop_seconds(grid: pd.DataFrame) -> pd.Series:
    """Compute time of each setting without the baseline shared between settings."""
    if "loop_seconds" in grid:
        return grid["loop_seconds"].astype(float)
    return (grid["seconds"] - grid["baseline_seconds"]).astype(float)


def _per_doubling(grid: pd.DataFrame, values: pd.Series, along: str, within: str, log: bool) -> float:
    """Mean over `within` of value(2x) - value(x) (or log ratio) along `along`; NaN without a doubling."""
    table = dict(zip(zip(grid[within], grid[along]), values))
    changes = []
    for (w, a), v in table.items():
        if (w, 2 * a) in table:
            other = table[w, 2 * a]
            if log:
                if v > 0 and other > 0:
                    changes.append(math.log(other / v))
            else:
                changes.append(other - v)
    return float(np.mean(changes)) if changes else math.nan


def hil_claims(grids: dict[int, pd.DataFrame]) -> list[Claim]:
    """grids: {arrival-order seed: one row per setting with initial_samples, step_size,
    correction_effort and initial_labelled (or initial_effort / total_effort), hand_effort (the pool) and
    loop_seconds (or seconds and baseline_seconds)} -> the three Fig. 4 claims, the seed the unit."""
    source = pub.SOURCES["hil"]
    d_time = pub.hil_time_ratio_per_step_doubling()
    d_init, d_step = pub.hil_effort_change_per_initial_doubling(), pub.hil_effort_change_per_step_doubling()
    time_paper = (f"Severstal, seed 42: t(step 10) / t(step 5) = {pub.hil_time_ratio_per_step_doubling('efficientnet_b0'):.2f} "
                  f"EffNet-B0, {pub.hil_time_ratio_per_step_doubling('resnet18'):.2f} ResNet18 (d = {d_time:.2f})")
    init_paper = (f"Severstal: {100 * d_init:+.1f} % of the arriving images per doubling of the initial set (row means "
                  "EffNet 350 -> 373, ResNet 458 -> 467); NEU about 110-150 -> 195-203")
    step_paper = (f"Severstal: {100 * d_step:+.1f} % of the arriving images per doubling of the step (EffNet "
                  f"{100 * pub.hil_effort_change_per_step_doubling('efficientnet_b0'):+.1f}, ResNet "
                  f"{100 * pub.hil_effort_change_per_step_doubling('resnet18'):+.1f})")
    rule_time = ("per seed, the mean log ratio of the loop's compute time (without the shared baseline) t(2 x step) / "
                 "t(step) over initial sizes; t-interval over arrival-order seeds, back-transformed; d = the published "
                 "time ratio per fine-tuning round times this grid's own ratio of rounds (the ratio is structural, "
                 "comparable in value); reproduced = it excludes 1 below and holds d; contradicted = above 1, or "
                 "excludes d; inconclusive = it holds 1")
    rule_effort = ("per seed, the mean change in manual effort (wrong arriving predictions, as a share of the images "
                   "that arrive: a larger initial set leaves fewer, which alone would lower the count) per doubling of "
                   "the {what}; t-interval over arrival-order seeds; " + RULE_3.format(null=0))
    titles = ((HIL_TIME_TITLE, time_paper, rule_time), (HIL_INITIAL_TITLE, init_paper, rule_effort.format(what="initial set")),
              (HIL_STEP_TITLE, step_paper, rule_effort.format(what="step")))
    if not grids or all(g.empty for g in grids.values()):
        return [_missing(t, source, p, "data-generation results missing", r) for t, p, r in titles]
    time_logs, init_changes, step_changes = [], [], []
    for grid in grids.values():
        if grid.empty:
            continue
        rate = _effort(grid) / _arriving(grid)
        time_logs.append(_per_doubling(grid, _loop_seconds(grid), "step_size", "initial_samples", log=True))
        init_changes.append(_per_doubling(grid, rate, "initial_samples", "step_size", log=False))
        step_changes.append(_per_doubling(grid, rate, "step_size", "initial_samples", log=False))
    out = []
    seeds = f"{len(time_logs)} seed(s)"
    logs = [x for x in time_logs if math.isfinite(x)]
    if not logs:
        out.append(_missing(HIL_TIME_TITLE, source, time_paper, "the grid has no step size and its double", rule_time))
    else:
        iv = t_interval(logs)
        # the paper's steps halve its rounds exactly (38 -> 19); a small pool halves them less (5 -> 3): d
        # is the published time per round times this grid's own ratio of rounds
        grid = next(g for g in grids.values() if not g.empty)
        rounds = _per_doubling(grid, grid["steps"].astype(float), "step_size", "initial_samples", log=True) \
            if "steps" in grid else 0.0
        d_ours = pub.hil_time_ratio_per_round() * math.exp(rounds)
        time_paper += f"; per fine-tuning round {pub.hil_time_ratio_per_round():.2f}, so this grid expects {d_ours:.2f}"
        ratio = Interval(math.exp(iv.estimate), math.exp(iv.low) if math.isfinite(iv.low) else math.nan,
                         math.exp(iv.high) if math.isfinite(iv.high) else math.nan, iv.n)
        out.append(_claim(HIL_TIME_TITLE, source, time_paper,
                          f"loop-time ratio per doubling of the step: {ratio.text(1, 2)} ({seeds})",
                          judge(iv, math.log(d_ours), null=0.0, side=-1, comparable=True,
                                show=lambda x: f"a time ratio {math.exp(x):.2f}"), rule_time))
    for title, paper, rule, changes, d, what in (
            (HIL_INITIAL_TITLE, init_paper, titles[1][2], init_changes, d_init, "initial size and its double"),
            (HIL_STEP_TITLE, step_paper, titles[2][2], step_changes, d_step, "step size and its double")):
        values = [x for x in changes if math.isfinite(x)]
        if not values:
            out.append(_missing(title, source, paper, f"the grid has no {what}", rule))
            continue
        iv = t_interval(values)
        out.append(_claim(title, source, paper, f"effort change per doubling: {iv.text(100, 1)} % of the arriving images ({seeds})",
                          judge(iv, d, scale=100, digits=1), rule))
    return out


# ============================================================================ MC dropout

MC_AUROC_TITLE = "MC dropout: wrong predictions are more uncertain than right ones (AUROC)"
MC_VS_SOFTMAX_TITLE = "MC dropout adds to the same network's softmax entropy (AUROC difference)"


def auroc(wrong: np.ndarray, score: np.ndarray) -> float | np.ndarray:
    """AUROC of `score` for telling wrong (1) from right (0), ties counting half (Mann-Whitney);
    [N] -> a float, [N, S] -> one AUROC per column [S]. NaN where a column holds one class only."""
    wrong, score = np.asarray(wrong, bool), np.asarray(score, float)
    single = wrong.ndim == 1
    wrong, score = wrong.reshape(len(wrong), -1), score.reshape(len(score), -1)
    out = np.full(wrong.shape[1], np.nan)
    for j in range(wrong.shape[1]):
        pos, neg = score[wrong[:, j], j], np.sort(score[~wrong[:, j], j])
        if len(pos) and len(neg):
            below = np.searchsorted(neg, pos, "left")
            ties = np.searchsorted(neg, pos, "right") - below
            out[j] = (below.sum() + 0.5 * ties.sum()) / (len(pos) * len(neg))
    return float(out[0]) if single else out


def _aligned(per_seed: dict[int, pd.DataFrame], columns: list[str]) -> dict[str, np.ndarray] | None:
    """The test images every seed scored, in one order -> {column: [N, seeds]} (None: nothing shared)."""
    frames = [f.drop_duplicates("path").set_index("path") for f in per_seed.values()]
    common = [p for p in frames[0].index if all(p in f.index for f in frames[1:])]
    if not common:
        return None
    return {c: np.stack([f.loc[common, c].to_numpy() for f in frames], axis=1) for c in columns}


def mc_claims(per_seed: dict[int, pd.DataFrame], model: str) -> list[Claim]:
    """per_seed: {training seed: get_mc_scores.py's per_image.csv rows of the test split (path,
    correct, predictive_entropy, softmax_entropy)} of one architecture -> two claims, each a
    bootstrap over images (paired: every seed's model scores the same images) of the mean over
    seeds."""
    source = pub.SOURCES["mc"]
    paper = ("box plots, median entropy wrong vs right: " + ", ".join(
        f"{k} {w:.2f} vs {c:.2f}" for k, (c, w) in pub.MC_MEDIANS.items()) + "; no AUROC published")
    rule = (f"mean over training seeds of the per-seed AUROC (wrong vs right, MC predictive entropy), percentile "
            f"bootstrap over images ({N_BOOTSTRAP} resamples); " + RULE_3.format(null=0.5))
    rule_diff = (f"mean over training seeds of AUROC(MC entropy) - AUROC(deterministic softmax entropy, dropout off) "
                 f"of the same network, paired bootstrap over images ({N_BOOTSTRAP} resamples); " + RULE_3.format(null=0))
    paper_diff = "MC dropout is the paper's uncertainty mechanism (its gain over plain softmax entropy is not published)"
    frames = {s: f for s, f in per_seed.items() if f is not None and not f.empty}
    if not frames:
        return [_missing(f"{MC_AUROC_TITLE} ({model})", source, paper, "MC results missing", rule),
                _missing(f"{MC_VS_SOFTMAX_TITLE} ({model})", source, paper_diff, "MC results missing", rule_diff)]
    has_softmax = all("softmax_entropy" in f for f in frames.values())
    cols = ["correct", "predictive_entropy"] + (["softmax_entropy"] if has_softmax else [])
    data = _aligned(frames, cols)
    n_seeds = len(frames)
    wrong = ~data["correct"].astype(bool)

    def mean_auroc(w, mc):
        return float(np.mean(auroc(w, mc)))

    out = []
    if not 0 < wrong.sum() < wrong.size:
        out.append(_missing(f"{MC_AUROC_TITLE} ({model})", source, paper,
                            f"{int(wrong.sum())} wrong of {wrong.size}: AUROC needs both", rule))
    else:
        iv = bootstrap_interval(mean_auroc, (wrong, data["predictive_entropy"]), N_BOOTSTRAP, seed=0)
        per = ", ".join(f"{a:.3f}" for a in auroc(wrong, data["predictive_entropy"]))
        out.append(_claim(f"{MC_AUROC_TITLE} ({model})", source, paper,
                          f"AUROC {iv.text(1, 3)} (seeds: {per}; {int(wrong.sum())} wrong of {wrong.size})",
                          judge(iv, math.nan, null=0.5, kind="bootstrap", unit="images", digits=3), rule))
    if not has_softmax:
        out.append(_missing(f"{MC_VS_SOFTMAX_TITLE} ({model})", source, paper_diff,
                            "per_image.csv has no softmax_entropy column", rule_diff))
    elif 0 < wrong.sum() < wrong.size:
        def diff(w, mc, sm):
            return mean_auroc(w, mc) - mean_auroc(w, sm)
        iv = bootstrap_interval(diff, (wrong, data["predictive_entropy"], data["softmax_entropy"]), N_BOOTSTRAP, seed=0)
        out.append(_claim(f"{MC_VS_SOFTMAX_TITLE} ({model})", source, paper_diff,
                          f"AUROC difference {iv.text(1, 3)} ({n_seeds} seed(s))",
                          judge(iv, math.nan, kind="bootstrap", unit="images", digits=3), rule_diff))
    return out


# ============================================================================ saliency

SALIENCY_TITLE = "Saliency: uncertainty rises to a peak, then falls (peak above both ends)"


def saliency_claim(per_image: pd.DataFrame, seed: int = 0) -> Claim:
    """per_image: saliency_map_uncertainties.py's per_image.csv (index, order, share,
    predictive_entropy). The peak share is chosen on one random half of the images and tested
    on the other (choosing and testing on the same images would favour a peak): per image of the
    test half, entropy at the peak minus at each end; the statistic is the smaller of the two
    mean rises, bootstrapped over those images. Where the peak lies is reported (bootstrap over
    all images), next to the published 25 % (Severstal) and 65 % (NEU)."""
    source = pub.SOURCES["saliency"]
    d = pub.saliency_published_rise()
    paper = (f"Severstal (both models) peaks at 25 % revealed, {d:.2f} nats above the higher end (EffNet .562 vs "
             f".311/.194, ResNet .270 vs .053/.061); NEU (VGG16) peaks at {pub.SALIENCY_NEU['peak_share']} %, nearly flat")
    rule = (f"peak share chosen on a random half of the images, tested on the other: min over both ends of the mean "
            f"rise (peak - end), paired over images, percentile bootstrap ({N_BOOTSTRAP}); " + RULE_3.format(null=0)
            + "; the peak's place is descriptive")
    guided = per_image[per_image["order"] == "saliency"] if "order" in per_image else per_image.iloc[0:0]
    if guided.empty:
        return _missing(SALIENCY_TITLE, source, paper, "saliency results missing", rule)
    table = guided.pivot_table(index="index", columns="share", values="predictive_entropy").dropna()
    shares = table.columns.to_numpy(float)
    if len(shares) < 3 or len(table) < 4:
        return _missing(SALIENCY_TITLE, source, paper,
                        f"{len(shares)} shares and {len(table)} images: a peak between two ends needs 3 shares", rule)
    entropy = table.to_numpy(float)
    order = np.random.default_rng(seed).permutation(len(entropy))
    choose, test = entropy[order[: len(order) // 2]], entropy[order[len(order) // 2:]]
    peak = int(np.argmax(choose.mean(0)))

    def rise(e):
        return float(min(e[:, peak].mean() - e[:, 0].mean(), e[:, peak].mean() - e[:, -1].mean()))

    iv = bootstrap_interval(rise, (test,), N_BOOTSTRAP, seed=seed)
    where = bootstrap_interval(lambda e: float(shares[int(np.argmax(e.mean(0)))]), (entropy,), N_BOOTSTRAP, seed=seed)
    verdict, why = judge(iv, d, kind="bootstrap", unit="images", digits=3)
    if peak in (0, len(shares) - 1):
        why = f"the peak chosen on half the images is an end ({shares[peak]:g} %): no interior peak; " + why
    return _claim(SALIENCY_TITLE, source, paper,
                  f"rise above both ends {iv.text(1, 3)} nats at {shares[peak]:g} % (chosen on {len(choose)} images, "
                  f"tested on {len(test)}); peak of all {len(entropy)} at {where.estimate:g} % "
                  f"[{where.low:g}, {where.high:g}]", (verdict, why), rule)


# ============================================================================ active learning

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
    return pd.DataFrame(rows, columns=["strategy", "round", "share", "labelled", "estimate", "low", "high", "n"])


def al_claims(rounds: pd.DataFrame, strategies: tuple[str, ...]) -> tuple[list[Claim], pd.DataFrame]:
    """rounds: active_learning.py's rounds.csv; strategies: every registered strategy (those not in
    rounds were not run) -> (one claim per strategy but random at the last share, the
    strategy x share differences). Each strategy is judged against the toolkit's own CIFAR-10
    gap at 60 %: a winner's gap as d (`judge`), a level strategy's by `judge_level`."""
    source = pub.SOURCES["active_learning"]
    margin = pub.al_level_margin()
    ran = set(rounds["strategy"]) if not rounds.empty else set()
    diffs = strategy_differences(rounds) if "random" in ran else pd.DataFrame()
    last = diffs[diffs["round"] == diffs["round"].max()].set_index("strategy") if not diffs.empty else pd.DataFrame()
    claims = []
    for strategy in [s for s in strategies if s != "random"]:
        gap = pub.al_gap(strategy)
        level = math.isfinite(gap) and abs(100 * gap) < pub.AL_LEVEL_BELOW
        title = f"Active learning: {strategy} {'level with' if level else 'beats'} random"
        paper = (f"CIFAR-10, ResNet18, 3 runs, 60 %: {pub.AL_CIFAR10_AT_60.get(strategy, 'n/a')} vs random "
                 f"{pub.AL_CIFAR10_AT_60['random']} ({100 * gap:+.2f} points)")
        rule = (f"paired t-interval over seeds of (its test accuracy - random's) at the last share; "
                + (f"level: reproduced = inside +-{100 * margin:.2f} points (the smallest published winning gap), "
                   "contradicted = excludes 0, else inconclusive" if level else RULE_3.format(null=0)))
        if strategy not in ran or strategy not in last.index:
            why = "not run at this scale" if strategy not in ran else "random was not run"
            claims.append(_missing(title, source, paper, why, rule))
            continue
        row = last.loc[strategy]
        iv = Interval(float(row["estimate"]), float(row["low"]), float(row["high"]), int(row["n"]))
        verdict_why = (judge_level(iv, margin) if level else
                       judge(iv, gap, scale=100, digits=2))
        claims.append(_claim(title, source, paper,
                             f"minus random at {fmt_pct(row['share'], 0)} labelled: {iv.text(100, 1)} points", verdict_why,
                             rule))
    return claims, diffs


def strategy_table(diffs: pd.DataFrame) -> list[str]:
    """Markdown: each strategy minus random (points, paired t-interval over seeds) at every share,
    with the toolkit's own CIFAR-10 gap at 60 % beside it."""
    if diffs.empty:
        return []
    shares = sorted(diffs["round"].unique())
    head = {r: f"{100 * diffs[diffs['round'] == r]['share'].iloc[0]:.0f} %" for r in shares}
    lines = ["| strategy - random (points) | " + " | ".join(head[r] for r in shares) + " | toolkit, CIFAR-10 at 60 % |",
             "|---|" + "---|" * (len(shares) + 1)]
    for strategy, part in diffs.groupby("strategy"):
        part = part.set_index("round")
        cells = []
        for r in shares:
            row = part.loc[r] if r in part.index else None
            cells.append("n/a" if row is None else
                         Interval(row["estimate"], row["low"], row["high"], int(row["n"])).text(100, 1))
        gap = pub.al_gap(strategy)
        lines.append(f"| {strategy} | " + " | ".join(cells) + f" | {_fmt(gap, 100, 2)} |")
    return lines


# ============================================================================ safety cascade

SAFETY_TITLE = "Safety cascade: < 0.1 % wrong and undetected (certified)"


def safety_claim(safety: dict, thresholds: dict) -> Claim:
    """safety / thresholds: evaluate_safety.py's safety.json and thresholds.json. The verdict is the
    Learn-then-Test certificate at (alpha, delta) on the calibration split; the test split can only
    refute it (its one-sided 95 % lower Clopper-Pearson bound above alpha); its count is reported
    either way."""
    alpha = float(safety.get("target", pub.SAFETY_ALPHA))
    calibration = thresholds.get("calibration") or safety.get("calibration") or {}
    delta = calibration.get("delta")
    needed = required_calibration_size(alpha, delta or 0.05)
    source = pub.SOURCES["safety"]
    paper = "R4VR (NEU/Severstal, two models): < 0.1 % wrong and undetected; workload and threshold code not published"
    rule = (f"the Learn-then-Test certificate (alpha {fmt_pct(alpha, 1)}, delta {delta}) on the calibration split, on "
            "a threshold path fixed before its scores, with less than 100 % referred = reproduced; the test split "
            "refutes it when its one-sided 95 % lower Clopper-Pearson bound exceeds alpha (contradicted); certified only "
            f"by referring everything, or on a split the models saw = inconclusive; fewer than {needed:,} calibration "
            "images = not testable (even zero errors could not certify alpha)")
    splits = safety.get("splits", {})
    calib_split = thresholds.get("calib_split", "valid")
    if "test" not in splits or calib_split not in splits:
        return _missing(SAFETY_TITLE, source, paper, "safety results missing", rule)
    test, calib = splits["test"]["cascade"], splits[calib_split]["cascade"]
    low = clopper_pearson(test["undetected"], test["n"], 0.90, two_sided=True)[0]
    certified = bool(calibration.get("certified"))
    stat = (f"{'certified' if certified else 'NOT certified'} on {calib_split} (n {calib['n']}, "
            f"{calib['undetected']} undetected, {fmt_pct(calib['referral_rate'])} referred); test: "
            f"{test['undetected']}/{test['n']} undetected = {fmt_pct(test['undetected_rate'], 2)} "
            f"[{fmt_pct(low, 2)}, {fmt_pct(test['undetected_upper'], 2)}], {fmt_pct(test['referral_rate'])} referred")
    if low > alpha:
        return Claim(SAFETY_TITLE, source, paper, stat, CONTRADICTED,
                     f"the test split's lower bound {fmt_pct(low, 3)} exceeds alpha {fmt_pct(alpha, 1)}", rule)
    if calib["n"] < needed:
        return Claim(SAFETY_TITLE, source, paper, stat, NOT_TESTABLE,
                     f"{calib['n']} calibration images: alpha {fmt_pct(alpha, 1)} needs >= {needed:,}", rule)
    if calibration.get("calib_used_in_training"):
        return Claim(SAFETY_TITLE, source, paper, stat, INCONCLUSIVE,
                     f"the calibration split was the models' early-stopping split: the certificate does not hold; "
                     f"{needed:,} images the models never saw would decide it", rule)
    if not certified or calib["referral_rate"] >= 1:
        return Claim(SAFETY_TITLE, source, paper, stat, INCONCLUSIVE,
                     "certified only by referring every image: the walk met calibration errors before any threshold "
                     f"that accepts images; more calibration images (>= {needed:,} with zero accepted errors) or "
                     "fewer errors would decide it", rule)
    return Claim(SAFETY_TITLE, source, paper, stat, REPRODUCED,
                 f"certified with {fmt_pct(calib['referral_rate'])} referred; the test split does not refute it "
                 f"(lower bound {fmt_pct(low, 3)} <= alpha)", rule)


# ============================================================================ the table

def verdict_table(claims: list[Claim]) -> list[str]:
    """Markdown lines: the table (claim, source, published number, ours with 95 % interval,
    verdict, why), the outcome definitions, then every rule."""
    lines = ["| claim | row | source | published (its own data and model) | this run (two-sided 95 % interval unless "
             "stated) | power at this scale | verdict | why |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {c.claim} | {'ours' if c.ours else 'paper'} | {c.source} | {c.paper} | {c.statistic} | "
              f"{c.power.text() if c.power else 'n/a'} | **{c.verdict}** | {c.why} |" for c in claims]
    lines += ["", "Outcomes against the published effect d (every interval two-sided 95 %): **reproduced** = the "
              "interval excludes the null on the paper's side; **contradicted** = it lies on the other side, or holds "
              "the null but excludes d; **inconclusive** = it holds both (the row says how many seeds or images would "
              "decide it at the observed spread); **not testable at this scale** = no interval can be built.", "",
              "Rules:", ""]
    by_rule: dict[str, list[str]] = {}
    for c in claims:
        by_rule.setdefault(c.rule, []).append(c.claim)
    lines += [f"- {'; '.join(names)}: {rule}." for rule, names in by_rule.items()]
    return lines
