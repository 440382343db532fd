"""The toolkit's CIFAR ResNet18 as at the commit of its published table: a 3x3 stride-1 stem
followed by torchvision's 3x3 stride-2 max-pool (32 px enters layer1 at 16 px and reaches layer4
at 2 x 2, where torchvision's 7x7 stem reaches 1 x 1), Dropout 0.5 before the classifier, the
trunk/head split and the MC-dropout fast path (= T full passes)."""
import pytest
import torch
import torch.nn as nn

from conftest import fast_and_full_mc_probs
from safehil.training.models import build_model, has_dropout, split_trunk_head
from safehil.core.utils import InputError


def feature_sides(model, x):
    """Side length of the output of the stem and of each residual stage for input x."""
    sides = {}

    def keep(name):
        def hook(module, inputs, output):
            sides.setdefault(name, output.shape[-1])   # the first call: the stem's relu runs once more per block
        return hook

    for name in ("relu", "layer1", "layer2", "layer3", "layer4"):
        getattr(model, name).register_forward_hook(keep(name))
    with torch.no_grad():
        model.eval()(x)
    return sides


def test_the_3x3_stem_keeps_the_max_pool_so_layer1_sees_16_px_and_layer4_2x2():
    torch.manual_seed(0)
    model = build_model("resnet18_cifar", 10)
    assert (model.conv1.kernel_size, model.conv1.stride) == ((3, 3), (1, 1))
    assert isinstance(model.maxpool, nn.MaxPool2d)
    assert (model.maxpool.kernel_size, model.maxpool.stride, model.maxpool.padding) == (3, 2, 1)
    x = torch.randn(2, 3, 32, 32)
    assert feature_sides(model, x) == {"relu": 32, "layer1": 16, "layer2": 8, "layer3": 4, "layer4": 2}
    assert feature_sides(build_model("resnet18", 10), x)["layer4"] == 1   # torchvision's stem: 7x7/2 + max-pool
    assert model(x).shape == (2, 10)


def test_dropout_half_sits_before_the_classifier_and_the_head_holds_it():
    torch.manual_seed(0)
    model = build_model("resnet18_cifar", 4).eval()
    assert isinstance(model.fc[0], nn.Dropout) and model.fc[0].p == 0.5 and model.fc[1].out_features == 4
    trunk, head = split_trunk_head(model)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(head(trunk(x)), model(x), rtol=0, atol=1e-5)
    assert not has_dropout(trunk) and has_dropout(head)


def test_mc_dropout_fast_path_equals_t_full_passes_for_a_seed():
    torch.manual_seed(0)
    model = build_model("resnet18_cifar", 5)
    fast, plain = fast_and_full_mc_probs(model, torch.randn(3, 3, 32, 32), 7, seed=2)
    assert fast.shape == (7, 3, 5)
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-6)
    assert (fast[0] - fast[1]).abs().max() > 1e-5   # the passes differ: dropout samples


def test_imagenet_weights_are_refused_with_the_fix():
    with pytest.raises(InputError, match="weights none"):
        build_model("resnet18_cifar", 10, weights="imagenet")
