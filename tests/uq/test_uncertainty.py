"""uncertainty.py: scores on hand-built probabilities, fast path == plain path, batch norm
untouched, dropout masks, calibration, risk-coverage and AUROC against known values."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from sklearn.metrics import roc_auc_score

from safehil.training import models
from safehil.uq import uncertainty as U
from conftest import fast_and_full_mc_probs
from safehil.data.datasets import ImageSet

torch.set_num_threads(1)


# ============================================================================ scores

def test_entropy_uniform_is_log_c_and_one_hot_is_zero():
    C = 7
    assert U.entropy(torch.full((3, C), 1 / C)) == pytest.approx(torch.full((3,), math.log(C)), abs=1e-6)
    one_hot = torch.eye(C)
    h = U.entropy(one_hot)
    assert torch.isfinite(h).all() and h.abs().max() == 0


def test_uniform_samples_give_log_c_and_no_mutual_information():
    T, N, C = 5, 4, 6
    probs = torch.full((T, N, C), 1 / C)
    assert U.predictive_entropy(probs) == pytest.approx(torch.full((N,), math.log(C)), abs=1e-6)
    assert U.expected_entropy(probs) == pytest.approx(torch.full((N,), math.log(C)), abs=1e-6)
    assert U.mutual_information(probs).abs().max() < 1e-6
    assert U.variation_ratio(probs).shape == (N,)


def test_identical_samples_have_zero_mutual_information():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.0, 1.0, 0.0]])
    probs = p.expand(9, 2, 3)
    assert U.mutual_information(probs).tolist() == [0.0, 0.0]
    assert U.variation_ratio(probs).tolist() == [0.0, 0.0]
    expected = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))
    assert U.predictive_entropy(probs)[0].item() == pytest.approx(expected, rel=1e-6)
    assert U.predictive_entropy(probs)[1].item() == 0.0  # safe at p = 0


def test_disagreeing_one_hot_samples_are_pure_epistemic():
    # two confident samples that disagree: mean uniform over 2 classes, each sample certain
    probs = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # [T=2, N=1, C=2]
    assert U.predictive_entropy(probs).item() == pytest.approx(math.log(2))
    assert U.expected_entropy(probs).item() == 0.0
    assert U.mutual_information(probs).item() == pytest.approx(math.log(2))
    assert U.variation_ratio(probs).item() == pytest.approx(0.5)


def test_variation_ratio_counts_the_modal_class():
    C = 3
    winners = torch.tensor([[0, 1], [0, 1], [1, 1], [2, 1]])  # [T=4, N=2]
    probs = torch.nn.functional.one_hot(winners, C).float() * 0.8 + 0.2 / C
    assert U.variation_ratio(probs).tolist() == pytest.approx([0.5, 0.0])


def test_margin_and_least_confidence_of_the_mean():
    probs = torch.tensor([[[0.7, 0.2, 0.1]], [[0.5, 0.4, 0.1]]])  # mean [0.6, 0.3, 0.1]
    assert U.margin(probs).item() == pytest.approx(0.3)
    assert U.one_minus_margin(probs).item() == pytest.approx(0.7)
    assert U.least_confidence(probs).item() == pytest.approx(0.4)


def test_scores_registry_is_oriented_higher_is_less_certain():
    certain = torch.tensor([0.98, 0.01, 0.01])
    unsure = torch.tensor([0.4, 0.35, 0.25])
    probs = torch.stack([certain, unsure]).expand(4, 2, 3)
    scores = U.all_scores(probs)
    assert set(scores) == set(U.SCORES) and len(U.SCORES) == 6
    for name, values in scores.items():
        assert values.shape == (2,), name
        if name not in ("mutual_information", "variation_ratio"):  # 0 for both (identical samples)
            assert values[1] > values[0], name


# ============================================================================ sampling

def _tiny(num_classes=4, two_dropouts=False, seed=0):
    torch.manual_seed(seed)
    model = models.build_model("tiny_cnn", num_classes)
    if two_dropouts:  # a VGG-like head: dropout, linear, relu, dropout, linear
        model.classifier = nn.Sequential(nn.Dropout(0.5), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.3),
                                         nn.Linear(32, num_classes))
    return model


@pytest.mark.parametrize("two_dropouts", [False, True])
def test_fast_path_equals_plain_path_for_a_fixed_seed(two_dropouts):
    model = _tiny(two_dropouts=two_dropouts)
    x = torch.randn(5, 3, 24, 24)
    fast, plain = fast_and_full_mc_probs(model, x, 11, seed=3)
    assert fast.shape == (11, 5, 4)
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-6)
    assert (fast[0] - fast[1]).abs().max() > 1e-4  # the samples differ: dropout really samples
    again = U.mc_dropout_probs(model, x, 11, torch.Generator().manual_seed(3))
    assert torch.equal(fast, again)
    other = U.mc_dropout_probs(model, x, 11, torch.Generator().manual_seed(4))
    assert not torch.equal(fast, other)


def test_fast_path_equals_plain_path_on_resnet18():
    torch.manual_seed(0)
    model = models.build_model("resnet18", 3)
    x = torch.randn(2, 3, 32, 32)
    fast = U.mc_dropout_probs(model, x, 6, torch.Generator().manual_seed(0))
    plain = U.mc_dropout_probs(model, x, 6, torch.Generator().manual_seed(0), use_fast=False)
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-6)


def test_batch_norm_untouched_and_modes_restored():
    model = _tiny()
    model.train()  # even a model left in train mode must not update its statistics
    x = torch.randn(6, 3, 24, 24) * 3 + 1
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for use_fast in (True, False):
        U.mc_dropout_probs(model, x, 5, torch.Generator().manual_seed(0), use_fast=use_fast)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(m.training for m in model.modules())
    model.eval()
    U.mc_dropout_probs(model, x, 5)
    assert not any(m.training for m in model.modules())


def test_zero_dropout_gives_the_deterministic_prediction():
    model = _tiny()
    model.classifier[0].p = 0.0
    model.eval()
    x = torch.randn(3, 3, 24, 24)
    probs = U.mc_dropout_probs(model, x, 4, torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x).softmax(-1)
    for t in range(4):
        torch.testing.assert_close(probs[t], expected, rtol=0, atol=1e-6)


def test_masks_drop_share_p_and_rescale():
    p, T, B, F = 0.3, 50, 8, 100
    layer = nn.Dropout(p).eval()
    hooks = U._MaskedDropout([layer], T, torch.Generator().manual_seed(0), "fast")
    try:
        out = layer(torch.ones(T * B, F))
    finally:
        hooks.remove()
    values = out.unique()
    assert len(values) == 2 and values[0] == 0 and values[1].item() == pytest.approx(1 / (1 - p))
    assert (out == 0).float().mean().item() == pytest.approx(p, abs=0.01)
    assert out.mean().item() == pytest.approx(1.0, abs=0.02)  # unbiased


def test_dropout_in_the_trunk_falls_back_to_plain_passes():
    model = _tiny()
    model.features.insert(3, nn.Dropout2d(0.5))  # after the first conv block: trunk is stochastic
    assert not U.fast_path_available(model)
    x = torch.randn(4, 3, 24, 24)
    a = U.mc_dropout_probs(model, x, 7, torch.Generator().manual_seed(1))
    b = U.mc_dropout_probs(model, x, 7, torch.Generator().manual_seed(1), use_fast=False)
    assert a.shape == (7, 4, 4) and torch.equal(a, b)
    assert (a[0] - a[1]).abs().max() > 1e-4


def test_unknown_model_and_unknown_dropout_use_plain_passes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.AlphaDropout(0.5), nn.Linear(16, 3))
    assert not U.fast_path_available(model)
    x = torch.randn(5, 3, 2, 2)
    a = U.mc_dropout_probs(model, x, 6, torch.Generator().manual_seed(2))
    b = U.mc_dropout_probs(model, x, 6, torch.Generator().manual_seed(2))
    assert a.shape == (6, 5, 3) and torch.equal(a, b)  # reproducible through the generator
    assert (a[0] - a[1]).abs().max() > 1e-4
    assert torch.allclose(a.sum(-1), torch.ones(6, 5))


def test_loader_version_matches_one_big_batch():
    model = _tiny()
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (7, 3, 24, 24), dtype=torch.uint8)
    data = ImageSet(images, torch.zeros(7, dtype=torch.long), [f"{i}.png" for i in range(7)], list("abcd"))
    probs = U.mc_dropout_predict(model, data, 0.5, 0.25, "cpu", T=3, batch_size=3, generator=g)
    assert probs.shape == (3, 7, 4) and probs.device.type == "cpu"
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 7))
    # a p = 0 head makes every sample the deterministic prediction of the normalised image
    model.classifier[0].p = 0.0
    probs = U.mc_dropout_predict(model, data, 0.5, 0.25, "cpu", T=2, batch_size=4)
    with torch.no_grad():
        expected = model.eval()((images.float() / 255 - 0.5) / 0.25).softmax(-1)
    torch.testing.assert_close(probs[1], expected, rtol=0, atol=1e-6)
    empty = U.mc_dropout_predict(model, data.subset([]), 0.5, 0.25, "cpu", T=2)
    assert empty.shape == (2, 0, 4)


# ============================================================================ calibration

def _two_class(confidence: float, n: int, n_correct: int):
    probs = torch.tensor([[confidence, 1 - confidence]]).expand(n, 2)
    labels = torch.tensor([0] * n_correct + [1] * (n - n_correct))
    return probs, labels


def test_ece_of_a_perfectly_calibrated_toy_is_zero():
    parts = [_two_class(0.6, 100, 60), _two_class(0.8, 50, 40), _two_class(0.95, 40, 38)]
    probs = torch.cat([p for p, _ in parts])
    labels = torch.cat([y for _, y in parts])
    assert U.expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-6)


def test_ece_of_an_overconfident_toy():
    # confidence 0.9 but half right -> gap 0.4; confidence 0.7 and 70 % right -> gap 0
    a, b = _two_class(0.9, 50, 25), _two_class(0.7, 150, 105)
    probs, labels = torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])
    assert U.expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(0.4 * 50 / 200, abs=1e-6)


def test_reliability_diagram_bins():
    probs, labels = _two_class(0.9, 10, 7)
    bins = U.reliability_diagram(probs, labels, n_bins=5)
    assert sum(bins["count"]) == 10 and bins["count"][4] == 10
    assert bins["confidence"][4] == pytest.approx(0.9) and bins["accuracy"][4] == pytest.approx(0.7)
    assert math.isnan(bins["accuracy"][0]) and bins["lower"][0] == 0.0 and bins["upper"][-1] == 1.0
    with pytest.raises(ValueError):
        U.reliability_diagram(probs, labels[:3])


def test_risk_coverage_and_aurc_known_values():
    u = np.array([0.4, 0.1, 0.3, 0.2])
    wrong = np.array([True, False, True, False])
    coverage, risk = U.risk_coverage_curve(u, wrong)
    assert coverage.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert risk.tolist() == pytest.approx([0, 0, 1 / 3, 1 / 2])
    assert U.aurc(u, wrong) == pytest.approx((1 / 3 + 1 / 2) / 4)
    # a useless score (all tied) gives the base error rate at every coverage
    _, risk = U.risk_coverage_curve(np.zeros(6), np.array([1, 0, 1, 0, 0, 0], bool))
    assert risk == pytest.approx(np.full(6, 1 / 3))


def test_score_auroc_known_values_and_ties():
    wrong = np.array([False, False, True, True])
    assert U.score_auroc(np.array([0.1, 0.2, 0.8, 0.9]), wrong) == 1.0
    assert U.score_auroc(np.array([0.9, 0.8, 0.2, 0.1]), wrong) == 0.0
    assert U.score_auroc(np.ones(4), wrong) == 0.5
    assert math.isnan(U.score_auroc(np.ones(4), np.zeros(4, bool)))
    rng = np.random.default_rng(0)
    s, w = rng.integers(0, 5, 200).astype(float), rng.random(200) < 0.3
    assert U.score_auroc(s, w) == pytest.approx(roc_auc_score(w, s))
