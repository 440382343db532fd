"""Split tables: pandas DataFrames with columns `path` (relative to the data root), `label`
(class name) and `split` (train/valid/test[/test_<name>]). Making one (`stratified_split`),
reading one (`read_split_csv`), appending to one without touching what is there
(`append_to_split_csv`), the one spelling of an image path under the data root
(`resolve_data_path`, used by every reader of split CSVs, review CSVs and label exports) and
checking a table before anything is decoded (`check_split_table`, `split_name_ok`,
`check_no_cross_split_duplicates`), and the halves of the train split a model pair trains on
(`train_part`: train_model.py trains on one, get_mc_scores.py and saliency_map_uncertainties.py
score one).
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from safehil.core.spreadsheet import atomic_write_spreadsheet_csv, protect_cell, unprotect_cell
from safehil.core.utils import InputError, atomic_write_bytes, file_sha256

def stratified_split(table: pd.DataFrame, ratios=(0.6, 0.2, 0.2), seed: int = 0,
                     names=("train", "valid", "test"), cap_per_class: int | None = None) -> pd.DataFrame:
    """Assign a `split` column per class by `ratios` (deterministic for `seed`).

    Each class is shuffled with its own seeded permutation, optionally capped at
    `cap_per_class` images, then cut by cumulative ratios (rounding to nearest).
    """
    if abs(sum(ratios) - 1.0) > 1e-6 or any(r < 0 for r in ratios):
        raise ValueError(f"split ratios must be non-negative and sum to 1, got {ratios}")
    out = []
    rng = np.random.default_rng(seed)
    for label in sorted(table["label"].unique()):
        group = table[table["label"] == label].sort_values("path").reset_index(drop=True)
        order = rng.permutation(len(group))
        if cap_per_class is not None:
            order = order[:cap_per_class]
        group = group.iloc[order].copy()
        cuts = np.round(np.cumsum(ratios) * len(group)).astype(int)
        split = np.empty(len(group), dtype=object)
        start = 0
        for name, stop in zip(names, cuts):
            split[start:stop] = name
            start = stop
        group["split"] = split
        out.append(group)
    return pd.concat(out, ignore_index=True)[["path", "label", "split"]]


def resolve_data_path(path: str, root: str | Path, where: str = "") -> str:
    """The one spelling of an image path under the data root `root`: root-relative, POSIX,
    without '.', '..' or doubled '/', symbolic links resolved. './a/x.png', 'a//x.png',
    'a/../a/x.png' and '<root>/a/x.png' (absolute, inside the root) are all 'a/x.png', so
    duplicate, already-labelled and cross-split checks compare this, never the raw text.

    The name is taken byte for byte (' a.png' is not 'a.png': no spaces are stripped).
    Raises InputError '<where>: ...' (`where` names the file and line, e.g. 'review.csv line 5')
    for an empty (or all-blank) path and for one that leaves the root: an absolute path elsewhere
    ('/etc/passwd'), '../outside/x.png', or a symbolic link to a file outside the root.
    Whether the file exists is left to the caller (it reports missing files its own way).
    """
    where = f"{where}: " if where else ""
    text = path if isinstance(path, str) else ""
    if not text.strip():
        raise InputError(f"{where}empty path")
    real_root = Path(os.path.realpath(root))
    given = Path(text) if Path(text).is_absolute() else Path(root) / text
    real = Path(os.path.realpath(given))
    if real != real_root and real.is_relative_to(real_root):  # realpath: symbolic links followed
        return real.relative_to(real_root).as_posix()
    if real == real_root:
        raise InputError(f"{where}path {text!r} names the data root {root} itself, not an image in it")
    inside_as_written = Path(os.path.abspath(given)).is_relative_to(os.path.abspath(root))
    how = f"a symbolic link to {real}" if inside_as_written else "not inside it"
    raise InputError(f"{where}path {text!r} leaves the data root {root} ({how}); only images under the data "
                     f"root can be used: copy the image into it, or point --data_dir at a folder that holds it")


def _file_sha1(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def content_index(table: pd.DataFrame, root: str | Path) -> dict[str, tuple[str, str]]:
    """{sha256 of the file's bytes: (path, split)} of every row of a split table whose file exists
    under `root` (first row per content): what an import compares new images with."""
    index = {}
    for path, split in zip(table["path"], table["split"]):
        try:
            file = Path(root) / resolve_data_path(path, root)
        except InputError:
            continue
        if file.is_file():
            index.setdefault(file_sha256(file), (path, split))
    return index


def check_no_cross_split_duplicates(table: pd.DataFrame, root: str | Path) -> None:
    """Raise if two files with identical bytes sit in different splits (test leakage)."""
    root = Path(root)
    seen: dict[str, tuple[str, str]] = {}
    for row in table.itertuples(index=False):
        digest = _file_sha1(root / row.path)
        if digest in seen and seen[digest][1] != row.split:
            raise ValueError(f"identical images across splits: {seen[digest][0]} ({seen[digest][1]}) "
                             f"and {row.path} ({row.split}); remove one before splitting")
        seen.setdefault(digest, (row.path, row.split))


def read_split_csv(path: str | Path) -> pd.DataFrame:
    """Read a `path,label,split` CSV; errors name the file.

    Every cell is a plain string (a label 'NA', 'null' or 'None' stays that label; an empty
    cell is '') with the formula guard's quote removed (`spreadsheet.unprotect_cell`: the
    writers guard every cell). A path is kept byte for byte (' a.png' is a file of its own);
    labels and splits lose surrounding spaces (a label 'crazing ' would otherwise be a class of
    its own) and split 'val' is read as 'valid' (in memory; the file is never rewritten).
    The index is the CSV row minus 2 (header, 1-based).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split CSV not found")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a readable CSV ({type(e).__name__}: {str(e).strip()})") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = {"path", "label", "split"} - set(table.columns)
    if missing:
        raise InputError(f"{path}: split CSV lacks columns {sorted(missing)} (needs path,label,split)")
    table = table[["path", "label", "split"]].copy()
    for col in table.columns:
        table[col] = table[col].map(unprotect_cell)
    for col in ("label", "split"):
        table[col] = table[col].str.strip()
    table.loc[table["split"] == "val", "split"] = "valid"
    return table


def append_to_split_csv(split_csv: str | Path, rows: pd.DataFrame) -> Path:
    """Append `rows` (columns path, label, split) to a split CSV, atomically (temp file + rename).

    Every byte already in the file stays as it is: its rows, extra columns (an `annotator` or
    `note` column gets an empty cell in the new rows), spellings such as split 'val' or label
    'NA', its line ending and encoding mark. A missing file is created with the header
    path,label,split. The new cells get the formula guard (`spreadsheet.protect_cell`: a person
    opens this file in a spreadsheet). A split CSV that is a symbolic link is written through
    (its target is updated, the link stays). The caller validates first (`read_split_csv` has
    read the file).
    """
    path = Path(os.path.realpath(split_csv))
    old = path.read_bytes() if path.is_file() else b""
    text = old.decode("utf-8-sig")
    header = next(csv.reader(io.StringIO(text)), []) if text.strip() else []
    columns = [c.strip() for c in header] or ["path", "label", "split"]
    newline = "\r\n" if old.split(b"\n", 1)[0].endswith(b"\r") else "\n"
    out = io.StringIO()
    if not header:
        out.write(",".join(columns) + newline)
    elif not text.endswith("\n"):
        out.write(newline)
    writer = csv.writer(out, lineterminator=newline)
    for row in rows.to_dict("records"):
        writer.writerow([protect_cell(row.get(c, "")) for c in columns])
    prefix = old if header else b""
    return atomic_write_bytes(path, prefix + out.getvalue().encode("utf-8"))


RUN_SPLIT_FILE = "split.csv"  # the split table a training run used, in its run folder


def write_run_split(run_dir: str | Path, sets: dict) -> Path:
    """Write run_dir/split.csv (path,label,split): every image a training run used, per split
    (`sets`: {split: ImageSet}), so later scripts know exactly which images it trained on."""
    rows = [{"path": p, "label": s.class_names[int(y)], "split": name}
            for name, s in sets.items() for p, y in zip(s.paths, s.labels.tolist())]
    return atomic_write_spreadsheet_csv(Path(run_dir) / RUN_SPLIT_FILE,
                                        pd.DataFrame(rows, columns=["path", "label", "split"]))


CALIB_SPLIT = "calib"  # make_splits.py's calibration split: held out from training and early stopping
# splits that are only scored (MC scores, the cascade), never trained, stopped early or calibrated on, and
# never reported as test accuracy: ELPV's cells the experts were unsure about (elpv.py)
PROBE_SPLITS = ("ambiguous",)


def split_name_ok(name: str) -> bool:
    """The split names the scripts read: train, valid, test, test_<anything> (e.g. test_shifted),
    calib (the held-out calibration split) and the PROBE_SPLITS."""
    return name in ("train", "valid", "test", CALIB_SPLIT) or name.startswith("test_") or name in PROBE_SPLITS


def check_split_table(table: pd.DataFrame, root: str | Path, source: str | Path = "",
                      class_names: list[str] | None = None, splits=None) -> tuple[pd.DataFrame, list[dict]]:
    """Find, without decoding, rows that would break training or silently distort it.

    A problem is an empty path, label or split, a path that leaves the data root, a file that
    does not exist, one file listed twice, in one split or in two, under any spelling (leakage, or
    two labels for one image; paths are compared by `resolve_data_path`), a split name rejected by `splits` (a tuple of names
    or a predicate; None accepts any), and an unknown label: outside `class_names` when
    given, else a label with no image in the train split (the model could never predict it).
    `source` (the split CSV) is named in the messages, with CSV row numbers.
    Returns (table without the problem rows, [{'path', 'problem'}]).
    """
    root = Path(root)
    csv_rows = str(source).lower().endswith(".csv")
    problems, bad = [], set()

    def row_of(idx) -> str:
        if not source:
            return f"table row {idx}"
        return f"{source} row {idx + 2}" if csv_rows and isinstance(idx, (int, np.integer)) else str(source)

    def flag(idx, path, text):
        bad.add(idx)
        if isinstance(path, str) and path:
            where, text = str(root / path), f"{text} (named in {row_of(idx)})" if source else text
        else:
            where = row_of(idx)
        problems.append({"path": where, "problem": text})

    if splits is not None and not callable(splits):
        allowed = tuple(splits)
        splits = lambda name: name in allowed  # noqa: E731
    first_seen: dict[str, tuple] = {}  # resolved path -> (row index, path as written, split)
    for idx, path, label, split in zip(table.index, table["path"], table["label"], table["split"]):
        empty = [c for c, v in (("path", path), ("label", label), ("split", split))
                 if not isinstance(v, str) or not v]
        if empty:
            flag(idx, path, f"empty {' and '.join(empty)}")
            continue
        if splits is not None and not splits(split):
            flag(idx, path, f"unknown split {split!r}; use train, valid, calib, test or test_<name>")
            continue
        try:
            resolved = resolve_data_path(path, root)
        except InputError as e:
            flag(idx, "", str(e))
            continue
        if not (root / resolved).is_file():
            flag(idx, path, "file not found")
            continue
        first_idx, first_path, first_split = first_seen.setdefault(resolved, (idx, path, split))
        if first_idx == idx:
            continue
        if first_split != split:
            spelled = "" if first_path == path else f" as {first_path!r} ({row_of(first_idx)})"
            flag(idx, path, f"listed in split {first_split!r}{spelled} and again in {split!r}")
        else:  # one image twice in one split, maybe with two labels: trained on twice, or on both labels
            spelled = "" if first_path == path else f" as {first_path!r}"
            flag(idx, path, f"listed twice in split {split!r}: also{spelled} in {row_of(first_idx)}; keep one row")
    keep = table.loc[[i for i in table.index if i not in bad]]
    if class_names is not None:
        known, why = set(class_names), f"not one of the model's classes {list(class_names)}"
    elif "train" in set(keep["split"]):
        known, why = set(keep.loc[keep["split"] == "train", "label"]), "no image of this label in the train split"
    else:
        known, why = set(keep["label"]), ""
    for idx, path, label in zip(keep.index, keep["path"], keep["label"]):
        if label not in known:
            flag(idx, path, f"unknown label {label!r}: {why}")
    keep = table.loc[[i for i in table.index if i not in bad]]
    return keep, problems


# ============================================================================ the halves of a model pair

TRAIN_HALVES = ("all", "first", "second")


def train_part(labels: torch.Tensor, half: str, balanced: bool = False) -> list[int]:
    """Indices of the training images a model uses, per class in file order (the order of `labels` [N]).

    balanced: each class keeps only its first m images (m = the smallest class's count). half 'first':
    the first floor(n/2) of each class's n kept images; 'second': the rest; 'all': every kept image.
    The two halves are disjoint and together hold every kept image. Returned in file order.
    """
    if half not in TRAIN_HALVES:
        raise ValueError(f"unknown train half {half!r}; choose from {TRAIN_HALVES}")
    members = {c: torch.nonzero(labels == c).flatten().tolist() for c in sorted(set(labels.tolist()))}
    if balanced:
        smallest = min(len(m) for m in members.values())
        members = {c: m[:smallest] for c, m in members.items()}
    keep = []
    for m in members.values():
        cut = len(m) // 2
        keep += {"all": m, "first": m[:cut], "second": m[cut:]}[half]
    return sorted(keep)
