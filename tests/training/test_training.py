"""The fit loop: learns a separable toy set, stops early, refuses NaN, repeats bitwise on CPU."""
import math

import pandas as pd
import pytest
import torch

from safehil.data.datasets import ImageSet
from safehil.training.models import build_model
from safehil.training import training
from safehil.training.training import evaluate, fit, predict


def toy_set(n=120, seed=0, size=16):
    """Two classes: bright left half vs bright right half, with noise. uint8 [n, 3, size, size]."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    x = torch.rand(n, 1, size, size, generator=g) * 60
    half = size // 2
    for i, y in enumerate(labels.tolist()):
        if y == 0:
            x[i, :, :, :half] += 150
        else:
            x[i, :, :, half:] += 150
    images = x.clamp(0, 255).to(torch.uint8).repeat(1, 3, 1, 1)
    return ImageSet(images, labels, [f"img{i}" for i in range(n)], ["left", "right"])


CPU = torch.device("cpu")


def test_tiny_cnn_learns_separable_toy_set():
    train, valid = toy_set(160, 0), toy_set(60, 1)
    model = build_model("tiny_cnn", 2)
    res = fit(model, train, valid, epochs=8, patience=8, batch_size=16, lr=3e-3, mean=0.3, std=0.3,
              device=CPU, seed=0)
    assert evaluate(model, valid, 0.3, 0.3, CPU)["accuracy"] >= 0.95
    assert res.best_epoch >= 1 and len(res.history) >= 1


def test_early_stopping_stops():
    train, valid = toy_set(40, 0), toy_set(20, 1)
    # random labels on valid: validation loss cannot keep improving
    valid.labels = torch.randint(0, 2, (20,), generator=torch.Generator().manual_seed(5))
    model = build_model("tiny_cnn", 2)
    res = fit(model, train, valid, epochs=50, patience=2, batch_size=8, lr=1e-2, mean=0.3, std=0.3,
              device=CPU, seed=0)
    assert res.stopped_early and len(res.history) < 50
    assert len(res.history) == res.best_epoch + 2


def test_nan_guard_fires():
    train, valid = toy_set(32, 0), toy_set(16, 1)
    model = build_model("tiny_cnn", 2)
    with pytest.raises(FloatingPointError, match="loss became nan"):
        fit(model, train, valid, epochs=2, patience=2, batch_size=8, lr=1e-3, mean=0.3, std=float("nan"),
            device=CPU, seed=0)


def test_bitwise_repeatable_on_cpu(tmp_path):
    train, valid = toy_set(48, 0), toy_set(16, 1)
    weights = []
    for run in range(2):
        torch.manual_seed(0)  # same initial weights; fit's seed then fixes everything else
        model = build_model("tiny_cnn", 2)
        fit(model, train, valid, epochs=2, patience=2, batch_size=8, lr=1e-3, mean=0.3, std=0.3,
            device=CPU, seed=7, out_dir=tmp_path / f"r{run}")
        weights.append(model.state_dict())
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k
    metrics = pd.read_csv(tmp_path / "r0" / "metrics.csv")
    assert list(metrics["epoch"]) == [1, 2] and (tmp_path / "r0" / "best.pt").is_file()


def test_predict_returns_logits_labels_paths():
    data = toy_set(10)
    logits, labels, paths = predict(build_model("tiny_cnn", 2), data, 0.3, 0.3, CPU, batch_size=4)
    assert logits.shape == (10, 2) and torch.equal(labels, data.labels) and paths == data.paths


class LinearNet(torch.nn.Module):
    """No dropout or batch norm: the same function in train and eval mode."""

    def __init__(self, size=16):
        super().__init__()
        self.fc = torch.nn.Linear(3 * size * size, 2)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_an_epochs_loss_and_accuracy_are_the_image_means_of_the_step_losses():
    """With a rate of 0 the weights stay put, so the epoch's numbers must equal one evaluation of
    the same images: each step's mean loss weighted by its batch (37 images: a last batch of 5)."""
    train = toy_set(37, 0)
    model = LinearNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    loss, accuracy = training.train_one_epoch(model, train, optimizer, 8, 0.3, 0.3, CPU, None,
                                              torch.Generator().manual_seed(0))
    expected = evaluate(model, train, 0.3, 0.3, CPU)
    assert loss == pytest.approx(expected["loss"], rel=1e-6) and accuracy == pytest.approx(expected["accuracy"])


def test_the_step_loop_reads_the_device_every_few_dozen_steps_not_every_step(monkeypatch):
    """Each `.item()` / `.tolist()` / truth test of a tensor makes the host wait for the device: 60 steps
    read the running sums every CHECK_EVERY steps and once at the end, plus the shuffled order (on the
    CPU): at most 60 / CHECK_EVERY + 2 reads (before: 2 reads and a NaN check per step, 180)."""
    reads = []
    for name in ("item", "tolist", "__bool__"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, _f=original, _n=name: reads.append(_n) or _f(self))
    train = toy_set(60 * 4, 0)
    training.train_one_epoch(LinearNet(), train, torch.optim.SGD(LinearNet().parameters(), lr=0.0), 4, 0.3, 0.3,
                             CPU, None, torch.Generator().manual_seed(0))
    assert 1 <= len(reads) <= 60 // training.CHECK_EVERY + 2, reads


def test_balanced_class_weights_are_inverse_frequencies():
    from safehil.training.training import balanced_class_weights
    weights = balanced_class_weights(torch.tensor([0, 0, 0, 1]), 3)
    assert torch.allclose(weights, torch.tensor([4 / 9, 4 / 3, 0.0]))  # n / (C x count), C = 3


def test_balanced_class_weights_lift_a_minority_class_the_images_cannot_tell_apart():
    """Images without signal: the unweighted loss is least at p(minority) = its share (1/6); the
    balanced loss at 1/2. The trained model's mean p(minority) must follow."""
    labels = torch.tensor([0] * 30 + [1] * 6)
    images = torch.full((36, 3, 16, 16), 128, dtype=torch.uint8)
    train = ImageSet(images, labels, [f"img{i}" for i in range(36)], ["common", "rare"])
    p_rare = {}
    for weights in ("none", "balanced"):
        model = build_model("tiny_cnn", 2)
        fit(model, train, train, epochs=25, patience=25, batch_size=12, lr=1e-2, mean=0.5, std=0.25, device=CPU,
            seed=0, class_weights=weights, restore="last")
        p_rare[weights] = torch.softmax(predict(model, train, 0.5, 0.25, CPU)[0], 1)[:, 1].mean().item()
    assert p_rare["none"] < 0.35 and 0.4 < p_rare["balanced"] < 0.6, p_rare
