"""Our statistics and saliency maps against independent implementations: ECE against
torchmetrics, Grad-CAM against captum (each skipped where the library is not installed; neither
is a dependency), and AUROC against the Mann-Whitney probability counted by hand."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from safehil.uq import saliency
from safehil.uq import uncertainty as U


def test_ece_matches_torchmetrics():
    functional = pytest.importorskip("torchmetrics.functional.classification")
    g = torch.Generator().manual_seed(0)
    probs = (torch.randn(600, 5, generator=g) * 2).softmax(1)
    labels = torch.randint(0, 5, (600,), generator=g)
    for n_bins in (5, 15):
        theirs = functional.multiclass_calibration_error(probs, labels, num_classes=5, n_bins=n_bins, norm="l1")
        assert U.expected_calibration_error(probs, labels, n_bins) == pytest.approx(float(theirs), abs=1e-5)


class SmallConvNet(nn.Module):
    """conv -> ReLU -> max pool -> conv (the Grad-CAM layer) -> ReLU -> global mean -> linear; no in-place ops."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        a = nn.functional.max_pool2d(self.conv1(x).relu(), 2)
        return self.fc(self.conv2(a).relu().mean((2, 3)))


def test_gradcam_matches_captum():
    attr = pytest.importorskip("captum.attr")
    torch.manual_seed(0)
    net = SmallConvNet().eval()
    x = torch.randn(5, 3, 16, 16)
    target = torch.tensor([0, 1, 2, 3, 1])
    ours = saliency.gradcam(net, x, target, layer=net.conv2)                      # [5, 16, 16]
    cam = attr.LayerGradCam(net, net.conv2).attribute(x, target=target, relu_attributions=True)  # [5, 1, 8, 8]
    theirs = attr.LayerAttribution.interpolate(cam, (16, 16), "bilinear")[:, 0]
    assert ours.shape == theirs.shape and float(ours.abs().max()) > 0
    torch.testing.assert_close(ours, theirs.detach().float(), atol=1e-5, rtol=1e-4)


def test_score_auroc_is_the_probability_a_wrong_prediction_scores_higher_ties_half():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, 200).astype(float)  # many ties
    wrong = rng.random(200) < 0.3
    pairs = [(s_w > s_r) + 0.5 * (s_w == s_r) for s_w in scores[wrong] for s_r in scores[~wrong]]
    assert U.score_auroc(scores, wrong) == pytest.approx(float(np.mean(pairs)), abs=1e-12)
    assert U.score_auroc(-scores, wrong) == pytest.approx(1 - float(np.mean(pairs)), abs=1e-12)
    assert math.isnan(U.score_auroc(scores, np.zeros(200, bool)))  # all right: undefined, not an error
    assert math.isnan(U.score_auroc(scores, np.ones(200, bool)))
