"""The R4VR training protocol in the fit loop: passes per epoch, which weights are kept, the
accuracy-or-loss early-stopping counter, the disjoint halves of a model pair."""
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from safehil.training.models import build_model
from test_training import CPU, toy_set
from safehil.data.splits import train_part
from safehil.training.training import StoppingCounter, epoch_passes, fit
from safehil.core.utils import load_checkpoint


def _resets(rule, metrics):
    counter = StoppingCounter(rule)
    return [(counter.update(loss, acc), counter.without_gain) for loss, acc in metrics]


# (val loss, val accuracy) per validation, scripted
SCRIPT = [(1.0, 0.5), (0.9, 0.5), (0.95, 0.6), (0.95, 0.6), (0.92, 0.55), (0.8, 0.4), (0.85, 0.6)]


def test_accuracy_or_loss_counter_resets_on_accuracy_else_on_loss():
    # 1: accuracy up; 2: loss below its record (inf: the record moves only when accuracy did not
    # improve, as published); 3: accuracy up; 4, 5: neither (0.92 is not below 0.9); 6: loss up; 7: neither
    assert _resets("accuracy_or_loss", SCRIPT) == [(True, 0), (True, 0), (True, 0), (False, 1), (False, 2),
                                                   (True, 0), (False, 1)]


def test_val_loss_counter_ignores_accuracy():
    assert _resets("val_loss", SCRIPT) == [(True, 0), (True, 0), (False, 1), (False, 2), (False, 3), (True, 0),
                                           (False, 1)]


def test_accuracy_or_loss_loss_record_moves_only_when_accuracy_did_not_improve():
    # epoch 1 improves accuracy at loss 0.5, so the loss record stays at inf and epoch 2's worse
    # loss 0.7 still counts as a loss improvement (the published train_loop's elif)
    assert _resets("accuracy_or_loss", [(0.5, 0.9), (0.7, 0.8), (0.75, 0.8)]) == [(True, 0), (True, 0), (False, 1)]


def _noisy_fit(tmp_path, restore, epochs=6):
    """A run whose validation accuracy goes up and down (random validation labels)."""
    train, valid = toy_set(48, 0), toy_set(24, 1)
    valid.labels = torch.randint(0, 2, (24,), generator=torch.Generator().manual_seed(3))
    torch.manual_seed(0)  # the same initial weights in every call
    model = build_model("tiny_cnn", 2)
    res = fit(model, train, valid, epochs=epochs, patience=epochs, batch_size=8, lr=1e-2, mean=0.3, std=0.3,
              device=CPU, seed=0, early_stopping=False, restore=restore, out_dir=tmp_path)
    return model, res


def _same_weights(model, state):
    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_restore_last_keeps_the_last_epoch_and_best_accuracy_the_first_best(tmp_path):
    last_model, last = _noisy_fit(tmp_path / "last", "last")
    accuracies = [row["val_accuracy"] for row in last.history]
    best_epoch = accuracies.index(max(accuracies)) + 1
    assert best_epoch != len(accuracies)  # the two choices differ on this run
    assert last.best_epoch == len(accuracies)
    assert _same_weights(last_model, load_checkpoint(tmp_path / "last" / "last.pt")["model"])
    assert _same_weights(last_model, load_checkpoint(tmp_path / "last" / "best.pt")["model"])

    acc_model, acc = _noisy_fit(tmp_path / "acc", "best_accuracy")
    assert [row["val_accuracy"] for row in acc.history] == accuracies  # the same run, only another choice
    assert acc.best_epoch == best_epoch and acc.best_val_accuracy == max(accuracies)
    saved = load_checkpoint(tmp_path / "acc" / "best.pt")
    assert saved["epoch"] == best_epoch and saved["restore"] == "best_accuracy"
    assert _same_weights(acc_model, saved["model"])
    assert not _same_weights(acc_model, last_model.state_dict())


def _count_steps(augment, epochs=3):
    train, valid = toy_set(40, 0), toy_set(16, 1)
    steps = []
    torch.manual_seed(0)
    handle = register_optimizer_step_post_hook(lambda *a: steps.append(1))
    try:
        res = fit(build_model("tiny_cnn", 2), train, valid, epochs=epochs, patience=epochs, batch_size=8, lr=1e-3,
                  mean=0.3, std=0.3, device=CPU, seed=0, early_stopping=False, augment=augment)
    finally:
        handle.remove()
    return len(steps), res.steps


def test_plain_augmented_doubles_the_optimiser_steps_and_plain_plain_matches_them():
    plain = _count_steps(epoch_passes("plain", "neu", "paper"))
    assert plain == (3 * 5, 3 * 5)  # 40 images in batches of 8, 3 epochs
    assert _count_steps(epoch_passes("plain+augmented", "neu", "paper")) == (2 * 15, 2 * 15)
    assert _count_steps(epoch_passes("plain+plain", "neu", "paper")) == (2 * 15, 2 * 15)


def test_epoch_passes_are_plain_then_augmented():
    plain, augmented = epoch_passes("plain+augmented", "severstal", "flip")
    assert (plain.use_aug, augmented.use_aug, plain.base, augmented.style) == (False, True, "flip", "severstal")
    assert [a.use_aug for a in epoch_passes("plain+plain", "neu", "paper")] == [False, False]
    assert [a.use_aug for a in epoch_passes("augmented", "neu", "paper")] == [True]
    with pytest.raises(ValueError, match="choose from"):
        epoch_passes("augmented+plain", "neu", "paper")


def test_disjoint_halves_are_disjoint_per_class_in_file_order():
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 2, 0, 1, 1, 2, 0])  # class 0: 5, class 1: 4, class 2: 3 images
    first, second = train_part(labels, "first"), train_part(labels, "second")
    assert first == [0, 1, 2, 3, 4] and second == [5, 6, 7, 8, 9, 10, 11]  # floor(n/2) of each class first
    assert not set(first) & set(second) and sorted(first + second) == list(range(12))
    balanced = train_part(labels, "all", balanced=True)  # 3 per class: the first 3 in file order
    assert balanced == [0, 1, 2, 3, 4, 5, 6, 8, 10]
    assert train_part(labels, "first", balanced=True) == [0, 1, 3]
    assert train_part(labels, "second", balanced=True) == [2, 4, 5, 6, 8, 10]


def test_use_aug_is_a_deprecated_spelling_of_passes():
    import train_model
    with pytest.warns(FutureWarning, match="--passes plain\\+augmented"):
        cfg = train_model.Config(use_aug=True)
    assert (cfg.passes, cfg.use_aug) == ("plain+augmented", None)  # config.json holds one spelling
    with pytest.warns(FutureWarning):
        assert train_model.Config(use_aug=False).passes == "plain"
    with pytest.raises(ValueError, match="contradicts --passes"):
        train_model.Config(use_aug=False, passes="augmented")


def test_pair_disagreement_counts_differing_and_hidden_errors():
    import pandas as pd

    from safehil.safety.cascade import pair_disagreement
    a = pd.DataFrame({"path": list("abcde"), "label": [0, 0, 1, 1, 2], "predicted": [0, 1, 1, 2, 2]})
    b = pd.DataFrame({"path": list("edcba"), "label": [2, 1, 1, 0, 0], "predicted": [0, 2, 1, 1, 0]})
    # a vs b on a..e: (0,0) (1,1) (1,1) (2,2) (2,0): differ on e only; agreeing and wrong: b, d
    assert pair_disagreement(a, b) == {"n": 5, "disagreement": 0.2, "agree_wrong": 0.4, "wrong_a": 0.4,
                                       "wrong_b": 0.6}


def test_finetune_all_pretrains_on_a_balanced_half_then_trains_on_the_whole_split(tiny_synthetic, tmp_path):
    import pandas as pd

    import train_model
    root, csv = tiny_synthetic
    cfg = train_model.Config(model="tiny_cnn", data_dir=str(root), split_csv=str(csv), image_size=16, epochs=1,
                             batch_size=16, train_half="first", balanced=True, finetune_all=True,
                             restore="best_accuracy", out_dir=str(tmp_path), run_name="ft", device="cpu")
    train_model.main(cfg)
    run = tmp_path / "ft"
    full = pd.read_csv(run / "split.csv").query("split == 'train'")
    pre = pd.read_csv(run / "pretrain" / "split.csv").query("split == 'train'")
    counts = full.groupby("label").size()
    assert (pre.groupby("label").size() == counts.min() // 2).all()  # balanced, then the first half per class
    assert pre["path"].tolist() == [p for p in full["path"] if p in set(pre["path"])]  # file order kept
    for stage in (run / "pretrain", run):
        assert (stage / "test_metrics.json").is_file() and (stage / "best.pt").is_file()
    assert load_checkpoint(run / "pretrain" / "best.pt")["restore"] == "best_accuracy"
