"""reproduce.py --smoke: every experiment at tiny size, every figure and REPORT.md, end to end; and
"edit the one home of a setting, rerun": the smoke scale's T, learning rates, HIL grid and seeds,
edited in presets.SCALES, reach every step that uses them (checked in each step's config.json).
One smoke run (a module fixture) serves every test here."""
import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from conftest import ROOT, run_script

# where the smoke scale's T comes from: the scale, beside the paper value it replaces (R4VR NEU: 20)
SMOKE_T_SOURCE = "smoke scale (presets.SCALES), paper 20"

# the edit of the smoke scale (its defaults: T 3, lr 3e-3 for both models, grid 4 x 4, seeds (0,))
EDITED = {"T": 4, "model_a.lr": 2e-3, "model_b.lr": 4e-3, "data_generation.initial_samples": (3,),
          "data_generation.step_sizes": (5,), "seeds": (1,), "active_learning.seeds": (1,)}


@pytest.fixture(scope="module")
def smoke(tiny_synthetic, tmp_path_factory):
    """(reproduce.Config, out folder) of one in-process `reproduce.py --smoke True` run with the
    smoke scale edited to EDITED (the edit stays in place for the module's tests)."""
    import reproduce
    from safehil.settings import presets
    root, csv = tiny_synthetic
    out = tmp_path_factory.mktemp("reproduce") / "results"
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        smoke_scale = presets.SCALES["smoke"]
        patch.setitem(presets.SCALES, "smoke", dataclasses.replace(smoke_scale, settings={**smoke_scale.settings,
                                                                                           **EDITED}))
        cfg = reproduce.Config(smoke=True, data_dir=str(root), split_csv=str(csv), out_dir=str(out), device="cpu")
        torch.set_num_threads(1)
        try:
            reproduce.main(cfg)
        finally:
            torch.set_num_threads(threads)
        yield cfg, out


def _config(folder: Path) -> dict:
    return json.loads((Path(folder) / "config.json").read_text())


def test_reproduce_smoke_end_to_end(smoke):
    cfg, out = smoke
    manifest = json.loads((out / "reproduce.json").read_text())
    import reproduce
    assert list(manifest["seconds"]) == list(reproduce.STEPS)
    for experiment in ("train", "strips", "data_generation", "mc_scores", "saliency", "active_learning", "safety"):
        assert any((out / experiment).iterdir()), experiment
    strips = json.loads((out / "strips" / "summary.json").read_text())  # the Severstal row end to end
    for tag in ("a", "b"):
        assert strips[tag]["n_test"] > 0 and 0 <= strips[tag]["test_accuracy"] <= 1
        assert len(strips[tag]["classes"]) == 5
        meta = json.loads((Path(strips[tag]["run"]) / "config.json").read_text())
        assert meta["dataset"] == "severstal_kaggle" and meta["image_size"] == 16
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    for expected in ("training_curves", "augmentation_accuracy", "data_generation_", "safety_tradeoff_",
                     "safety_comparison_", "active_learning", "data_generation_vs_published_",
                     "saliency_vs_published_", "active_learning_vs_published_", "mc_entropy_boxplots_test"):
        assert any(name.startswith(expected) for name in figures), expected
    assert all((out / "figures" / name).with_suffix(".pdf").is_file() for name in figures)
    report = (out / "REPORT.md").read_text()
    embedded = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", report)
    assert sorted(Path(p).name for p in embedded) == figures  # every figure, each one that exists
    assert "| result | this run | paper |" in report
    for headline in ("plain / plain+augmented / plain+plain", "HIL data generation", "MC dropout", "Saliency",
                     "Active learning", "Safety cascade on test"):
        assert headline in report, headline
    assert "< 0.1 %" in report and "n/a / n/a" not in report
    assert "## Severstal-like strips" in report and f"| A {strips['a']['model']} |" in report
    assert "| disjoint_halves | test |" in report and "| same_data | test |" in report  # the two pairs compared
    verdict_rows = [line for line in report.split("## Verdicts")[1].split("\n\n")[1].splitlines()[2:]]
    from safehil.report import verdicts
    from safehil.active.acquisition import STRATEGIES
    titles = [verdicts.AUG_TITLE, verdicts.AUG_PASS_TITLE, verdicts.AUG_SHIFTED_TITLE, verdicts.HIL_TIME_TITLE,
              verdicts.HIL_INITIAL_TITLE, verdicts.HIL_STEP_TITLE, verdicts.MC_AUROC_TITLE,
              verdicts.MC_VS_SOFTMAX_TITLE, verdicts.SALIENCY_TITLE, verdicts.SAFETY_TITLE]
    titles += [f"Active learning: {s} " for s in STRATEGIES if s != "random"]
    for claim in titles:
        assert sum(row.startswith(f"| {claim}") for row in verdict_rows) == 1, claim
    assert len(verdict_rows) == len(titles)
    outcomes = "|".join(verdicts.OUTCOMES)
    assert all(re.search(rf"\*\*({outcomes})( \(power [0-9.]+\))?\*\*", row) for row in verdict_rows)
    assert all(row.split(" | ")[1] in ("paper", "ours") for row in verdict_rows)
    assert all(row.count("|") == 9 for row in verdict_rows)        # 8 cells, no '|' inside one
    assert all(row.split(" | ")[2] for row in verdict_rows)          # every row names its source
    assert "not testable at this scale" in report.split(verdicts.SAFETY_TITLE)[1]   # 24 calibration images
    assert "## What this run can decide" in report and "**What its power supports.**" in report
    assert manifest["scale"]["T"] == 4 and manifest["scale_sources"]["T"] == SMOKE_T_SOURCE


def test_the_report_step_twice_on_the_same_results_gives_the_same_verdict_table_whatever_the_load(smoke, tmp_path):
    """Training repeats, so what differs between two runs of one command is the wall clock: the
    report of a copy whose every recorded second is tripled (a loaded machine) has the same table."""
    import reproduce
    from safehil.report import report
    cfg, out = smoke
    copy = tmp_path / "results"
    shutil.copytree(out, copy)
    for stats in copy.glob("data_generation/**/modeling_stats.json"):
        text = json.loads(stats.read_text())
        for setting in text["settings"].values():
            for key in ("seconds", "baseline_seconds", "loop_seconds"):
                setting["summary"][key] *= 3
            for entry in setting.get("by_labelled_size", {}).values():
                entry["seconds"] *= 3
        stats.write_text(json.dumps(text))
    header = report.RunHeader(scale="smoke", image_size=24, model_a="tiny_cnn", model_b="tiny_cnn", seeds=(1,),
                              epochs=1, device="cpu", cpu_count=2)

    def table(folders):
        return "\n".join(report.verdict_rows(folders, header))
    folders = reproduce.run_folders(cfg)
    loaded = report.RunFolders(**{k: _moved(v, out, copy) for k, v in vars(folders).items()})
    assert loaded.data_generation != folders.data_generation
    assert table(folders) == table(folders) == table(loaded)


def _moved(value, old: Path, new: Path):
    """A RunFolders field with every path under `old` moved under `new`."""
    if isinstance(value, dict):
        return {k: _moved(v, old, new) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_moved(v, old, new) for v in value)
    if isinstance(value, (str, Path)) and str(value).startswith(str(old)):
        return Path(new) / Path(value).relative_to(old)
    return value


def _train_runs(cfg) -> dict[str, Path]:
    """{'a_plain', 'a_plain+augmented', ..., 'b'}: the run folder of each training (model A at its first seed)."""
    import reproduce
    import train_model
    configs = reproduce.train_configs(cfg)
    seed = cfg.settings.seeds[0]
    return {name: train_model.run_dir(train_model.seed_run(c, seed) if c.seeds else c)
            for name, c in configs.items()}


def test_edited_T_reaches_mc_scores_saliency_and_safety(smoke):
    import reproduce
    cfg, out = smoke
    steps = [*reproduce.run_folders(cfg).mc_scores, reproduce.run_folders(cfg).saliency,
             reproduce.run_folders(cfg).safety]
    for folder in steps:
        recorded = _config(folder)
        assert recorded["T"] == 4, folder
        assert recorded["setting_sources"]["T"] == SMOKE_T_SOURCE, folder


def test_edited_learning_rates_reach_each_model_and_the_loops(smoke):
    import reproduce
    cfg, out = smoke
    runs = _train_runs(cfg)
    assert {_config(runs[k])["lr"] for k in runs if k.startswith("a_")} == {2e-3}
    assert _config(runs["b"])["lr"] == 4e-3 and _config(runs["b_same_data"])["lr"] == 4e-3
    folders = reproduce.run_folders(cfg)
    assert _config(folders.data_generation)["lr"] == 2e-3 and _config(folders.active_learning)["lr"] == 2e-3


def test_edited_hil_grid_reaches_data_generation(smoke):
    import reproduce
    cfg, out = smoke
    recorded = _config(reproduce.run_folders(cfg).data_generation)
    assert (recorded["initial_samples"], recorded["step_sizes"]) == ([3], [5])
    stats = json.loads((reproduce.run_folders(cfg).data_generation / "modeling_stats.json").read_text())
    assert [(s["summary"]["initial_samples"], s["summary"]["step_size"]) for s in stats["settings"].values()] == [(3, 5)]


def test_edited_seeds_reach_training_and_active_learning(smoke):
    import reproduce
    cfg, out = smoke
    runs = _train_runs(cfg)
    assert _config(runs["a_plain+augmented"])["seed"] == 1 and runs["a_plain+augmented"].is_dir()
    assert _config(reproduce.run_folders(cfg).active_learning)["seeds"] == [1]


def test_plan_prints_every_steps_settings_with_sources_and_work_and_trains_nothing(smoke, capsys, tmp_path):
    import reproduce
    cfg, out = smoke
    reproduce.main(dataclasses.replace(cfg, plan=True, out_dir=str(tmp_path / "empty")))
    text = capsys.readouterr().out
    assert not (tmp_path / "empty").exists()                                     # nothing written, nothing trained
    for step in reproduce.STEPS:
        assert f"== {step}" in text, step
    assert f"T=4 [{SMOKE_T_SOURCE}]" in text and "lr=0.004 [smoke scale (presets.SCALES), paper 0.001]" in text
    assert "smoke scale: tiny sizes" in text                                        # the scale's reason
    assert "forward/backward image passes" in text and "grid tasks" in text and "dropout passes" in text


def test_rerun_after_an_edit_refuses_without_overwrite_and_reruns_only_the_changed_step(smoke):
    import reproduce
    import train_model
    from safehil.core.utils import InputError
    cfg, out = smoke
    from safehil.settings import presets
    scale = presets.SCALES["smoke"]
    edited = dataclasses.replace(scale, settings={**scale.settings, "active_learning.final_share": 0.2})
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(presets.SCALES, "smoke", edited)
        with pytest.raises(InputError, match=r"step active_learning holds results of other settings \(final_share: "
                                             r"0.3 there, 0.2 now\); pass --overwrite True"):
            reproduce.main(cfg)
        train_run = train_model.run_dir(train_model.seed_run(reproduce.train_configs(cfg)["a_plain"], 1))
        before = (train_run / "best.pt").stat().st_mtime_ns
        reproduce.main(dataclasses.replace(cfg, overwrite=True, steps=("train", "active_learning")))
        assert (train_run / "best.pt").stat().st_mtime_ns == before                  # unchanged: kept
        al = reproduce.run_folders(cfg).active_learning
        assert _config(al)["final_share"] == 0.2
        assert set(json.loads(json.dumps(_config(al)["setting_sources"]))) >= {"final_share"}


def test_reproduce_rejects_bad_flags():
    proc = run_script(ROOT / "reproduce.py", "--smoke", "True", "--full", "True", check=False)
    assert proc.returncode == 2 and "exclude each other" in proc.stderr
    proc = run_script(ROOT / "reproduce.py", "--steps", "train,nonsense", check=False)
    assert proc.returncode == 2 and "nonsense" in proc.stderr


def test_paper_scale_calibrates_on_half_of_test_never_on_train_or_valid(tiny_synthetic, tmp_path):
    import pandas as pd
    import reproduce
    from safehil.settings import presets
    root, csv = tiny_synthetic
    cfg = reproduce.Config(full=True, dataset="synthetic", data_dir=str(root), split_csv=str(csv),
                           out_dir=str(tmp_path))
    assert reproduce.safety_config(cfg).calib_split == "calib"
    before = pd.read_csv(csv)
    after = pd.read_csv(reproduce.write_paper_calibration_csv(cfg))
    kept = before[before["split"] != "test"].sort_values("path").reset_index(drop=True)
    others = after[~after["split"].isin(["calib", "test"])].sort_values("path").reset_index(drop=True)
    assert others.equals(kept) and {"train", "valid"} <= set(kept["split"])   # train and valid untouched
    halves = after[after["split"].isin(["calib", "test"])]
    assert sorted(halves["path"]) == sorted(before.loc[before["split"] == "test", "path"])
    counts = halves.groupby(["label", "split"]).size().unstack()
    assert (counts["calib"] - counts["test"]).abs().max() <= 1 and len(after) == len(before)
