"""report.py (REPORT.md from run folders) and the number formatting every table shares (utils)."""
import math

import numpy as np

from safehil.report import report
from safehil.core.utils import fmt_num, fmt_pct, mean_or_nan


def test_number_formatting_shows_missing_values_as_n_a_and_others_with_their_digits():
    assert fmt_pct(0.12345) == "12.3 %" and fmt_pct(0.12345, 2) == "12.35 %" and fmt_pct(1, 0) == "100 %"
    assert fmt_num(0.5) == "0.500" and fmt_num(np.float32(2.0), 1) == "2.0"
    for missing in (None, math.nan, math.inf, np.float64("nan")):
        assert fmt_pct(missing) == "n/a" and fmt_num(missing) == "n/a"
    assert mean_or_nan(np.array([1.0, 2.0, 6.0])) == 3.0 and math.isnan(mean_or_nan(np.array([])))


def test_report_of_empty_run_folders_names_each_missing_experiment(tmp_path):
    folders = report.RunFolders(train_sweeps={"a_plain": tmp_path / "n", "a_plain+augmented": tmp_path / "a"},
                                data_generation=tmp_path / "dg", mc_scores=(tmp_path / "mc",), saliency=tmp_path / "s",
                                active_learning=tmp_path / "al", al_strategies=("random",), safety=tmp_path / "sf",
                                figures=tmp_path / "figures")
    header = report.RunHeader(scale="smoke", image_size=24, model_a="tiny_cnn", model_b="tiny_cnn", seeds=(0,),
                              epochs=1, device="cpu", cpu_count=2, seconds={"train": 60.0})
    path = report.write_report(tmp_path / "REPORT.md", folders, header)
    text = path.read_text()
    for missing in ("Training results missing", "Data-generation results missing", f"MC scores missing in {tmp_path / 'mc'}",
                    "Saliency results missing", "Active-learning results missing", "Safety-cascade results missing"):
        assert missing in text, missing
    assert "total 1.0 min (train 60 s)" in text and "## Verdicts" in text


def test_the_scale_paragraph_names_the_data_the_run_was_trained_on(tmp_path):
    folders = report.RunFolders(train_sweeps={"a_plain": tmp_path / "n"}, data_generation=tmp_path / "dg",
                                mc_scores=(tmp_path / "mc",), saliency=tmp_path / "s", active_learning=tmp_path / "al",
                                al_strategies=("random",), safety=tmp_path / "sf", figures=tmp_path / "figures")

    def scale_paragraph(**data) -> str:
        header = report.RunHeader(scale="default", image_size=64, model_a="tiny_cnn", model_b="resnet18",
                                  seeds=(0,), epochs=1, device="cpu", cpu_count=2, **data)
        return report.power_paragraphs(folders, header, rows=[])[0]

    assert "The ELPV solar cells (real defects)" in scale_paragraph(dataset="elpv")
    assert "synthetic" not in scale_paragraph(dataset="elpv")
    assert "The built-in synthetic set" in scale_paragraph()
    assert "/data/mine (folders)" in scale_paragraph(dataset="folders", data_dir="/data/mine")
