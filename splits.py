"""Split tables: pandas DataFrames with columns `path` (relative to the data root), `label`
(class name) and `split` (train/valid/test[/test_<name>]). Making one (`stratified_split`),
reading one (`read_split_csv`) and checking one before anything is decoded
(`check_split_table`, `split_name_ok`, `check_no_cross_split_duplicates`).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from utils import InputError

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


def _file_sha1(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


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

    Surrounding spaces are stripped (a label 'crazing ' would otherwise be a class of its
    own) and split 'val' is read as 'valid'. The index is the CSV row minus 2 (header, 1-based).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split CSV not found")
    try:
        table = pd.read_csv(path, dtype=str, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a readable CSV ({type(e).__name__}: {str(e).strip()})") from None
    missing = {"path", "label", "split"} - set(table.columns)
    if missing:
        raise InputError(f"{path}: split CSV lacks columns {sorted(missing)} (needs path,label,split)")
    table = table[["path", "label", "split"]].copy()
    for col in table.columns:
        table[col] = table[col].str.strip()
    table.loc[table["split"] == "val", "split"] = "valid"
    return table


def split_name_ok(name: str) -> bool:
    """The split names the scripts read: train, valid, test and test_<anything> (e.g. test_shifted)."""
    return name in ("train", "valid", "test") or name.startswith("test_")


def check_split_table(table: pd.DataFrame, root: str | Path, source: str | Path = "",
                      class_names: list[str] | None = None, splits=None) -> tuple[pd.DataFrame, list[dict]]:
    """Find, without decoding, rows that would break training or silently distort it.

    A problem is an empty path, label or split, a file that does not exist, a path listed in
    two different splits (test leakage), a split name rejected by `splits` (a tuple of names
    or a predicate; None accepts any), and an unknown label: outside `class_names` when
    given, else a label with no image in the train split (the model could never predict it).
    `source` (the split CSV) is named in the messages, with CSV row numbers.
    Returns (table without the problem rows, [{'path', 'problem'}]).
    """
    root = Path(root)
    csv_rows = str(source).lower().endswith(".csv")
    problems, bad = [], set()

    def row_of(idx) -> str:
        return f"{source} row {idx + 2}" if csv_rows and isinstance(idx, (int, np.integer)) else str(source)

    def flag(idx, path, text):
        bad.add(idx)
        if isinstance(path, str) and path:
            where, text = str(root / path), f"{text} (named in {row_of(idx)})" if source else text
        else:
            where = row_of(idx) if source else f"table row {idx}"
        problems.append({"path": where, "problem": text})

    if splits is not None and not callable(splits):
        allowed = tuple(splits)
        splits = lambda name: name in allowed  # noqa: E731
    first_split: dict[str, str] = {}
    for idx, path, label, split in zip(table.index, table["path"], table["label"], table["split"]):
        empty = [c for c, v in (("path", path), ("label", label), ("split", split))
                 if not isinstance(v, str) or not v]
        if empty:
            flag(idx, path, f"empty {' and '.join(empty)}")
            continue
        if splits is not None and not splits(split):
            flag(idx, path, f"unknown split {split!r}; use train, valid, test or test_<name>")
            continue
        if not (root / path).is_file():
            flag(idx, path, "file not found")
            continue
        if first_split.setdefault(path, split) != split:
            flag(idx, path, f"listed in split {first_split[path]!r} and again in {split!r}")
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
