"""Write a deterministic stratified train/valid/test split CSV (`path,label,split`, paths
relative to the data root) into data_splits/, refusing identical images across splits.

    python make_splits.py --dataset neu --data_dir /data/NEU --name neu
    python make_splits.py --dataset severstal_kaggle --data_dir /data/severstal --cap_per_class 195
    python make_splits.py --dataset folders --data_dir my_images --ratios 0.7,0.15,0.15 --seed 3

The layout's own splits are ignored: all images are pooled and split again by class.
Then pass the CSV to any script with `--split_csv data_splits/<name>.csv`.

Settings (every flag, grouped; name=default [source of the default]):
  data: data_dir='', max_image_pixels=50000000
  own: dataset=folders, ratios=0.6,0.2,0.2, seed=0, cap_per_class=None,
      multi_label_rule=largest_area, out_dir=data_splits, name='', check_duplicates=True
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from safehil.settings.config import MAX_IMAGES, DataRoot
from datasets import DATASETS, MULTI_LABEL_RULES, scan_dataset
from safehil.data.splits import check_no_cross_split_duplicates, stratified_split
from utils import MAX_SEED, InputError, atomic_write_csv, flag, parse_config, require, run_main


@dataclass(frozen=True)
class Config(DataRoot):
    dataset: str = flag("folders", "layout adapter", choices=DATASETS)
    ratios: tuple[float, ...] = flag((0.6, 0.2, 0.2), "train,valid,test shares")
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
        require(self.cap_per_class is None or self.cap_per_class >= 1, "--cap_per_class must be >= 1")


def class_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Images per class (rows) and split (columns), with totals."""
    counts = table.pivot_table(index="label", columns="split", values="path", aggfunc="count", fill_value=0)
    counts = counts[[c for c in ("train", "valid", "test") if c in counts.columns]]
    counts.loc["total"] = counts.sum()
    return counts


def main(cfg: Config) -> Path:
    table = scan_dataset(cfg.dataset, cfg.data_dir, cfg.multi_label_rule)
    table = table.drop(columns=[c for c in table.columns if c == "split"])
    split = stratified_split(table, cfg.ratios, cfg.seed, cap_per_class=cfg.cap_per_class)
    split = split[split["split"].notna()]
    if cfg.check_duplicates:
        try:
            check_no_cross_split_duplicates(split, cfg.data_dir)
        except ValueError as e:  # the user's data: one line, no traceback
            raise InputError(str(e)) from None
    out = Path(cfg.out_dir) / f"{cfg.name or f'{cfg.dataset}_s{cfg.seed}'}.csv"
    atomic_write_csv(out, split)
    print(class_counts(split).to_string())
    print(f"wrote {len(split)} rows to {out}")
    return out


if __name__ == "__main__":
    run_main(main, parse_config(Config, description=__doc__))
