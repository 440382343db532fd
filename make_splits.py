"""Write a deterministic stratified train/valid/calib/test split CSV (`path,label,split`, paths
relative to the data root) into data_splits/, refusing identical images across splits.
`calib` (--calib_share of every class, 20 % by default) is held out from training and early
stopping: evaluate_safety.py calibrates and certifies its thresholds on it.

    python make_splits.py --dataset neu --data_dir /data/NEU --name neu
    python make_splits.py --dataset severstal_kaggle --data_dir /data/severstal --cap_per_class 195
    python make_splits.py --dataset folders --data_dir my_images --ratios 0.7,0.15,0.15 --seed 3

The layout's own splits are ignored: all images are pooled and split again by class.
Then pass the CSV to any script with `--split_csv data_splits/<name>.csv`.

A CSV that exists already is extended, never re-dealt: its rows keep their labels and splits
(labels a person reviewed and imported with review.py import among them, whatever folder the
image sits in), only images it does not list yet are split by --ratios; pass another --name
for a fresh split. The CSV gets the formula guard (a cell starting with =, @, +, -, a tab or '
gets one leading ', as review.csv; every reader removes it) and a CSV that is a symbolic link
is written through.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from safehil.settings.config import MAX_IMAGES, DataRoot
from datasets import DATASETS, MULTI_LABEL_RULES, scan_dataset
from safehil.data.splits import (CALIB_SPLIT, check_no_cross_split_duplicates, read_split_csv, resolve_data_path,
                                 stratified_split)
from utils import (MAX_SEED, InputError, atomic_write_spreadsheet_csv, flag, log, parse_config, require,
                   run_main)


@dataclass(frozen=True)
class Config(DataRoot):
    """make_splits.py's flags: its own below and DataRoot's `data` flags (data_dir, max_image_pixels; config.py)."""
    dataset: str = flag("folders", "layout adapter", choices=DATASETS)
    ratios: tuple[float, ...] = flag((0.6, 0.2, 0.2), "train,valid,test shares of what --calib_share leaves")
    calib_share: float = flag(0.2, "share of every class held out as the calib split (never trained or early-stopped "
                                   "on; evaluate_safety.py certifies on it); 0 = no calib split")
    seed: int = flag(0, "shuffling seed", most=MAX_SEED)
    cap_per_class: int | None = flag(None, "at most this many images per class", most=MAX_IMAGES)
    multi_label_rule: str = flag("largest_area", "Severstal images with several classes", choices=MULTI_LABEL_RULES)
    out_dir: str = flag("data_splits", "folder for the CSV")
    name: str = flag("", "CSV file name without .csv; empty = <dataset>_s<seed>")
    check_duplicates: bool = flag(True, "refuse identical files across splits")
    FLAG_HELP = {"data_dir": "data root folder (required)"}

    def __post_init__(self):
        super().__post_init__()
        require(bool(self.data_dir), "--data_dir is required")
        require(len(self.ratios) == 3, f"--ratios needs three values train,valid,test, got {self.ratios}")
        require(all(r >= 0 for r in self.ratios) and abs(sum(self.ratios) - 1) < 1e-6,
                f"--ratios must be non-negative and sum to 1, got {self.ratios}")
        require(0 <= self.calib_share < 1, f"--calib_share must be in [0, 1), got {self.calib_share}")
        require(self.cap_per_class is None or self.cap_per_class >= 1, "--cap_per_class must be >= 1")


def class_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Images per class (rows) and split (columns), with totals."""
    counts = table.pivot_table(index="label", columns="split", values="path", aggfunc="count", fill_value=0)
    counts = counts[[c for c in ("train", "valid", CALIB_SPLIT, "test") if c in counts.columns]]
    counts.loc["total"] = counts.sum()
    return counts


def kept_rows(out: Path, root: str) -> pd.DataFrame:
    """The rows of an existing split CSV `out` whose files are still under `root`, as written
    (their labels and splits are never re-dealt); none when `out` does not exist."""
    if not out.is_file():
        return pd.DataFrame(columns=["path", "label", "split"])
    existing = read_split_csv(out)
    exists = []
    for path in existing["path"]:
        try:
            exists.append((Path(root) / resolve_data_path(path, root)).is_file())
        except InputError:
            exists.append(False)
    gone = existing.loc[[not e for e in exists], "path"].tolist()
    if gone:
        log(f"{out}: {len(gone)} row(s) name files no longer under {root} (e.g. {gone[0]!r}); left out")
    return existing.loc[exists].reset_index(drop=True)


def main(cfg: Config) -> Path:
    table = scan_dataset(cfg.dataset, cfg.data_dir, cfg.multi_label_rule)
    table = table.drop(columns=[c for c in table.columns if c == "split"])
    out = Path(cfg.out_dir) / f"{cfg.name or f'{cfg.dataset}_s{cfg.seed}'}.csv"
    kept = kept_rows(out, cfg.data_dir)
    listed = {resolve_data_path(p, cfg.data_dir) for p in kept["path"]}
    new = table[[p not in listed for p in table["path"]]]
    keep = 1 - cfg.calib_share
    r_train, r_valid, r_test = (r * keep for r in cfg.ratios)
    split = stratified_split(new, (r_train, r_valid, cfg.calib_share, r_test), cfg.seed,
                             names=("train", "valid", CALIB_SPLIT, "test"), cap_per_class=cfg.cap_per_class) \
        if len(new) else kept[:0]
    split = pd.concat([kept, split[split["split"].notna()]], ignore_index=True)
    if len(kept):
        by_folder = dict(zip(table["path"], table["label"]))
        differ = sum(by_folder.get(resolve_data_path(p, cfg.data_dir)) != label
                     for p, label in zip(kept["path"], kept["label"]))
        log(f"{out} exists: kept its {len(kept)} row(s) as they were (labels and splits; {differ} labelled other "
            f"than their folder, e.g. reviewed and imported); {len(split) - len(kept)} new image(s) split by "
            "--ratios and --calib_share. Pass another --name for a fresh split")
    if cfg.check_duplicates:
        try:
            check_no_cross_split_duplicates(split, cfg.data_dir)
        except ValueError as e:  # the user's data: one line, no traceback
            raise InputError(str(e)) from None
    if len(kept) and len(split) == len(kept) and out.is_file() and len(kept) == len(read_split_csv(out)):
        print(class_counts(split).to_string())
        print(f"{out} lists every image already: left as it is")
        return out
    atomic_write_spreadsheet_csv(os.path.realpath(out), split)  # a symbolic link: its target is updated
    print(class_counts(split).to_string())
    print(f"wrote {len(split)} rows to {out}")
    return out


if __name__ == "__main__":
    run_main(main, parse_config(Config, description=__doc__))
