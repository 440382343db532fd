"""results/REPORT.md from the result files of one reproduce.py run: the verdict table
(verdicts.py), the headline numbers next to the paper's, one section per experiment and every
figure. A library module: it reads run folders and writes one markdown file, it runs nothing.

    from safehil.report import report
    report.write_report(Path("results/REPORT.md"), report.RunFolders(...), report.RunHeader(...))

`RunFolders` names where each experiment wrote (reproduce.py builds it from the configs it ran);
`RunHeader` holds the scale line and the timings. Each `section_*` function returns (headline
rows, section lines) from one experiment's files and says "missing" when they are not there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from safehil.report import verdicts
from safehil.active.acquisition import STRATEGIES
from safehil.core.utils import atomic_write_text, fmt_num, fmt_pct, read_json


@dataclass(frozen=True)
class RunFolders:
    """Where each experiment of one reproduce.py run wrote its results."""
    train_sweeps: dict[str, Path]       # {"a_" + arm (train_model --passes, see ARM_KEYS): sweep folder} of model A
    data_generation: Path               # train_model_data_generation.py run folder
    mc_scores: tuple[Path, ...]         # get_mc_scores.py run folders, model A first
    saliency: Path                      # saliency_map_uncertainties.py run folder
    active_learning: Path               # active_learning.py run folder
    al_strategies: tuple[str, ...]      # the strategies that run ran
    safety: Path                        # evaluate_safety.py run folder
    figures: Path                       # plot_results.py output folder (REPORT.md embeds its PNGs)
    data_generation_seeds: tuple[Path, ...] = ()  # the grid's run folder per arrival-order seed (empty: the one above)
    mc_seeds: tuple[Path, ...] = ()     # model A's MC run folder per training seed (empty: mc_scores[0] alone)
    pair_agreement: Path | None = None  # reproduce's train/pair_agreement.json: the model pair and its disagreement
    strips: Path | None = None          # reproduce's strips/summary.json: the pair on the built-in Severstal-like strips
    experts: Path | None = None         # reproduce's experts/ folder (ELPV: the experts' uncertainty against the models')
    cell_shift: dict[str, Path] | None = None  # ELPV's cell-type shift: run folders of train, mc, saliency, safety


@dataclass(frozen=True)
class RunHeader:
    """What the report's opening lines say about the run."""
    scale: str
    image_size: int
    model_a: str
    model_b: str
    seeds: tuple[int, ...]
    epochs: int
    device: str
    cpu_count: int | None
    data_dir: str = ""                  # empty = the built-in synthetic set
    dataset: str = "synthetic"
    seconds: dict[str, float] = field(default_factory=dict)


def _json(path: Path):
    return read_json(path) if path.is_file() else None


def _csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() else None


def training_sweeps(folders: RunFolders) -> dict:
    """{arm: summary.json} of model A's seed sweep per arm ('plain', 'plain+augmented', ...; None when missing)."""
    return {key: _json(Path(folder) / "summary.json") for key, folder in folders.train_sweeps.items()}


def section_training(folders: RunFolders, header: RunHeader) -> tuple[list[str], list[str]]:
    """(headline rows, section lines) of the augmentation arms and the model pair's disagreement."""
    sweeps = training_sweeps(folders)
    if not sweeps or not all(sweeps.values()):
        return [], ["Training results missing."]
    arms = list(sweeps)
    names = [ARM_KEYS.get(a, a) for a in arms]
    text = {k: f"{100 * v['test']['accuracy_mean']:.1f} +- {100 * v['test']['accuracy_std']:.1f} %"
            for k, v in sweeps.items()}
    row = (f"| Test accuracy {' / '.join(names)} ({header.model_a}, seeds {list(header.seeds)}) | "
           f"{' / '.join(text[a] for a in arms)} | Severstal, 10 seeds: 84-88 % without, 93-98 % with use_aug "
           "(plain+augmented); the gain mixes the augmentation and the extra pass |")
    lines = [f"Model A ({header.model_a}) trained up to {header.epochs} epochs in each arm, seeds {list(header.seeds)}. "
             "Each epoch of plain+augmented is a plain pass then an augmented pass over the same images (the paper's "
             "use_aug: twice the optimiser steps); plain+plain takes the same steps without the augmentation, so "
             "plain+augmented minus plain+plain is the augmentation's part of the gain, plain+plain minus plain the "
             "extra steps'.", "", "| split | " + " | ".join(names) + " |", "|---|" + "---|" * len(arms)]
    for split in sweeps[arms[0]]:
        lines.append(f"| {split} | " + " | ".join(f"{sweeps[a].get(split, {}).get('text', 'n/a')} %" for a in arms)
                     + " |")
    return [row], lines + pair_lines(folders)


def pair_lines(folders: RunFolders) -> list[str]:
    """Which data the cascade's two models were trained on, and how often each pair disagrees."""
    pair = _json(Path(folders.pair_agreement)) if folders.pair_agreement else None
    if not pair:
        return []
    data = (f"disjoint halves of the train split (model A the {pair['half_a']}, model B the {pair['half_b']} half "
            "of each class, in file order)" if pair["pair"] == "disjoint_halves"
            else "the same train split (another architecture)")
    lines = ["", f"The cascade's pair ({pair['model_a']} + {pair['model_b']}) was trained on {data}. Disagreement = "
             "share of test images the two models label differently (what the cascade refers); both wrong, "
             "agreeing = errors that disagreement cannot catch.", "",
             "| pair | split | disagreement | both wrong, agreeing | wrong A | wrong B |", "|---|---|---|---|---|---|"]
    for name, splits in pair["disagreement"].items():
        for split, v in splits.items():
            lines.append(f"| {name} | {split} | {fmt_pct(v['disagreement'])} | {fmt_pct(v['agree_wrong'])} | "
                         f"{fmt_pct(v['wrong_a'])} | {fmt_pct(v['wrong_b'])} |")
    return lines


def section_data_generation(folders: RunFolders, header: RunHeader) -> tuple[list[str], list[str]]:
    stats = _json(Path(folders.data_generation) / "modeling_stats.json")
    if not stats or not stats["settings"]:
        return [], ["Data-generation results missing."]
    table = pd.DataFrame([s["summary"] for s in stats["settings"].values()])
    hand = int(table["hand_effort"].iloc[0])
    lo, hi = int(table["correction_effort"].min()), int(table["correction_effort"].max())
    grids = hil_grids(folders)
    ratio = _time_ratio_text(verdicts.hil_time_ratios(grids))
    rows = [f"| HIL data generation: manual effort (corrections of arriving images) per setting | {lo}-{hi} of "
            f"{hand} pool images "
            f"({fmt_pct(lo / hand, 0)}-{fmt_pct(hi / hand, 0)}){ratio} | Severstal: 331-389 (EffNet-B0), "
            f"438-497 (ResNet18) of 975; time roughly halves when the step doubles, effort flat or rising |"]
    lines = ["Manual effort = wrong predictions on the arriving images (as published); the hand-labelled initial set "
             "and the validation split are labelled data beside it; compute seconds = baseline training + every "
             "step's prediction and fine-tuning (the operator's time apart).", "",
             "| initial/class | step/class | manual effort | + initial set | validation | pool | saved | "
             "final accuracy | compute s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.initial_samples} | {r.step_size} | {r.correction_effort} | {r.initial_labelled} | "
                     f"{r.validation_labelled} | {r.hand_effort} | {fmt_pct(r.effort_saved)} | "
                     f"{fmt_pct(r.final_accuracy)} | {r.seconds:.1f} |")
    if len(grids) > 1:
        lines += ["", "Every arrival-order seed (manual effort = wrong arriving predictions; loop seconds = prediction "
                  "+ fine-tuning, without the shared baseline):", "",
                  "| seed | " + " | ".join(f"init {r.initial_samples} step {r.step_size}" for r in table.itertuples())
                  + " |", "|---|" + "---|" * len(table)]
        for seed, g in grids.items():
            g = g.set_index(["initial_samples", "step_size"])
            cells = [f"{int(g.loc[(r.initial_samples, r.step_size), 'correction_effort'])} / "
                     f"{g.loc[(r.initial_samples, r.step_size), 'loop_seconds']:.1f} s"
                     if (r.initial_samples, r.step_size) in g.index else "n/a" for r in table.itertuples()]
            lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    if stats.get("full_data"):
        lines.append(f"\nOne model on the whole pool at once: test accuracy "
                     f"{fmt_pct(stats['full_data']['test_accuracy'])}.")
    return rows, lines


def _time_ratio_text(ratios: dict[str, list[float]]) -> str:
    """'; fine-tuning work x0.62 (the verdict's number), wall clock x0.58 per doubling of the step'
    from verdicts.hil_time_ratios (mean of the per-seed log ratios, back-transformed)."""
    parts = []
    for key, name in (("work", "fine-tuning work (the verdict's number)"), ("wall", "wall clock (not judged)")):
        values = [x for x in ratios.get(key, []) if math.isfinite(x)]
        if values:
            parts.append(f"{name} x{math.exp(sum(values) / len(values)):.2f}")
    return f"; per doubling of the step: {', '.join(parts)}" if parts else ""


def section_mc(folders: RunFolders, header: RunHeader) -> tuple[list[str], list[str]]:
    """Median predictive entropy of correct vs wrong test predictions per model (the paper's box plots)."""
    rows, lines = [], []
    for run in map(Path, folders.mc_scores):
        summary = _json(run / "summary.json")
        if not summary or not (run / "per_image.csv").is_file():
            lines.append(f"MC scores missing in {run}.")
            continue
        name = f"{summary['model_name']} ({run.name})"
        per_image = pd.read_csv(run / "per_image.csv")
        for split in ("test", "test_shifted"):
            part = per_image[per_image["split"] == split]
            if part.empty:
                continue
            median = part.groupby("correct")["predictive_entropy"].median()
            s = summary["splits"][split]
            if split == "test":
                rows.append(f"| MC dropout, {name}: median predictive entropy correct / wrong (test) | "
                            f"{fmt_num(median.get(True))} / {fmt_num(median.get(False))} nats | about 0 / 0.3-0.9 |")
            lines.append(f"- {name}, {split}: accuracy {fmt_pct(s['accuracy'])}, ECE {fmt_num(s['ece'])}, median "
                         f"entropy correct {fmt_num(median.get(True))} vs wrong {fmt_num(median.get(False))}; AUROC "
                         "(wrong vs right) " + ", ".join(f"{k} {fmt_num(v)}" for k, v in s["auroc"].items()))
    return rows, lines


def section_saliency(folders: RunFolders, header: RunHeader) -> tuple[list[str], list[str]]:
    """Where mean entropy peaks along the saliency-guided reveal, and which order reaches full accuracy first."""
    run = Path(folders.saliency)
    summary = _json(run / "summary.json")
    if not summary or not (run / "curves.csv").is_file():
        return [], ["Saliency results missing."]
    orders = summary["orders"]
    guided = orders.get("saliency", {})
    reach = {o: v.get("share_reaching_full_accuracy") for o, v in orders.items()}
    reach_text = ", ".join(f"{o} {'never' if v is None else f'{v:g} %'}" for o, v in reach.items())
    rows = [f"| Saliency-masked uncertainty: revealed share where mean entropy peaks (saliency order) | "
            f"{fmt_num(guided.get('peak_entropy_share'), 0)} % | about 25 % |"]
    curves = pd.read_csv(run / "curves.csv")
    lines = [f"Full image: accuracy {fmt_pct(summary['full_image'].get('accuracy'))}, mean entropy "
             f"{fmt_num(summary['full_image'].get('mean_entropy'))} nats. Share reaching the full-image accuracy: "
             f"{reach_text}.", "", "| share | order | accuracy | mean entropy |", "|---|---|---|---|"]
    for r in curves[curves["order"] != "full_image"].sort_values(["share", "order"]).itertuples():
        lines.append(f"| {r.share:g} % | {r.order} | {fmt_pct(r.accuracy)} | {fmt_num(r.mean_entropy)} |")
    return rows, lines


def section_active_learning(folders: RunFolders, header: RunHeader) -> tuple[list[str], list[str]]:
    run = Path(folders.active_learning)
    summary = _csv(run / "summary.csv")
    if summary is None:
        return [], ["Active-learning results missing."]
    last = summary[summary["round"] == summary["round"].max()].sort_values("accuracy_mean", ascending=False)
    random_acc = last.loc[last["strategy"] == "random", "accuracy_mean"]
    beat = ""
    if len(random_acc):
        others = last[last["strategy"] != "random"]
        beat = f"; {int((others['accuracy_mean'] > random_acc.item()).sum())} of {len(others)} strategies beat random"
    best = last.iloc[0]
    rows = [f"| Active learning at {fmt_pct(best['share'], 0)} labelled: best strategy | {best['strategy']} "
            f"{100 * best['accuracy_mean']:.2f} +- {100 * best['accuracy_std']:.2f} %{beat} | CIFAR-10 at 60 %: DBAL "
            f"91.67, random 89.80: uncertainty strategies and coreset +1.5-1.9, ens. variation ratio and VAAL level |"]
    table_md = run / "table.md"
    lines = [table_md.read_text().strip()] if table_md.is_file() else []
    not_run = [name for name in STRATEGIES if name not in folders.al_strategies]
    if not_run:
        lines.append(f"\nNot run at this scale: {', '.join(not_run)}.")
    rounds = _csv(run / "rounds.csv")
    rounds = pd.DataFrame() if rounds is None else rounds
    if "at_chance" in rounds:
        stuck = rounds[rounds["at_chance"].astype(bool)]
        lines.append(f"\nRounds ending at chance: {len(stuck)} of {len(rounds)}; models retrained at chance: "
                     f"{int(rounds['retrains'].sum())}.")
    diffs = verdicts.strategy_differences(rounds) if "random" in set(rounds.get("strategy", [])) else pd.DataFrame()
    if not diffs.empty:
        lines += ["", "Each strategy minus random, paired by seed (t-interval over seeds, points):", "",
                  *verdicts.strategy_table(diffs)]
    return rows, lines


def section_safety(folders: RunFolders, header: RunHeader) -> tuple[list[str], list[str]]:
    run = Path(folders.safety)
    safety = _json(run / "safety.json")
    if not safety:
        return [], ["Safety-cascade results missing."]
    rows = []
    for split, per_mode in safety["splits"].items():
        if not split.startswith("test"):
            continue
        m = per_mode["cascade"]
        level = (f"{'two' if safety.get('two_sided') else 'one'}-sided "
                 f"{100 * float(safety.get('confidence', 0.95)):g} % upper bound")
        rows.append(f"| Safety cascade on {split}: undetected errors ({level}); workload | "
                    f"{m['undetected']}/{m['n']} = {fmt_pct(m['undetected_rate'], 2)} "
                    f"(<= {fmt_pct(m['undetected_upper'], 2)}); {fmt_pct(m['referral_rate'])} referred, automatic "
                    f"accuracy {fmt_pct(m['automatic_accuracy'])} | < 0.1 % undetected; workload not published |")
    comparison = run / "comparison.md"
    text = comparison.read_text().split("\n", 1)[1].strip().replace("\n## ", "\n#### ").replace("\n### ", "\n#### ") \
        if comparison.is_file() else ""
    return rows, [text] if text else []


# the train_sweeps keys of model A's arms -> the arm names of verdicts.augmentation_claims (today's
# names first; the older a_noaug / a_aug of runs before the three arms read as plain / plain+augmented)
ARM_KEYS = {"a_plain": "plain", "a_plain+augmented": "plain+augmented", "a_plain+plain": "plain+plain",
            "a_noaug": "plain", "a_aug": "plain+augmented"}


def arm_accuracies(folders: RunFolders, split: str) -> dict[str, list[float]]:
    """{arm: test accuracy per seed on `split`} of model A's seed sweeps."""
    arms = {}
    for key, summary in training_sweeps(folders).items():
        if key in ARM_KEYS and summary and split in summary:
            arms.setdefault(ARM_KEYS[key], summary[split].get("per_seed", []))
    return arms


def hil_grids(folders: RunFolders) -> dict[int, pd.DataFrame]:
    """{arrival-order seed: one row per setting} of every data-generation run folder."""
    grids = {}
    for k, run in enumerate(folders.data_generation_seeds or (folders.data_generation,)):
        stats = _json(Path(run) / "modeling_stats.json")
        config = _json(Path(run) / "config.json") or {}
        if stats and stats.get("settings"):
            grids[int(config.get("seed", k))] = pd.DataFrame([{**v["summary"], **finetune_work(v)}
                                                              for v in stats["settings"].values()])
    return grids


def finetune_work(setting: dict) -> dict:
    """{'finetune_work': image passes of every fine-tuning round (epochs run x labelled images, the
    baseline left out), 'finetune_images': the labelled images summed over the rounds (the work of one
    epoch each)} of one modeling_stats.json setting; {} when the rounds are not recorded.
    The work done, unlike the seconds, does not move with the machine's load."""
    rounds = [r for r in (setting.get("by_labelled_size") or {}).values() if r.get("step", 0) >= 1]
    if not rounds or any(r.get("epochs_run") is None for r in rounds):
        return {}
    return {"finetune_work": float(sum(r["epochs_run"] * r["labelled_size"] for r in rounds)),
            "finetune_images": float(sum(r["labelled_size"] for r in rounds))}


def mc_per_seed(folders: RunFolders) -> tuple[dict[int, pd.DataFrame], str]:
    """({training seed: test rows of per_image.csv} of model A, its architecture)."""
    runs = folders.mc_seeds or folders.mc_scores[:1]
    per_seed, model = {}, ""
    for k, run in enumerate(map(Path, runs)):
        summary, frame = _json(run / "summary.json"), _csv(run / "per_image.csv")
        if summary and frame is not None:
            per_seed[int(summary.get("trained_seed", k))] = frame[frame["split"] == "test"]
            model = summary.get("model_name", model)
    return per_seed, model


def claims(folders: RunFolders, header: RunHeader) -> list[verdicts.Claim]:
    """Every claim of the two works tested on this run's results (verdicts.py)."""
    out = verdicts.augmentation_claims(arm_accuracies(folders, "test"))
    shifted = arm_accuracies(folders, "test_shifted")
    out.append(verdicts.augmentation_shifted_claim(shifted.get("plain", []), shifted.get("plain+augmented", [])))
    out += verdicts.hil_claims(hil_grids(folders))
    per_seed, model = mc_per_seed(folders)
    out += verdicts.mc_claims(per_seed, model or header.model_a)
    sal = _csv(Path(folders.saliency) / "per_image.csv")
    fill = float((_json(Path(folders.saliency) / "summary.json") or {}).get("fill", 0.0) or 0.0)
    out.append(verdicts.saliency_claim(pd.DataFrame() if sal is None else sal, fill=fill))
    rounds = _csv(Path(folders.active_learning) / "rounds.csv")
    out += verdicts.al_claims(pd.DataFrame() if rounds is None else rounds, tuple(STRATEGIES))[0]
    safety_run = Path(folders.safety)
    safety, thresholds = _json(safety_run / "safety.json"), _json(safety_run / "thresholds.json")
    out.append(verdicts.safety_claim(safety or {}, thresholds or {}))
    rows = expert_rows(folders, "a")
    if rows is not None:
        out += verdicts.expert_claims(rows, header.model_a)
    return out + cell_shift_claims(folders, header)


SHIFT = "test_shifted"
SHIFT_PREFIX = "Ours (ELPV, trained on mono cells, tested on poly cells): "


def one_model_as_cascade(safety: dict | None) -> dict:
    """safety.json of a one-model run with its headline mechanism (model A's uncertainty) under the
    cascade's key and the shifted split as `test`, as verdicts.safety_claim reads a pair's."""
    if not safety or SHIFT not in safety.get("splits", {}):
        return {}
    splits = {name: {**modes, "cascade": modes.get("cascade", modes.get("uncertainty_a"))}
              for name, modes in safety["splits"].items()}
    return {**safety, "splits": {**splits, "test": splits[SHIFT]}}


def cell_shift_claims(folders: RunFolders, header: RunHeader) -> list[verdicts.Claim]:
    """ELPV's cell-type shift (model A trained on mono cells): the MC, saliency and cascade rows on the
    poly cells, each marked ours (none when the run has no shift)."""
    runs = folders.cell_shift
    if not runs:
        return []
    mc = _csv(Path(runs["mc"]) / "per_image.csv")
    per_seed = {} if mc is None else {0: mc[mc["split"] == SHIFT]}
    rows = verdicts.mc_claims(per_seed, header.model_a)
    sal = _csv(Path(runs["saliency"]) / "per_image.csv")
    rows.append(verdicts.saliency_claim(pd.DataFrame() if sal is None else sal))
    thresholds = _json(Path(runs["safety"]) / "thresholds.json") or {}
    rows.append(verdicts.safety_claim(one_model_as_cascade(_json(Path(runs["safety"]) / "safety.json")), thresholds))
    return [verdicts.as_ours(row, SHIFT_PREFIX) for row in rows]


def section_cell_shift(folders: RunFolders, header: RunHeader) -> tuple[list[str], list[str]]:
    """Accuracy, MC / softmax AUROC and the one-model cascade's workload on mono test vs poly cells."""
    runs = folders.cell_shift
    summary = _json(Path(runs["mc"]) / "summary.json") if runs else None
    safety = _json(Path(runs["safety"]) / "safety.json") if runs else None
    if not summary:
        return [], ["No cell-type shift in this run (ELPV only)."]
    mc = _csv(Path(runs["mc"]) / "per_image.csv")
    lines = [f"Model A ({header.model_a}, the cascade's arm and seed) trained on the mono cells' train split only; "
             "`test` = mono test cells, `test_shifted` = every clear poly cell. The cascade is model A alone "
             "(its MC entropy), calibrated on the mono `calib` split.", "",
             "| split | cells | accuracy | AUROC wrong vs right: MC / softmax entropy | referred | undetected |",
             "|---|---|---|---|---|---|"]
    rows = []
    for split in ("test", SHIFT):
        s = summary["splits"].get(split)
        if not s:
            continue
        part = mc[mc["split"] == split] if mc is not None else None
        softmax = verdicts.auroc(~part["correct"].to_numpy(bool), part["softmax_entropy"].to_numpy(float)) \
            if part is not None and "softmax_entropy" in part else float("nan")
        m = ((safety or {}).get("splits", {}).get(split) or {}).get("uncertainty_a", {})
        referred = fmt_pct(m["referral_rate"]) if m else "n/a"
        undetected = f"{m['undetected']}/{m['n']}" if m else "n/a"
        lines.append(f"| {split} | {s['n']} | {fmt_pct(s['accuracy'])} | {fmt_num(s['auroc']['predictive_entropy'])} / "
                     f"{fmt_num(softmax)} | {referred} | {undetected} |")
        if split == SHIFT:
            rows.append(f"| ELPV cell-type shift ({header.model_a} trained on mono): accuracy mono test / poly | "
                        f"{fmt_pct(summary['splits']['test']['accuracy'])} / {fmt_pct(s['accuracy'])} | "
                        "no published counterpart |")
    return rows, lines


def verdict_rows(folders: RunFolders, header: RunHeader, rows: list[verdicts.Claim] | None = None) -> list[str]:
    """The verdict table (verdicts.py): every paper claim tested on this run's results."""
    return verdicts.verdict_table(claims(folders, header) if rows is None else rows)


def _power_list(rows: list[verdicts.Claim]) -> str:
    return "; ".join(f"{c.claim} (power {c.power.reproduce:.2f}" + (f"; {c.power.needed}" if c.power.needed else "")
                     + ")" for c in rows)


def power_paragraphs(folders: RunFolders, header: RunHeader, rows: list[verdicts.Claim] | None = None) -> list[str]:
    """What this run can decide, read from the verdict rows' own power (nothing else is claimed):
    the run's scale, the paper rows with power >= 0.8, those under it (with what would reach it),
    those with no interval, and the commands for the papers' own scale."""
    rows = claims(folders, header) if rows is None else rows
    seeds = len(header.seeds)
    grids = hil_grids(folders)
    safety = _json(Path(folders.safety) / "safety.json") or {}
    calib = (safety.get("calibration") or {}).get("n")
    al_rounds = _csv(Path(folders.active_learning) / "rounds.csv")
    al_seeds = 0 if al_rounds is None or al_rounds.empty else al_rounds["seed"].nunique()
    last = "n/a" if al_rounds is None or al_rounds.empty else fmt_pct(al_rounds["share"].max(), 0)
    pool_text = (f" (a pool of {int(next(iter(grids.values()))['hand_effort'].iloc[0])} images, cut from the paper's "
                 "975 to fit the CPU budget)" if grids else "")
    paper_rows = [c for c in rows if not c.ours]
    enough = [c for c in paper_rows if c.power and c.power.enough]
    weak = [c for c in paper_rows if c.power and not c.power.enough]
    none = [c for c in paper_rows if c.power is None]
    return [
        f"**This run's scale.** {_data_words(header)}; "
        f"model A {header.model_a}, {header.image_size} px, {seeds} training seed(s), {len(grids)} arrival-order "
        f"seed(s) of the HIL grid{pool_text}, {al_seeds} active-learning seed(s) up to {last} labelled"
        f"{f', {calib:,} calibration images for the cascade' if calib else ''}.",
        "",
        f"**What its power supports.** Of the {len(paper_rows)} published claims, {len(enough)} have power >= "
        f"{verdicts.POWER_NEEDED} at this scale (P(reproduced | the effect named in the row)): "
        f"{_power_list(enough) or 'none'}. {len(weak)} are not testable at this scale (power under "
        f"{verdicts.POWER_NEEDED}): {_power_list(weak) or 'none'}. {len(none)} have no interval at all: "
        + ("; ".join(f"{c.claim} ({c.why})" for c in none) or "none") + ". Every accuracy, effort and entropy is on "
        "data of its own: the rows judge directions and shapes, never the papers' values.",
        "",
        "**The papers' own scale.** The R4VR numbers need the real NEU / Severstal data on a GPU: `reproduce.py --full "
        "True --dataset neu|severstal_kaggle --data_dir ...` (ResNet18 / VGG16 / EfficientNet-B0 at 224 px or whole "
        "1600x256 strips, ImageNet weights, 10 seeds, the full 4 x 5 or 4 x 3 grid over 3 arrival orders, a "
        "calibration split used neither for training nor for early stopping); the toolkit's need CIFAR-10/100: "
        "`reproduce.py --full True --dataset cifar10 --data_dir ...` (CIFAR ResNet18, 200 epochs per round, 10 % -> "
        "60 %, every strategy, 3 seeds).",
    ]


def section_strips(folders: RunFolders, header: RunHeader) -> tuple[list[str], list[str]]:
    """(no headline rows, section lines) of the pair's brief run on the built-in Severstal-like strips."""
    summary = _json(Path(folders.strips)) if folders.strips else None
    if not summary:
        return [], ["Not run at this scale."]
    c = summary["config"]
    lines = [f"The Severstal row end to end on the built-in strips ({c['per_class']} per class of defect_1-4 and "
             f"no_defect, files {c['file_height']} px high, 6.25 : 1, some with two classes; read through "
             f"`--dataset severstal_kaggle`): whole strips at {c['image_size']} px high, ImageNet normalisation, "
             f"ColorJitter + gamma (plain+augmented), {c['epochs']} epochs. A check that the pipeline runs and "
             "learns, not a result of the paper.", "", "| model | test accuracy | test strips | chance |",
             "|---|---|---|---|"]
    for tag in ("a", "b"):
        if tag in summary:
            s = summary[tag]
            lines.append(f"| {tag.upper()} {s['model']} | {fmt_pct(s['test_accuracy'])} | {s['n_test']} | "
                         f"{fmt_pct(1 / len(s['classes']))} |")
    return [], lines


def section_experts(folders: RunFolders, header: RunHeader) -> tuple[list[str], list[str]]:
    """ELPV: each model's accuracy beside the majority baseline with recall per class, the AUROCs of MC
    and softmax entropy, and the table per expert level (reproduce's experts/ folder)."""
    folder = Path(folders.experts) if folders.experts else None
    summary = _json(folder / "summary.json") if folder else None
    table = _csv(folder / "expert_table.csv") if folder else None
    if not summary or table is None:
        return [], ["No expert probabilities in this run's data (ELPV only)."]
    rows, lines = [], ["Clear cells (p 0 / 1) of the test split and the cells the experts were unsure about (split "
                       "`ambiguous`, p 1/3 / 2/3; never trained, stopped early or calibrated on). Referral: the "
                       "cascade at its calibrated thresholds (both models).", "",
                       "| model | test accuracy | majority baseline | recall per class | AUROC wrong vs right: MC / "
                       "softmax entropy | AUROC unsure vs clear: MC / softmax entropy |", "|---|---|---|---|---|---|"]
    for tag, s in summary.items():
        recall = ", ".join(f"{c} {fmt_pct(r)}" for c, r in s["recall"].items())
        lines.append(f"| {tag.upper()} {s['model']} | {fmt_pct(s['accuracy'])} (n {s['n_test']}) | "
                     f"{fmt_pct(s['majority_baseline'])} (always {s['majority_class']}) | {recall} | "
                     f"{fmt_num(s['auroc_wrong_mc'])} / {fmt_num(s['auroc_wrong_softmax'])} | "
                     f"{fmt_num(s['auroc_unsure_mc'])} / {fmt_num(s['auroc_unsure_softmax'])} |")
        rows.append(f"| ELPV {tag.upper()} {s['model']}: test accuracy (majority baseline); recall per class | "
                    f"{fmt_pct(s['accuracy'])} ({fmt_pct(s['majority_baseline'])}); {recall} | about 88 % for a CNN "
                    "(Deitsch et al. 2019); no R4VR number |")
    lines += ["", "| model | expert p | cells | mean MC entropy | mean softmax entropy | called defective | referred |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {r.model} | {r.expert_p} | {r.n} | {fmt_num(r.mc_entropy)} | {fmt_num(r.softmax_entropy)} | "
              f"{fmt_pct(r.called_defective)} | {fmt_pct(r.referral_rate)} |" for r in table.itertuples()]
    return rows, lines


def expert_rows(folders: RunFolders, tag: str) -> pd.DataFrame | None:
    """reproduce's experts/rows_<tag>.csv (one row per scored ELPV cell), None when missing."""
    return _csv(Path(folders.experts) / f"rows_{tag}.csv") if folders.experts else None


SECTIONS = (("Training with and without augmentation", section_training),
            ("Human-in-the-loop data generation", section_data_generation),
            ("MC-dropout uncertainty", section_mc), ("Saliency-masked uncertainty", section_saliency),
            ("Active learning", section_active_learning), ("The R4VR safety cascade", section_safety),
            ("Severstal-like strips (whole-strip pipeline)", section_strips),
            ("ELPV: the experts' uncertainty against the models'", section_experts),
            ("ELPV: trained on one cell type, tested on the other", section_cell_shift))


def _data_words(header: RunHeader) -> str:
    """What the run was trained on, in the words of the scale paragraph."""
    if header.data_dir:
        return f"{header.data_dir} ({header.dataset})"
    if header.dataset == "elpv":
        return "The ELPV solar cells (real defects), not NEU, Severstal or CIFAR"
    return "The built-in synthetic set, not NEU, Severstal or CIFAR"


ELPV_DATA_LINE = ("ELPV solar cells (Buerhop-Lutz et al. 2018, Deitsch et al. 2019; the elpv-dataset package; data "
                  "licence CC BY-NC-SA 4.0): 2,624 grey 300 x 300 electroluminescence images, classes functional "
                  "(experts' defect probability 0) and defective (1); the 401 cells the experts were unsure about "
                  "(1/3, 2/3) are only scored (split `ambiguous`). Fixed splits 60/10/10/20 % (train/valid/calib/test) "
                  "stratified by class and cell type; the cascade calibrates on `calib`. Trained with balanced class "
                  "weights (a deviation: the papers had balanced data). The papers used NEU and Severstal: compare the "
                  "shape of each result, not its exact value.")


def report_markdown(folders: RunFolders, header: RunHeader) -> str:
    """REPORT.md's text: the verdicts, a headline table (ours next to the paper's), one section per
    experiment, every figure of `folders.figures` (linked relative to the report's folder)."""
    headline, body = [], []
    claim_rows = claims(folders, header)
    for title, section in SECTIONS:
        rows, lines = section(folders, header)
        headline += rows
        body += [f"## {title}", "", *lines, ""]
    total = sum(header.seconds.values())
    h = header
    lines = [
        "# Reproduction report", "",
        f"Scale `{h.scale}`: {h.image_size} px, model A {h.model_a}, model B {h.model_b}, seeds {list(h.seeds)}, "
        f"up to {h.epochs} epochs; device {h.device}, {h.cpu_count} CPU cores; "
        f"total {total / 60:.1f} min ({', '.join(f'{k} {v:.0f} s' for k, v in h.seconds.items())}).",
        "",
        "Data: " + ("the built-in synthetic defect set (six NEU-like classes; `test_shifted` has strong illumination "
                    "gradients and rotations training never sees). The papers used NEU, Severstal and casting "
                    "images, so compare the shape of each result, not its exact value."
                    if h.dataset == "synthetic" and not h.data_dir else ELPV_DATA_LINE if h.dataset == "elpv" and
                    not h.data_dir else f"`{h.data_dir}` ({h.dataset})."),
        "", "## What this run can decide", "", *power_paragraphs(folders, header, claim_rows), "",
        "## Verdicts: does this run reproduce each claim?", "", *verdict_rows(folders, header, claim_rows), "",
        "## Headline numbers", "", "| result | this run | paper |", "|---|---|---|", *headline, "", *body,
        "## Figures", ""]
    figures = Path(folders.figures)
    for png in sorted(figures.glob("*.png")):
        lines += [f"### {png.stem}", "", f"![{png.stem}]({figures.name}/{png.name})", ""]
    return "\n".join(lines)


def write_report(path: Path, folders: RunFolders, header: RunHeader) -> Path:
    """Write `report_markdown` to `path` atomically (the figures folder should sit beside it)."""
    return atomic_write_text(path, report_markdown(folders, header))
