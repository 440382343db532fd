"""train_model_data_generation.py: effort counting, the pool schedule, resume, shards, figure."""
import json
import shutil
import time
from dataclasses import replace

import pytest
import torch

import plot_results
import train_model_data_generation as dg
from conftest import ROOT, run_script
from safehil.data.datasets import ImageSet
from safehil.training.training import FitResult

CPU = torch.device("cpu")


def tiny_config(root, csv, out_dir, **overrides):
    """4 hand-labelled + steps of 4 or 6 per class from a 12-per-class pool, tiny CNN at 24 px."""
    base = dict(model="tiny_cnn", data_dir=str(root), split_csv=str(csv), image_size=24, initial_samples=(4,),
                step_sizes=(4, 6), epochs=1, patience=1, baseline_epochs=2, baseline_patience=2, batch_size=16,
                device="cpu", cpu_threads=1, out_dir=str(out_dir), run_name="run")
    return dg.Config(**{**base, **overrides})


def without_seconds(obj):
    """The JSON minus wall-clock timings (the only part that may differ between two runs)."""
    if isinstance(obj, dict):
        return {k: without_seconds(v) for k, v in obj.items() if "seconds" not in k}
    if isinstance(obj, list):
        return [without_seconds(v) for v in obj]
    return obj


def read_stats(cfg):
    return json.loads((dg.run_dir(cfg) / "modeling_stats.json").read_text())


@pytest.fixture(scope="module")
def reference_run(tiny_synthetic, tmp_path_factory):
    """One uninterrupted, unsharded run of the tiny grid: (config, modeling_stats)."""
    root, csv = tiny_synthetic
    cfg = tiny_config(root, csv, tmp_path_factory.mktemp("dg_reference"))
    return cfg, dg.main(cfg)


# ----------------------------------------------------------------------------- effort counting

def test_cumulative_effort_is_a_running_sum():
    records = [{"effort": e} for e in (30, 5, 3, 0, 2)]
    dg.add_cumulative_effort(records)
    assert [r["cumulative_effort"] for r in records] == [30, 35, 38, 38, 40]
    # the paper's double count would have summed the cumulative numbers: 30+35+38+38+40 = 181
    assert records[-1]["cumulative_effort"] == 40


def test_count_changed_on_hand_made_predictions():
    predicted = torch.tensor([0, 1, 2, 3, 1, 1])
    truth = torch.tensor([0, 2, 2, 1, 1, 0])
    assert dg.count_changed(predicted, truth) == 3
    assert dg.count_changed(truth, truth) == 0


def constant_predictions(cls):
    """A stand-in for training.predict that always predicts class `cls`: logits [n, C]."""
    def fake_predict(model, data, mean, std, device, batch_size=128):
        logits = torch.zeros(len(data), len(data.class_names))
        logits[:, cls] = 1.0
        return logits, data.labels.clone(), list(data.paths)
    return fake_predict


def toy_sets(per_class=12, classes=3, size=8):
    """An ImageSet pool with `per_class` images of each class plus tiny valid/test sets."""
    def make(n_per, name):
        labels = torch.arange(classes).repeat_interleave(n_per)
        images = torch.randint(0, 255, (len(labels), 3, size, size), dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(len(labels)))
        return ImageSet(images, labels, [f"{name}/{i}.png" for i in range(len(labels))],
                        [f"c{c}" for c in range(classes)], name)
    return {"train": make(per_class, "train"), "valid": make(2, "valid"), "test": make(2, "test")}


def test_effort_counts_only_the_wrong_predictions_on_arriving_images(monkeypatch):
    """The model always says class 0: each step of 4 per class x 3 classes has exactly 8 wrong; the
    12 hand-labelled initial images and the 6 validation images are reported beside the effort."""
    monkeypatch.setattr(dg, "predict", constant_predictions(0))
    monkeypatch.setattr(dg, "fit", lambda *a, **k: FitResult())  # no training needed to count effort
    cfg = dg.Config(model="tiny_cnn", image_size=16, initial_samples=(4,), step_sizes=(4,), device="cpu")
    out = dg.run_setting(cfg, toy_sets(), 4, 4, 0.5, 0.25, CPU)
    steps = out["steps"]
    assert [r["labelled_size"] for r in steps] == [12, 24, 36]
    assert [r["effort"] for r in steps] == [0, 8, 8]
    assert [r["hand_labelled"] for r in steps] == [12, 0, 0]
    assert [r["wrong_predictions"] for r in steps] == [None, 8, 8]
    assert [r["cumulative_effort"] for r in steps] == [0, 8, 16]
    s = out["summary"]
    assert (s["correction_effort"], s["initial_labelled"], s["validation_labelled"], s["labelled_by_hand"],
            s["hand_effort"]) == (16, 12, 6, 28, 36)
    assert s["effort_saved"] == pytest.approx(1 - 28 / 36)


def test_compute_time_leaves_out_the_operator(monkeypatch):
    """An operator who takes 0.2 s per step: that time is operator_seconds, never compute seconds."""
    monkeypatch.setattr(dg, "predict", constant_predictions(0))
    monkeypatch.setattr(dg, "fit", lambda *a, **k: FitResult())

    def slow_operator(paths, predicted, truth):
        time.sleep(0.2)
        return truth
    cfg = dg.Config(model="tiny_cnn", image_size=16, initial_samples=(4,), step_sizes=(4,), device="cpu")
    out = dg.run_setting(cfg, toy_sets(), 4, 4, 0.5, 0.25, CPU, operator=slow_operator)
    assert all(r["operator_seconds"] >= 0.2 and r["seconds"] < 0.2 for r in out["steps"][1:])
    s = out["summary"]
    assert s["operator_seconds"] >= 0.4 and s["seconds"] < 0.4
    assert s["seconds"] == pytest.approx(s["baseline_seconds"] + s["loop_seconds"])


def test_effort_counts_what_the_operator_changed(monkeypatch):
    """An operator who labels everything class 1: effort = changed labels, label_errors = wrong labels kept."""
    monkeypatch.setattr(dg, "predict", constant_predictions(0))
    monkeypatch.setattr(dg, "fit", lambda *a, **k: FitResult())
    trained_on = []
    real_labelled_set = dg.labelled_set
    monkeypatch.setattr(dg, "labelled_set", lambda *a: trained_on.append(real_labelled_set(*a)) or trained_on[-1])
    cfg = dg.Config(model="tiny_cnn", image_size=16, initial_samples=(4,), step_sizes=(8,), device="cpu")
    out = dg.run_setting(cfg, toy_sets(), 4, 8, 0.5, 0.25, CPU,
                         operator=lambda paths, predicted, truth: torch.ones_like(predicted))
    step = out["steps"][1]
    assert (step["effort"], step["wrong_predictions"], step["label_errors"]) == (24, 16, 16)
    assert trained_on[-1].labels[12:].tolist() == [1] * 24  # the loop trains on the operator's labels


def test_bad_operator_answers_are_refused():
    with pytest.raises(ValueError, match="returned 2 labels for 3 images"):
        dg.check_operator_labels([0, 1], 3, 6)
    with pytest.raises(ValueError, match="outside 0..5"):
        dg.check_operator_labels([0, 6, 1], 3, 6)


# ----------------------------------------------------------------------------- the pool

def test_schedule_uses_every_pool_image_exactly_once():
    labels = torch.tensor([0] * 7 + [1] * 5 + [2] * 9)[torch.randperm(21, generator=torch.Generator().manual_seed(1))]
    order = dg.arrival_order(labels, seed=3)
    batches = dg.arrival_schedule(order, initial=2, step=3)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(21))  # every image once, none twice
    assert [labels[b].bincount(minlength=3).tolist() for b in batches] == [[2, 2, 2], [3, 3, 3], [2, 0, 3], [0, 0, 1]]
    # the stream is the same for every step size: only the cuts differ
    other = [i for b in dg.arrival_schedule(order, initial=2, step=5) for i in b]
    assert [i for i in flat if labels[i] == 2] == [i for i in other if labels[i] == 2]
    with pytest.raises(ValueError, match="more than the smallest class"):
        dg.arrival_schedule(order, initial=6, step=1)
    capped = dg.arrival_order(labels, seed=3, pool_per_class=4)
    assert all(len(v) == 4 and v == order[c][:4] for c, v in capped.items())


def test_loop_labels_every_pool_image_once(tiny_synthetic):
    root, csv = tiny_synthetic
    cfg = tiny_config(root, csv, "unused", epochs=1, baseline_epochs=1)
    sets, mean, std = dg.load_data(cfg)
    shown = []

    def recording_operator(paths, predicted, truth):
        shown.extend(paths)
        return truth
    out = dg.run_setting(cfg, sets, 4, 5, mean, std, CPU, recording_operator)
    initial = [p for p in sets["train"].paths if p not in shown]
    assert len(shown) == len(set(shown)) == 72 - 24 and len(initial) == 24
    assert [r["new_images"] for r in out["steps"]] == [24, 30, 18]
    assert out["steps"][-1]["labelled_size"] == 72 == out["summary"]["hand_effort"]
    assert sum(r["wrong_predictions"] for r in out["steps"][1:]) == out["summary"]["correction_effort"]


# ----------------------------------------------------------------------------- resume and shards

def test_reference_run_files(reference_run):
    cfg, stats = reference_run
    out = dg.run_dir(cfg)
    assert stats["complete"] and stats["missing"] == []
    assert list(stats["settings"]) == ["init4_step4", "init4_step6"]
    assert stats["full_data"]["labelled_size"] == 72 and 0 <= stats["full_data"]["test_accuracy"] <= 1
    s = stats["settings"]["init4_step6"]
    assert list(s["by_labelled_size"]) == ["24", "60", "72"]
    assert s["summary"]["correction_effort"] == s["by_labelled_size"]["72"]["cumulative_effort"]
    import pandas as pd
    runtime = pd.read_csv(out / "runtime.csv")
    assert runtime[["initial_samples", "step_size"]].values.tolist() == [[4, 4], [4, 6]]
    assert {"seconds", "correction_effort", "initial_labelled", "validation_labelled", "labelled_by_hand",
            "final_accuracy", "hand_effort", "effort_saved", "loop_seconds", "operator_seconds"} <= set(runtime.columns)
    assert json.loads((out / "config.json").read_text())["step_sizes"] == [4, 6]


class Interrupted(Exception):
    pass


def test_resume_after_interruption_matches_uninterrupted_run(reference_run, tmp_path):
    ref_cfg, ref_stats = reference_run
    cfg = replace(ref_cfg, out_dir=str(tmp_path))
    calls = []

    def operator_that_dies(paths, predicted, truth):  # init4_step4 needs 2 calls; die inside init4_step6
        calls.append(1)
        if len(calls) == 3:
            raise Interrupted
        return truth
    with pytest.raises(Interrupted):
        dg.main(cfg, operator=operator_that_dies)
    settings = dg.run_dir(cfg) / "settings"
    assert sorted(p.name for p in settings.iterdir()) == ["full_data.json", "init4_step4.json"]
    before = (settings / "init4_step4.json").read_bytes()
    stats = dg.main(cfg)
    assert (settings / "init4_step4.json").read_bytes() == before  # finished setting skipped, not redone
    assert without_seconds(stats) == without_seconds(ref_stats)
    assert without_seconds(read_stats(cfg)) == without_seconds(ref_stats)


def test_shards_merge_into_the_unsharded_result(reference_run, tmp_path):
    ref_cfg, ref_stats = reference_run
    first = replace(ref_cfg, out_dir=str(tmp_path / "a"), shard="0/2")
    second = replace(ref_cfg, out_dir=str(tmp_path / "b"), shard="1/2")
    # shard 0 trains init4_step6's baseline itself; the reference run reused init4_step4's
    partial = dg.main(first)  # full_data + init4_step6
    assert not partial["complete"] and partial["missing"] == ["init4_step4"]
    dg.main(second)  # init4_step4, on "another machine"
    for path in (dg.run_dir(second) / "settings").glob("*.json"):
        shutil.copy(path, dg.run_dir(first) / "settings" / path.name)
    merged = dg.main(replace(first, merge=True))
    assert merged["complete"]
    assert without_seconds(merged) == without_seconds(ref_stats)
    configs = [json.loads((dg.run_dir(c) / "config.json").read_text()) for c in (first, second, ref_cfg)]
    assert [{**c, "out_dir": ""} for c in configs[1:]] == [{**configs[0], "out_dir": ""}] * 2


def test_mixing_other_settings_into_a_run_is_refused(reference_run, tmp_path):
    ref_cfg, _ = reference_run
    shutil.copytree(dg.run_dir(ref_cfg), tmp_path / "run")
    with pytest.raises(ValueError, match=r"settings/\w+\.json: was produced with other settings \(epochs differ"):
        dg.main(replace(ref_cfg, out_dir=str(tmp_path), epochs=3, merge=True))


def test_too_large_initial_set_fails_before_any_training(tiny_synthetic, tmp_path):
    root, csv = tiny_synthetic
    cfg = tiny_config(root, csv, tmp_path, initial_samples=(4, 13))  # the pool holds 12 per class
    with pytest.raises(ValueError, match="initial_samples 13 is more than the smallest class holds"):
        dg.main(cfg)
    assert not (dg.run_dir(cfg) / "settings").exists()


# ----------------------------------------------------------------------------- figure and script

def test_figures_from_saved_results(reference_run, tmp_path):
    ref_cfg, _ = reference_run
    shutil.copytree(dg.run_dir(ref_cfg), tmp_path / "data_generation" / "run")
    written = plot_results.main(tmp_path, tmp_path / "figures", only=["data_generation", "data_generation_accuracy"])
    names = sorted(p.name for p in written)
    assert names == ["data_generation_accuracy_run.pdf", "data_generation_accuracy_run.png",
                     "data_generation_run.pdf", "data_generation_run.png"]
    assert all(p.stat().st_size > 1000 for p in written)


def test_script_merges_from_the_command_line(reference_run, tmp_path):
    ref_cfg, ref_stats = reference_run
    shutil.copytree(dg.run_dir(ref_cfg) / "settings", tmp_path / "run" / "settings")
    proc = run_script(ROOT / "train_model_data_generation.py", "--model", "tiny_cnn", "--image_size", 24,
                      "--initial_samples", 4, "--step_sizes", "4,6", "--epochs", 1, "--patience", 1,
                      "--baseline_epochs", 2, "--baseline_patience", 2, "--batch_size", 16,
                      "--data_dir", ref_cfg.data_dir, "--split_csv", ref_cfg.split_csv,
                      "--out_dir", tmp_path, "--run_name", "run", "--merge", "True")
    assert proc.returncode == 0, proc.stderr
    assert "init4_step6: manual effort" in proc.stdout
    stats = json.loads((tmp_path / "run" / "modeling_stats.json").read_text())
    assert without_seconds(stats) == without_seconds(ref_stats)


def test_help_and_invalid_flags(capsys):
    out = run_script(ROOT / "train_model_data_generation.py", "--help")
    assert out.returncode == 0
    for flag in ("--initial_samples", "--step_sizes", "--from_scratch", "--shard", "--merge", "--patience",
                 "--pool_per_class"):
        assert flag in out.stdout
    for args in (["--shard", "2/2"], ["--step_sizes", "0,2"], ["--initial_samples", "5,5"]):
        with pytest.raises(SystemExit) as exit_info:
            dg.parse_config(dg.Config, argv=args)
        assert exit_info.value.code == 2 and "error" in capsys.readouterr().err, args
