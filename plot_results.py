"""Every figure of the project, redrawn from saved results only (never by re-running anything).

    python plot_results.py results/            # redraw every figure whose results exist
    python plot_results.py results/ --only training_curves

Each `plot_*` function takes the results folder and the figure folder, reads the files it
needs, writes PNG and PDF via `save_figure`, and returns the written paths (an empty list
when its results are absent). `FIGURES` lists them in order; add a new figure by writing
one function and adding one line there.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen needed
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import numpy as np  # noqa: E402

from safehil.report import published as pub  # noqa: E402
from utils import flag, parse_config, require, run_main  # noqa: E402


@dataclass(frozen=True)
class Config:
    """plot_results.py's flags (all its own)."""
    results_dir: str = flag("results", "folder holding the saved results", positional=True)
    figures_dir: str | None = flag(None, "where figures go; None = RESULTS/figures")
    only: tuple[str, ...] | None = flag(None, "comma list of figure names, e.g. training_curves; default every figure")

    def __post_init__(self):
        unknown = sorted(set(self.only or ()) - set(figure_names()))
        require(not unknown, f"--only: unknown figure(s) {unknown}; choose from {figure_names()}")

STYLE = {
    "figure.figsize": (6.4, 4.2), "figure.dpi": 110, "savefig.dpi": 160, "axes.grid": True,
    "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False, "font.size": 10,
    "legend.frameon": False, "axes.titlesize": 11,
}
COLORS = plt.get_cmap("tab10").colors


def save_figure(fig, figures_dir: Path, name: str) -> list[Path]:
    """Write `name`.png and `name`.pdf into figures_dir; close the figure."""
    figures_dir.mkdir(parents=True, exist_ok=True)
    paths = [figures_dir / f"{name}.png", figures_dir / f"{name}.pdf"]
    fig.tight_layout()
    for p in paths:
        fig.savefig(p)
    plt.close(fig)
    return paths


# ============================================================================ training (foundation)

def plot_training_curves(results: Path, figures: Path) -> list[Path]:
    """Validation accuracy per epoch of every run under results/train (one line per run)."""
    runs = sorted(p.parent for p in (results / "train").glob("*/metrics.csv"))
    if not runs:
        return []
    with plt.rc_context(STYLE):
        fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
        for i, run in enumerate(runs):
            m = pd.read_csv(run / "metrics.csv")
            ax_loss.plot(m["epoch"], m["val_loss"], color=COLORS[i % 10], label=run.name)
            ax_acc.plot(m["epoch"], m["val_accuracy"], color=COLORS[i % 10], label=run.name)
        ax_loss.set(xlabel="epoch", ylabel="validation loss")
        ax_acc.set(xlabel="epoch", ylabel="validation accuracy")
        ax_acc.legend(fontsize=7)
        return save_figure(fig, figures, "training_curves")


def plot_augmentation_accuracy(results: Path, figures: Path) -> list[Path]:
    """Test accuracy with vs without use_aug per test split, mean +- std over seeds (sweep summaries)."""
    sweeps = sorted((results / "train").glob("*_sweep/summary.json"))
    if not sweeps:
        return []
    rows = []
    for path in sweeps:
        for split, s in json.loads(path.read_text()).items():
            rows.append({"run": path.parent.name.removesuffix("_sweep"), "split": split,
                         "mean": s["accuracy_mean"], "std": s["accuracy_std"]})
    table = pd.DataFrame(rows)
    splits = sorted(table["split"].unique())
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        width = 0.8 / max(1, table["run"].nunique())
        for i, (run, part) in enumerate(table.groupby("run")):
            part = part.set_index("split").reindex(splits)
            xs = [j + i * width for j in range(len(splits))]
            ax.bar(xs, part["mean"], width, yerr=part["std"], capsize=3, label=run, color=COLORS[i % 10])
        ax.set_xticks([j + width * (table["run"].nunique() - 1) / 2 for j in range(len(splits))], splits)
        ax.set(ylabel="test accuracy (mean +- std over seeds)", ylim=(0, 1))
        ax.legend(fontsize=7)
        return save_figure(fig, figures, "augmentation_accuracy")


# ============================================================================ data generation

def _data_generation_runs(results: Path) -> list[Path]:
    """Run folders of train_model_data_generation.py that hold merged results."""
    return sorted(p.parent for p in (results / "data_generation").glob("*/runtime.csv")
                  if (p.parent / "modeling_stats.json").is_file())


def plot_data_generation(results: Path, figures: Path) -> list[Path]:
    """The paper's Fig. 4 per run: manual labelling effort and computing time against the
    step size, one line per initial size (runtime.csv of results/data_generation/<run>)."""
    written = []
    for run in _data_generation_runs(results):
        table = pd.read_csv(run / "runtime.csv")
        if table.empty:
            continue
        hand = float(table["hand_effort"].iloc[0])
        with plt.rc_context(STYLE):
            fig, (ax_effort, ax_time) = plt.subplots(1, 2, figsize=(10, 4))
            for i, (initial, part) in enumerate(table.groupby("initial_samples")):
                part = part.sort_values("step_size")
                style = dict(color=COLORS[i % 10], marker="o", label=f"initial {initial}/class")
                ax_effort.plot(part["step_size"], part["correction_effort"], **style)
                ax_effort.plot(part["step_size"], part["labelled_by_hand"], color=COLORS[i % 10], marker=".",
                               ls="--", lw=1)
                ax_time.plot(part["step_size"], part["seconds"], **style)
            ax_effort.set(xlabel="step size (images per class)", ylabel="manual labelling effort (images)",
                          title=f"solid: corrections of arriving images (the paper's), dashed: + initial set\n"
                                f"(all {hand:.0f} pool images by hand = 100 %)")
            share = ax_effort.secondary_yaxis("right", functions=(lambda e: 100 * e / hand, lambda s: s * hand / 100))
            share.set_ylabel("% of labelling everything by hand")
            ax_time.set(xlabel="step size (images per class)", ylabel="computing time per setting (s)",
                        title="baseline + every step's prediction and fine-tuning")
            ax_time.legend(fontsize=8)
            for ax in (ax_effort, ax_time):
                ax.set_xticks(sorted(table["step_size"].unique()))
            fig.suptitle(f"human-in-the-loop data generation: {run.name}", fontsize=11)
            written += save_figure(fig, figures, f"data_generation_{run.name}")
    return written


def plot_data_generation_accuracy(results: Path, figures: Path) -> list[Path]:
    """Test accuracy against labelled size per run: one panel per initial size, one line per
    step size, and the model trained on all data at once as a dashed reference."""
    written = []
    for run in _data_generation_runs(results):
        stats = json.loads((run / "modeling_stats.json").read_text())
        settings = [s for s in stats["settings"].values()]
        if not settings:
            continue
        initials = sorted({s["summary"]["initial_samples"] for s in settings})
        steps = sorted({s["summary"]["step_size"] for s in settings})
        with plt.rc_context(STYLE):
            fig, axes = plt.subplots(1, len(initials), figsize=(3.6 * len(initials), 3.6), sharey=True,
                                     squeeze=False)
            for ax, initial in zip(axes[0], initials):
                for s in settings:
                    if s["summary"]["initial_samples"] != initial:
                        continue
                    records = sorted(s["by_labelled_size"].values(), key=lambda r: r["labelled_size"])
                    ax.plot([r["labelled_size"] for r in records], [r["test_accuracy"] for r in records],
                            color=COLORS[steps.index(s["summary"]["step_size"]) % 10], lw=1.2,
                            label=f"step {s['summary']['step_size']}/class")
                if stats.get("full_data"):
                    ax.axhline(stats["full_data"]["test_accuracy"], color="black", ls="--", lw=1,
                               label="all data at once")
                ax.set(xlabel="labelled images", title=f"initial {initial}/class")
            axes[0][0].set_ylabel("test accuracy")
            axes[0][-1].legend(fontsize=7)
            written += save_figure(fig, figures, f"data_generation_accuracy_{run.name}")
    return written


# ============================================================================ MC dropout

def _mc_runs(results: Path) -> list[Path]:
    """Run folders of get_mc_scores.py (per_image.csv + summary.json)."""
    return sorted(p.parent for p in (results / "mc_scores").glob("*/summary.json")
                  if (p.parent / "per_image.csv").is_file())


def plot_mc_entropy_boxplots(results: Path, figures: Path) -> list[Path]:
    """The paper's box plots: predictive entropy (nats) of correct vs wrong predictions, one
    pair per model (run), one figure per test split; n and the AUROC under each pair."""
    runs = _mc_runs(results)
    if not runs:
        return []
    tables = {run.name: pd.read_csv(run / "per_image.csv") for run in runs}
    summaries = {run.name: json.loads((run / "summary.json").read_text()) for run in runs}
    written = []
    # 'pooled': every image a run scored at once, the published box plots' set (R4VR NEU: test + valid + a train half)
    pooled = ["pooled"] if any(t["split"].nunique() > 1 for t in tables.values()) else []
    for split in sorted({s for t in tables.values() for s in t["split"].unique()}) + pooled:
        with plt.rc_context(STYLE):
            fig, ax = plt.subplots(figsize=(max(5.0, 2.0 * len(runs) + 1.5) + 1.4 * len(pub.MC_MEDIANS), 4.4))
            ticks, labels = [], []
            for i, (name, table) in enumerate(tables.items()):
                part = table if split == "pooled" else table[table["split"] == split]
                groups = [part.loc[part["correct"], "predictive_entropy"], part.loc[~part["correct"], "predictive_entropy"]]
                pos = [3 * i, 3 * i + 1]
                box = ax.boxplot([g.to_numpy() for g in groups], positions=pos, widths=0.8, patch_artist=True,
                                 showfliers=True, flierprops={"markersize": 2})
                for patch, color in zip(box["boxes"], (COLORS[2], COLORS[3])):
                    patch.set_facecolor(color)
                    patch.set_alpha(0.6)
                auroc = summaries[name]["splits"].get(split, {}).get("auroc", {}).get("predictive_entropy")
                ticks.append(3 * i + 0.5)
                labels.append(f"{name}\nn={len(groups[0])}/{len(groups[1])}"
                              + (f"\nAUROC {auroc:.2f}" if auroc == auroc and auroc is not None else ""))
            # the published medians, beside ours (their data and models: the same unit, not the same task)
            start = 3 * len(tables)
            ax.axvline(start - 1, color="grey", lw=0.8, ls=":")
            for j, (name, (right, wrong)) in enumerate(pub.MC_MEDIANS.items()):
                x = start + 1.2 * j
                ax.plot([x - 0.25], [right], marker="_", ms=16, mew=2.5, color=COLORS[2])
                ax.plot([x + 0.25], [wrong], marker="_", ms=16, mew=2.5, color=COLORS[3])
                ticks.append(x)
                labels.append("published\n" + name.replace(" ", "\n") + "\n(median)")
            ax.set_xticks(ticks, labels, fontsize=6)
            ax.set_ylabel("predictive entropy (nats)")
            ax.set_title(f"MC dropout, {split}: correct (green) vs wrong (red)\nright of the dotted line: the "
                         "published medians (their own data and models)", fontsize=9)
            written += save_figure(fig, figures, f"mc_entropy_boxplots_{split}")
    return written


def plot_mc_reliability(results: Path, figures: Path) -> list[Path]:
    """Reliability diagram of the MC mean prediction per run (accuracy against confidence per
    bin, the diagonal is perfect calibration), ECE in the legend; one figure per test split."""
    runs = _mc_runs(results)
    if not runs:
        return []
    summaries = {run.name: json.loads((run / "summary.json").read_text()) for run in runs}
    written = []
    for split in sorted({s for m in summaries.values() for s in m["splits"]}):
        with plt.rc_context(STYLE):
            fig, ax = plt.subplots(figsize=(5, 4.5))
            ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
            for i, (name, summary) in enumerate(summaries.items()):
                if split not in summary["splits"]:
                    continue
                s = summary["splits"][split]
                bins = pd.DataFrame(s["reliability"]).dropna()
                bins = bins[bins["count"] > 0]
                ax.plot(bins["confidence"], bins["accuracy"], marker="o", markersize=3, color=COLORS[i % 10],
                        label=f"{name} (ECE {s['ece']:.3f})")
            ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (max of the MC mean)", ylabel="accuracy",
                   title=f"Reliability, {split}")
            ax.legend(fontsize=7, loc="upper left")
            written += save_figure(fig, figures, f"mc_reliability_{split}")
    return written


def plot_mc_risk_coverage(results: Path, figures: Path) -> list[Path]:
    """Risk-coverage curves: error rate among the most certain images against the share
    accepted, one panel per run, one line per score (AURC in the legend), split 'test' (else
    the first split)."""
    from safehil.uq import uncertainty  # torch-based, only needed here
    runs = _mc_runs(results)
    if not runs:
        return []
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs) + 0.5, 4), squeeze=False)
        for ax, run in zip(axes[0], runs):
            table = pd.read_csv(run / "per_image.csv")
            split = "test" if "test" in set(table["split"]) else sorted(table["split"].unique())[0]
            part = table[table["split"] == split]
            wrong = ~part["correct"].to_numpy(bool)
            for i, score in enumerate(s for s in uncertainty.SCORES if s in part.columns):
                coverage, risk = uncertainty.risk_coverage_curve(part[score].to_numpy(float), wrong)
                ax.plot(coverage, risk, color=COLORS[i % 10], linewidth=1.2,
                        label=f"{score} (AURC {risk.mean():.3f})")
            ax.axhline(wrong.mean(), color="grey", linestyle="--", linewidth=1, label="no selection")
            ax.set(xlabel="coverage (share accepted)", ylabel="risk (error rate of accepted)",
                   title=f"{run.name}, {split}", xlim=(0, 1))
            ax.legend(fontsize=6)
        return save_figure(fig, figures, "mc_risk_coverage")


# ============================================================================ saliency

SALIENCY_ORDER_STYLE = {"saliency": ("most salient first", COLORS[3], "-"),
                        "random": ("random pixels", COLORS[7], "--"),
                        "least_salient": ("least salient first", COLORS[0], ":")}


def _saliency_runs(results: Path) -> list[Path]:
    """Run folders of saliency_map_uncertainties.py (curves.csv + summary.json)."""
    return sorted(p.parent for p in (results / "saliency").glob("*/curves.csv")
                  if (p.parent / "summary.json").is_file())


def plot_saliency_curves(results: Path, figures: Path) -> list[Path]:
    """The paper's saliency curves per run: mean predictive entropy (nats) and accuracy
    against the revealed share of pixels, one line per reveal order, the full image as a
    dashed reference; the entropy panel also shows correct and wrong predictions of the
    saliency order as thin lines."""
    written = []
    for run in _saliency_runs(results):
        curves = pd.read_csv(run / "curves.csv")
        summary = json.loads((run / "summary.json").read_text())
        full = curves[curves["order"] == "full_image"].iloc[0]
        with plt.rc_context(STYLE):
            fig, (ax_h, ax_acc) = plt.subplots(1, 2, figsize=(10.5, 4))
            for order, (label, colour, style) in SALIENCY_ORDER_STYLE.items():
                part = curves[curves["order"] == order].sort_values("share")
                if part.empty:
                    continue
                ax_h.plot(part["share"], part["mean_entropy"], style, marker="o", ms=3, color=colour, label=label)
                ax_acc.plot(part["share"], 100 * part["accuracy"], style, marker="o", ms=3, color=colour, label=label)
                if order == "saliency":
                    for column, what in (("mean_entropy_correct", "correct"), ("mean_entropy_wrong", "wrong")):
                        ax_h.plot(part["share"], part[column], "-", lw=0.8, alpha=0.6, color=colour,
                                  marker="^" if what == "wrong" else "v", ms=3, label=f"  {what} predictions")
            ax_h.axhline(full["mean_entropy"], color="black", ls="--", lw=1, label="full image")
            ax_acc.axhline(100 * full["accuracy"], color="black", ls="--", lw=1, label="full image")
            ax_h.set(xlabel="pixels revealed (%)", ylabel="mean predictive entropy (nats)", xlim=(0, 100))
            ax_acc.set(xlabel="pixels revealed (%)", ylabel="accuracy (%)", xlim=(0, 100), ylim=(0, 101))
            ax_h.legend(fontsize=7)
            ax_acc.legend(fontsize=7, loc="lower right")
            fig.suptitle(f"saliency-masked uncertainty: {run.name} ({summary['model_name']}, {summary['method']}, "
                         f"n = {summary['n_images']}, T = {summary['T']})", fontsize=10)
            written += save_figure(fig, figures, f"saliency_curves_{run.name}")
    return written


def saliency_examples_figure(run: Path):
    """The example grid of one saliency run (its examples.npz): per image the input, the
    saliency overlay and what the model sees for each reveal order at the example share
    (hidden pixels at the fill value; the paper's 0 is the data set's mean grey). Returns the figure."""
    import numpy as np
    data = np.load(run / "examples.npz")
    images, sal, names = data["images"], data["saliency"], data["class_names"]
    orders, share = [str(o) for o in data["orders"]], float(data["share"])
    n, cols = len(images), 2 + len(orders)
    with plt.rc_context({**STYLE, "axes.grid": False}):
        fig, axes = plt.subplots(n, cols, figsize=(1.9 * cols, 2.0 * n), squeeze=False)
        for i in range(n):
            grey = images[i].mean(0) / 255.0  # [H, W]; the data are grayscale in three channels
            label, pred = names[data["labels"][i]], names[data["predictions"][i]]
            ok = data["labels"][i] == data["predictions"][i]
            axes[i][0].imshow(grey, cmap="gray", vmin=0, vmax=1)
            axes[i][0].set_title(f"{label}\n-> {pred} (H {data['entropy'][i]:.2f})", fontsize=7,
                                 color="black" if ok else COLORS[3])
            peak = sal[i].max()
            axes[i][1].imshow(grey, cmap="gray", vmin=0, vmax=1)
            axes[i][1].imshow(sal[i] / peak if peak > 0 else sal[i], cmap="inferno", alpha=0.55, vmin=0, vmax=1)
            axes[i][1].set_title("saliency", fontsize=7)
            fill_grey = float(np.clip(data["fill_pixel"], 0, 1))
            for j, order in enumerate(orders):
                shown = np.where(data[f"mask_{order}"][i], grey, fill_grey)
                axes[i][2 + j].imshow(shown, cmap="gray", vmin=0, vmax=1)
                axes[i][2 + j].set_title(f"{SALIENCY_ORDER_STYLE.get(order, (order,))[0]}\n{share:g} % shown",
                                         fontsize=7)
            for ax in axes[i]:
                ax.set_xticks([])
                ax.set_yticks([])
        fig.suptitle(f"{run.name}: correct (black) and wrong (red) predictions\n", fontsize=9)
    return fig


def plot_saliency_examples(results: Path, figures: Path) -> list[Path]:
    """The example grid (saliency_examples_figure) of every saliency run that saved one."""
    written = []
    for run in _saliency_runs(results):
        if (run / "examples.npz").is_file():
            written += save_figure(saliency_examples_figure(run), figures, f"saliency_examples_{run.name}")
    return written


# ============================================================================ active learning

def plot_active_learning(results: Path, figures: Path) -> list[Path]:
    """Per run under results/active_learning: test accuracy against labelled share, one line per
    strategy (mean over seeds, band = +- std), and the mean query seconds per strategy."""
    written = []
    for path in sorted((results / "active_learning").glob("*/rounds.csv")):
        rounds = pd.read_csv(path)
        stats = rounds.groupby(["strategy", "round"]).agg(
            share=("share", "mean"), mean=("test_accuracy", "mean"), std=("test_accuracy", "std"),
            query=("query_seconds", "mean")).reset_index().fillna({"std": 0.0})
        final = stats[stats["round"] == stats["round"].max()].sort_values("mean", ascending=False)
        order = list(final["strategy"])  # legend in the order of the final accuracy
        with plt.rc_context(STYLE):
            fig, (ax, ax_q) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [2, 1]})
            for i, strategy in enumerate(order):
                part = stats[stats["strategy"] == strategy].sort_values("round")
                color = COLORS[i % 10]
                style = "--" if strategy == "random" else "-"
                ax.plot(100 * part["share"], 100 * part["mean"], style, marker="o", ms=3, color=color,
                        label=strategy)
                ax.fill_between(100 * part["share"], 100 * (part["mean"] - part["std"]),
                                100 * (part["mean"] + part["std"]), color=color, alpha=0.15, lw=0)
            ax.set(xlabel="labelled share of the pool (%)", ylabel="test accuracy (%), mean +- std over seeds",
                   title=f"active learning: {path.parent.name} ({rounds['seed'].nunique()} seeds)")
            ax.legend(fontsize=7)
            queries = stats[stats["round"] > 0].groupby("strategy")["query"].mean().reindex(order)
            ax_q.barh(range(len(order)), queries.values, color=[COLORS[i % 10] for i in range(len(order))])
            ax_q.set_yticks(range(len(order)), order, fontsize=8)
            ax_q.invert_yaxis()
            ax_q.set(xlabel="seconds per query (mean)", title="query cost")
            written += save_figure(fig, figures, f"active_learning_{path.parent.name}")
    return written


# ============================================================================ safety cascade

SAFETY_LABELS = {"model_a_alone": "model A alone", "uncertainty_a": "uncertainty only (A)",
                 "uncertainty_b": "uncertainty only (B)", "disagreement": "disagreement only",
                 "cascade": "both (cascade)"}


def _safety_runs(results: Path) -> list[Path]:
    """Run folders of evaluate_safety.py (safety.json + sweep.csv)."""
    return sorted(p.parent for p in (results / "safety").glob("*/safety.json") if (p.parent / "sweep.csv").is_file())


def plot_safety_tradeoff(results: Path, figures: Path) -> list[Path]:
    """Workload (referral rate) against undetected-error rate per test split, from the threshold
    sweep of evaluate_safety.py: one line per mechanism, the calibrated operating points as
    stars, disagreement and the lone model as single points, the target as a dashed line."""
    written = []
    for run in _safety_runs(results):
        safety = json.loads((run / "safety.json").read_text())
        curve = pd.read_csv(run / "sweep.csv")
        splits = list(safety["splits"])
        with plt.rc_context(STYLE):
            fig, axes = plt.subplots(1, len(splits), figsize=(4.2 * len(splits), 3.9), squeeze=False)
            for ax, split in zip(axes[0], splits):
                part = curve[curve["split"] == split]
                for i, mode in enumerate(SAFETY_LABELS):
                    colour = COLORS[i % 10]
                    line = part[part["mode"] == mode].sort_values("referral_rate")
                    if len(line) > 1:
                        ax.plot(100 * line["referral_rate"], 100 * line["undetected_rate"], color=colour, lw=1.3,
                                label=SAFETY_LABELS[mode])
                    point = safety["splits"][split].get(mode)
                    if point:
                        ax.plot(100 * point["referral_rate"], 100 * point["undetected_rate"],
                                marker="*" if len(line) > 1 else "o", ms=11 if len(line) > 1 else 7, color=colour,
                                mec="black", mew=0.6, ls="none", label=None if len(line) > 1 else SAFETY_LABELS[mode])
                ax.axhline(100 * safety["target"], color="black", ls="--", lw=1, label="target")
                ax.set_yscale("symlog", linthresh=max(0.05, 100 * safety["target"]))
                ax.set_ylim(0, 100)
                ax.set(xlabel="referred to a person (%)", ylabel="undetected errors (% of all images)",
                       title=f"{split} (n = {next(iter(safety['splits'][split].values()))['n']})", xlim=(-2, 102))
            axes[0][-1].legend(fontsize=7)
            fig.suptitle(f"safety cascade {run.name}: workload vs undetected errors (stars: calibrated)", fontsize=10)
            written += save_figure(fig, figures, f"safety_tradeoff_{run.name}")
    return written


def plot_safety_comparison(results: Path, figures: Path) -> list[Path]:
    """The mechanism comparison at the calibrated thresholds: referral rate and undetected-error
    rate (with its Clopper-Pearson upper bound as the error bar) per mechanism and split."""
    written = []
    for run in _safety_runs(results):
        safety = json.loads((run / "safety.json").read_text())
        splits = list(safety["splits"])
        modes = [m for m in SAFETY_LABELS if all(m in safety["splits"][s] for s in splits)]
        width = 0.8 / max(1, len(modes))
        with plt.rc_context(STYLE):
            fig, (ax_ref, ax_und) = plt.subplots(1, 2, figsize=(11, 4))
            for i, mode in enumerate(modes):
                xs = [j + (i - (len(modes) - 1) / 2) * width for j in range(len(splits))]
                metrics = [safety["splits"][s][mode] for s in splits]
                rates = [100 * m["undetected_rate"] for m in metrics]
                uppers = [100 * m["undetected_upper"] - r for m, r in zip(metrics, rates)]
                ax_ref.bar(xs, [100 * m["referral_rate"] for m in metrics], width, color=COLORS[i % 10],
                           label=SAFETY_LABELS[mode])
                ax_und.bar(xs, rates, width, color=COLORS[i % 10], yerr=[[0] * len(rates), uppers], capsize=2,
                           label=SAFETY_LABELS[mode])
            for ax in (ax_ref, ax_und):
                ax.set_xticks(range(len(splits)), splits)
            ax_und.axhline(100 * safety["target"], color="black", ls="--", lw=1, label="target")
            ax_und.set_yscale("symlog", linthresh=max(0.05, 100 * safety["target"]))
            ax_und.set_ylim(0, 100)
            ax_ref.set(ylabel="referred to a person (%)", ylim=(0, 128), yticks=range(0, 101, 20))
            ax_und.set(ylabel="undetected errors (%), bar to upper bound")
            ax_ref.legend(fontsize=7, ncol=3, loc="upper center")
            fig.suptitle(f"safety mechanisms at calibrated thresholds: {run.name}", fontsize=10)
            written += save_figure(fig, figures, f"safety_comparison_{run.name}")
    return written


# ============================================================================ published numbers beside ours

def _hil_seed_tables(run: Path) -> list[pd.DataFrame]:
    """runtime.csv of a data-generation run and of its other arrival-order seeds (<run>_s<k>)."""
    folders = [run] + sorted(p for p in run.parent.glob(f"{run.name}_s*") if (p / "runtime.csv").is_file())
    return [pd.read_csv(f / "runtime.csv") for f in folders]


def plot_data_generation_vs_published(results: Path, figures: Path) -> list[Path]:
    """Fig. 4 beside the published one: manual effort (wrong arriving predictions) and compute time
    against the step, one line per initial size; the published Severstal EffNet-B0 and ResNet18
    (seed 42, a GPU) in their own panels, this run (mean over arrival-order seeds, loop time
    without the shared baseline, dots = seeds) in its own: the shapes compare, the values do not."""
    written = []
    for run in _data_generation_runs(results):
        seed_of = re.fullmatch(r"(.+)_s\d+", run.name)
        if seed_of and (run.parent / seed_of.group(1) / "runtime.csv").is_file():
            continue  # another arrival-order seed of a run drawn with it
        tables = [t for t in _hil_seed_tables(run) if not t.empty]
        if not tables:
            continue
        ours = pd.concat([t.assign(seed=k) for k, t in enumerate(tables)], ignore_index=True)
        effort = ours["correction_effort"] if "correction_effort" in ours else ours["total_effort"] - ours["initial_effort"]
        loop = ours["loop_seconds"] if "loop_seconds" in ours else ours["seconds"] - ours["baseline_seconds"]
        ours = ours.assign(effort=effort, loop=loop)
        with plt.rc_context(STYLE):
            fig, axes = plt.subplots(2, 3, figsize=(13, 7))
            for col, model in enumerate(pub.HIL_SEVERSTAL):
                for i, initial in enumerate(pub.HIL_INITIAL):
                    steps = list(pub.HIL_STEPS)
                    values = [pub.HIL_SEVERSTAL[model][initial, st] for st in steps]
                    style = dict(color=COLORS[i % 10], marker="s", label=f"initial {initial}/class")
                    axes[0][col].plot(steps, [v[1] for v in values], **style)
                    axes[1][col].plot(steps, [v[0] for v in values], **style)
                axes[0][col].set_title(f"published: Severstal {model}, seed 42 (GPU)", fontsize=9)
                axes[0][col].set_ylabel(f"manual effort (images of {pub.HIL_POOL})")
                axes[1][col].set_ylabel("wall-clock seconds per setting")
            for i, (initial, part) in enumerate(ours.groupby("initial_samples")):
                mean = part.groupby("step_size")[["effort", "loop"]].mean()
                style = dict(color=COLORS[i % 10], marker="o", label=f"initial {initial}/class")
                axes[0][2].plot(mean.index, mean["effort"], **style)
                axes[1][2].plot(mean.index, mean["loop"], **style)
                axes[0][2].scatter(part["step_size"], part["effort"], s=8, color=COLORS[i % 10], alpha=0.5)
                axes[1][2].scatter(part["step_size"], part["loop"], s=8, color=COLORS[i % 10], alpha=0.5)
            pool = int(ours["hand_effort"].iloc[0])
            axes[0][2].set_title(f"this run: {run.name}, mean of {len(tables)} arrival-order seed(s)", fontsize=9)
            axes[0][2].set_ylabel(f"manual effort (images of {pool})")
            axes[1][2].set_ylabel("loop seconds (without the shared baseline)")
            for ax in axes[1]:
                ax.set_xlabel("step size (images per class)")
            for ax in axes.ravel():
                ax.legend(fontsize=6)
            fig.suptitle("human-in-the-loop data generation beside the published Fig. 4 (own axes: compare shapes, "
                         "not values)", fontsize=10)
            written += save_figure(fig, figures, f"data_generation_vs_published_{run.name}")
    return written


def _normalise(values, low: float, high: float):
    return (values - low) / (high - low) if high > low else values * 0.0


def plot_saliency_vs_published(results: Path, figures: Path) -> list[Path]:
    """The saliency-guided entropy curve beside the published ones, each normalised to its own
    range (0 = its lowest mean, 1 = its highest): Severstal EffNet-B0 and ResNet18, the NEU peak
    (its curve is not tabled), and this run's mean with a per-share 95 % t-interval band over
    images; a second panel shows ours in nats."""
    from safehil.report.stats import t_interval
    written = []
    for run in _saliency_runs(results):
        path = run / "per_image.csv"
        if not path.is_file():
            continue
        table = pd.read_csv(path)
        guided = table[table["order"] == "saliency"]
        if guided.empty:
            continue
        per_share = [(share, t_interval(part["predictive_entropy"].to_numpy(float)))
                     for share, part in guided.groupby("share")]
        shares = [s for s, _ in per_share]
        mean = pd.Series([iv.estimate for _, iv in per_share], index=shares)
        low = pd.Series([iv.low for _, iv in per_share], index=shares)
        high = pd.Series([iv.high for _, iv in per_share], index=shares)
        lo, hi = float(mean.min()), float(mean.max())
        with plt.rc_context(STYLE):
            fig, (ax, ax_nats) = plt.subplots(1, 2, figsize=(11, 4.2))
            for i, (model, curve) in enumerate(pub.SALIENCY_SEVERSTAL.items()):
                c = pd.Series(curve, index=pub.SALIENCY_SHARES, dtype=float)
                ax.plot(c.index, _normalise(c, c.min(), c.max()), "--", marker="s", ms=3, color=COLORS[i + 1],
                        label=f"published Severstal {model} ({c.min():.3f}-{c.max():.3f} nats)")
            ax.plot([pub.SALIENCY_NEU["peak_share"]], [1.0], marker="*", ms=12, ls="none", color=COLORS[4],
                    label="published NEU VGG16 peak ({:.3f}-{:.3f} nats, nearly flat)".format(*pub.SALIENCY_NEU["range"]))
            ax.plot(shares, _normalise(mean, lo, hi), "-", marker="o", ms=4, color=COLORS[3],
                    label=f"this run ({lo:.3f}-{hi:.3f} nats)")
            ax.fill_between(shares, _normalise(low, lo, hi), _normalise(high, lo, hi), color=COLORS[3], alpha=0.2,
                            lw=0, label="this run, per-share 95 % interval")
            ax.set(xlabel="pixels revealed, most salient first (%)", ylabel="mean entropy, normalised to its own range",
                   xlim=(0, 100), ylim=(-0.6, 1.6), title="shape beside the published curves (band clipped)")
            ax.legend(fontsize=6)
            ax_nats.plot(shares, mean, "-", marker="o", ms=4, color=COLORS[3], label="mean over images")
            ax_nats.fill_between(shares, low, high, color=COLORS[3], alpha=0.2, lw=0, label="95 % t-interval per share")
            ax_nats.set(xlabel="pixels revealed, most salient first (%)", ylabel="mean predictive entropy (nats)",
                        xlim=(0, 100), title=f"this run: {guided['index'].nunique()} images")
            ax_nats.legend(fontsize=7)
            written += save_figure(fig, figures, f"saliency_vs_published_{run.name}")
    return written


def plot_active_learning_vs_published(results: Path, figures: Path) -> list[Path]:
    """Each strategy minus random at the last share (paired t-interval over seeds, points) beside
    the toolkit's own CIFAR-10 gap at 60 % (its own axis)."""
    from safehil.report import verdicts
    written = []
    for path in sorted((results / "active_learning").glob("*/rounds.csv")):
        rounds = pd.read_csv(path)
        if "random" not in set(rounds["strategy"]):
            continue
        diffs = verdicts.strategy_differences(rounds)
        if diffs.empty:
            continue
        last = diffs[diffs["round"] == diffs["round"].max()].set_index("strategy")
        names = [s for s in pub.AL_CIFAR10_AT_60 if s != "random"]
        with plt.rc_context(STYLE):
            fig, (ax, ax_pub) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
            for y, name in enumerate(names):
                if name in last.index:
                    r = last.loc[name]
                    ax.errorbar([100 * r["estimate"]], [y], xerr=[[100 * (r["estimate"] - r["low"])],
                                                                  [100 * (r["high"] - r["estimate"])]],
                                fmt="o", color=COLORS[0], capsize=3)
                else:
                    ax.text(0, y, "not run", fontsize=7, va="center", ha="center", color="grey")
                ax_pub.barh([y], [100 * pub.al_gap(name)], color=COLORS[1])
            for a in (ax, ax_pub):
                a.axvline(0, color="black", lw=0.8)
            ax.set_yticks(range(len(names)), names, fontsize=8)
            ax.invert_yaxis()
            share = last["share"].iloc[0]
            ax.set(xlabel=f"minus random (points), 95 % interval over seeds", title=f"this run at {100 * share:.0f} % labelled")
            ax_pub.set(xlabel="minus random (points)", title="toolkit, CIFAR-10, 60 % labelled (3 runs)")
            fig.suptitle(f"active learning beside the toolkit's table: {path.parent.name} (own axes)", fontsize=10)
            written += save_figure(fig, figures, f"active_learning_vs_published_{path.parent.name}")
    return written


# ============================================================================ registry

# ============================================================================ ELPV: the experts' uncertainty

def plot_expert_uncertainty(results: Path, figures: Path) -> list[Path]:
    """Per expert defect probability (0, 1/3, 2/3, 1; reproduce's experts/expert_table.csv): mean MC and
    softmax entropy of each model (left), and the share referred by the cascade and called defective (right)."""
    path = results / "experts" / "expert_table.csv"
    if not path.is_file():
        return []
    table = pd.read_csv(path, dtype={"expert_p": str})
    with plt.rc_context(STYLE):
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        for k, (model, part) in enumerate(table.groupby("model", sort=False)):
            x = np.arange(len(part))
            left.plot(x, part["mc_entropy"], "o-", color=COLORS[k], label=f"{model}: MC entropy")
            left.plot(x, part["softmax_entropy"], "s--", color=COLORS[k], label=f"{model}: softmax entropy")
            right.plot(x, 100 * part["called_defective"], "o-", color=COLORS[k], label=f"{model}: called defective")
            if k == 0:
                right.plot(x, 100 * part["referral_rate"], "k^:", label="referred by the cascade (A + B)")
            for ax in (left, right):
                ax.set_xticks(x, part["expert_p"])
        left.set(xlabel="experts' defect probability", ylabel="mean entropy (nats)",
                 title="Model uncertainty per expert level (ELPV)")
        right.set(xlabel="experts' defect probability", ylabel="% of cells", ylim=(0, 100),
                  title="Decisions per expert level")
        left.legend(fontsize=8)
        right.legend(fontsize=8)
        return save_figure(fig, figures, "expert_uncertainty")


FIGURES = [
    plot_training_curves,
    plot_augmentation_accuracy,
    plot_data_generation,
    plot_data_generation_accuracy,
    plot_mc_entropy_boxplots,
    plot_mc_reliability,
    plot_mc_risk_coverage,
    plot_saliency_curves,
    plot_saliency_examples,
    plot_active_learning,
    plot_safety_tradeoff,
    plot_safety_comparison,
    plot_expert_uncertainty,
    plot_data_generation_vs_published,
    plot_saliency_vs_published,
    plot_active_learning_vs_published,
]


def figure_names() -> list[str]:
    return [fn.__name__.removeprefix("plot_") for fn in FIGURES]


def main(results_dir: str | Path, figures_dir: str | Path | None = None, only: list[str] | None = None) -> list[Path]:
    """Run every figure function (or those named in `only`); return all written paths."""
    results = Path(results_dir)
    figures = Path(figures_dir) if figures_dir else results / "figures"
    written = []
    for fn in FIGURES:
        name = fn.__name__.removeprefix("plot_")
        if only and name not in only:
            continue
        paths = fn(results, figures)
        print(f"{name}: {', '.join(str(p) for p in paths) if paths else 'no results, skipped'}")
        written += paths
    return written


if __name__ == "__main__":
    run_main(lambda cfg: main(cfg.results_dir, cfg.figures_dir, cfg.only), parse_config(Config, description=__doc__))
