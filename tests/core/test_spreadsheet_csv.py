"""The formula guard of CSV files a person opens in a spreadsheet (review.csv, predictions.csv)."""
import pandas as pd

from safehil.core.spreadsheet import atomic_write_spreadsheet_csv, unprotect_cell


def test_text_cells_a_spreadsheet_would_run_get_one_quote_and_numbers_stay_numbers(tmp_path):
    frame = pd.DataFrame({"label": ["=cmd|' /C calc'!A0", "@SUM(A1)", "+1", "-1", "'quoted", "plain"],
                          "score": [-0.5, 0.25, 1.0, -2.0, 0.0, 3.0]})
    path = atomic_write_spreadsheet_csv(tmp_path / "out.csv", frame, numeric_columns=("score",))
    back = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(back["label"]) == ["'=cmd|' /C calc'!A0", "'@SUM(A1)", "'+1", "'-1", "''quoted", "plain"]
    assert list(back["score"]) == ["-0.5", "0.25", "1.0", "-2.0", "0.0", "3.0"]
    assert [unprotect_cell(v) for v in back["label"]] == list(frame["label"])
