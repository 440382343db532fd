"""One place per extension: a data-set layout registered with one `datasets.register_layout` row
and a network registered with one `@models.register_model` builder are usable everywhere:
scanning, splitting, normalisation, augmentation, the paper's T, building, freezing, the
trunk/head split, reloading, and the scripts' --dataset/--model choices."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
from PIL import Image

from safehil.active import acquisition
from safehil.data import datasets
from safehil.training import models
from safehil.settings import presets
from conftest import ROOT, run_script


# ============================================================================ the toy extensions

def scan_label_list(root, multi_label_rule, problems):
    """A layout no built-in adapter reads: flat `ROOT/*.png` named in `ROOT/labels.csv` (file,label)."""
    table = pd.read_csv(root / "labels.csv")
    return pd.DataFrame({"path": table["file"], "label": table["label"]})


class ToyNet(nn.Module):
    """body: conv + global pooling [N, 4]; head: Dropout + Linear [N, C]."""

    def __init__(self, num_classes: int, p: float):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(p), nn.Linear(4, num_classes))

    def forward(self, x):
        return self.head(self.body(x))


def register_toys():
    """The whole extension: one layout row and one registered builder."""
    datasets.register_layout(datasets.Layout("label_list", scan_label_list, augmentation="severstal",
                                             mean_std=(0.5, 0.25)))

    @models.register_model("toy_net", dropout=0.3, module_type=ToyNet, trunk_head=lambda m: (m.body, m.head),
                           frozen=lambda m: [m.body])
    def build_toy_net(num_classes, p, imagenet):
        return ToyNet(num_classes, p)


@pytest.fixture
def toys(monkeypatch):
    """register_toys(), undone after the test (the registries are emptied and refilled in place,
    since modules hold them by name)."""
    layouts, architectures = dict(datasets.LAYOUTS), dict(models.ARCHITECTURES)
    register_toys()
    yield
    for registry, saved in ((datasets.LAYOUTS, layouts), (models.ARCHITECTURES, architectures)):
        registry.clear()
        registry.update(saved)


def write_label_list(root, per_class=10, size=20):
    """`per_class` small grey PNGs of classes 'dark' and 'bright' plus labels.csv -> root."""
    root.mkdir(parents=True, exist_ok=True)
    rows, rng = [], np.random.default_rng(0)
    for label, level in (("dark", 60), ("bright", 190)):
        for i in range(per_class):
            name = f"{label}_{i}.png"
            pixels = np.clip(rng.normal(level, 10, (size, size)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name)
            rows.append({"file": name, "label": label})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


# ============================================================================ tests

def test_built_in_layouts_carry_the_papers_settings():
    assert tuple(datasets.DATASETS) == ("synthetic", "folders", "neu", "casting", "severstal_kaggle",
                                        "severstal_supervisely", "cifar10", "cifar100", "elpv")
    assert [presets.paper_T(d) for d in datasets.DATASETS] == [20, 20, 20, 20, 40, 40, 20, 20, 20]
    assert [datasets.augmentation_style(d) for d in datasets.DATASETS] == ["neu"] * 4 + ["severstal"] * 2 + ["neu"] * 3
    assert [d for d in datasets.DATASETS if datasets.LAYOUTS[d].mean_std] == ["neu", "severstal_kaggle",
                                                                          "severstal_supervisely", "cifar10",
                                                                          "cifar100"]
    assert [datasets.LAYOUTS[d].valid_share for d in datasets.DATASETS] == [0.2] * 6 + [0.1] * 2 + [0.2]
    assert tuple(models.MODELS) == ("resnet18", "resnet18_cifar", "vgg16", "efficientnet_b0", "tiny_cnn")
    assert [models.ARCHITECTURES[m].dropout for m in models.MODELS] == [0.5, 0.5, 0.5, 0.2, 0.5]


def test_unknown_layout_and_model_names_list_the_registered_ones():
    with pytest.raises(datasets.InputError, match=r"unknown dataset 'nope'; choose from \('synthetic'"):
        datasets.load_split_table("nope", "somewhere")
    with pytest.raises(models.InputError, match=r"unknown model 'nope'; choose from \('resnet18'"):
        models.build_model("nope", 2)


def test_a_layout_registered_in_one_row_is_scanned_split_and_configured(toys, tmp_path):
    root = write_label_list(tmp_path / "data")
    assert "label_list" in datasets.DATASETS
    table, found_root = datasets.load_split_table("label_list", root, seed=1)
    assert found_root == root and len(table) == 20
    assert table.groupby(["label", "split"]).size().to_dict() == {
        (c, s): n for c in ("bright", "dark") for s, n in (("test", 2), ("train", 6), ("valid", 2))}
    sets = datasets.load_image_sets(table, root, 16)
    # grey sources are cached as one channel (expanded to three on the device)
    assert sets["train"].images.shape == (12, 1, 16, 16) and sets["train"].class_names == ["bright", "dark"]
    assert datasets.normalisation_for("label_list", sets["train"]) == (0.5, 0.25)
    assert datasets.augmentation_style("label_list") == "severstal"
    with pytest.raises(datasets.InputError, match=r"no paper preset for --dataset label_list: add its row to "
                                                  r"presets.PRESETS"):
        presets.paper_T("label_list")   # a layout's paper settings are its presets row, never another's


def test_a_model_registered_with_one_builder_builds_freezes_splits_and_reloads(toys, tmp_path):
    assert "toy_net" in models.MODELS
    model = models.build_model("toy_net", 3)
    assert model.head[0].p == 0.3 and model.head[1].out_features == 3  # the registered default dropout
    assert all(p.requires_grad for p in model.parameters())             # random init: nothing frozen
    frozen = models.build_model("toy_net", 3, freeze=True)
    assert not any(p.requires_grad for p in frozen.body.parameters())
    assert all(p.requires_grad for p in frozen.head.parameters())
    trunk, head = models.split_trunk_head(model)
    x = torch.rand(5, 3, 16, 16)
    model.eval()
    assert torch.allclose(head(trunk(x)), model(x))
    torch.save({"model": model.state_dict(), "model_name": "toy_net", "class_names": ["a", "b", "c"],
                "mean": 0.5, "std": 0.25, "image_size": 16, "config": {"dropout": 0.1}}, tmp_path / "best.pt")
    loaded, meta = models.load_trained_model(tmp_path / "best.pt")
    assert isinstance(loaded, ToyNet) and loaded.head[0].p == 0.1 and torch.allclose(loaded(x), model(x))


def test_penultimate_features_error_names_every_registered_model(toys):
    data = datasets.ImageSet(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(2, dtype=torch.long),
                             ["a", "b"], ["c"])
    features = acquisition.penultimate_features(models.build_model("toy_net", 2), data, 0.5, 0.25,
                                                torch.device("cpu"))
    assert features.shape == (2, 4)
    with pytest.raises(ValueError, match="knows the registered models resnet18, resnet18_cifar, vgg16, efficientnet_b0, "
                                         "tiny_cnn, toy_net"):
        acquisition.penultimate_features(nn.Sequential(nn.Flatten(), nn.Linear(192, 2)), data, 0.5, 0.25,
                                         torch.device("cpu"))


def test_registered_layout_and_model_are_choices_of_train_model_and_train(tmp_path):
    """Registered before the script is imported, both are --dataset/--model choices, and one
    epoch of train_model.py runs on them (a subprocess, so the registries here stay untouched)."""
    root = write_label_list(tmp_path / "data")
    program = ("import os, sys; here = sys.argv.pop(1); sys.path[:0] = [here, os.path.dirname(here)]; "
               "import test_registries as t; t.register_toys(); "
               "import train_model, utils; "
               "utils.run_main(train_model.main, utils.parse_config(train_model.Config, sys.argv[1:]))")
    flags = ["--data_dir", root, "--image_size", 16, "--epochs", 1, "--batch_size", 8,
             "--out_dir", tmp_path / "runs", "--run_name", "toy", "--device", "cpu"]
    run_script("-c", program, Path(__file__).resolve().parent, "--dataset", "label_list", "--model", "toy_net", *flags,
               env={"OMP_NUM_THREADS": "1"})
    checkpoint = torch.load(tmp_path / "runs" / "toy" / "best.pt", weights_only=False)
    assert checkpoint["model_name"] == "toy_net" and checkpoint["dataset"] == "label_list"
    assert checkpoint["mean"] == 0.5 and checkpoint["std"] == 0.25  # the layout's fixed normalisation
    refused = run_script("-c", program, Path(__file__).resolve().parent, "--dataset", "label_list", "--model", "toy_nope", *flags,
                         check=False)
    assert refused.returncode == 2 and "invalid choice: 'toy_nope'" in refused.stderr


def test_registering_changes_the_registries_in_place_and_rebinds_no_module_name(monkeypatch):
    names_before, models_before = datasets.DATASETS, models.MODELS
    layouts, architectures = dict(datasets.LAYOUTS), dict(models.ARCHITECTURES)
    try:
        register_toys()
        assert datasets.DATASETS is names_before and "label_list" in names_before
        assert models.MODELS is models_before and "toy_net" in models_before
    finally:
        for registry, saved in ((datasets.LAYOUTS, layouts), (models.ARCHITECTURES, architectures)):
            registry.clear()
            registry.update(saved)
    assert "toy_net" not in models.MODELS
