"""The MC box plots and the saliency curves on the papers' images and networks:
R4VR NEU scores test + valid + the other model's training half (972 images), Severstal the
validation files; the saliency curves of NEU's VGG16 (model B) on its own training half and of both
Severstal models on test; the saliency gradient taken with dropout on."""
import json

import pandas as pd
import pytest
import torch
import torch.nn as nn

import get_mc_scores
import reproduce
import saliency_map_uncertainties as smu
from safehil.data.splits import train_part
from safehil.uq import saliency


def test_full_mc_scores_the_published_images_of_both_models():
    """Row 6: NEU each model on test + valid + the other model's training half; Severstal on valid (+ test)."""
    neu = reproduce.mc_configs(reproduce.Config(full=True, dataset="neu", data_dir="/d"))
    a, b = neu[0], neu[1]
    assert (a.extra_splits, a.train_half) == (("valid",), "first")    # ResNet18 trained on the second half
    assert (b.extra_splits, b.train_half) == (("valid",), "second")   # VGG16 on the first
    assert "vgg16" in b.checkpoint
    severstal = reproduce.mc_configs(reproduce.Config(full=True, dataset="severstal_kaggle", data_dir="/d"))
    assert {(m.extra_splits, m.train_half) for m in severstal} == {(("valid",), "none")}
    cpu = reproduce.mc_configs(reproduce.Config())
    assert {(m.extra_splits, m.train_half) for m in cpu} == {((), "none")}   # the CPU scale: test splits only


def test_mc_scores_the_other_models_training_half_and_pools_every_image(tiny_synthetic, tiny_checkpoint, tmp_path):
    """Row 6: --extra_splits valid --train_half first scores test, valid and exactly the first half of
    train (per class, file order, as train_model cuts it); 'pooled' summarises all of them at once."""
    table = pd.read_csv(tiny_synthetic[1])
    train = table[table["split"] == "train"].reset_index(drop=True)
    half = train.iloc[train_part(torch.as_tensor(pd.factorize(train["label"])[0]), "first")]
    get_mc_scores.main(get_mc_scores.Config(checkpoint=str(tiny_checkpoint), out_dir=str(tmp_path), splits=("test",),
                                            extra_splits=("valid",), train_half="first", T=3, device="cpu",
                                            run_name="mc"))
    per_image = pd.read_csv(tmp_path / "mc" / "per_image.csv")
    counts = per_image["split"].value_counts().to_dict()
    assert counts == {"test": (table["split"] == "test").sum(), "valid": (table["split"] == "valid").sum(),
                      "train_first": len(half)}
    assert sorted(per_image.loc[per_image["split"] == "train_first", "path"]) == sorted(half["path"])
    summary = json.loads((tmp_path / "mc" / "summary.json").read_text())["splits"]
    assert summary["pooled"]["n"] == len(per_image)
    assert summary["pooled"]["accuracy"] == pytest.approx(per_image["correct"].mean())


def test_full_saliency_runs_the_papers_networks_on_their_images():
    """Rows 7 and 8: NEU VGG16 (model B) on its own training half (the first); Severstal both models on
    test; rows 9: the gradient with dropout on."""
    neu = reproduce.saliency_configs(reproduce.Config(full=True, dataset="neu", data_dir="/d"))
    assert [(c.split, c.train_half, c.gradient_dropout) for c in neu] == [("train", "first", True)]
    assert "vgg16" in neu[0].checkpoint
    severstal = reproduce.saliency_configs(reproduce.Config(full=True, dataset="severstal_kaggle", data_dir="/d"))
    assert [(c.split, c.train_half) for c in severstal] == [("test", "none")] * 2
    assert "resnet18" in severstal[0].checkpoint and "efficientnet_b0" in severstal[1].checkpoint
    assert all(c.gradient_dropout for c in severstal)


def test_saliency_reveals_the_models_own_training_half(tiny_synthetic, tiny_checkpoint, tmp_path):
    """Row 8: --split train --train_half first reveals exactly the first half of the train split."""
    table = pd.read_csv(tiny_synthetic[1])
    train = table[table["split"] == "train"].reset_index(drop=True)
    half = train.iloc[train_part(torch.as_tensor(pd.factorize(train["label"])[0]), "first")]
    result = smu.main(smu.Config(checkpoint=str(tiny_checkpoint), split="train", train_half="first", T=2,
                                 shares=(50.0,), orders=("saliency",), n_examples=0, out_dir=str(tmp_path),
                                 run_name="own", device="cpu"))
    per_image = pd.read_csv(tmp_path / "own" / "per_image.csv")
    assert result["n_images"] == len(half) and set(per_image["path"]) == set(half["path"])
    with pytest.raises(Exception, match="needs --split train"):
        smu.Config(checkpoint=str(tiny_checkpoint), train_half="first")


class DropoutLinear(nn.Module):
    """x -> batch norm -> flatten -> dropout 0.5 -> linear: the input gradient is weight x mask / 0.5."""

    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm2d(3)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x):
        return self.fc(self.drop(self.norm(x).flatten(1)))


def test_saliency_gradient_with_dropout_on_masks_the_weights_and_keeps_batch_norm_frozen():
    """Row 9: with dropout on (the R4VR scripts) each input's gradient is 0 or twice the eval-mode one,
    batch norm stays on its running statistics, and the model's modes are restored."""
    torch.manual_seed(0)
    model = DropoutLinear().eval()
    model.norm.running_mean.fill_(0.1)
    x = torch.randn(4, 3, 4, 4)
    stats = model.norm.running_mean.clone()
    plain = saliency.gradient_saliency(model, x, target=0)
    torch.manual_seed(1)
    dropped = saliency.gradient_saliency(model, x, target=0, dropout=True)
    w = model.fc.weight[0].detach().abs().view(3, 4, 4) / model.norm.running_var.add(model.norm.eps).sqrt().view(3, 1, 1)
    # with a single channel-max the masked gradient per pixel is max over channels of (0 or 2) x |w|
    assert torch.allclose(plain, w.amax(0).expand(4, 4, 4), atol=1e-6)
    assert not torch.allclose(dropped, plain)
    assert bool((dropped <= 2 * plain + 1e-6).all()) and bool((dropped == 0).any())  # doubled or masked
    assert torch.equal(model.norm.running_mean, stats) and not model.training and not model.drop.training


# ----------------------------------------------------------------------------- --plan

def test_plan_counts_the_images_each_uq_step_scores(tiny_synthetic):
    """--plan counts what the MC and saliency runs really score: the test splits (not valid) at the
    CPU scale; test + valid + the other half of train at NEU's full scale; the own half for saliency."""
    table = pd.read_csv(tiny_synthetic[1])
    sizes = table["split"].value_counts()
    tests = sum(v for k, v in sizes.items() if k.startswith("test"))
    cpu = reproduce.mc_configs(reproduce.Config())[0]
    assert reproduce._mc_images(table, cpu) == tests
    full = reproduce.Config(full=True, dataset="neu", data_dir="/d")
    a = reproduce.mc_configs(full)[0]
    train = table[table["split"] == "train"]
    half = len(train_part(torch.as_tensor(pd.factorize(train["label"])[0]), "first"))
    assert reproduce._mc_images(table, a) == tests + sizes["valid"] + half
    (own,) = reproduce.saliency_configs(full)
    assert reproduce._saliency_images(table, own) == min(own.max_images or half, half)
    assert reproduce._saliency_images(table, reproduce.saliency_config(reproduce.Config())) == min(360, sizes["test"])


def test_plan_times_whole_severstal_strips_not_squares():
    """The --full estimate times model A on the data's canvas: a 6.25:1 strip at 256 px is 256 x 1600."""
    from safehil.data.synthetic import generate_severstal_strips
    root = generate_severstal_strips(per_class=4, seed=0, height=32)
    cfg = reproduce.Config(full=True, dataset="severstal_kaggle", data_dir=str(root))
    table, data_root = reproduce._split_table(cfg)
    assert reproduce._real_canvas(cfg, table, data_root) == (256, 1600)


def test_plan_bounds_the_hil_work_between_first_chance_stops_and_no_stop():
    """One setting, 2 classes with pools of 6 and 4, initial 2, step 2, baseline (<= 5 epochs, patience 2), steps
    (<= 3 epochs, patience 1): labelled per step 2+2=4, 4+4=8, 6+4=10 -> (2*4 + 1*(8+10), 5*4 + 3*(8+10))."""
    table = pd.DataFrame({"path": [f"{i}.png" for i in range(10)], "label": ["a"] * 6 + ["b"] * 4,
                          "split": "train"})
    d = reproduce.data_generation.Config(initial_samples=(2,), step_sizes=(2,), baseline_epochs=5, baseline_patience=2,
                                         epochs=3, patience=1, full_data_reference=False)
    assert reproduce._hil_passes(table, d) == (2 * 4 + 1 * (8 + 10), 5 * 4 + 3 * (8 + 10))
