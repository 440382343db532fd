"""The active-learning toolkit's protocol pieces: RandomCrop(32, padding 4) + flip as a base
augmentation, and the toolkit recipe's constants."""
import torch
import torch.nn.functional as F

from safehil.data.augment import Augmenter, random_crop_padded


def windows_of(image, padding):
    """Every H x W window of the zero-padded image [C, H, W] and of its mirror image: [K, C, H, W]."""
    c, h, w = image.shape
    padded = F.pad(image, (padding,) * 4)
    crops = [padded[:, dy:dy + h, dx:dx + w] for dy in range(2 * padding + 1) for dx in range(2 * padding + 1)]
    return torch.stack(crops + [crop.flip(-1) for crop in crops])


def test_random_crop_cuts_a_window_of_the_zero_padded_image():
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.1   # no zeros inside
    out = random_crop_padded(x, 4, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    offsets = set()
    for image, crop in zip(x, out):
        padded = F.pad(image, (4,) * 4)
        hits = [(dy, dx) for dy in range(9) for dx in range(9) if torch.equal(padded[:, dy:dy + 32, dx:dx + 32], crop)]
        assert len(hits) == 1
        offsets.add(hits[0])
    assert len(offsets) > 8   # each image has its own offset


def test_crop_flip_base_gives_a_padded_window_or_its_mirror_and_both_happen():
    x = torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 0.9 + 0.1
    out = Augmenter("neu", base="crop_flip")(x, torch.Generator().manual_seed(3))
    flipped = 0
    for image, crop in zip(x, out):
        candidates = windows_of(image, 4)
        match = [k for k in range(len(candidates)) if torch.equal(candidates[k], crop)]
        assert match, "not a window of the padded image nor of its mirror"
        flipped += match[0] >= len(candidates) // 2
    assert 4 <= flipped <= 28
    again = Augmenter("neu", base="crop_flip")(x, torch.Generator().manual_seed(3))
    assert torch.equal(out, again)   # all randomness from the generator


# ============================================================================ rounds, weights, ensemble

import json  # noqa: E402
from dataclasses import replace  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import active_learning as al  # noqa: E402
from safehil.training.models import build_model  # noqa: E402
from test_active_learning import toy_sets  # noqa: E402
from test_recipes import toy_set  # noqa: E402
from safehil.training.training import fit  # noqa: E402
from safehil.core.utils import load_checkpoint  # noqa: E402

CPU = torch.device("cpu")


def toolkit_cfg(**kw):
    """The toolkit recipe at toy size: tiny CNN, 16 px, 2 epochs of batch 16, T 3, 3 members."""
    base = dict(recipe="toolkit", model="tiny_cnn", image_size=16, epochs=2, batch_size=16, mc_samples=3,
                initial_share=0.1, step_share=0.2, final_share=0.5, device="cpu", min_steps=0, max_retrains=0,
                val_interval_steps=0)
    return al.Config(**{**base, **kw})


def test_last_restore_keeps_the_last_epoch_and_best_accuracy_an_earlier_one(tmp_path):
    train, valid = toy_set(32, 0), toy_set(16, 1)
    valid.labels = 1 - valid.labels          # the better the model learns, the worse its validation accuracy
    runs = {}
    for restore in ("last", "best_accuracy"):
        torch.manual_seed(0)
        model = build_model("tiny_cnn", 2)
        result = fit(model, train, valid, epochs=6, patience=1, batch_size=8, lr=0.05, mean=0.3, std=0.3, device=CPU,
                     seed=0, early_stopping=False, restore=restore, out_dir=tmp_path / restore)
        runs[restore] = (model, result)
    last_model, last_result = runs["last"]
    final = load_checkpoint(tmp_path / "last" / "last.pt")["model"]   # the weights after the last epoch
    assert all(torch.equal(t, final[k]) for k, t in last_model.state_dict().items())
    assert last_result.best_epoch == 6
    best_model, best_result = runs["best_accuracy"]
    assert best_result.best_epoch < 6     # the validation accuracy was highest earlier
    assert not all(torch.equal(t, final[k]) for k, t in best_model.state_dict().items())


def test_warm_rounds_start_from_the_previous_rounds_weights_and_optimiser(monkeypatch):
    calls = []
    real_fit = al.fit

    def recording_fit(model, *args, **kw):
        before = {k: t.clone() for k, t in model.state_dict().items()}
        result = real_fit(model, *args, **kw)
        calls.append({"before": before, "after": {k: t.clone() for k, t in model.state_dict().items()},
                      "state_in": kw["optimizer_state"], "state_out": result.optimizer_state,
                      "first_lr": result.history[0]["lr"], "restore": kw["restore"]})
        return result

    monkeypatch.setattr(al, "fit", recording_fit)
    al.run_task(toolkit_cfg(), "random", 0, toy_sets(), 0.3, 0.3, CPU)
    assert len(calls) == 3 and calls[0]["state_in"] is None
    for previous, this in zip(calls, calls[1:]):
        assert all(torch.equal(this["before"][k], t) for k, t in previous["after"].items())   # round k+1 <- round k
        assert this["state_in"] is previous["state_out"]       # momentum buffers go on
    assert all(c["first_lr"] == 0.025 and c["restore"] == "last" for c in calls)   # cosine starts again each round
    calls.clear()
    al.run_task(toolkit_cfg(rounds="from_scratch"), "random", 0, toy_sets(), 0.3, 0.3, CPU)
    assert all(c["state_in"] is None for c in calls)
    assert not all(torch.equal(calls[1]["before"][k], t) for k, t in calls[0]["after"].items())


def test_optimizer_state_carries_momentum_but_the_rate_is_the_new_fits():
    train, valid = toy_set(32, 0), toy_set(16, 1)
    torch.manual_seed(0)
    model = build_model("tiny_cnn", 2)
    kw = dict(epochs=2, patience=1, batch_size=8, lr=0.025, mean=0.3, std=0.3, device=CPU, seed=0,
              optimizer="sgd_nesterov", schedule="cosine", early_stopping=False)
    first = fit(model, train, valid, **kw)
    assert first.optimizer_state["param_groups"][0]["lr"] < 0.025       # the cosine rate fell during the fit
    second = fit(model, train, valid, **kw, optimizer_state=first.optimizer_state)
    assert second.history[0]["lr"] == 0.025
    assert len(second.optimizer_state["state"]) == len(first.optimizer_state["state"]) > 0


def test_toolkit_ensemble_reports_the_mean_of_its_three_warm_members(monkeypatch):
    evaluated, fits = [], []
    real, real_fit = al.evaluate, al.fit
    monkeypatch.setattr(al, "evaluate", lambda *a, **kw: evaluated.append(real(*a, **kw)) or evaluated[-1])
    monkeypatch.setattr(al, "fit", lambda model, *a, **kw: fits.append((id(model), kw["optimizer_state"]))
                        or real_fit(model, *a, **kw))
    rounds = al.run_task(toolkit_cfg(final_share=0.3), "ensemble_variation_ratio", 0, toy_sets(), 0.3, 0.3,
                         CPU)["rounds"]
    assert len(evaluated) == 6                                              # three members tested, two rounds
    assert rounds[0]["test_accuracy"] == pytest.approx(sum(m["accuracy"] for m in evaluated[:3]) / 3)
    assert rounds[0]["member0_test_accuracy"] == evaluated[0]["accuracy"]
    assert rounds[0]["round_start"] == "warm_start"
    # round 1 goes on with the same three models, each with a new optimiser (tools/ensemble_al.py)
    assert [f[0] for f in fits[3:]] == [f[0] for f in fits[:3]] and all(f[1] is None for f in fits)


def test_toolkit_run_records_warm_rounds_and_a_resumed_run_equals_an_uninterrupted_one(tiny_synthetic, tmp_path):
    root, csv = tiny_synthetic
    cfg = toolkit_cfg(data_dir=str(root), split_csv=str(csv), image_size=24, seeds=(0,), final_share=0.3,
                      strategies=("random", "entropy", "ensemble_variation_ratio"), ensemble_size=2,
                      out_dir=str(tmp_path / "al"), run_name="whole")
    al.main(cfg)
    interrupted = replace(cfg, run_name="resumed")
    al.main(replace(interrupted, strategies=("entropy",)))       # a run stopped after its first task ...
    al.main(interrupted)                                           # ... and started again
    whole = pd.read_csv(tmp_path / "al" / "whole" / "rounds.csv")
    resumed = pd.read_csv(tmp_path / "al" / "resumed" / "rounds.csv")
    columns = ["strategy", "seed", "round", "labelled", "test_accuracy", "test_loss", "val_accuracy", "steps"]
    pd.testing.assert_frame_equal(whole[columns], resumed[columns])
    assert set(whole["round_start"]) == {"warm_start"}
    config = json.loads((tmp_path / "al" / "whole" / "config.json").read_text())
    assert (config["rounds"], config["restore"], config["base_augmentation"], config["batch_size"]) == \
        ("warm_start", "last", "crop_flip", 16)
