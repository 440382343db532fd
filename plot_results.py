"""Every figure of the project, redrawn from saved results only (never by re-running anything).

    python plot_results.py results/            # redraw every figure whose results exist
    python plot_results.py results/ --only training_curves

Each `plot_*` function takes the results folder and the figure folder, reads the files it
needs, writes PNG and PDF via `save_figure`, and returns the written paths (an empty list
when its results are absent). `FIGURES` lists them in order; add a new figure by writing
one function and adding one line there.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen needed
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

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


# ============================================================================ data generation (issue 4)

# ============================================================================ MC dropout (issue 5)

# ============================================================================ saliency (issue 6)

# ============================================================================ active learning (issue 7)

# ============================================================================ safety cascade (issue 8)

# ============================================================================ registry

FIGURES = [
    plot_training_curves,
    plot_augmentation_accuracy,
]


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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results_dir", nargs="?", default="results", help="folder holding the saved results")
    parser.add_argument("--figures_dir", default=None, help="where figures go (default RESULTS/figures)")
    parser.add_argument("--only", default="", help="comma list of figure names, e.g. training_curves")
    args = parser.parse_args()
    main(args.results_dir, args.figures_dir, [s for s in args.only.split(",") if s] or None)
