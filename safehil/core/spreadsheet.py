"""CSV files a person opens in a spreadsheet: the formula guard on every text cell."""
from __future__ import annotations

from pathlib import Path

from safehil.core.utils import atomic_write_csv


FORMULA_STARTS = ("=", "@", "+", "-", "\t", "\r")  # what makes a spreadsheet run a cell as a formula


def protect_cell(value):
    """A text cell a spreadsheet would run as a formula ('=cmd|...', '@SUM(..)', '+1', '-1') gets a
    leading "'"; so does one that already starts with "'", so `unprotect_cell` undoes exactly this."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS + ("'",)):
        return "'" + value
    return value


def unprotect_cell(value: str) -> str:
    """Undo `protect_cell`: remove one leading "'". Nothing else changes (' a.png' keeps its space:
    a file name is kept byte for byte)."""
    return value[1:] if isinstance(value, str) and value.startswith("'") else value


def atomic_write_spreadsheet_csv(path: str | Path, frame, numeric_columns=()) -> Path:
    """Write a CSV a person will open in a spreadsheet: every text cell through `protect_cell`,
    the `numeric_columns` (and every non-text value) as they are."""
    guarded = frame.copy()
    for col in guarded.columns:
        if col not in numeric_columns:
            guarded[col] = guarded[col].map(protect_cell)
    return atomic_write_csv(path, guarded)
