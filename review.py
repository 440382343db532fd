"""The operator's round trip: export the images a person must look at, read back their labels.

    # 1. export: the test split's referred images, riskiest first (CSV + self-contained HTML)
    python review.py export --checkpoints A.pt,B.pt \\
        --thresholds results/safety/<run>/thresholds.json --split test --out_dir results/review/batch1
    python review.py export --checkpoints A.pt --images_dir /data/new_batch --only_referred False
    # 2. a person opens results/review/batch1/review.html in a browser, confirms or corrects each
    #    image and saves "Download review.csv" over results/review/batch1/review.csv
    #    (or fills its corrected_label column in a spreadsheet; empty = prediction is right)
    # 3. import: validate every row, append the labels to a split CSV (atomically), count effort
    python review.py import --review_csv results/review/batch1/review.csv --split_csv data_splits/mine.csv
    # or in Label Studio: tasks with the model's label as pre-annotation, labeling config, README.txt
    python review.py export --checkpoints A.pt --images_dir /data/new_batch --format label_studio \\
        --out_dir results/review/ls1
    python review.py import --label_studio_json export.json --review_csv results/review/ls1/review.csv \\
        --split_csv data_splits/mine.csv
    # the data-generation loop with this round trip as its operator
    python review.py loop --review_dir results/review/loop --model tiny_cnn --image_size 64 \\
        --initial_samples 5 --step_sizes 4 --pool_per_class 20

export writes review.csv (path, predicted_label, uncertainty, disagreement, referred, risk, an
empty corrected_label column, ...), review.html (the editable page of review_page.py: every
image as the model saw it with its saliency overlay for each model, label, confidence, second
choice and why it was referred; confirm or correct by keyboard or mouse, then Download
review.csv; one self-contained file, no server, see docs/review.md) and review_meta.json
(class names, data root, models, thresholds). An image is
referred when the models disagree or an uncertainty passes its threshold (thresholds.json of
evaluate_safety.py, mechanism `cascade`; `uncertainty_a` for one model); without thresholds
every image is exported. Scoring goes through scoring.py, as in predict.py: --images_dir
needs only the checkpoints (not the training data); unreadable files are listed in
skipped_inputs.csv and the export goes on.
Risk = 2 * referred + disagreement + uncertainty percentile, so the order is: referred and
disputed, referred, the rest, each by uncertainty.

--format label_studio also writes label_studio_tasks.json (one task per image: data.image a
local-files URL /data/local-files/?d=<path relative to --ls_document_root, by default the data
root's parent>, data.path,
uncertainty, referred, risk; predictions = model A's label as a `choices` pre-annotation,
score = risk, model_version = the checkpoints' run names), label_studio_config.xml (an Image
and a Choices with one Choice per class) and README.txt (serving the files, creating the
project, importing, exporting). import --label_studio_json reads Label Studio's JSON export:
per task the latest annotation that was not cancelled gives the label, a task without any
annotation keeps the model's prediction (as an empty corrected_label), a task with only
cancelled annotations is left out (label_studio.py has the rule); then the same validation.

import refuses the whole file (nothing written, nothing copied) when any row names an unknown
class, a missing file, a file that is not an image, a path outside the data root, a path listed
twice, a path the split CSV already holds, or an image whose content (sha256) is already in any
split or twice in the batch; the error lists every bad row by its line number. review_meta.json's
fields are checked too (a data_root that is the file-system root is refused). Paths are compared
in one spelling (`splits.resolve_data_path`: './a/x.png' and 'a//x.png' are 'a/x.png'), names
byte for byte (' a.png' is not 'a.png'). --copy_into copies images from outside the split CSV's
data root under it, after every row is valid; in a class-folder root each goes into the folder
of its label (make_splits.py reads it with that label). The labels
are appended to the split CSV (a symbolic link is written through); what is already there is
never rewritten (extra columns, 'val', a label 'NA' stay). Formula guard: in review.csv every text cell that starts with
=, @, +, -, a tab, a carriage return or ' gets one leading ' (a spreadsheet would run it as a
formula), numeric columns (uncertainty, risk, uncertainty_b) are written as numbers; import
removes one leading ' from every text cell, so a class named '-1' round-trips. The rows
appended to the split CSV get the same guard (`splits.read_split_csv` removes it).

`loop` runs train_model_data_generation.py with an operator that exports each step, waits
for the person (or, with --answer ground_truth, fills in the true labels for a dry run) and
imports the edited CSV.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from safehil.review import label_studio
from safehil.review import review_page
from safehil.uq import saliency
from safehil.safety import scoring
from safehil.uq import uncertainty
from safehil.data.augment import to_model_input
from safehil.data.cache import decode_for_cache, decode_images_skipping_bad, display_canvas
from safehil.settings.config import (MAX_IMAGE_SIZE, MAX_IMAGES, MAX_MC_SAMPLES, MODEL_A_DATA_HELP, CheckpointData, DataFiles, ModelCheckpoints, OutputConfig, resolve_data, trained_split_seed)
from datasets import checkpoint_canvas, decode_request, load_split_table, plan_table_canvas
from safehil.core.locks import hold_folder, locked_file
from safehil.data.images import IMAGE_EXTENSIONS
from safehil.data.splits import append_to_split_csv, content_index, file_sha256, read_split_csv, resolve_data_path
from utils import (MAX_SEED, HelpFormatter, InputError, add_config_flags, add_replay_flag, atomic_write_csv,
                   atomic_write_json, atomic_write_spreadsheet_csv, atomic_write_text, config_from_args, flag, fmt_num,
                   log, read_json, require, resolve_device, run_main, seed_everything,
                   unprotect_cell)
from safehil.settings.presets import paper_values

REVIEW_COLUMNS = ("path", "predicted_label", "uncertainty", "disagreement", "referred", "risk",
                  "predicted_label_b", "uncertainty_b", "corrected_label")
NUMERIC_REVIEW_COLUMNS = ("uncertainty", "risk", "uncertainty_b")  # written as numbers, never guarded
ACTIONS = ("export", "import", "loop")
MAX_LISTED = 20  # problems named in an import error; the rest are counted


@dataclass(frozen=True)
class ExportConfig(OutputConfig, CheckpointData, ModelCheckpoints):
    """review.py export's flags: its own below, then (config.py) OutputConfig's `run` flags, CheckpointData's
    `data` flags (empty = the checkpoint's) and ModelCheckpoints' `checkpoint` flag."""
    thresholds: str = flag("", "thresholds.json of evaluate_safety.py; empty = no referral rule, export every image")
    only_referred: bool = flag(True, "export only the images that need a person (False: all, sorted by risk)")
    split: str = flag("test", "split of the split table to review")
    images_dir: str = flag("", "review every image under this folder instead of a split, from the checkpoints "
                               "alone (no training data needed); paths relative to --data_dir when given, else "
                               "to this folder")
    T: int = flag(0, "MC-dropout samples per image; 0 = the paper's for model A's data set "
                     f"({paper_values('T')})",
                  most=MAX_MC_SAMPLES)
    score: str = flag("predictive_entropy", "uncertainty score (higher = less certain)",
                      choices=tuple(uncertainty.SCORES))
    max_images: int = flag(0, "export at most this many (riskiest first); 0 = all", most=MAX_IMAGES)
    display_size: int = flag(128, "height in pixels each picture is shown at in the HTML (it is stored at the "
                                  "model's input size)", most=MAX_IMAGE_SIZE)
    seed: int = flag(0, "seed of the dropout masks", most=MAX_SEED)
    format: str = flag("csv", "csv: review.csv + review.html; label_studio: also Label Studio tasks with the "
                              "model's label as pre-annotation, its labeling config and a README.txt",
                       choices=("csv", "label_studio"))
    ls_document_root: str = flag("", "Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (task image URLs are "
                                     "relative to it; it must hold the data root); empty = the data root's parent "
                                     "(Label Studio refuses a storage path equal to its document root)")
    # this script's default of an inherited flag
    out_dir: str = flag("results/review/export", "folder for review.csv/.html")
    FLAG_HELP = {**MODEL_A_DATA_HELP,
                 "checkpoints": "checkpoint of model A (its prediction is the one to confirm), or A,B: the "
                                "cascade's pair"}

    def __post_init__(self):
        super().__post_init__()
        require(self.T == 0 or self.T >= 2, f"--T must be >= 2 (or 0 = the paper's), got {self.T}")
        require(self.max_images >= 0, f"--max_images must be >= 0, got {self.max_images}")
        require(self.display_size >= 16, f"--display_size must be >= 16, got {self.display_size}")


@dataclass(frozen=True)
class ImportConfig(DataFiles):
    """review.py import's flags: its own below and DataFiles' `data` flags (data_dir, split_csv; config.py)."""
    review_csv: str = flag("results/review/export/review.csv",
                           "the edited review CSV (corrected_label filled where the prediction is wrong)")
    split: str = flag("train", "split name given to the appended rows")
    class_names: tuple[str, ...] | None = flag(None, "comma list of valid classes; default: review_meta.json's, "
                                                     "else the split CSV's labels")
    label_studio_json: str = flag("", "a Label Studio JSON export of the batch to import instead of the review "
                                      "CSV's corrected_label column (the batch's review_meta.json is read from "
                                      "--review_csv's folder)")
    copy_into: str = flag("", "images of the review outside the split CSV's data root are copied into this folder "
                              "under it (relative to --data_dir; names that exist get _1, _2, ...) and appended; "
                              "in a class-folder root into the folder of each image's label instead (make_splits.py "
                              "reads it); empty = such images are refused")
    FLAG_HELP = {"split_csv": "labelled path,label,split CSV to append to (created when missing); "
                              "empty = the one in review_meta.json",
                 "data_dir": "data root the paths are relative to; empty = review_meta.json's"}

    def __post_init__(self):
        super().__post_init__()
        require(bool(self.review_csv), "--review_csv is needed")
        require(bool(self.split), "--split must not be empty")


@dataclass(frozen=True)
class LoopConfig:
    """review.py loop's own flags; `loop` also takes every flag of train_model_data_generation.py (ACTIONS)."""
    review_dir: str = flag("results/review/loop", "folder for each step's review files")
    answer: str = flag("person", "person: wait for the edited CSV; ground_truth: fill true labels (a dry run of the "
                                 "plumbing)", choices=("person", "ground_truth"))


# ============================================================================ pictures

def saliency_maps(model, meta: dict, images: torch.Tensor, device: torch.device, batch_size: int,
                  targets: torch.Tensor | None = None) -> torch.Tensor:
    """Vanilla-gradient saliency [N, S, S] of the model's own prediction (or `targets` [N]) for uint8 images."""
    maps = []
    for start in range(0, len(images), batch_size):
        x = to_model_input(images[start:start + batch_size], meta["mean"], meta["std"], device)
        t = None if targets is None else targets[start:start + batch_size].to(device)
        maps.append(saliency.gradient_saliency(model, x, t).detach().float().cpu())
    return torch.cat(maps) if maps else torch.empty(0, *images.shape[-2:])


# ============================================================================ review.csv and the formula guard

def write_review_csv(path: str | Path, rows: pd.DataFrame) -> Path:
    """Write a review table atomically, every text cell formula-guarded (numbers as they are)."""
    return atomic_write_spreadsheet_csv(path, rows, NUMERIC_REVIEW_COLUMNS)


def read_review_csv(path: str | Path) -> pd.DataFrame:
    """A review CSV as plain strings (no NA conversion: a class 'NA' stays 'NA'), every text cell
    through `unprotect_cell`. A missing, empty or unreadable file is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: review CSV not found (write one with review.py export)")
    try:
        rows = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: the review CSV is empty (not even a header line); export it again with "
                         "review.py export") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a readable CSV ({type(e).__name__}: {str(e).strip()})") from None
    for col in rows.columns:
        if col not in NUMERIC_REVIEW_COLUMNS:
            rows[col] = rows[col].map(unprotect_cell)
    return rows


# ============================================================================ the review files

def write_review(out_dir: str | Path, rows: pd.DataFrame, pictures: torch.Tensor,
                 heatmaps: dict[str, torch.Tensor], meta: dict, display_size: int | None = None) -> dict[str, Path]:
    """Write review.csv, review.html (the editable page, `review_page.py`) and review_meta.json
    for `rows` (already in risk order; columns beyond REVIEW_COLUMNS, such as confidence and
    second_label, reach the page only).

    pictures: uint8 [N, 3, H, W] in row order, as the model saw them; heatmaps: {caption: float
    [N, h, w]} saliency maps drawn over the picture (may be empty); display_size: the height in
    CSS pixels each picture is shown at (default: its own).
    """
    out = Path(out_dir)
    rows = rows.reset_index(drop=True)
    for col in REVIEW_COLUMNS:
        if col not in rows.columns:
            rows[col] = ""
    rows["corrected_label"] = ""
    csv_path = write_review_csv(out / "review.csv", rows[list(REVIEW_COLUMNS)])
    html_path = review_page.write_page(out / "review.html", csv_path, rows, pictures, heatmaps, meta,
                                       display_size or int(pictures.shape[-2]), NUMERIC_REVIEW_COLUMNS)
    return {"csv": csv_path, "html": html_path, "meta": atomic_write_json(out / "review_meta.json", meta)}


# ============================================================================ export

def risk_scores(referred: np.ndarray, disagree: np.ndarray, unc_a: np.ndarray, unc_b: np.ndarray | None) -> np.ndarray:
    """2 * referred + disagreement + the larger uncertainty percentile (0, 1] within the batch; all [N]."""
    def percentile(u):
        u = np.nan_to_num(u, nan=np.inf)
        return (np.argsort(np.argsort(u, kind="stable"), kind="stable") + 1) / max(len(u), 1)
    pct = percentile(unc_a) if unc_b is None else np.maximum(percentile(unc_a), percentile(unc_b))
    return 2.0 * referred + disagree + pct


def review_batch(cfg: ExportConfig, meta_a: dict, meta_b: dict | None,
                 skipped: list[dict] | None = None) -> tuple[Path, list[str], str]:
    """The images to review -> (data root, paths relative to it, split CSV or '').

    --images_dir: every image under it, from the folder alone (no training data needed); the
    data root is --data_dir (which must hold the folder) or the folder itself. A symbolic link to
    an image outside the data root is left out (appended to `skipped` as {'path', 'reason'}): the
    review's paths must name files under its root. Otherwise the --split of the data the
    checkpoint(s) were trained on (or of --dataset/--data_dir/--split_csv).
    """
    if cfg.images_dir:
        folder = Path(cfg.images_dir)
        left_out = [] if skipped is None else skipped
        files = scoring.find_images(folder, left_out)
        root = Path(cfg.data_dir) if cfg.data_dir else folder
        if not folder.resolve().is_relative_to(root.resolve()):
            raise InputError(f"--images_dir {folder} is not inside --data_dir {root}; the review's paths are "
                             "relative to the data root (leave --data_dir empty to use the folder itself)")
        paths = []
        for file in files:
            try:
                paths.append(resolve_data_path(str(file.absolute()), root))
            except InputError:
                left_out.append({"path": str(file), "reason": f"a symbolic link to {os.path.realpath(file)}, outside "
                                 f"the data root {root}: copy the image into it to review it"})
        if not paths:
            raise InputError(f"{folder}: no image under it lies inside the data root {root} "
                             f"(e.g. {left_out[-1]['path']}: {left_out[-1]['reason']})")
        return root, paths, cfg.split_csv
    source = resolve_data(cfg, meta_a, meta_b, names=(cfg.checkpoint_a, cfg.checkpoint_b))
    table, root = load_split_table(source.dataset, source.data_dir, source.split_csv, trained_split_seed(meta_a),
                                   source.per_class, source.multi_label_rule)
    if cfg.split not in set(table["split"]):
        raise InputError(f"the data has no {cfg.split!r} split (found {sorted(set(table['split']))})")
    return Path(root), table.loc[table["split"] == cfg.split, "path"].tolist(), source.split_csv


def export(cfg: ExportConfig) -> dict:
    """Score a batch with one or two models, pick and sort the images for a person, write the review files."""
    hold_folder(cfg.out_dir, "another --out_dir")  # created, writable and ours before anything is scored
    if (Path(cfg.out_dir) / "review.csv").exists():  # it may already hold a person's corrections
        raise InputError(f"{Path(cfg.out_dir) / 'review.csv'} exists already (it may hold corrections); "
                         "import it first, then export the next batch into another --out_dir")
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    models = scoring.load_models(cfg.checkpoint_a, cfg.checkpoint_b, device)
    two = len(models) == 2
    meta_a = models[0][1]
    cfg = replace(cfg, T=cfg.T or scoring.checkpoint_mc_samples(meta_a))
    class_names = list(meta_a["class_names"])
    left_out = []  # symbolic links out of the data root, folders not searched: in skipped_inputs.csv
    root, paths, split_csv = review_batch(cfg, meta_a, models[1][1] if two else None, left_out)
    rule = scoring.load_referral_rule(cfg.thresholds, models, cfg.score, cfg.T,
                                      {"a": cfg.checkpoint_a, "b": cfg.checkpoint_b}) if cfg.thresholds else None
    by_file = {str(root / p): p for p in paths}
    scored = scoring.score_files([root / p for p in paths], models, cfg.T, cfg.score, cfg.batch_size, device,
                                 cfg.seed, desc="scoring the review batch")
    rows = scoring.predictions_table([by_file[str(f)] for f in scored.files], class_names, scored.outputs, rule)
    if not two:
        rows = rows.assign(disagreement=False, predicted_label_b="", uncertainty_b=np.nan)
    rows["second_label"], rows["second_confidence"] = review_page.second_choice(scored.outputs[0].probabilities,
                                                                                class_names)
    referred = rows["referred"].to_numpy(bool)
    rows["risk"] = risk_scores(referred, rows["disagreement"].to_numpy(bool), rows["uncertainty"].to_numpy(float),
                               rows["uncertainty_b"].to_numpy(float) if two else None)
    keep = rows.index[rows["referred"]] if (cfg.only_referred and rule is not None) else rows.index
    if cfg.only_referred and rule is None:
        log("no --thresholds given: exporting every image, sorted by risk")
    order = rows.loc[keep].sort_values("risk", ascending=False, kind="stable").index.to_numpy()
    if cfg.max_images:
        order = order[:cfg.max_images]
    rows = rows.loc[order].reset_index(drop=True)

    files = [_resolve(root, p) for p in rows["path"]]
    canvas_a = checkpoint_canvas(meta_a)  # model A's input (e.g. a whole strip): the page shows it
    pictures = torch.empty(0, 3, canvas_a.height, canvas_a.width, dtype=torch.uint8)
    heatmaps = {}
    for tag, (model, meta) in zip("ab", models):
        if not len(rows):
            continue
        images, _, failures = decode_images_skipping_bad(files, checkpoint_canvas(meta))
        if failures:
            raise InputError(f"{files[min(failures)]}: {failures[min(failures)]} (changed during the export?)")
        pictures = images.expand(-1, 3, -1, -1) if tag == "a" else pictures  # grey: one stored channel
        heatmaps[f"saliency {tag.upper()} ({meta['model_name']})"] = saliency_maps(model, meta, images, device,
                                                                                  cfg.batch_size)
    skipped = scoring.skipped_table(left_out + scored.skipped)
    meta = {"class_names": class_names, "data_root": str(root.resolve()), "split_csv": split_csv,
            "source": cfg.images_dir or f"split {cfg.split}", "model_a": cfg.checkpoint_a, "model_b": cfg.checkpoint_b,
            "thresholds": cfg.thresholds, "score": cfg.score, "T": cfg.T, "batch_size": len(paths),
            "exported": len(rows), "referred": int(referred.sum()), "skipped": len(skipped),
            "referral_rule": None if rule is None else {"mode": rule.mode, "threshold_a": rule.threshold_a,
                                                        "threshold_b": rule.threshold_b, "certified": rule.certified,
                                                        "certificate": rule.certificate,
                                                        "not_certified": list(rule.not_certified)}}
    if cfg.format == "label_studio":
        meta["label_studio"] = {"document_root": str(Path(cfg.ls_document_root or root.resolve().parent).resolve()),
                                "tasks": label_studio.TASKS_FILE}
    written = write_review(cfg.out_dir, rows, pictures, heatmaps, meta, cfg.display_size)
    if cfg.format == "label_studio":
        written.update(write_label_studio(cfg.out_dir, rows, root, meta["label_studio"]["document_root"],
                                          class_names, model_version(cfg)))
    if len(skipped):
        written["skipped_csv"] = atomic_write_spreadsheet_csv(Path(cfg.out_dir) / "skipped_inputs.csv", skipped)
        log(f"skipped {len(skipped)} unreadable file(s), listed in {written['skipped_csv']}")
    log(f"exported {len(rows)} of {len(paths)} images ({int(referred.sum())} referred) -> {written['csv']}, "
        f"{written['html']}")
    return {"rows": len(rows), "referred": int(referred.sum()), "batch": len(paths), "skipped": len(skipped),
            **{k: str(v) for k, v in written.items()}}


def model_version(cfg: ExportConfig) -> str:
    """The pre-annotations' model_version: the checkpoints' run folder names ('A' or 'A+B')."""
    return "+".join(Path(p).resolve().parent.name for p in cfg.checkpoints)


def write_label_studio(out_dir: str | Path, rows: pd.DataFrame, data_root: Path, document_root: str | Path,
                       class_names: list[str], version: str) -> dict[str, Path]:
    """The Label Studio files of an export: tasks (one per row, riskiest first), labeling config, README.txt."""
    out = Path(out_dir)
    try:
        tasks = label_studio.import_tasks(rows, data_root, document_root, version)
    except ValueError as e:
        raise InputError(f"--ls_document_root: {e}") from None
    return {"label_studio_tasks": atomic_write_json(out / label_studio.TASKS_FILE, tasks),
            "label_studio_config": atomic_write_text(out / label_studio.CONFIG_FILE,
                                                     label_studio.labeling_config(class_names)),
            "label_studio_readme": atomic_write_text(out / label_studio.HOW_TO_FILE,
                                                     label_studio.how_to(document_root, data_root, out))}


def _resolve(root: str | Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else Path(root) / p


# ============================================================================ import

def validate_review(review: pd.DataFrame, class_names: list[str], data_root: str | Path,
                    existing_paths: set[str], source: str = "review CSV",
                    row_names: list[str] | None = None, sources: dict[str, Path] | None = None,
                    known_content: dict[str, tuple[str, str]] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Check every row of an edited review table -> (accepted rows: path, label, corrected; errors).

    A row's label is its corrected_label, or its predicted_label when that is empty. Paths are
    taken in the one spelling of `splits.resolve_data_path` (the accepted rows carry it), and
    `existing_paths` must be in that spelling too. Errors (each naming the CSV line, or
    `row_names[i]` such as 'task 17' when given): a path that leaves `data_root`, a file that
    does not exist under it, a file that is not an image (by extension and by its first bytes),
    an unknown class, a path listed twice (in any spelling), a path already in the labelled split
    CSV, an image whose content (sha256 of its bytes) is already in the split CSV under another
    name (`known_content`: {sha256: (path, split)}, any split) or twice in this batch.
    `sources` maps a path that is to be copied under the data root to the file it is copied
    from (that file is checked). Paths are taken byte for byte (' a.png' is not 'a.png').
    """
    errors = []
    missing = [c for c in ("path", "predicted_label", "corrected_label") if c not in review.columns]
    if missing:
        return pd.DataFrame(), [f"{source}: lacks columns {missing} (needs path, predicted_label, corrected_label)"]
    known = set(class_names)
    first_line: dict[str, str] = {}  # path -> "line 3" or "task 17", where it was first
    first_content: dict[str, str] = {}  # sha256 -> where it was first in this batch
    sources, known_content = sources or {}, known_content or {}
    rows = []
    for i, row in enumerate(review.itertuples(index=False)):
        line = i + 2  # header is line 1
        written = "" if pd.isna(row.path) else str(row.path)  # byte for byte: ' a.png' is its own file
        shown = str(getattr(row, "review_path", written))  # as the review names it (before a planned copy)
        predicted = "" if pd.isna(row.predicted_label) else str(row.predicted_label).strip()
        corrected = "" if pd.isna(row.corrected_label) else str(row.corrected_label).strip()
        label = corrected or predicted
        where = f"{source} {row_names[i]}" if row_names else f"{source} line {line}"
        try:
            path = resolve_data_path(written, data_root, where)
        except InputError as e:
            errors.append(str(e))
            if not written:
                continue
            path = None
        if path is not None:
            spelled = "" if path == written else f" ({written!r} is {path})"
            duplicate = path in first_line
            if duplicate:
                errors.append(f"{where}: duplicate row, {path} is already on {first_line[path]}{spelled}")
            else:
                first_line[path] = row_names[i] if row_names else f"line {line}"
            file = sources.get(path, Path(data_root) / path)
            if not file.is_file():
                errors.append(f"{where}: unknown path {shown!r} (no such file: {file}; deleted or moved since "
                              "the export?)")
            elif not _is_image(file):
                errors.append(f"{where}: {shown!r} is not an image ({', '.join(IMAGE_EXTENSIONS)} that an image "
                              "reader opens); only images can be labelled")
            elif path in existing_paths:
                errors.append(f"{where}: {path} is already in the labelled split CSV{spelled}")
            elif not duplicate:  # the same file twice is reported once, as a duplicate row
                digest = file_sha256(file)
                if digest in known_content:
                    other, split = known_content[digest]
                    errors.append(f"{where}: {shown!r} has the same content (sha256) as {other!r}, already in "
                                  f"split {split!r} of the split CSV (an image imported twice, or a copy of a "
                                  "labelled one); leave it out")
                elif digest in first_content:
                    errors.append(f"{where}: {shown!r} has the same content (sha256) as the image on "
                                  f"{first_content[digest]}; keep one of them")
                else:
                    first_content[digest] = row_names[i] if row_names else f"line {line}"
        if label not in known:
            what = "corrected_label" if corrected else "predicted_label (corrected_label is empty)"
            errors.append(f"{where}: unknown class {label!r} in {what}; valid: {', '.join(class_names)}")
        rows.append({"path": path or written, "label": label,
                     "corrected": bool(corrected) and corrected != predicted})
    return pd.DataFrame(rows, columns=["path", "label", "corrected"]), errors


def check_split_root(existing: pd.DataFrame, root: Path, split_csv: Path) -> None:
    """Refuse a data root that is not the split CSV's: most of its rows must be files under `root`."""
    if not len(existing):
        return
    missing = [p for p in existing["path"] if not (root / _spelling(p, root)).is_file()]
    if 2 * len(missing) > len(existing):
        raise InputError(f"{split_csv}: {len(missing)} of its {len(existing)} paths are not files under {root} "
                         f"(e.g. {missing[0]!r}), so {root} is not the data root its paths are relative to; pass "
                         "--data_dir with that folder")


def class_folders(existing: pd.DataFrame) -> dict[str, str] | None:
    """{label: folder holding its images} when the split CSV's data root is a class-folder root
    (every labelled image sits in a folder named after its label, as make_splits.py reads it:
    'crazing/x.png' or 'train/crazing/x.png'), else None. The most common folder per label wins."""
    if not len(existing):
        return None
    folders: dict[str, dict[str, int]] = {}
    for path, label in zip(existing["path"], existing["label"]):
        parent = Path(path).parent
        if parent.name.lower() != str(label).lower():
            return None
        counts = folders.setdefault(label, {})
        counts[parent.as_posix()] = counts.get(parent.as_posix(), 0) + 1
    return {label: max(counts, key=counts.get) for label, counts in folders.items()}


def into_split_root(review: pd.DataFrame, export_root: Path, split_root: Path, copy_into: str,
                    source: str, existing: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict[str, Path]]:
    """The review's paths (relative to the export's `export_root`) respelled relative to the split
    CSV's `split_root` -> (review, copies planned {new path: file it is copied from}); nothing is
    copied here (`copy_planned` does it once every row is valid). An image outside `split_root` is
    refused with the fix, or with `copy_into` (a folder under the root) planned as a copy under a
    name no file has (name_1.png, ...; one copy per source file, so a duplicate row stays a
    duplicate). In a class-folder root (`class_folders` of the split CSV's rows) a copy goes into
    the folder of its label instead, so make_splits.py still reads the root, with the label the
    person gave."""
    if os.path.realpath(export_root) == os.path.realpath(split_root) or not len(review):
        return review, {}
    target_dir = split_root / copy_into if copy_into else None
    if target_dir is not None and not os.path.realpath(target_dir).startswith(os.path.realpath(split_root) + os.sep):
        raise InputError(f"--copy_into {copy_into}: must be a folder inside the data root {split_root}")
    by_label = class_folders(existing) if existing is not None else None
    paths, outside, copies = [], [], {}
    for row in review.itertuples(index=False):
        written = row.path
        try:
            file = Path(os.path.realpath(export_root / resolve_data_path(str(written), export_root)))
        except InputError:
            paths.append(written)  # the validation names it
            continue
        try:
            paths.append(resolve_data_path(str(file), split_root))
            continue
        except InputError:
            outside.append(file)
        if target_dir is None:
            paths.append(written)
            continue
        if file not in copies:
            label = _row_label(row)
            if by_label is not None:  # a class-folder root: into the folder of its label
                folder = split_root / by_label.get(label, label)
                target = folder / file.name
            else:
                target = target_dir / file.relative_to(os.path.realpath(export_root))
            copies[file] = _free_name(target, copies.values())
        paths.append(copies[file].relative_to(split_root).as_posix())
    if outside and target_dir is None:
        raise InputError(f"{source}: {len(outside)} image(s) are not under the data root {split_root} of the split "
                         f"CSV (e.g. {outside[0]}); their paths would name other files or none. Pass --copy_into "
                         "FOLDER to copy them into FOLDER under the data root (collision-free names) and append "
                         "those, or export them from under the data root")
    return review.assign(review_path=review["path"], path=paths), {target.relative_to(split_root).as_posix(): file
                                       for file, target in copies.items()}


def copy_planned(plan: dict[str, Path], split_root: Path) -> tuple[list[Path], list[Path]]:
    """Copy each planned image (`into_split_root`) under `split_root` -> (the copies, the folders
    created for them); all or nothing:
    a failure removes the copies made and the folders created, and is one InputError naming the file."""
    done, made = [], []
    try:
        for path, file in plan.items():
            target = split_root / path
            missing = [d for d in (target.parent, *target.parent.parents) if not d.exists()]
            target.parent.mkdir(parents=True, exist_ok=True)
            made += missing
            shutil.copy2(file, target)
            done.append(target)
    except OSError as e:
        remove_copies(done, made)
        raise InputError(f"copying {e.filename or file} into {split_root}: {e.strerror or e}; nothing imported "
                         "(the copies made were removed)") from None
    except BaseException:
        remove_copies(done, made)
        raise
    return done, made


def remove_copies(files: list[Path], folders: list[Path]) -> None:
    """Undo `copy_planned`: the copied files, then the folders it created (deepest first, when empty)."""
    for file in files:
        file.unlink(missing_ok=True)
    for folder in sorted(set(folders), key=lambda d: len(d.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _row_label(row) -> str:
    """A review row's label: its corrected_label, else its predicted_label (surrounding spaces dropped)."""
    corrected = "" if pd.isna(getattr(row, "corrected_label", "")) else str(getattr(row, "corrected_label", ""))
    predicted = "" if pd.isna(getattr(row, "predicted_label", "")) else str(getattr(row, "predicted_label", ""))
    return corrected.strip() or predicted.strip()


def _is_image(file: Path) -> bool:
    """An image extension and a header an image reader opens (a text file named x.png is not one)."""
    if file.suffix.lower() not in IMAGE_EXTENSIONS:
        return False
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(file):
            return True
    except (UnidentifiedImageError, OSError, ValueError):
        return False


NAME_MAX = 255  # bytes in one file name on the usual file systems


def _free_name(target: Path, taken) -> Path:
    """`target`, or name_1.ext, name_2.ext, ...: the first no file (and no planned copy) has; the
    stem is shortened where the suffix would make the name longer than a file system allows."""
    taken, candidate, k = set(taken), target, 0
    while candidate.exists() or candidate in taken or len(candidate.name.encode()) > NAME_MAX:
        k += 1
        tail = f"_{k}{target.suffix}" if candidate.exists() or candidate in taken else target.suffix
        stem = target.stem
        while len((stem + tail).encode()) > NAME_MAX:
            stem = stem[:-1]
        candidate = target.with_name(f"{stem}{tail}")
    return candidate


def import_review(review_csv: str | Path, split_csv: str | Path, split: str = "train",
                  class_names: list[str] | None = None, data_root: str | Path | None = None,
                  label_studio_json: str | Path | None = None, copy_into: str = "") -> dict:
    """Validate the edited review CSV and append its labels to `split_csv` (atomically, all or nothing;
    the rows already there are never rewritten, see `splits.append_to_split_csv`), holding the
    split CSV's lock (`locks.locked_file`) from reading it to writing it.

    The review's paths are relative to the export's data root (review_meta.json); the split
    CSV's data root is `data_root` (else the same), checked against its rows (`check_split_root`);
    images outside it are refused, or copied into `copy_into` under it (`into_split_root`).

    With `label_studio_json`, the labels come from that Label Studio JSON export of the batch
    instead (`label_studio.review_table_from_export`: rows named by task id; review_meta.json
    from `review_csv`'s folder) and go through the same validation. Returns {'rows',
    'corrected', 'confirmed', 'split_csv', 'labels': [label per row]} (+ 'label_studio': tasks
    per status); raises InputError listing every bad row (and writes nothing) when any is invalid.
    """
    review_csv = Path(review_csv)
    source = Path(label_studio_json) if label_studio_json else review_csv
    if not source.is_file():
        raise FileNotFoundError(f"{source}: {'Label Studio export' if label_studio_json else 'review CSV'} not found")
    review = None if label_studio_json else read_review_csv(review_csv)
    meta_path = review_csv.parent / "review_meta.json"
    meta = read_json(meta_path) if meta_path.is_file() else {}
    split_csv = Path(split_csv or meta.get("split_csv") or "")
    if not str(split_csv) or str(split_csv) == ".":
        raise InputError(f"{source}: no split CSV to append to (pass --split_csv)")
    with locked_file(split_csv):  # two imports at once: the second reads what the first wrote
        return _import_locked(review_csv, source, review, meta, split_csv, split, class_names, data_root,
                              label_studio_json, copy_into)


def _import_locked(review_csv: Path, source: Path, review, meta: dict, split_csv: Path, split: str, class_names,
                   data_root, label_studio_json, copy_into: str) -> dict:
    """`import_review` once the split CSV's lock is held."""
    existing = read_split_csv(split_csv) if split_csv.is_file() else pd.DataFrame(columns=["path", "label", "split"])
    check_review_meta(meta, review_csv.parent / "review_meta.json")
    class_names = list(class_names or meta.get("class_names") or sorted(set(existing["label"]) - {""}))
    if not class_names:
        raise InputError(f"{source}: no class names known (pass --class_names or keep review_meta.json)")
    export_root = Path(meta.get("data_root") or data_root or review_csv.parent)  # what the review's paths are under
    data_root = Path(data_root or export_root)  # what the split CSV's paths are under
    check_split_root(existing, data_root, split_csv)
    errors, row_names, counts = [], None, None
    if label_studio_json:
        document_root = (meta.get("label_studio") or {}).get("document_root") or export_root
        exported = read_review_csv(review_csv) if review_csv.is_file() else None
        predicted = dict(zip(exported["path"], exported["predicted_label"])) if exported is not None else {}
        tasks = read_json(source)
        if not isinstance(tasks, list):
            raise InputError(f"{source}: not a Label Studio JSON export (a list of tasks expected, found "
                             f"{type(tasks).__name__}); export the project from Label Studio as JSON")
        review, counts, errors = label_studio.review_table_from_export(tasks, document_root, export_root,
                                                                      str(source), predicted)
        row_names = [f"task {t}" for t in review["task_id"]]
    review, plan = into_split_root(review, export_root, data_root, copy_into, str(source), existing)
    labelled = {_spelling(p, data_root) for p in existing["path"]}
    accepted, problems = validate_review(review, class_names, data_root, labelled, str(source), row_names,
                                         sources={p: f for p, f in plan.items()},
                                         known_content=content_index(existing, data_root))
    errors += problems
    if errors:  # all or nothing: nothing was copied yet
        shown = errors[:MAX_LISTED] + ([f"... and {len(errors) - MAX_LISTED} more"] if len(errors) > MAX_LISTED else [])
        raise InputError(f"{source}: {len(errors)} problem(s), nothing imported:\n  " + "\n  ".join(shown))
    copied, folders = copy_planned(plan, data_root)
    try:
        if len(accepted):
            append_to_split_csv(split_csv, pd.DataFrame({"path": accepted["path"], "label": accepted["label"],
                                                         "split": split}))
    except BaseException:
        remove_copies(copied, folders)  # a failed import leaves nothing behind
        raise
    corrected = int(accepted["corrected"].sum())
    report = {"rows": len(accepted), "corrected": corrected, "confirmed": len(accepted) - corrected,
              "split_csv": str(split_csv), "split": split, "labels": accepted["label"].tolist()}
    if counts is not None:
        report["label_studio"] = counts
    atomic_write_json(source.with_suffix(".import.json"), report)
    left_out = f"; {counts['skipped']} skipped and {counts['unlabelled']} unlabelled task(s) left out" if counts else ""
    where = "the folders of their labels" if class_folders(existing) is not None else data_root / copy_into
    copies = f"; {len(copied)} image(s) copied into {where}" if copied else ""
    log(f"imported {len(accepted)} labels into {split_csv} (split {split}); manual effort: {corrected} corrected, "
        f"{len(accepted) - corrected} confirmed{left_out}{copies}")
    return report


META_FIELDS = {"class_names": list, "data_root": str, "split_csv": str, "label_studio": dict}  # what import reads


def check_review_meta(meta: dict, meta_path: Path) -> None:
    """Refuse a review_meta.json whose fields import reads are not what an export writes: a JSON
    object; class_names a list of distinct non-empty texts; data_root an existing folder that is not
    the file-system root; split_csv text; label_studio an object with a text document_root.
    (Every review row is then checked against the files themselves: `validate_review`.)"""
    if not meta:
        return
    if not isinstance(meta, dict):
        raise InputError(f"{meta_path}: not an export's review_meta.json (a JSON object expected); export the "
                         "batch again")
    for name, kind in META_FIELDS.items():
        value = meta.get(name)
        if value is not None and not isinstance(value, kind):
            raise InputError(f"{meta_path}: {name} must be a {'JSON list' if kind is list else kind.__name__}, got "
                             f"{json.dumps(value)[:60]}; export the batch again (or pass --{name})")
    names = meta.get("class_names") or []
    if any(not isinstance(c, str) or not c.strip() for c in names) or len(set(names)) != len(names):
        raise InputError(f"{meta_path}: class_names must be distinct non-empty names, got {names[:10]}; export the "
                         "batch again, or pass --class_names")
    root = meta.get("data_root")
    if root:
        real = Path(os.path.realpath(root))
        if not real.is_dir():
            raise InputError(f"{meta_path}: data_root {root!r} is not a folder; pass --data_dir, or export the batch "
                             "again")
        if real == Path(real.anchor):
            raise InputError(f"{meta_path}: data_root {root!r} is the file-system root, not a data folder an export "
                             "writes; export the batch again from its data root")
    document_root = (meta.get("label_studio") or {}).get("document_root")
    if document_root is not None and not isinstance(document_root, str):
        raise InputError(f"{meta_path}: label_studio.document_root must be text; export the batch again")


def _spelling(path: str, data_root: Path) -> str:
    """`resolve_data_path`'s spelling of a path already in the split CSV (as written when it has
    none: a bad old row is training's to report, not this import's)."""
    try:
        return resolve_data_path(path, data_root)
    except InputError:
        return path


# ============================================================================ the data-generation operator

class ReviewOperator:
    """An operator for train_model_data_generation.py that goes through review files.

    Each call exports the step's images (paths relative to `data_root`, predicted labels
    int64 [n]) as review CSV + HTML under `review_dir/run_<r>/step_<k>/`, lets
    `respond(csv_path, true labels)` fill in corrected_label (a person at the keyboard by
    default), imports the CSV into `review_dir/run_<r>/labelled.csv` and returns the labels
    int64 [n]. A step whose images are already labelled starts a new run folder (the next
    grid setting replays the same image stream). An invalid CSV is reported and the person
    asked again; a scripted `respond` gets the error raised.
    """

    def __init__(self, review_dir: str | Path, class_names: list[str], data_root: str | Path,
                 respond=None, display_size: int = 128, canvas=None):
        self.review_dir, self.class_names = Path(review_dir), list(class_names)
        self.data_root, self.display_size = Path(data_root), display_size
        # the pictures show what the model sees (canvas: a cache.Canvas; None = a square crop)
        self.shown = display_canvas(canvas or display_size, display_size)
        self.respond = respond or ask_person
        self.interactive = respond is None
        self.run, self.step, self.seen = 1, 0, set()
        self.effort = []  # rows corrected per call

    def __call__(self, paths: list[str], predicted: torch.Tensor, true_labels: torch.Tensor) -> torch.Tensor:
        if self.seen & set(paths):  # the loop moved on to the next setting
            self.run, self.step, self.seen = self.run + 1, 0, set()
        self.step += 1
        self.seen |= set(paths)
        run = self.review_dir / f"run_{self.run:03d}"
        rows = pd.DataFrame({"path": paths, "predicted_label": [self.class_names[i] for i in predicted.tolist()],
                             "uncertainty": np.nan, "disagreement": "", "referred": True, "risk": np.nan})
        display = torch.stack([decode_for_cache(_resolve(self.data_root, p), self.shown) for p in paths]) \
            if paths else torch.empty(0, *self.shown.stored_shape, dtype=torch.uint8)
        meta = {"class_names": self.class_names, "data_root": str(self.data_root.resolve()),
                "split_csv": str(run / "labelled.csv"), "source": f"data-generation run {self.run} step {self.step}"}
        written = write_review(run / f"step_{self.step:03d}", rows, display, {}, meta)
        while True:
            self.respond(written["csv"], [self.class_names[i] for i in true_labels.tolist()])
            try:
                edited = read_review_csv(written["csv"])
                lacking = sorted(set(paths) - set(edited.get("path", [])))
                if lacking:
                    raise ValueError(f"{written['csv']}: rows removed for {len(lacking)} image(s), e.g. {lacking[0]}")
                report = import_review(written["csv"], run / "labelled.csv", "train", self.class_names,
                                       self.data_root)
                break
            except ValueError as e:
                if not self.interactive:
                    raise
                print(e, file=sys.stderr)
        self.effort.append(report["corrected"])
        index = {c: i for i, c in enumerate(self.class_names)}
        by_path = dict(zip(edited["path"], report["labels"]))
        return torch.tensor([index[by_path[p]] for p in paths], dtype=torch.long)


def ask_person(csv_path: Path, true_labels: list[str]) -> None:
    """Wait until the person has edited the review CSV (true labels are not shown)."""
    html_path = Path(csv_path).with_suffix(".html")
    input(f"\nOpen {html_path} in a browser, confirm or correct every image, press Download review.csv and "
          f"save it as {csv_path} (or fill corrected_label there in a spreadsheet), then press Enter ... ")


def fill_ground_truth(csv_path: Path, true_labels: list[str]) -> None:
    """A scripted person: writes the true label into corrected_label wherever the prediction is wrong."""
    review = read_review_csv(csv_path)
    review["corrected_label"] = [t if t != p else "" for t, p in zip(true_labels, review["predicted_label"])]
    write_review_csv(csv_path, review)


def run_loop(loop_cfg: LoopConfig, cfg) -> dict:
    """train_model_data_generation.py (its Config `cfg`) with a ReviewOperator as the operator."""
    import train_model_data_generation as datagen
    table, root = load_split_table(cfg.dataset, cfg.data_dir, cfg.split_csv, cfg.split_seed, cfg.per_class,
                                   cfg.multi_label_rule)
    class_names = sorted(table["label"].unique())
    respond = fill_ground_truth if loop_cfg.answer == "ground_truth" else None
    canvas = plan_table_canvas(table, root, cfg.image_size, decode_request(cfg.dataset, cfg.geometry)["geometry"], 3)
    operator = ReviewOperator(loop_cfg.review_dir, class_names, root, respond, canvas=canvas)
    return datagen.main(cfg, operator=operator)


# ============================================================================ command line

def action_configs() -> dict[str, tuple]:
    """action -> (its Config classes, one line on what it does). `loop` takes LoopConfig and
    every flag of train_model_data_generation.py, which it runs."""
    import train_model_data_generation as datagen  # the orchestrated script, only for `loop`
    return {"export": ((ExportConfig,), "export the images a person must look at (review.csv + review.html)"),
            "import": ((ImportConfig,), "validate an edited review.csv and append its labels to a split CSV"),
            "loop": ((LoopConfig, datagen.Config),
                     "run train_model_data_generation.py with this export/import round trip as its operator")}


def action_examples(action: str) -> str:
    """The example commands of `action` in this module's docstring (continuation lines included),
    for the action's own --help."""
    lines, keep = [], False
    for line in (__doc__ or "").splitlines():
        keep = line.lstrip().startswith(f"python review.py {action} ") or (keep and lines[-1].endswith("\\"))
        if keep:
            lines.append(line)
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """review.py {export,import,loop} [--flags]: one subparser per action with its own flags."""
    parser = argparse.ArgumentParser(prog="review.py", description=__doc__,
                                     formatter_class=HelpFormatter)
    actions = parser.add_subparsers(dest="action", metavar="{" + ",".join(ACTIONS) + "}", required=True)
    for action, (classes, summary) in action_configs().items():
        sub = actions.add_parser(action, help=summary, formatter_class=HelpFormatter,
                                 description=f"review.py {action}: {summary}.\n\n{action_examples(action)}")
        if len(classes) == 1:  # loop passes flags to two configs: a config.json replays one script
            add_replay_flag(sub)
        add_config_flags(sub, classes[0])
        for other in classes[1:]:
            add_config_flags(sub, other, title="train_model_data_generation.py flags (passed on)")
        sub.set_defaults(parser=sub)
    return parser


def main(cfg: ExportConfig | ImportConfig) -> dict:
    if isinstance(cfg, ExportConfig):
        return export(cfg)
    if isinstance(cfg, ImportConfig):
        return import_review(cfg.review_csv, cfg.split_csv, cfg.split,
                             list(cfg.class_names) if cfg.class_names else None, cfg.data_dir or None,
                             cfg.label_studio_json or None, cfg.copy_into)
    raise TypeError(f"main takes an ExportConfig or ImportConfig, got {type(cfg).__name__}")


def cli(argv: list[str]) -> int:
    """Run one action; returns the exit code (0 done, 1 bad input, 2 bad command line)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        classes = action_configs()[args.action][0]
        configs = [config_from_args(c, args, args.parser) for c in classes]
    except SystemExit as stop:  # --help (0) or a usage error (2), already printed by argparse
        return stop.code if isinstance(stop.code, int) else 2
    try:
        if args.action == "loop":
            run_main(lambda loop_cfg: run_loop(loop_cfg, configs[1]), configs[0])
        else:
            run_main(main, configs[0])
    except ValueError as e:  # a bad review CSV and other input problems: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 1
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
