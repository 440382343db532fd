"""The papers' train-time augmentations, batched on tensors (like torchvision's presets.py), each
as published in the R4VR code (`HiL ML/<data set>/data_utils.py`): the base augmentation (rotation
of the raw image before the crop, then a horizontal flip; flip only; the toolkit's padded crop and
flip; or none), NEU's multiplicative
brightness gradient, Severstal's ColorJitter (its four ops in random order) and random gamma; the
`Augmenter` that applies them per style; the normalisation statistics (`image_mean_std`) and
`to_model_input` (uint8 batch with 1 or 3 channels -> normalised float batch with 3 channels).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF


def image_mean_std(images: torch.Tensor) -> tuple[float, float]:
    """(mean, std) of uint8 images [N, ...] on the [0, 1] scale.

    Large (e.g. memory-mapped) sets are summed in chunks in float64, never copied whole as floats.
    """
    if images.numel() > 2**26:
        return _chunked_mean_std(images)
    x = images.float().div_(255)
    return float(x.mean()), float(x.std().clamp_min(1e-6))


def _chunked_mean_std(images: torch.Tensor, chunk: int = 512) -> tuple[float, float]:
    """Mean and sample std of uint8 images [N, ...] / 255, in float64, `chunk` images at a time."""
    total, total_sq, count = 0.0, 0.0, 0
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk].to(torch.float64).div_(255)
        total += float(x.sum())
        total_sq += float((x * x).sum())
        count += x.numel()
    mean = total / max(count, 1)
    var = max(total_sq - count * mean * mean, 0.0) / max(count - 1, 1)
    return mean, max(math.sqrt(var), 1e-6)


# ============================================================================ geometry

def rotate_batch(x: torch.Tensor, degrees: torch.Tensor, mode: str = "nearest") -> torch.Tensor:
    """Rotate each image of x [B, C, H, W] about its centre by its own angle in degrees [B], zero
    fill (torchvision's RandomRotation: nearest neighbour, fill 0, same size).

    The angle is a rotation in pixel space for any H, W (the normalised grid is scaled by the
    aspect ratio, so a strip is rotated, not sheared).
    """
    b, _, h, w = x.shape
    rad = degrees.to(x.dtype) * (math.pi / 180)
    cos, sin = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin * (h / w), zero], 1),
                         torch.stack([sin * (w / h), cos, zero], 1)], 1)
    grid = F.affine_grid(theta, [b, x.shape[1], h, w], align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


def centre_crop(x: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """The centre size = (H, W) of x [B, C, H', W'] (H' >= H, W' >= W); x itself when size is None or x's."""
    if size is None or tuple(x.shape[-2:]) == tuple(size):
        return x
    h, w = size
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[..., top:top + h, left:left + w]


def random_crop_padded(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """torchvision's RandomCrop(H, padding) per image, batched: pad x [B, C, H, W] with `padding`
    zeros (black, before normalisation) on every side, then cut each image's own random H x W
    window (offsets uniform in 0..2 * padding) -> [B, C, H, W]."""
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator, device=generator.device).to(x.device)
    rows = (offsets[0, :, None] + torch.arange(h, device=x.device)).view(b, 1, h, 1)
    cols = (offsets[1, :, None] + torch.arange(w, device=x.device)).view(b, 1, 1, w)
    batch = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    channel = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[batch, channel, rows, cols]


# ============================================================================ NEU: brightness gradient

GRADIENT_ORIENTATIONS = ("left_to_right", "right_to_left", "top_to_bottom", "bottom_to_top")


def brightness_gradient(x: torch.Tensor, strength: torch.Tensor, orientation: torch.Tensor) -> torch.Tensor:
    """R4VR NEU's RandomGradient on x [B, C, H, W] in [0, 1] (after ToTensor, before Normalize).

    Each image is multiplied by a linear ramp from 1 - a to 1 + a (a = strength [B]) across its
    width or height; orientation [B] in 0..3 indexes GRADIENT_ORIENTATIONS (the factor rises
    left to right, right to left, top to bottom, bottom to top). The result is clamped to the
    image's own [min, max] (over all its channels), so the gradient never leaves its range.
    """
    b, _, h, w = x.shape
    a = strength.to(x.dtype).view(b, 1, 1)
    along_w = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype).view(1, 1, w).expand(b, h, w)
    along_h = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype).view(1, h, 1).expand(b, h, w)
    o = orientation.view(b, 1, 1)
    t = torch.where(o < 2, along_w, along_h) * torch.where(o % 2 == 0, 1.0, -1.0).to(x.dtype)
    ramp = (1 + a * t).unsqueeze(1)  # [B, 1, H, W]: linspace(1 - a, 1 + a) in the chosen direction
    low = x.amin(dim=(1, 2, 3), keepdim=True)
    high = x.amax(dim=(1, 2, 3), keepdim=True)
    return torch.minimum(torch.maximum(x * ramp, low), high)


# ============================================================================ Severstal: jitter and gamma

def _grey(x: torch.Tensor) -> torch.Tensor:
    """torchvision's rgb_to_grayscale [B, 1, H, W] of x [B, C, H, W] (C = 1: x itself)."""
    if x.shape[1] == 1:
        return x
    return (0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision adjust_brightness per image: (f x) clamped to [0, 1]; x [B, C, H, W], factor [B]."""
    return (x * factor.view(-1, 1, 1, 1)).clamp(0, 1)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision adjust_contrast per image: f x + (1 - f) mean(grey(x)), clamped to [0, 1]."""
    f = factor.view(-1, 1, 1, 1)
    mean = _grey(x).mean(dim=(1, 2, 3), keepdim=True)
    return (f * x + (1 - f) * mean).clamp(0, 1)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision adjust_saturation per image: f x + (1 - f) grey(x), clamped; a grey (1-channel)
    image is returned unchanged, as torchvision does."""
    if x.shape[1] == 1:
        return x
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * _grey(x)).clamp(0, 1)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """torchvision adjust_hue per image (HSV hue rotated by shift [B] of a turn); grey stays grey,
    and a 1-channel image is returned unchanged, as torchvision does."""
    if x.shape[1] == 1:
        return x
    return torch.stack([TF.adjust_hue(img, float(s)) for img, s in zip(x, shift)])


JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def color_jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """ColorJitter on x [B, C, H, W] in [0, 1]: each image gets its own factors [B, 4] (brightness,
    contrast, saturation, hue shift) in its own op order [B, 4] (a permutation of 0..3 indexing
    JITTER_OPS), as torchvision's ColorJitter draws a new order (randperm(4)) per image."""
    x = x.clone()
    for position in range(4):
        for op_index, op in enumerate(JITTER_OPS):
            chosen = (order[:, position] == op_index).nonzero().flatten()
            if len(chosen):
                x[chosen] = op(x[chosen], factors[chosen, op_index])
    return x


def adjust_gamma(x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """torchvision adjust_gamma per image (gain 1): x ** gamma, clamped to [0, 1]; gamma [B]."""
    return x.clamp_min(0).pow(gamma.view(-1, 1, 1, 1)).clamp(0, 1)


# ============================================================================ the augmenter

# rotation +-30 + horizontal flip | horizontal flip only | RandomCrop(S, padding 4) + flip | nothing
BASE_AUGMENTATIONS = ("paper", "flip", "crop_flip", "none")
# The views a model is evaluated, validated and queried on (active_learning.py --eval_augmentation /
# --feature_augmentation): none = the image itself; crop = RandomCrop(S, padding 4) alone, the toolkit's
# eval ops (pycls/datasets/data.py getPreprocessOps with eval_mode: ops[0] = the random crop is kept);
# crop_flip = its train ops (crop + flip), which its coreset features and VAAL inputs go through.
VIEW_AUGMENTATIONS = ("none", "crop", "crop_flip")
CROP_PADDING = 4  # the toolkit's RandomCrop(32, padding=4)
JITTER = (0.6, 0.6, 0.4, 0.05)   # R4VR Severstal: ColorJitter(brightness, contrast, saturation, hue)
GAMMA_RANGE, GAMMA_P = (0.4, 2.5), 0.8   # R4VR Severstal: RandomGamma(gamma_range=(0.4, 2.5), p=0.8)
GRADIENT_MAX = 0.5               # R4VR NEU: RandomGradient(max_alpha=0.5), always applied (p = 1.1)


class Augmenter:
    """The papers' train-time augmentations, batched on tensors, in the published order.

    base (every style): 'paper' = RandomRotation U(-30, 30) of the raw image (before the
    crop), then after the crop a horizontal flip with p 0.5 (the R4VR default); 'flip' =
    horizontal flip only; 'crop_flip' = RandomCrop(S, padding 4, zero fill) then a horizontal
    flip (the active-learning toolkit's CIFAR training transform); 'crop' = the padded random
    crop alone (the toolkit's eval transform: a view, not a training choice); 'none' = neither
    (for images where a flip or rotation can change the class: marks, text, oriented parts).
    style 'neu' (NEU, casting, folders, synthetic, CIFAR): with use_aug the brightness gradient
    (`brightness_gradient`, a ~ U(0, 0.5), one of four orientations), always applied.
    style 'severstal': with use_aug ColorJitter(0.6, 0.6, 0.4, 0.05) in a random op order per
    image, then gamma ~ U(0.4, 2.5) with p 0.8. style 'none': nothing at all (only the crop).
    All randomness comes from `generator` (same device as the batch).
    """

    def __init__(self, style: str = "neu", use_aug: bool = False, base: str = "paper", rotation: float = 30.0):
        if style not in ("neu", "severstal", "none"):
            raise ValueError(f"unknown augmentation style {style!r}; choose neu, severstal or none")
        if base not in BASE_AUGMENTATIONS + ("crop",):
            raise ValueError(f"unknown base augmentation {base!r}; choose from {BASE_AUGMENTATIONS}")
        self.style, self.use_aug, self.base, self.rotation = style, use_aug, base, rotation

    def __call__(self, x: torch.Tensor, generator: torch.Generator, size: tuple[int, int] | None = None
                 ) -> torch.Tensor:
        """x float [B, C, H', W'] in [0, 1] (C = 1 or 3; with a rotation margin H' >= H, W' >= W)
        -> augmented float [B, C, H, W] in [0, 1], (H, W) = size (default: x's own)."""
        if self.style == "none":
            return centre_crop(x, size)
        b, dev = x.shape[0], x.device

        def rand(*shape):
            return torch.rand(*shape, generator=generator, device=generator.device).to(dev)

        def uniform(lo, hi):
            return rand(b) * (hi - lo) + lo

        if self.base == "paper":  # RandomRotation(30) comes first: on the raw image, before Resize/CenterCrop
            x = rotate_batch(x, uniform(-self.rotation, self.rotation))
        x = centre_crop(x, size)
        if self.base in ("crop", "crop_flip"):
            x = random_crop_padded(x, CROP_PADDING, generator)
        if self.base in ("paper", "flip", "crop_flip"):
            flip = rand(b) < 0.5
            x = torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
        if self.use_aug and self.style == "neu":
            x = brightness_gradient(x, uniform(0.0, GRADIENT_MAX), (rand(b) * 4).long().clamp_max(3))
        elif self.use_aug and self.style == "severstal":
            factors, order, gamma = severstal_draws(b, rand)
            x = adjust_gamma(color_jitter(x, factors, order), gamma)
        return x


def view_augmenter(view: str) -> Augmenter | None:
    """The augmenter of a `VIEW_AUGMENTATIONS` name (its base ops alone, no use_aug); None for 'none'."""
    if view not in VIEW_AUGMENTATIONS:
        raise ValueError(f"unknown view {view!r}; choose from {VIEW_AUGMENTATIONS}")
    return None if view == "none" else Augmenter("neu", use_aug=False, base=view)


def severstal_draws(b: int, rand) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The random parameters of Severstal's use_aug for b images, from `rand(*shape)` (uniform [0, 1)):
    (jitter factors [B, 4]: brightness, contrast, saturation ~ U(1 - v, 1 + v), hue ~ U(-0.05, 0.05);
    op order [B, 4], a uniform permutation per image; gamma [B]: U(0.4, 2.5) with p 0.8, else 1)."""
    spans = torch.tensor(JITTER)
    low = torch.tensor([1 - JITTER[0], 1 - JITTER[1], 1 - JITTER[2], -JITTER[3]])
    u = rand(b, 4)
    factors = low.to(u.device) + u * (2 * spans.to(u.device))
    order = rand(b, 4).argsort(dim=1)
    drawn = GAMMA_RANGE[0] + rand(b) * (GAMMA_RANGE[1] - GAMMA_RANGE[0])
    gamma = torch.where(rand(b) < GAMMA_P, drawn, torch.ones_like(drawn))
    return factors, order, gamma


# ============================================================================ to the network

def channel_stats(value, x: torch.Tensor) -> torch.Tensor | float:
    """A mean or std (a number, or 3 per-channel numbers) as something x [B, 3, H, W] broadcasts with."""
    if isinstance(value, (int, float)):
        return float(value)
    return torch.as_tensor(value, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)


def to_model_input(images_uint8: torch.Tensor, mean, std, device: torch.device,
                   augment: Augmenter | None = None, generator: torch.Generator | None = None,
                   size: tuple[int, int] | None = None) -> torch.Tensor:
    """uint8 [B, C, H', W'] -> float normalised [B, 3, H, W] on `device`, augmented when given.

    C = 1 (grey, stored as one channel) is expanded to the networks' 3 channels on the device,
    after the augmentation and before the normalisation. size (H, W): the centre crop to take
    (after the rotation, when augmenting), default the images' own. mean, std: numbers, or 3
    per-channel numbers (ImageNet's for Severstal).
    """
    x = images_uint8.to(device, non_blocking=True).float().div_(255)
    x = augment(x, generator, size) if augment is not None else centre_crop(x, size)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return (x - channel_stats(mean, x)) / channel_stats(std, x)
