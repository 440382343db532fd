"""The ELPV layout (safehil/data/elpv.py) on a tiny replica of the elpv-dataset package's folder:
classes, the experts-unsure cells kept apart, fixed splits, cell types, no network."""
import importlib.util
from pathlib import Path

import pandas as pd
import pytest

import train_model
from safehil.core.utils import InputError
from safehil.data import elpv
from safehil.data.datasets import load_split_table


def test_clear_cells_become_two_classes_and_unsure_cells_the_ambiguous_split(fake_elpv):
    table, root = load_split_table("elpv", str(fake_elpv))
    assert root == fake_elpv
    clear = table[table["split"] != "ambiguous"]
    assert set(clear["expert_p"]) == {"0", "1"}
    assert (clear["label"] == clear["expert_p"].map({"0": "functional", "1": "defective"})).all()
    ambiguous = table[table["split"] == "ambiguous"]
    assert sorted(ambiguous["expert_p"].unique()) == ["1/3", "2/3"]
    assert len(ambiguous) == 2 * 2 * 10
    # the experts' majority labels an unsure cell: 1/3 functional, 2/3 defective
    assert (ambiguous["label"] == ambiguous["expert_p"].map({"1/3": "functional", "2/3": "defective"})).all()
    assert set(table["cell_type"]) == {"mono", "poly"}


def test_splits_are_fixed_stratified_by_class_and_cell_type_and_include_calib(fake_elpv):
    table, _ = load_split_table("elpv", str(fake_elpv), seed=7)   # the --seed does not move them
    again, _ = load_split_table("elpv", str(fake_elpv), seed=0)
    pd.testing.assert_frame_equal(table, again)
    counts = table[table["split"] != "ambiguous"].groupby(["label", "cell_type", "split"]).size()
    for (label, cell_type), group in counts.groupby(level=[0, 1]):
        sizes = group.droplevel([0, 1]).to_dict()   # 10 images: 60/10/10/20 %
        assert sizes == {"train": 6, "valid": 1, "calib": 1, "test": 2}, (label, cell_type, sizes)


def test_missing_package_without_data_dir_is_one_line_naming_the_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InputError, match="pip install"):
        load_split_table("elpv", "")


def test_a_malformed_labels_line_names_the_file_and_line(tmp_path):
    (tmp_path / "labels.csv").write_text("images/cell0001.png 0.5 mono\n")
    with pytest.raises(InputError, match=r"labels.csv line 1: .*not one of 0, 1/3, 2/3, 1"):
        elpv.scan_elpv(tmp_path)


def test_training_never_sees_the_ambiguous_cells_and_they_are_scored_afterwards(fake_elpv, tmp_path):
    import get_mc_scores
    train_model.main(train_model.Config(dataset="elpv", data_dir=str(fake_elpv), model="tiny_cnn",
                                              image_size=16, epochs=1, batch_size=8, device="cpu",
                                              out_dir=str(tmp_path), run_name="elpv"))
    run = tmp_path / "elpv"
    trained = pd.read_csv(run / "split.csv")
    table, _ = load_split_table("elpv", str(fake_elpv))
    ambiguous = set(table.loc[table["split"] == "ambiguous", "path"])
    assert not ambiguous & set(trained.loc[trained["split"].isin(["train", "valid"]), "path"])
    assert set(pd.read_csv(run / "test_predictions.csv")["split"]) == {"test"}  # no accuracy on the unsure cells
    scores = get_mc_scores.main(get_mc_scores.Config(checkpoint=str(run / "best.pt"), T=2, device="cpu",
                                                     out_dir=str(tmp_path / "mc")))
    assert set(scores["splits"]) == {"test", "ambiguous"}
    assert scores["splits"]["ambiguous"]["n"] == len(ambiguous)


def test_reproduce_runs_elpv_by_default_with_balanced_classes_and_calibrates_on_calib(fake_elpv, tmp_path):
    import reproduce
    assert reproduce.Config().dataset == "elpv"
    assert reproduce.Config(smoke=True).dataset == "synthetic"       # --smoke stays on the built-in data
    assert reproduce.Config(data_dir=str(tmp_path)).dataset == "synthetic"   # a user's class folders, as before
    cfg = reproduce.Config(dataset="elpv", data_dir=str(fake_elpv), out_dir=str(tmp_path))
    assert cfg.settings.class_weights == "balanced"
    assert {t.class_weights for t in reproduce.train_configs(cfg).values()} == {"balanced"}
    assert reproduce.safety_config(cfg).calib_split == "calib"
    assert reproduce.safety_config(cfg).target == 0.05        # 222 calib cells cannot certify the paper's 0.1 %
    assert reproduce.safety_config(cfg).data_dir == ""               # the models' own data, not generated splits


def test_the_cell_type_shift_trains_on_mono_only_and_tests_every_clear_poly_cell(fake_elpv):
    table, _ = load_split_table("elpv", str(fake_elpv))
    shift = elpv.cell_type_shift_table(table, "mono")
    seen = shift[shift["split"].isin(["train", "valid", "calib"])]
    assert set(seen["cell_type"]) == {"mono"}
    assert set(shift.loc[shift["split"] == "test_shifted", "path"]) == \
        set(table.loc[(table["cell_type"] == "poly") & (table["split"] != "ambiguous"), "path"])
    assert "ambiguous" not in set(shift["split"])


def test_reproduce_cell_shift_step_gives_mc_saliency_and_cascade_rows_on_poly_cells(fake_elpv, tmp_path):
    import reproduce
    from safehil.report import report
    cfg = reproduce.Config(smoke=True, dataset="elpv", data_dir=str(fake_elpv), out_dir=str(tmp_path), device="cpu")
    runs = reproduce.step_cell_shift(cfg)
    trained = pd.read_csv(Path(runs["train"]) / "split.csv")
    assert set(trained.loc[trained["split"] == "train", "path"]) <= set(
        load_split_table("elpv", str(fake_elpv))[0].query("cell_type == 'mono'")["path"])
    folders = reproduce.run_folders(cfg)
    header = report.RunHeader(scale="smoke", image_size=24, model_a="tiny_cnn", model_b="tiny_cnn", seeds=(0,),
                              epochs=1, device="cpu", cpu_count=1, dataset="elpv")
    rows = report.cell_shift_claims(folders, header)
    assert len(rows) == 4 and all(r.ours and r.claim.startswith(report.SHIFT_PREFIX) for r in rows)
    assert "safety results missing" not in rows[-1].why
    assert any("test_shifted" in line for line in report.section_cell_shift(folders, header)[1])
