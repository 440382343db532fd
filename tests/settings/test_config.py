"""config.py: the shared Config bases, the one checkpoint-data resolver, and how utils turns
inherited fields into --flags (help per script, groups per base, a positional argument)."""
import dataclasses
from dataclasses import dataclass

import pytest

from safehil.active import acquisition
import active_learning
from safehil.settings import config
import evaluate_safety
import get_mc_scores
import plot_results
import train_model
from safehil.core.utils import InputError
from safehil.settings.cli import config_parser, flag, parse_config


def meta(**trained):
    """A checkpoint's metadata as train_model.py records it (the run's config under 'config')."""
    return {"config": trained, "class_names": ["a", "b"], "image_size": 32}


TRAINED = dict(dataset="neu", data_dir="/data/NEU", split_csv="", per_class=300,
               multi_label_rule="largest_area", seed=3)


def test_empty_data_flags_are_filled_from_the_checkpoint_and_T_from_the_paper():
    cfg = config.resolve_data(get_mc_scores.Config(checkpoint="x.pt"), meta(**TRAINED))
    assert (cfg.dataset, cfg.data_dir, cfg.split_csv, cfg.per_class, cfg.multi_label_rule) == \
        ("neu", "/data/NEU", "", 300, "largest_area")
    assert cfg.T == 20 and config.trained_split_seed(meta(**TRAINED)) == 3
    severstal = config.resolve_data(get_mc_scores.Config(checkpoint="x.pt"), meta(dataset="severstal_kaggle"))
    assert severstal.T == 40 and severstal.data_dir == "" and severstal.per_class == 300


def test_explicit_data_flags_win_and_a_path_replaces_both_paths():
    trained = meta(**{**TRAINED, "split_csv": "old.csv"})
    cfg = config.resolve_data(get_mc_scores.Config(checkpoint="x.pt", data_dir="/new", T=5, per_class=7), trained)
    assert (cfg.data_dir, cfg.split_csv, cfg.T, cfg.per_class, cfg.dataset) == ("/new", "", 5, 7, "neu")


def test_two_checkpoints_trained_on_different_data_are_refused_unless_the_data_is_given():
    cfg = evaluate_safety.Config(checkpoints=("a.pt", "b.pt"))
    other = meta(**{**TRAINED, "data_dir": "/elsewhere"})
    with pytest.raises(InputError, match=r"a\.pt and b\.pt were trained on different data \(\['data_dir'\]"):
        config.resolve_data(cfg, meta(**TRAINED), other, names=(cfg.checkpoint_a, cfg.checkpoint_b))
    given = config.resolve_data(evaluate_safety.Config(data_dir="/one", T=20), meta(**TRAINED), other)
    assert given.data_dir == "/one" and given.T == 20  # T of a non-CheckpointRun config stays as given


def test_the_seed_counts_only_where_it_picks_the_split():
    seeded_b = meta(**{**TRAINED, "seed": 4})
    with pytest.raises(InputError, match="seed"):
        config.resolve_data(evaluate_safety.Config(), meta(**TRAINED), seeded_b)
    synthetic = dict(TRAINED, dataset="synthetic", data_dir="")
    config.resolve_data(evaluate_safety.Config(), meta(**synthetic), meta(**{**synthetic, "seed": 4}))


def test_base_checks_run_for_every_script_that_inherits_them():
    for cls in (train_model.Config, active_learning.Config, get_mc_scores.Config):
        with pytest.raises(ValueError, match="--device must be"):
            cls(device="gpu")
        with pytest.raises(ValueError, match="--batch_size must be >= 1"):
            cls(batch_size=0)
    with pytest.raises(ValueError, match="--per_class must be >= 5"):
        train_model.Config(per_class=2)
    with pytest.raises(ValueError, match="--epochs must be >= 1"):
        active_learning.Config(epochs=0)
    assert train_model.Config(epochs=0).epochs == 0  # train_model alone allows evaluating an untrained model


def test_help_is_worded_per_script_and_grouped_by_base():
    mc = config_parser(get_mc_scores.Config).format_help()
    assert "empty = the checkpoint's training data" in mc and "built-in synthetic data" not in mc
    train = config_parser(train_model.Config).format_help()
    assert "empty = built-in synthetic data" in train
    train = train[train.index("options:"):]  # past the usage line
    assert train.index("--seeds") < train.index("data:") < train.index("--data_dir") < train.index("training:") \
        < train.index("--model") < train.index("run:") < train.index("--device")
    safety = config_parser(evaluate_safety.Config).format_help()
    assert "empty = model A's training data" in safety


def test_a_redeclared_field_changes_only_the_default_of_that_script():
    assert (train_model.Config().batch_size, active_learning.Config().batch_size) == (16, None)  # None: the recipe's
    assert train_model.Config().out_dir == "results/train" and get_mc_scores.Config().out_dir == "results/mc_scores"


def test_a_newly_registered_strategy_runs_by_default():
    before = active_learning.Config().strategies
    assert before == ("random", "entropy", "least_confidence", "margin", "bald", "dbal", "coreset",
                      "ensemble_variation_ratio", "vaal")  # the registry's order
    try:
        acquisition.register("newest")(lambda models, pool, budget, generator: None)
        assert active_learning.Config().strategies == before + ("newest",)
    finally:
        acquisition.STRATEGIES.pop("newest", None)


def test_plot_results_takes_the_results_folder_as_a_positional_argument():
    cfg = parse_config(plot_results.Config, ["res/", "--only", "training_curves,mc_reliability"])
    assert cfg == plot_results.Config(results_dir="res/", only=("training_curves", "mc_reliability"))
    assert parse_config(plot_results.Config, []).results_dir == "results"
    with pytest.raises(SystemExit):
        parse_config(plot_results.Config, ["--only", "no_such_figure"])


def test_flag_help_of_a_subclass_overrides_the_inherited_help():
    @dataclass(frozen=True)
    class Base(config.Flags):
        width: int = flag(3, "width in pixels")

    @dataclass(frozen=True)
    class Child(Base):
        FLAG_HELP = {"width": "tile width"}
        depth: int = flag(1, "depth")
    text = config_parser(Child).format_help()
    assert "tile width" in text and "width in pixels" not in text and "--depth" in text


# ---------------------------------------------------------------------------- one name per thing

def test_one_model_or_a_pair_is_one_checkpoints_flag_in_every_script_that_takes_either():
    import predict
    import review
    for cls in (predict.Config, evaluate_safety.Config, review.ExportConfig):
        assert "checkpoints" in {f.name for f in dataclasses.fields(cls)}
        assert not {"model_a", "model_b", "checkpoint", "checkpoint_b"} & {f.name for f in dataclasses.fields(cls)}
    pair = parse_config(predict.Config, ["--checkpoints", "a.pt,b.pt", "--images_dir", "x"])
    assert (pair.checkpoint_a, pair.checkpoint_b) == ("a.pt", "b.pt")
    assert parse_config(predict.Config, ["--checkpoints", "a.pt", "--images_dir", "x"]).checkpoint_b == ""
    with pytest.raises(SystemExit):
        parse_config(predict.Config, ["--checkpoints", "a.pt,b.pt,c.pt", "--images_dir", "x"])


def test_each_flag_has_one_spelling_and_the_old_ones_are_refused():
    """No deprecation machinery (the project has no releases): an old spelling is an unknown flag."""
    import predict
    images = ["--images_dir", "x"]
    cases = ((predict.Config, "--checkpoint", images), (predict.Config, "--checkpoint_b", images),
             (evaluate_safety.Config, "--model_a", []), (evaluate_safety.Config, "--model_b", []))
    for config_cls, old, rest in cases:
        assert parse_config(config_cls, ["--checkpoints", "a.pt", *rest]).checkpoints == ("a.pt",)  # the one spelling
        with pytest.raises(SystemExit) as stop:                               # the old one, not even as a prefix
            parse_config(config_cls, [old, "a.pt", *rest])
        assert stop.value.code == 2, old


def test_cpu_threads_is_a_flag_of_every_torch_script_and_run_main_applies_it():
    import torch
    import predict
    import review
    import saliency_map_uncertainties
    import export
    import reproduce
    import train_model_data_generation
    from safehil.core.errors import run_main
    for cls in (train_model.Config, active_learning.Config, train_model_data_generation.Config, get_mc_scores.Config,
                saliency_map_uncertainties.Config, evaluate_safety.Config, predict.Config, review.ExportConfig,
                reproduce.Config, export.Config):
        assert "cpu_threads" in {f.name for f in dataclasses.fields(cls)}, cls
    before = torch.get_num_threads()
    try:
        threads = 2 if before == 1 else 1
        cfg = predict.Config(images_dir="x", cpu_threads=threads)
        assert run_main(lambda c: torch.get_num_threads(), cfg) == threads
    finally:
        torch.set_num_threads(before)
