"""The ELPV solar-cell benchmark (Buerhop-Lutz et al. 2018; Deitsch et al. 2019), as the pip
package `elpv-dataset` ships it: `data/labels.csv` (one line per image: `images/cellNNNN.png`,
the experts' defect probability 0, 1/3, 2/3 or 1, the cell type mono | poly) and `data/images/`
(2,624 grey 300 x 300 electroluminescence images). Data licence: CC BY-NC-SA 4.0 (the package's
LICENSE.md); the package's code is Apache-2.0.

`scan_elpv` turns such a folder (the installed package's, or a `--data_dir` copy of it) into a
split table with two classes, `functional` (p = 0) and `defective` (p = 1), and the fixed splits
of `ELPV_SPLITS` over the clear cells, stratified by class and cell type with a seed of its own
(the same for every --seed, so every run of every script sees the same images in each split).
The cells the experts were unsure about (p = 1/3, 2/3) form the split `ambiguous`: nothing
trains, stops early or calibrates on it; it is only scored (MC scores, the cascade), as the probe
of the experts' uncertainty against the model's. Their `label` is the experts' majority (1/3 ->
functional, 2/3 -> defective), a declared choice: the accuracy on it is not a test result.
Each row also carries `expert_p` (the level as k/3, k = 0..3, written '0', '1/3', '2/3', '1')
and `cell_type`.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

from safehil.core.utils import InputError

ELPV_CLASSES = ("functional", "defective")   # p = 0 and p = 1
AMBIGUOUS_SPLIT = "ambiguous"               # p = 1/3 and 2/3: scored, never trained, stopped or calibrated on
EXPERT_LEVELS = ("0", "1/3", "2/3", "1")    # the experts' defect probability, k / 3
CELL_TYPES = ("mono", "poly")
# the clear cells' fixed splits (share of each class x cell-type group): 60 % train, 10 % valid (early stopping),
# 10 % calib (the cascade's held-out calibration split), 20 % test; seed 0 regardless of --seed
ELPV_SPLITS = (("train", 0.6), ("valid", 0.1), ("calib", 0.1), ("test", 0.2))
ELPV_SPLIT_SEED = 0
LICENCE = "CC BY-NC-SA 4.0"
PACKAGE = "elpv-dataset"


def installed_elpv_root() -> Path:
    """The `data/` folder of the installed `elpv-dataset` package (labels.csv + images/); an
    InputError naming the fix when the package is not installed. Nothing is downloaded."""
    spec = importlib.util.find_spec("elpv_dataset")
    if spec is None or not spec.origin:
        raise InputError(f"--dataset elpv: the package {PACKAGE} is not installed; run "
                         f"`pip install -r requirements.txt` (or `pip install {PACKAGE}`), or give --data_dir a "
                         f"copy of its data folder (labels.csv + images/)")
    return Path(spec.origin).parent / "data"


def labels_file(root: str | Path) -> Path:
    """`ROOT/labels.csv`, or `ROOT/data/labels.csv` when ROOT is the package folder itself."""
    root = Path(root)
    for candidate in (root / "labels.csv", root / "data" / "labels.csv"):
        if candidate.is_file():
            return candidate
    raise InputError(f"{root}: no labels.csv of the ELPV layout (labels.csv + images/, as the {PACKAGE} "
                     f"package's data folder); point --data_dir at that folder")


def expert_level(p: float) -> str:
    """'0', '1/3', '2/3' or '1' of a probability written as 0.0, 0.333..., 0.666..., 1.0."""
    k = int(round(3 * float(p)))
    if not 0 <= k <= 3 or abs(3 * float(p) - k) > 1e-3:
        raise ValueError(f"defect probability {p!r} is not one of 0, 1/3, 2/3, 1")
    return EXPERT_LEVELS[k]


def read_elpv_labels(root: str | Path) -> pd.DataFrame:
    """labels.csv -> table path (relative to `root`), expert_p (EXPERT_LEVELS), cell_type, sorted by path."""
    csv = labels_file(root)
    prefix = csv.parent.relative_to(Path(root)).as_posix()
    rows = []
    for number, line in enumerate(csv.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3:
            raise InputError(f"{csv} line {number}: expected 'images/<name>.png <probability> <mono|poly>', "
                             f"got {line.strip()[:60]!r}")
        path, p, cell_type = parts
        try:
            level = expert_level(float(p))
        except ValueError as e:
            raise InputError(f"{csv} line {number}: {e}") from None
        if cell_type not in CELL_TYPES:
            raise InputError(f"{csv} line {number}: cell type {cell_type!r} is not one of {CELL_TYPES}")
        rows.append({"path": path if prefix == "." else f"{prefix}/{path}", "expert_p": level,
                     "cell_type": cell_type})
    if not rows:
        raise InputError(f"{csv}: no images listed")
    return pd.DataFrame(rows).sort_values("path", ignore_index=True)


def _fixed_split(group: pd.DataFrame, rng: np.random.Generator) -> list[str]:
    """ELPV_SPLITS names for the rows of one class x cell-type group (already sorted by path)."""
    order = rng.permutation(len(group))
    cuts = np.round(np.cumsum([share for _, share in ELPV_SPLITS]) * len(group)).astype(int)
    names = np.empty(len(group), dtype=object)
    start = 0
    for (name, _), stop in zip(ELPV_SPLITS, cuts):
        names[order[start:stop]] = name
        start = stop
    return list(names)


def scan_elpv(root: str | Path) -> pd.DataFrame:
    """The ELPV folder `root` -> table path, label, split, expert_p, cell_type (one row per image).

    Clear cells (p 0 / 1) get the fixed ELPV_SPLITS per class x cell type (seed ELPV_SPLIT_SEED);
    the p 1/3 and 2/3 cells the split `ambiguous`, labelled by the experts' majority.
    """
    table = read_elpv_labels(root)
    table["label"] = np.where(table["expert_p"].isin(("0", "1/3")), ELPV_CLASSES[0], ELPV_CLASSES[1])
    table["split"] = AMBIGUOUS_SPLIT
    clear = table["expert_p"].isin(("0", "1"))
    rng = np.random.default_rng(ELPV_SPLIT_SEED)
    for (_, _), group in table[clear].groupby(["label", "cell_type"], sort=True):
        table.loc[group.index, "split"] = _fixed_split(group, rng)
    return table[["path", "label", "split", "expert_p", "cell_type"]]


def elpv_metadata(root: str | Path) -> dict[str, tuple[str, str]]:
    """{path relative to `root`: (expert_p, cell_type)}: what a per-image result joins on."""
    table = read_elpv_labels(root)
    return dict(zip(table["path"], zip(table["expert_p"], table["cell_type"])))


SHIFTED_SPLIT = "test_shifted"


def cell_type_shift_table(table: pd.DataFrame, train_type: str = "mono") -> pd.DataFrame:
    """The cell-type shift of a `scan_elpv` table: the cells of `train_type` keep their fixed splits
    (train / valid / calib / test), every clear cell of the other type becomes `test_shifted` (none
    of them is trained, stopped or calibrated on), the unsure cells are left out -> path, label,
    split, expert_p, cell_type."""
    if train_type not in CELL_TYPES:
        raise ValueError(f"cell type {train_type!r} is not one of {CELL_TYPES}")
    clear = table[table["split"] != AMBIGUOUS_SPLIT].copy()
    clear.loc[clear["cell_type"] != train_type, "split"] = SHIFTED_SPLIT
    return clear.reset_index(drop=True)
