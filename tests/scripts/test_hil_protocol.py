"""The HIL fine-tuning step as both R4VR codes run it: the weights step k+1
starts from are step k's last epoch, the per-step counter stops after 4 epochs without gain
(early_stopping=3 is counter > 3), NEU reuses one Adam across the steps while Severstal makes a new
Adam + plateau schedule per fit with a baseline batch of 64, Severstal freezes nothing, and --full
runs the grid of both models of the pair."""
import copy
import math

import pytest
import torch

import reproduce
import train_model_data_generation as dg
from safehil.training import training
from safehil.training.models import fresh_model
from test_data_generation import toy_sets

CPU = torch.device("cpu")


def tiny_cfg(**overrides):
    """The NEU step protocol (the script's defaults) on a tiny CNN at 16 px."""
    base = dict(model="tiny_cnn", image_size=16, initial_samples=(4,), step_sizes=(4,), epochs=3, patience=10,
                baseline_epochs=2, baseline_patience=10, batch_size=8, baseline_batch_size=8, device="cpu")
    return dg.Config(**{**base, **overrides})


def states_of(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def recorded_fits(monkeypatch):
    """Spies on the grid's fits: per fit, the weights it starts from, the weights after each of its
    epochs, the weights it leaves, and the optimiser state and settings it was given."""
    calls = []
    real_fit, real_epoch = dg.fit, training.train_one_epoch

    def epoch(model, *args, **kwargs):
        out = real_epoch(model, *args, **kwargs)
        calls[-1]["epochs"].append(states_of(model))
        return out

    def fit(model, *args, **kwargs):
        calls.append({"start": states_of(model), "epochs": [], "kwargs": kwargs,
                      "optimizer_state": copy.deepcopy(kwargs.get("optimizer_state"))})
        result = real_fit(model, *args, **kwargs)
        calls[-1]["end"] = states_of(model)
        calls[-1]["result"] = result
        return result
    monkeypatch.setattr(training, "train_one_epoch", epoch)
    monkeypatch.setattr(dg, "fit", fit)
    return calls


def test_step_k_plus_1_fine_tunes_step_k_s_last_epoch_not_its_best(recorded_fits):
    """Row 1: the papers' train_loop never reloads a saved model, so each fit hands on its last epoch."""
    assert dg.Config().restore == "last"
    dg.run_setting(tiny_cfg(), toy_sets(size=16), 4, 4, 0.5, 0.25, CPU)
    fits = recorded_fits
    assert len(fits) == 3  # the baseline, then steps 1 and 2
    for before, after in zip(fits, fits[1:]):
        assert same(before["end"], before["epochs"][-1])   # the fit leaves its last epoch's weights
        assert same(after["start"], before["end"])          # and the next step starts from them


def test_restore_best_loss_would_hand_on_another_epoch(recorded_fits):
    """The control: with --restore best_loss a fit may leave an earlier epoch (so row 1 is a real choice)."""
    dg.run_setting(tiny_cfg(restore="best_loss", lr=0.05), toy_sets(size=16), 4, 4, 0.5, 0.25, CPU)
    for fit in recorded_fits:
        best = fit["result"].best_epoch
        assert same(fit["end"], fit["epochs"][best - 1])


def published_stop_epoch(metrics, early_stopping):
    """The epoch at which the published train_loop ends on scripted (val loss, val accuracy) per epoch:
    counter += 1 every epoch, reset on an accuracy gain, else on a loss gain, else stop when
    counter > early_stopping; None when it runs out of epochs."""
    best_acc, best_loss, counter = 0.0, math.inf, 0
    for epoch, (loss, acc) in enumerate(metrics, start=1):
        counter += 1
        if acc > best_acc:
            best_acc, counter = acc, 0
        elif loss < best_loss:
            best_loss, counter = loss, 0
        elif counter > early_stopping:
            return epoch
    return None


def scripted_evaluate(metrics):
    it = iter(metrics)

    def evaluate(model, data, mean, std, device, batch_size=128, **views):  # views: the eval augmentation
        loss, acc = next(it)
        return {"loss": loss, "accuracy": acc}
    return evaluate


@pytest.mark.parametrize("metrics", [
    [(1.0, 0.5), (1.1, 0.4), (1.2, 0.4), (1.3, 0.5), (1.4, 0.45), (1.5, 0.3), (1.6, 0.2)],   # gain, then none
    [(1.0, 0.5), (0.9, 0.4), (1.2, 0.4), (0.95, 0.6), (1.0, 0.6), (1.1, 0.5), (1.2, 0.5), (1.3, 0.5), (1.4, 0.1)],
])
def test_per_step_stopping_is_counter_above_3_with_the_accuracy_or_loss_counter(monkeypatch, metrics):
    """Row 2: the script's per-step stopping (patience 4, accuracy_or_loss) ends a fit in the epoch the
    published train_loop with early_stopping=3 ends it (the 4th epoch without gain)."""
    cfg = dg.Config()
    assert (cfg.epochs, cfg.patience, cfg.stopping) == (20, 4, "accuracy_or_loss")
    sets = toy_sets(size=16)

    def epochs_run(patience, stopping):
        monkeypatch.setattr(training, "evaluate", scripted_evaluate(metrics))
        result = training.fit(fresh_model(tiny_cfg(), 3, 0), sets["train"], sets["valid"], epochs=len(metrics),
                              patience=patience, batch_size=8, lr=1e-3, mean=0.5, std=0.25, device=CPU, seed=0,
                              stopping=stopping)
        return len(result.history)
    expected = published_stop_epoch(metrics, early_stopping=3)
    assert expected is not None and epochs_run(cfg.patience, cfg.stopping) == expected
    assert epochs_run(3, "val_loss") != expected   # this project's old HIL stop (patience 3, val loss) differs


def test_neu_reuses_one_adam_across_the_baseline_and_every_step(recorded_fits):
    """Row 3, NEU: the Adam made before the baseline goes on through every step (its step count and
    moments carry over), at a constant rate."""
    cfg = tiny_cfg()
    assert (cfg.step_optimizer, cfg.schedule) == ("reuse", "constant")
    dg.run_setting(cfg, toy_sets(size=16), 4, 4, 0.5, 0.25, CPU)
    fits = recorded_fits
    assert fits[0]["optimizer_state"] is None   # the baseline makes it
    steps_so_far = 0
    for before, after in zip(fits, fits[1:]):
        steps_so_far += before["result"].steps
        carried = after["optimizer_state"]
        assert carried is not None
        assert {int(s["step"]) for s in carried["state"].values()} == {steps_so_far}


def test_severstal_makes_a_new_adam_and_plateau_schedule_for_every_fit(recorded_fits):
    """Row 3, Severstal: a new Adam + ReduceLROnPlateau per fit; the baseline's batch is 64, the steps' 16."""
    cfg = tiny_cfg(step_optimizer="new", schedule="plateau", batch_size=16, baseline_batch_size=64)
    dg.run_setting(cfg, toy_sets(size=16), 4, 4, 0.5, 0.25, CPU)
    fits = recorded_fits
    assert all(f["optimizer_state"] is None and f["kwargs"]["schedule"] == "plateau" for f in fits)
    assert [f["kwargs"]["batch_size"] for f in fits] == [64, 16, 16]


def test_each_data_sets_hil_protocol_reaches_the_grid():
    """Rows 1-5 from the presets: both grids of --full take the published step protocol."""
    neu = reproduce.Config(full=True, dataset="neu", data_dir="/d")
    sev = reproduce.Config(full=True, dataset="severstal_kaggle", data_dir="/d")
    for cfg, optimizer, schedule, baseline_batch, freeze, model_b in (
            (neu, "reuse", "constant", 16, True, "vgg16"), (sev, "new", "plateau", 64, False, "efficientnet_b0")):
        grids = reproduce.data_generation_configs(cfg) + reproduce.data_generation_b_configs(cfg)
        for g in grids:
            assert (g.epochs, g.patience, g.restore, g.stopping, g.lr) == (20, 4, "last", "accuracy_or_loss", 1e-3)
            assert (g.step_optimizer, g.schedule, g.batch_size, g.baseline_batch_size, g.freeze) == (
                optimizer, schedule, 16, baseline_batch, freeze)
        assert [g.model for g in grids] == ["resnet18"] * 3 + [model_b]   # row 5: model B's grid too
    assert reproduce.data_generation_b_configs(reproduce.Config()) == []  # the CPU scale: model A's grid only


def test_severstal_hil_trains_every_layer():
    """Row 4: train_model_sequentially.py leaves freeze_weights commented out; with --freeze False
    (the Severstal preset) pretrained weights do not freeze ResNet18's layer1-3."""
    grid = reproduce.data_generation_configs(reproduce.Config(full=True, dataset="severstal_kaggle", data_dir="/d"))[0]
    assert grid.freeze is False
    frozen = [n for n, p in fresh_model(dg.Config(model="resnet18", freeze=grid.freeze), 5, 0).named_parameters()
              if not p.requires_grad]
    assert frozen == []
    neu = fresh_model(dg.Config(model="resnet18", freeze=True), 5, 0)   # NEU calls freeze_weights()
    assert not neu.layer1[0].conv1.weight.requires_grad and neu.fc[1].weight.requires_grad
