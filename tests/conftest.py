"""Shared fixtures: tiny generated data sets, so no test downloads anything."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HIL_NO_PROGRESS", "1")


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    """A 6-class synthetic set, 20 images per class at 64 px, with its split CSV: (root, csv)."""
    import datasets
    base = tmp_path_factory.mktemp("synthetic")
    return datasets.generate_synthetic(base / "data", per_class=20, seed=0, size=64,
                                       split_csv=base / "splits.csv")
