"""Each R4VR augmentation pinned to its published formula on a known image (HiL ML/<data set>/
data_utils.py): NEU's multiplicative brightness gradient, Severstal's ColorJitter ops (against
torchvision's own functions) in a per-image order and its gamma, the rotation of the raw image
before the crop, a rigid rotation of non-square strips, and the one-channel expansion with
per-channel normalisation in `to_model_input`."""
import math

import pytest
import torch
import torchvision.transforms.functional as TF

from safehil.data.augment import (GAMMA_RANGE, GRADIENT_MAX, Augmenter, adjust_brightness, adjust_contrast, adjust_gamma, adjust_hue, adjust_saturation, brightness_gradient, centre_crop, color_jitter, rotate_batch, severstal_draws, to_model_input)


def image_with_range(value, low, high, h=8, w=8):
    """[1, 1, h, w] of `value` with one pixel at `low` and one at `high` in the middle (its range)."""
    x = torch.full((1, 1, h, w), value)
    x[0, 0, h // 2, w // 2 - 1], x[0, 0, h // 2, w // 2] = low, high
    return x


@pytest.mark.parametrize("orientation, first, last", [(0, "left", "right"), (1, "right", "left"),
                                                      (2, "top", "bottom"), (3, "bottom", "top")])
def test_gradient_corners_are_one_minus_a_and_one_plus_a_times_the_pixel(orientation, first, last):
    x, a = image_with_range(0.4, 0.0, 1.0), 0.3
    out = brightness_gradient(x, torch.tensor([a]), torch.tensor([orientation]))[0, 0]
    edge = {"left": out[:, 0], "right": out[:, -1], "top": out[0], "bottom": out[-1]}
    assert torch.allclose(edge[first], torch.full_like(edge[first], (1 - a) * 0.4))
    assert torch.allclose(edge[last], torch.full_like(edge[last], (1 + a) * 0.4))


def test_gradient_is_clamped_to_the_images_own_range_not_to_0_1():
    x, a = image_with_range(0.5, 0.2, 0.6), 0.5
    out = brightness_gradient(x, torch.tensor([a]), torch.tensor([0]))[0, 0]
    assert torch.allclose(out[0, 0], torch.tensor(0.25))          # (1 - a) x, inside [0.2, 0.6]
    assert torch.allclose(out[0, -1], torch.tensor(0.6))          # (1 + a) x = 0.75, clamped to the image's max
    assert out.min() >= 0.2 - 1e-6 and out.max() <= 0.6 + 1e-6
    constant = torch.full((1, 3, 8, 8), 0.3)                       # a constant image has nowhere to go
    assert torch.equal(brightness_gradient(constant, torch.tensor([0.5]), torch.tensor([2])), constant)


def test_augmenter_draws_gradient_strengths_up_to_one_half_in_all_four_orientations():
    x = image_with_range(0.4, 0.0, 1.0, 8, 8).repeat(400, 1, 1, 1)
    out = Augmenter("neu", use_aug=True, base="none")(x, torch.Generator().manual_seed(0))[:, 0]
    horizontal = (out[:, 0, 0] - out[:, 1, 0]).abs() < 1e-6            # the first column is constant
    left, right, top, bottom = out[:, 0, 0], out[:, 0, -1], out[:, 0, 0], out[:, -1, 0]
    a = torch.where(horizontal, (right - left).abs(), (bottom - top).abs()) / (2 * 0.4)
    assert a.max() <= GRADIENT_MAX + 1e-5 and a.max() > 0.45 and a.min() < 0.05
    rising = torch.where(horizontal, right > left, bottom > top)
    for group in (horizontal & rising, horizontal & ~rising, ~horizontal & rising, ~horizontal & ~rising):
        assert 0.15 < group.float().mean() < 0.35                      # four orientations, about 1/4 each


def test_jitter_ops_equal_torchvisions_on_a_colour_image():
    x = torch.rand(3, 3, 10, 12, generator=torch.Generator().manual_seed(0))
    f = torch.tensor([0.5, 1.0, 1.5])
    for ours, theirs in ((adjust_brightness, TF.adjust_brightness), (adjust_contrast, TF.adjust_contrast),
                         (adjust_saturation, TF.adjust_saturation)):
        expected = torch.stack([theirs(img, float(v)) for img, v in zip(x, f)])
        assert torch.allclose(ours(x, f), expected, atol=1e-5), ours.__name__
    shift = torch.tensor([-0.05, 0.0, 0.05])
    expected = torch.stack([TF.adjust_hue(img, float(v)) for img, v in zip(x, shift)])
    assert torch.allclose(adjust_hue(x, shift), expected, atol=1e-5)


def test_jitter_on_one_grey_channel_equals_jitter_on_three_equal_channels():
    grey = torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    factors = torch.tensor([[1.3, 0.6, 1.4, 0.05]] * 4)
    order = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0], [1, 0, 3, 2], [2, 3, 0, 1]])
    one = color_jitter(grey, factors, order)
    three = color_jitter(grey.expand(-1, 3, -1, -1), factors, order)
    assert torch.allclose(one.expand(-1, 3, -1, -1), three, atol=1e-3)  # torchvision's grey weights sum to 0.9999


def test_jitter_applies_each_images_own_op_order():
    x = torch.tensor([0.2, 0.9]).view(1, 1, 1, 2).repeat(2, 1, 1, 1)   # mean 0.55
    factors = torch.tensor([[1.5, 0.5, 1.0, 0.0]] * 2)
    order = torch.tensor([[0, 1, 2, 3], [1, 0, 2, 3]])                 # brightness first | contrast first
    out = color_jitter(x, factors, order)
    bright_then_contrast = adjust_contrast(adjust_brightness(x[:1], factors[:1, 0]), factors[:1, 1])
    contrast_then_bright = adjust_brightness(adjust_contrast(x[1:], factors[1:, 1]), factors[1:, 0])
    assert torch.allclose(out[0], bright_then_contrast[0]) and torch.allclose(out[1], contrast_then_bright[0])
    assert not torch.allclose(out[0], out[1])                           # the order matters here
    # brightness 1.5 -> (0.3, 1.0) (1.35 clamped); contrast 0.5 around their mean 0.65 -> (0.475, 0.825)
    assert torch.allclose(out[0].flatten(), torch.tensor([0.475, 0.825]))


def test_gamma_is_x_to_the_gamma():
    x = torch.tensor([0.25, 0.5, 1.0]).view(1, 1, 1, 3).repeat(2, 1, 1, 1)
    out = adjust_gamma(x, torch.tensor([2.0, 0.5]))
    assert torch.allclose(out[0].flatten(), torch.tensor([0.0625, 0.25, 1.0]))
    assert torch.allclose(out[1].flatten(), torch.tensor([0.5, math.sqrt(0.5), 1.0]))


def test_severstal_draws_jitter_0_6_0_6_0_4_0_05_in_random_order_and_gamma_with_p_0_8():
    g = torch.Generator().manual_seed(0)
    factors, order, gamma = severstal_draws(20000, lambda *shape: torch.rand(*shape, generator=g))
    for column, (low, high) in enumerate([(0.4, 1.6), (0.4, 1.6), (0.6, 1.4), (-0.05, 0.05)]):
        f = factors[:, column]
        assert f.min() >= low and f.max() <= high and f.min() < low + 0.01 and f.max() > high - 0.01
    assert (order.sort(dim=1).values == torch.arange(4)).all()            # each row a permutation
    first = torch.bincount(order[:, 0], minlength=4).float() / len(order)
    assert torch.allclose(first, torch.full((4,), 0.25), atol=0.02)        # every op first about 1/4 of the time
    applied = gamma != 1
    assert abs(applied.float().mean().item() - 0.8) < 0.015
    assert gamma[applied].min() >= GAMMA_RANGE[0] and gamma[applied].max() <= GAMMA_RANGE[1] == 2.5


def test_severstal_augmentation_of_a_grey_pixel_is_a_brightness_factor_then_gamma():
    # one channel: saturation and hue do nothing and the contrast of a constant image is itself, so a
    # pixel x = 0.5 becomes (b x) ** g with b in [0.4, 1.6] and g in [0.4, 2.5] or 1: in [0.2^2.5, 0.8^0.4]
    x = torch.full((2000, 1, 2, 2), 0.5)
    out = Augmenter("severstal", use_aug=True, base="none")(x, torch.Generator().manual_seed(0))
    assert out.min() >= 0.2 ** 2.5 - 1e-6 and out.max() <= 0.8 ** 0.4 + 1e-6
    assert out.min() < 0.05 and out.max() > 0.85                          # the extremes are reached
    assert (out.flatten(1).std(1) < 1e-6).all()                           # still constant images


def test_rotation_happens_before_the_crop():
    # a 36 x 36 stored image (a 32 crop with a 2-pixel margin) holding a mark just above the crop: only a
    # rotation of the whole (raw) image can bring it into the 32 x 32 the network sees
    x = torch.zeros(256, 1, 36, 36)
    x[:, :, 0:2, 16:20] = 1.0
    assert centre_crop(x, (32, 32)).sum() == 0
    out = Augmenter("neu", use_aug=False, base="paper")(x, torch.Generator().manual_seed(0), size=(32, 32))
    assert out.shape == (256, 1, 32, 32)
    assert (out.flatten(1).amax(1) == 1.0).float().mean() > 0.5   # most rotations bring part of the mark in


def test_rotation_of_a_strip_is_rigid_not_sheared():
    x = torch.zeros(1, 1, 21, 101)
    x[0, 0, 9:12, 79:82] = 1.0                  # a 3 x 3 mark 30 pixels right of the centre (50, 10)
    out = rotate_batch(x, torch.tensor([10.0]))[0, 0]
    ys, xs = torch.nonzero(out > 0.5, as_tuple=True)
    dx, dy = xs.float().mean() - 50, ys.float().mean() - 10
    assert math.isclose(math.hypot(dx, dy), 30.0, abs_tol=1.0)     # distance to the centre kept
    assert math.isclose(abs(math.degrees(math.atan2(dy, dx))), 10.0, abs_tol=2.0)


def test_grey_images_are_expanded_to_three_channels_and_normalised_per_channel():
    x = torch.full((2, 1, 4, 6), 128, dtype=torch.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    out = to_model_input(x, mean, std, torch.device("cpu"))
    assert out.shape == (2, 3, 4, 6)
    for c in range(3):
        assert torch.allclose(out[:, c], torch.full((2, 4, 6), (128 / 255 - mean[c]) / std[c]))
    scalar = to_model_input(x, 0.5, 0.25, torch.device("cpu"))
    assert torch.allclose(scalar, torch.full((2, 3, 4, 6), (128 / 255 - 0.5) / 0.25), atol=1e-6)
