"""Paper presets: `reproduce.py --full --dataset X` runs X's published settings, every flag still
overrides them, and without cached ImageNet weights the run stops before anything trains,
saying where the files go (never a silent fall-back to random weights)."""
import dataclasses
import json
import urllib.error

import pytest
import torch

from safehil.training import models
import active_learning
from safehil.settings import presets
import reproduce
from safehil.settings.recipes import RECIPES
from safehil.core.utils import InputError


def test_full_scale_takes_each_data_sets_paper_preset():
    neu = reproduce.Config(full=True, dataset="neu").settings
    assert (neu.model_a.model, neu.model_b.model, neu.weights, neu.model_a.batch_size, neu.T) == (
        "resnet18", "vgg16", "imagenet", 16, 20)
    assert (neu.model_a.lr, neu.model_b.lr, len(neu.seeds)) == (1e-3, 1e-3, 10)
    assert neu.active_learning.mc_samples is presets.SCRIPT_DEFAULT    # no paper value: the recipe's
    grid = neu.data_generation
    assert (grid.initial_samples, grid.step_sizes, grid.pool_per_class) == ((5, 10, 15, 20), (2, 4, 6, 8, 10), None)
    for layout in ("severstal_kaggle", "severstal_supervisely"):
        sev = reproduce.Config(full=True, dataset=layout).settings
        assert (sev.model_b.model, sev.weights, sev.model_a.batch_size, sev.model_b.batch_size, sev.T) == (
            "efficientnet_b0", "imagenet", 16, 64, 40)
        assert (sev.data_generation.step_sizes, sev.data_generation.pool_per_class) == ((5, 10, 15), 195)
    for dataset in ("casting", "cifar10", "cifar100"):
        toolkit = reproduce.Config(full=True, dataset=dataset).settings
        assert (toolkit.active_learning.recipe, toolkit.base_augmentation, toolkit.active_learning.seeds) == (
            "toolkit", "crop_flip", (0, 1, 2))
        assert (toolkit.model_a.model, toolkit.model_a.batch_size) == ("resnet18_cifar", 96)
    assert reproduce.Config(full=True, dataset="cifar10").settings.active_learning.image_size == 32


def test_preset_values_reach_every_experiments_config():
    cfg = reproduce.Config(full=True, dataset="severstal_kaggle", data_dir="/data/severstal")
    train = reproduce.train_configs(cfg)
    assert train["b"].model == "efficientnet_b0" and train["b"].weights == "imagenet"
    assert train["a_plain+augmented"].batch_size == 16 and train["b"].batch_size == 64
    assert train["a_plain+augmented"].base_augmentation == "paper"
    generations = reproduce.data_generation_configs(cfg)
    for generation in generations:
        assert (generation.pool_per_class, generation.step_sizes, generation.weights) == (195, (5, 10, 15), "imagenet")
    assert [g.seed for g in generations] == [0, 1, 2] and generations[0].full_data_reference
    assert [m.T for m in reproduce.mc_configs(cfg)] == [40] * (2 + 9)   # A, B, then A's other 9 training seeds
    learning = reproduce.active_learning_config(reproduce.Config(full=True, dataset="cifar10", data_dir="/d"))
    assert learning.recipe == "toolkit" and learning.image_size == 32 and learning.base_augmentation == "crop_flip"
    assert learning.model == "resnet18_cifar"
    resolved = active_learning.resolve_recipe(learning)     # the toolkit's T, ensemble and rounds
    assert (resolved.mc_samples, resolved.ensemble_size, resolved.rounds, resolved.restore) == \
        (25, 3, "warm_start", "last")
    assert learning.epochs is None and learning.batch_size is None   # the recipe's 200 epochs, batch 96
    assert (learning.initial_share, learning.step_share, learning.final_share) == (0.1, 0.1, 0.6)
    assert len(learning.strategies) == 9


def test_every_flag_overrides_the_preset():
    cfg = reproduce.Config(full=True, dataset="neu", weights="none", model_a="tiny_cnn", model_b="efficientnet_b0",
                           batch_size=8, batch_size_b=4, lr=0.01, lr_b=0.02, T=5, pool_per_class=30, recipe="toolkit",
                           base_augmentation="none")
    s, sources = cfg.resolved()
    assert (s.weights, s.model_a.model, s.model_b.model, s.model_a.batch_size, s.model_b.batch_size, s.model_a.lr,
            s.model_b.lr, s.T, s.data_generation.pool_per_class, s.active_learning.recipe, s.base_augmentation) == (
        "none", "tiny_cnn", "efficientnet_b0", 8, 4, 0.01, 0.02, 5, 30, "toolkit", "none")
    assert sources["model_b.lr"] == "flag --lr_b" and sources["data_generation.pool_per_class"] == "flag --pool_per_class"
    assert sources["model_a.epochs"].startswith("paper preset neu (R4VR NEU)")
    assert reproduce.Config().settings.weights == "none"          # the CPU and smoke scales train from scratch


def test_preset_table_names_a_source_for_every_setting():
    table = presets.markdown_table()
    for dataset in ("neu", "severstal_kaggle", "casting", "cifar10", "cifar100"):
        assert dataset in table
        preset = presets.preset_for(dataset)
        assert all(preset.value(name)[1] for name in presets.Preset.paper_settings())   # each has its source
        assert preset.active_learning.recipe in RECIPES
    record = presets.preset_record("severstal_supervisely")
    assert json.loads(json.dumps(record))["values"]["data_generation.pool_per_class"] == 195
    assert record["protocols"]["model_b"]["batch_size"] == 64


def test_a_preset_row_without_a_source_or_a_data_set_without_a_row_is_refused():
    with pytest.raises(ValueError, match=r"no source for \['T'\]"):
        dataclasses.replace(presets.R4VR_NEU, sources={k: v for k, v in presets.R4VR_NEU.sources.items() if k != "T"})
    with pytest.raises(InputError, match="no paper preset for --dataset my_layout"):
        reproduce.Config(dataset="my_layout").resolved()


def test_editing_the_preset_changes_every_step_that_reads_it(monkeypatch):
    """The default CPU scale takes T from the preset: edit the row, and MC, saliency and safety follow."""
    monkeypatch.setitem(presets.PRESETS, "synthetic", dataclasses.replace(presets.R4VR_NEU, T=7))
    cfg = reproduce.Config(dataset="synthetic")
    assert {m.T for m in reproduce.mc_configs(cfg)} == {7}
    assert reproduce.saliency_config(cfg).T == 7 and reproduce.safety_config(cfg).T == 7
    assert cfg.resolved()[1]["T"] == "paper preset synthetic (R4VR NEU): R4VR paper, NEU: T = 20"


def test_make_run_follows_an_edited_paper_value_unless_its_scale_names_it(monkeypatch):
    """One home per setting: the CPU scale names only what it shrinks (beside the paper value, with
    the paper value in the source); everything else in make run is the row's, so an edit reaches it."""
    edited = dataclasses.replace(presets.R4VR_NEU, data_generation=dataclasses.replace(
        presets.R4VR_NEU.data_generation, baseline_patience=9, initial_samples=(7, 8)))
    monkeypatch.setitem(presets.PRESETS, "synthetic", edited)
    generation = reproduce.data_generation_configs(reproduce.Config(dataset="synthetic"))[0]
    assert generation.baseline_patience == 9                     # not named by the default scale: the row's
    assert generation.initial_samples == (5, 10)                 # named by it: the CPU value
    sources = reproduce.Config(dataset="synthetic").resolved()[1]
    assert sources["data_generation.initial_samples"] == "default scale (presets.SCALES), paper (7, 8)"
    with pytest.raises(ValueError, match="no setting \\['dg_initial'\\]"):
        presets.Scale("typo", why="", settings={"dg_initial": (1,)})


@pytest.fixture
def offline_empty_hub(tmp_path, monkeypatch):
    """An empty torch hub cache and no network: downloading any weights fails at once."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("offline (test)")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_full_run_without_cached_weights_stops_before_training_and_says_where_they_go(offline_empty_hub, tmp_path):
    cfg = reproduce.Config(full=True, dataset="neu", data_dir=str(tmp_path / "neu"), out_dir=str(tmp_path / "out"))
    with pytest.raises(InputError) as error:
        reproduce.main(cfg)
    message = str(error.value)
    assert str(offline_empty_hub / "resnet18-f37072fd.pth") in message
    assert str(offline_empty_hub / "vgg16-397923af.pth") in message
    assert "--weights none" in message
    assert not (tmp_path / "out" / "train").exists()


def test_cached_weights_pass_the_check_and_weights_none_needs_none(offline_empty_hub, tmp_path):
    offline_empty_hub.mkdir(parents=True)
    for name in ("resnet18", "efficientnet_b0"):
        models.imagenet_weights_file(name).write_bytes(b"cached")
    models.ensure_imagenet_weights(["resnet18", "efficientnet_b0", "tiny_cnn"])   # no error, nothing fetched
    reproduce.check_weights(reproduce.Config(full=True, dataset="neu", weights="none"), list(reproduce.STEPS))
    with pytest.raises(InputError, match="vgg16"):
        reproduce.check_weights(reproduce.Config(full=True, dataset="neu"), ["train"])


def test_each_data_sets_training_protocol_reaches_the_training_runs():
    severstal = reproduce.train_configs(reproduce.Config(full=True, dataset="severstal_kaggle", data_dir="/d"))
    a, b = severstal["a_plain+augmented"], severstal["b"]
    assert (a.model, a.optimizer, a.schedule, a.batch_size) == ("resnet18", "adam", "constant", 16)
    assert (b.model, b.optimizer, b.schedule, b.batch_size) == ("efficientnet_b0", "adamw", "plateau", 64)
    for c in (a, b):  # 200 epochs, counter > 20, best accuracy, nothing frozen, balanced halves then fine-tuning
        assert (c.epochs, c.patience, c.stopping, c.restore, c.freeze) == (200, 21, "accuracy_or_loss",
                                                                            "best_accuracy", False)
        assert c.balanced and c.finetune_all
    assert (a.train_half, b.train_half, severstal["b_same_data"].train_half) == ("first", "second", "first")
    neu = reproduce.train_configs(reproduce.Config(full=True, dataset="neu", data_dir="/d"))
    a, b = neu["a_plain"], neu["b"]
    assert (a.model, b.model, a.batch_size, b.batch_size, a.epochs, a.patience) == ("resnet18", "vgg16", 16, 16, 100, 21)
    assert (a.restore, a.stopping, a.freeze, a.finetune_all) == ("last", "accuracy_or_loss", True, False)
    assert (a.train_half, b.train_half) == ("second", "first")  # VGG16 the first 138 per class, ResNet18 the rest
    default = reproduce.train_configs(reproduce.Config())
    assert default["b"].freeze is None  # random weights at the CPU scale: nothing frozen


def test_full_scale_trains_the_augmentation_comparison_on_the_ten_published_seeds():
    published = (1, 17, 22, 33, 42, 59, 66, 73, 88, 90)   # R4VR Severstal outputs/modeling_stats.md
    for dataset in ("neu", "severstal_kaggle", "severstal_supervisely"):
        cfg = reproduce.Config(full=True, dataset=dataset, data_dir="/nowhere")
        assert cfg.settings.seeds == published
        assert reproduce.train_configs(cfg)[reproduce.arm_key(reproduce.CASCADE_ARM)].seeds == published
