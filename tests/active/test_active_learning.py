"""active_learning.py: the schedule, the loop's labelled set grows by exactly the budget, every
strategy starts from the same model, results are resumable, tables and figures are written."""
import json
from dataclasses import replace

import pandas as pd
import pytest
import torch

import active_learning as al
from conftest import ROOT, run_script
from safehil.data.datasets import ImageSet

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # tiny models run fastest on one thread


def toy_sets(n_pool=60, size=16):
    """Two classes (bright left vs right half) for pool, valid and test: {split: ImageSet}."""
    def make(n, seed):
        g = torch.Generator().manual_seed(seed)
        labels = torch.arange(n) % 2
        x = torch.rand(n, 1, size, size, generator=g) * 60
        x[labels == 0, :, :, : size // 2] += 150
        x[labels == 1, :, :, size // 2:] += 150
        images = x.clamp(0, 255).to(torch.uint8).repeat(1, 3, 1, 1)
        return ImageSet(images, labels, [f"{seed}_{i}" for i in range(n)], ["left", "right"])
    return {"train": make(n_pool, 0), "valid": make(16, 1), "test": make(20, 2)}


def small_cfg(**kw):
    base = dict(model="tiny_cnn", image_size=16, epochs=1, patience=1, batch_size=16, ensemble_size=2,
                mc_samples=3, initial_share=0.1, step_share=0.2, final_share=0.5, device="cpu", min_steps=0,
                max_retrains=0)
    return al.Config(**{**base, **kw})


def test_labelled_counts_follow_the_shares():
    assert al.labelled_counts(1000, 0.1, 0.1, 0.6) == [100, 200, 300, 400, 500, 600]
    assert al.labelled_counts(72, 0.1, 0.1, 0.6) == [7, 14, 22, 29, 36, 43]
    assert al.labelled_counts(100, 0.1, 0.25, 0.5) == [10, 35, 50]   # the last round is the final share
    assert al.labelled_counts(5, 0.1, 0.1, 0.3) == [1, 2]            # rounds that add nobody are dropped
    with pytest.raises(ValueError, match="too small"):
        al.labelled_counts(3, 0.1, 0.1, 0.1)


def test_initial_set_depends_on_the_seed_only():
    a, b = al.initial_labelled(50, 5, seed=0), al.initial_labelled(50, 5, seed=1)
    assert int(a.sum()) == 5 and torch.equal(a, al.initial_labelled(50, 5, seed=0)) and not torch.equal(a, b)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="unknown"):
        small_cfg(strategies=("random", "no_such_strategy"))
    with pytest.raises(ValueError, match="final_share"):
        small_cfg(final_share=0.05)
    with pytest.raises(ValueError, match="ensemble_size"):
        small_cfg(ensemble_size=1)


@pytest.mark.parametrize("strategy", ["margin", "coreset", "ensemble_variation_ratio"])
def test_loop_grows_by_exactly_the_budget(strategy):
    sets = toy_sets()
    cfg = small_cfg()
    out = al.run_task(cfg, strategy, 0, sets, 0.3, 0.3, CPU)
    counts = al.labelled_counts(60, 0.1, 0.2, 0.5)            # [6, 18, 30]
    assert [r["labelled"] for r in out["rounds"]] == counts
    assert [len(q) for q in out["queried"]] == [12, 12]
    initial = set(torch.nonzero(al.initial_labelled(60, 6, 0)).flatten().tolist())
    every = [i for q in out["queried"] for i in q]
    assert len(set(every)) == len(every) and not initial & set(every)
    assert out["rounds"][0]["query_seconds"] == 0 and all(r["query_seconds"] > 0 for r in out["rounds"][1:])
    assert ("ensemble_test_accuracy" in out["rounds"][0]) == (strategy == "ensemble_variation_ratio")


def test_strategies_share_round_zero_and_warm_start_keeps_the_model(monkeypatch):
    sets = toy_sets()
    a = al.run_task(small_cfg(), "random", 3, sets, 0.3, 0.3, CPU)["rounds"]
    b = al.run_task(small_cfg(), "entropy", 3, sets, 0.3, 0.3, CPU)["rounds"]
    assert a[0]["test_accuracy"] == b[0]["test_accuracy"] and a[0]["test_loss"] == b[0]["test_loss"]
    built = []
    real = al.fresh_model
    monkeypatch.setattr(al, "fresh_model", lambda *args: built.append(args) or real(*args))
    al.run_task(small_cfg(rounds="warm_start"), "random", 0, sets, 0.3, 0.3, CPU)
    assert len(built) == 1                                   # built once, then kept training
    built.clear()
    al.run_task(small_cfg(), "random", 0, sets, 0.3, 0.3, CPU)
    assert len(built) == 3                                   # from scratch in each of the 3 rounds


def test_round_zero_is_trained_once_per_seed_and_reused_by_the_other_strategies(monkeypatch):
    sets, cfg, shared = toy_sets(), small_cfg(final_share=0.3), {}
    fits = []
    real_fit = al.fit
    monkeypatch.setattr(al, "fit", lambda *a, **kw: fits.append(kw["seed"]) or real_fit(*a, **kw))
    alone = al.run_task(cfg, "entropy", 0, sets, 0.3, 0.3, CPU)["rounds"]
    fits.clear()
    al.run_task(cfg, "random", 0, sets, 0.3, 0.3, CPU, round_zero=shared)
    assert len(fits) == 2 and set(shared) == {(0, 0)}
    fits.clear()
    reused = al.run_task(cfg, "entropy", 0, sets, 0.3, 0.3, CPU, round_zero=shared)["rounds"]
    assert len(fits) == 1                                   # round 1 only
    for key in ("test_accuracy", "test_loss", "steps", "val_accuracy"):
        assert [r[key] for r in reused] == [r[key] for r in alone], key
    al.run_task(cfg, "random", 1, sets, 0.3, 0.3, CPU, round_zero=shared)
    assert set(shared) == {(1, 0)}                          # another seed: the old models are dropped


def test_a_round_on_a_tiny_labelled_set_trains_at_least_min_steps():
    cfg = small_cfg(epochs=1, patience=1, early_stopping=True, batch_size=16, min_steps=25, final_share=0.1)
    rounds = al.run_task(cfg, "random", 0, toy_sets(), 0.3, 0.3, CPU)["rounds"]
    assert rounds[0]["labelled"] == 6                  # one step per epoch: 1 epoch would be 1 step
    assert rounds[0]["steps"] >= 25 and rounds[0]["epochs_run"] >= 25
    spaced = al.run_task(replace(cfg, val_interval_steps=10), "random", 0, toy_sets(), 0.3, 0.3, CPU)["rounds"]
    assert spaced[0]["steps"] >= 25


class ConstantModel(torch.nn.Module):
    """Ignores the image (logits = a learnt bias): stuck at chance however long it trains."""

    def __init__(self, num_classes):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(num_classes))

    def forward(self, x):
        return self.bias.expand(len(x), -1)


def stuck_first(monkeypatch, stuck_models: int) -> list:
    """fresh_model builds `stuck_models` ConstantModels first, then real networks; -> the seeds asked for."""
    seeds, real = [], al.fresh_model

    def build(cfg, num_classes, seed):
        seeds.append(seed)
        return ConstantModel(num_classes) if len(seeds) <= stuck_models else real(cfg, num_classes, seed)
    monkeypatch.setattr(al, "fresh_model", build)
    return seeds


def test_a_model_stuck_at_chance_is_retrained_with_a_new_seed_and_more_steps(monkeypatch):
    seeds = stuck_first(monkeypatch, stuck_models=1)
    cfg = small_cfg(initial_share=0.5, final_share=0.5, min_steps=30, max_retrains=2)
    with pytest.warns(UserWarning, match="at chance"):
        record = al.run_task(cfg, "random", 0, toy_sets(), 0.3, 0.3, CPU)["rounds"][0]
    assert len(seeds) == 2 and seeds[1] == seeds[0] + al.RETRAIN_SEED_STRIDE
    assert record["retrains"] == 1 and not record["at_chance"]
    assert record["steps"] >= 60 and record["val_accuracy"] > 0.5 + cfg.chance_margin   # twice the steps, learnt


def test_a_model_that_stays_at_chance_is_recorded_after_the_last_retrain(monkeypatch):
    seeds = stuck_first(monkeypatch, stuck_models=99)
    cfg = small_cfg(initial_share=0.5, final_share=0.5, min_steps=5, max_retrains=2)
    with pytest.warns(UserWarning, match="the round goes on"):
        record = al.run_task(cfg, "random", 0, toy_sets(), 0.3, 0.3, CPU)["rounds"][0]
    assert len(seeds) == 3 and record["retrains"] == 2 and record["at_chance"]
    assert record["val_accuracy"] == pytest.approx(0.5)    # the toy valid split is balanced: chance = 1/2


def test_chance_level_is_the_most_frequent_class_share():
    sets = toy_sets()
    assert al.chance_level(sets["valid"]) == 0.5
    skewed = ImageSet(sets["valid"].images, torch.tensor([0] * 12 + [1] * 4), sets["valid"].paths, ["a", "b"])
    assert al.chance_level(skewed) == 0.75


def test_recipe_picks_the_base_augmentation_unless_one_is_given():
    from safehil.settings.cli import parse_config
    assert al.resolve_recipe(al.Config(recipe="toolkit")).base_augmentation == "crop_flip"
    assert al.resolve_recipe(al.Config()).base_augmentation == "paper"
    explicit = parse_config(al.Config, ["--recipe", "toolkit", "--base_augmentation", "none"])
    assert al.resolve_recipe(explicit).base_augmentation == "none"
    with pytest.raises(SystemExit):
        parse_config(al.Config, ["--base_augmentation", "sideways"])


def test_recipe_fills_only_the_fit_settings_left_empty(monkeypatch):
    toolkit = al.resolve_recipe(al.Config(recipe="toolkit"))
    assert (toolkit.optimizer, toolkit.lr, toolkit.schedule, toolkit.weight_decay, toolkit.epochs,
            toolkit.batch_size, toolkit.early_stopping) == ("sgd_nesterov", 0.025, "cosine", 3e-4, 200, 96, False)
    assert (toolkit.restore, toolkit.rounds, toolkit.mc_samples, toolkit.ensemble_size, toolkit.ensemble_accuracy,
            toolkit.vaal_variant) == ("last", "warm_start", 25, 3, "members_mean", "released")
    paper = al.resolve_recipe(al.Config())
    assert (paper.optimizer, paper.lr, paper.epochs, paper.patience, paper.batch_size, paper.early_stopping) == \
        ("adam", 1e-3, 100, 21, 16, True)  # the R4VR NEU protocol (presets.py): counter > 20, batch 16
    assert (paper.restore, paper.rounds, paper.mc_samples, paper.ensemble_size, paper.ensemble_accuracy,
            paper.vaal_variant) == ("best_loss", "from_scratch", 20, 5, "member0", "balanced")
    from safehil.settings.cli import parse_config
    mixed = parse_config(al.Config, ["--recipe", "toolkit", "--lr", "0.1", "--early_stopping", "True",
                                     "--min_steps", "7"])
    settings = al.fit_settings(mixed)
    assert settings["lr"] == 0.1 and settings["early_stopping"] is True          # explicit flags win
    assert settings["optimizer"] == "sgd_nesterov" and settings["epochs"] == 200  # the rest is the recipe's
    assert settings["min_steps"] == 7 and al.resolve_recipe(al.resolve_recipe(mixed)) == al.resolve_recipe(mixed)
    seen = []
    real_fit = al.fit
    monkeypatch.setattr(al, "fit", lambda *a, **kw: seen.append(kw) or real_fit(*a, **kw))
    cfg = small_cfg(recipe="toolkit", epochs=2, lr=None, batch_size=None, final_share=0.1)
    al.run_task(cfg, "random", 0, toy_sets(), 0.3, 0.3, CPU)
    assert (seen[0]["optimizer"], seen[0]["lr"], seen[0]["schedule"], seen[0]["batch_size"], seen[0]["epochs"]) == \
        ("sgd_nesterov", 0.025, "cosine", 96, 2)


def test_tables_sort_strategies_and_show_mean_std():
    rounds = pd.DataFrame([
        {"strategy": s, "seed": seed, "round": r, "labelled": n, "share": n / 100, "test_accuracy": acc,
         "query_seconds": 0.5 * r}
        for s, accs in {"random": [0.5, 0.7], "bald": [0.8, 0.9]}.items()
        for seed, acc in enumerate(accs) for r, n in enumerate([10, 20])])
    summary = al.summarise(rounds)
    text = al.markdown_tables(summary)
    assert "### 10 % labelled (10 images)" in text and "### 20 % labelled (20 images)" in text
    block = text.split("### 20 %")[1]
    assert block.index("| bald |") < block.index("| random |")
    assert "| bald | 85.00 +- 7.07 | 2 | 0.50 | 0 | 0 |" in block
    assert "| random | 60.00 +- 14.14 | 2 | 0.50 | 0 | 0 |" in block
    rounds["retrains"], rounds["at_chance"] = [0, 2, 0, 0, 0, 0, 1, 0], [False, True] + [False] * 6
    block = al.markdown_tables(al.summarise(rounds)).split("### 20 %")[1]
    assert "| random | 60.00 +- 14.14 | 2 | 0.50 | 2 | 1 |" in block   # seed 0, round 1: retrained twice, stuck


def test_script_end_to_end_resumes_and_plots(tiny_synthetic, tmp_path, capsys):
    root, csv = tiny_synthetic
    cfg = small_cfg(data_dir=str(root), split_csv=str(csv), image_size=24, batch_size=32, seeds=(0, 1),
                    strategies=("random", "bald", "ensemble_variation_ratio"),
                    out_dir=str(tmp_path / "active_learning"), run_name="e2e", device="cpu")
    al.main(replace(cfg, shard="0/2"))
    run = tmp_path / "active_learning" / "e2e"
    assert len(list((run / "runs").glob("*.json"))) == 3          # tasks 0, 2, 4 of 6
    first = {p.name: p.stat().st_mtime_ns for p in (run / "runs").glob("*.json")}
    capsys.readouterr()
    al.main(cfg)                                                   # resumes: only the other 3 run
    assert "3 run(s)" in capsys.readouterr().out
    assert all((run / "runs" / n).stat().st_mtime_ns == t for n, t in first.items())
    rounds = pd.read_csv(run / "rounds.csv")
    assert len(rounds) == 3 * 2 * 3 and set(rounds["labelled"]) == {7, 22, 36}   # pool of 72: 10, 30, 50 %
    assert rounds.groupby(["seed", "round"])["test_accuracy"].nunique().loc[(0, 0)] == 1
    assert "### 50 % labelled (36 images)" in (run / "table.md").read_text()
    assert json.loads((run / "config.json").read_text())["strategies"] == ["random", "bald",
                                                                           "ensemble_variation_ratio"]
    al.main(cfg)
    assert "run(s)" not in capsys.readouterr().out                 # everything finished: nothing trains
    # another image size in the same run folder: a clear error, exit code 1, no traceback
    other = run_script(ROOT / "active_learning.py", "--model", "tiny_cnn", "--data_dir", root, "--split_csv", csv,
                       "--image_size", 32, "--out_dir", tmp_path / "active_learning", "--run_name", "e2e", check=False)
    assert other.returncode == 1 and "image_size" in other.stderr and "Traceback" not in other.stderr

    import plot_results
    paths = plot_results.main(tmp_path, tmp_path / "figures", only=["active_learning"])
    assert any(p.name == "active_learning_e2e.png" for p in paths)


def test_help_lists_the_protocol_flags():
    from safehil.settings.cli import config_parser
    text = config_parser(al.Config, al.__doc__).format_help()
    for flag in ("--strategies", "--initial_share", "--step_share", "--final_share", "--rounds", "--restore", "--ensemble_accuracy", "--vaal_variant",
                 "--ensemble_size", "--mc_samples", "--seeds", "--shard", "--recipe", "--min_steps",
                 "--chance_margin", "--max_retrains", "--val_interval_steps"):
        assert flag in text
