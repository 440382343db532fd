"""Training recipes: the toolkit's SGD + cosine recipe learns a separable toy set, its learning rate
follows the cosine curve, a resumed cosine run equals an uninterrupted one, and min_steps keeps
early stopping from ending a small-set run before that many optimiser steps."""
import math

import pytest
import torch

from safehil.data.datasets import ImageSet
from safehil.training.models import build_model
from safehil.settings.recipes import RECIPES
from safehil.training.training import cosine_factor, epochs_for, evaluate, fit

CPU = torch.device("cpu")


def toy_set(n, seed, size=16):
    """Two classes: bright left half vs bright right half, with noise. uint8 [n, 3, size, size]."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    x = torch.rand(n, 1, size, size, generator=g) * 60
    x[labels == 0, :, :, : size // 2] += 150
    x[labels == 1, :, :, size // 2:] += 150
    return ImageSet(x.clamp(0, 255).to(torch.uint8).repeat(1, 3, 1, 1), labels, [str(i) for i in range(n)],
                    ["left", "right"])


def noisy_valid(n=20):
    """A validation set with random labels: its loss cannot keep improving, so patience runs out."""
    valid = toy_set(n, 1)
    valid.labels = torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(5))
    return valid


def toolkit(**override):
    return {**RECIPES["toolkit"].fit_kwargs(), **override}


def test_recipes_fix_the_published_constants():
    t = RECIPES["toolkit"]
    assert (t.optimizer, t.lr, t.weight_decay, t.schedule, t.epochs, t.batch_size, t.early_stopping) == \
        ("sgd_nesterov", 0.025, 3e-4, "cosine", 200, 96, False)
    assert (t.augmentation, t.image_size, t.valid_share, t.restore) == ("crop_flip", 32, 0.1, "last")
    p = RECIPES["paper"].fit_kwargs()
    assert (p["optimizer"], p["lr"], p["schedule"], p["early_stopping"]) == ("adam", 1e-3, "constant", True)


def test_toolkit_recipe_learns_a_separable_toy_set():
    train, valid = toy_set(160, 0), toy_set(60, 1)
    torch.manual_seed(0)
    model = build_model("tiny_cnn", 2)
    res = fit(model, train, valid, **toolkit(epochs=8, batch_size=16), mean=0.3, std=0.3, device=CPU, seed=0)
    assert evaluate(model, valid, 0.3, 0.3, CPU)["accuracy"] >= 0.95
    assert len(res.history) == 8 and not res.stopped_early


def test_learning_rate_follows_the_cosine_curve():
    torch.manual_seed(0)
    res = fit(build_model("tiny_cnn", 2), toy_set(16, 0), toy_set(8, 1), **toolkit(epochs=4, batch_size=8),
              mean=0.3, std=0.3, device=CPU, seed=0)
    expected = [0.025 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]  # 0.025, 0.0213, 0.0125, 0.0037
    assert [row["lr"] for row in res.history] == pytest.approx(expected, rel=1e-9)
    assert cosine_factor(0, 200) == 1.0 and cosine_factor(100, 200) == pytest.approx(0.5)


def _cosine_fit(out_dir, epochs, resume=False):
    torch.manual_seed(0)
    net = build_model("tiny_cnn", 2)
    fit(net, toy_set(32, 0), toy_set(16, 1), **toolkit(epochs=epochs, batch_size=8), mean=0.3, std=0.3,
        device=CPU, seed=3, out_dir=out_dir, resume=resume, checkpoint_extra={"model_name": "tiny_cnn"})
    return net.state_dict()


def test_resumed_cosine_sgd_run_equals_uninterrupted_run(tmp_path, monkeypatch):
    full = _cosine_fit(tmp_path / "full", 4)
    from safehil.training import training

    class Killed(Exception):
        pass

    real_log = training.log

    def die_after_epoch_2(msg):  # the log line comes after last.pt of an epoch is written
        real_log(msg)
        if " epoch 2:" in msg:
            raise Killed

    monkeypatch.setattr(training, "log", die_after_epoch_2)
    with pytest.raises(Killed):
        _cosine_fit(tmp_path / "part", 4)
    monkeypatch.setattr(training, "log", real_log)
    resumed = _cosine_fit(tmp_path / "part", 4, resume=True)
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_resume_with_another_optimizer_is_refused(tmp_path):
    _cosine_fit(tmp_path / "r", 1)
    with pytest.raises(ValueError, match="sgd_nesterov and schedule cosine"):
        fit(build_model("tiny_cnn", 2), toy_set(32, 0), toy_set(16, 1), epochs=2, patience=2, batch_size=8,
            lr=1e-3, mean=0.3, std=0.3, device=CPU, seed=3, out_dir=tmp_path / "r", resume=True,
            checkpoint_extra={"model_name": "tiny_cnn"})


def test_min_steps_keeps_early_stopping_from_ending_a_small_set_run():
    train = toy_set(16, 0)  # batch 8: 2 steps per epoch
    args = dict(epochs=50, patience=1, batch_size=8, lr=1e-2, mean=0.3, std=0.3, device=CPU, seed=0)
    torch.manual_seed(0)
    without = fit(build_model("tiny_cnn", 2), train, noisy_valid(), **args)
    assert without.stopped_early and without.steps < 20
    torch.manual_seed(0)
    with_min = fit(build_model("tiny_cnn", 2), train, noisy_valid(), **args, min_steps=20)
    assert with_min.stopped_early and with_min.steps >= 20 and len(with_min.history) >= 10


def test_min_steps_raises_the_epoch_count_of_a_small_set():
    assert epochs_for(5, 0, 16, 8) == 5 and epochs_for(5, 7, 16, 8) == 5 and epochs_for(5, 30, 16, 8) == 15
    torch.manual_seed(0)
    res = fit(build_model("tiny_cnn", 2), toy_set(16, 0), toy_set(8, 1), epochs=2, patience=5, batch_size=8,
              lr=1e-3, mean=0.3, std=0.3, device=CPU, seed=0, early_stopping=False, min_steps=12)
    assert len(res.history) == 6 and res.steps == 12 and not res.stopped_early


def test_validation_interval_validates_after_enough_steps_and_after_the_last_epoch():
    train = toy_set(16, 0)  # batch 8: 2 steps per epoch
    args = dict(epochs=7, patience=50, batch_size=8, lr=1e-2, mean=0.3, std=0.3, device=CPU, seed=0)
    torch.manual_seed(0)
    res = fit(build_model("tiny_cnn", 2), train, toy_set(8, 1), **args, val_interval_steps=5)
    assert [row["epoch"] for row in res.history] == [3, 6, 7]     # 6 steps, 6 steps, then the last epoch
    assert res.steps == 14 and res.best_epoch in (3, 6, 7)
    torch.manual_seed(0)
    every = fit(build_model("tiny_cnn", 2), train, toy_set(8, 1), **args)
    assert [row["epoch"] for row in every.history] == list(range(1, 8)) and every.steps == 14
