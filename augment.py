"""The paper's train-time augmentations, batched on tensors (like torchvision's presets.py): the
base augmentation (flip and rotation, flip only, the toolkit's padded crop and flip, or none), the NEU-style brightness gradient,
the Severstal-style colour jitter, hue shift and gamma; the `Augmenter` that applies them per
style; the normalisation statistics (`image_mean_std`) and `to_model_input` (uint8 batch ->
normalised float batch).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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


def rotate_batch(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image of x [B, C, H, W] by its own angle in degrees [B] (bilinear, zero fill)."""
    rad = degrees * (math.pi / 180)
    cos, sin = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def brightness_gradient(x: torch.Tensor, strength: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Add a linear brightness ramp to x [B, C, H, W] in [0, 1].

    The ramp runs along direction `angle` [B] (radians) from -strength/2 to +strength/2 [B]
    across the image, so brightness rises monotonically along that direction; clamped to [0, 1].
    """
    b, _, h, w = x.shape
    ys = torch.linspace(-0.5, 0.5, h, device=x.device, dtype=x.dtype).view(1, h, 1)
    xs = torch.linspace(-0.5, 0.5, w, device=x.device, dtype=x.dtype).view(1, 1, w)
    cos, sin = torch.cos(angle).view(b, 1, 1), torch.sin(angle).view(b, 1, 1)
    proj = cos * xs + sin * ys
    span = (cos.abs() + sin.abs()) * 0.5  # half extent of the projection so the ramp spans [-1/2, 1/2]
    ramp = proj / span.clamp_min(1e-6) * 0.5
    return (x + strength.view(b, 1, 1, 1) * ramp.unsqueeze(1)).clamp(0, 1)


def color_jitter(x: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor,
                 saturation: torch.Tensor) -> torch.Tensor:
    """Per-image brightness, contrast and saturation factors [B] applied to x [B, 3, H, W] in [0, 1]."""
    b = x.shape[0]
    x = (x * brightness.view(b, 1, 1, 1)).clamp(0, 1)
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    mean = grey.mean(dim=(1, 2, 3), keepdim=True)
    x = (contrast.view(b, 1, 1, 1) * x + (1 - contrast.view(b, 1, 1, 1)) * mean).clamp(0, 1)
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    return (saturation.view(b, 1, 1, 1) * x + (1 - saturation.view(b, 1, 1, 1)) * grey).clamp(0, 1)


def shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate hue of x [B, 3, H, W] by shift [B] (fraction of a turn) in YIQ space; grey stays grey."""
    angle = (shift * 2 * math.pi).view(-1, 1, 1)
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                          dtype=x.dtype, device=x.device)
    yiq = torch.einsum("ij,bjhw->bihw", to_yiq, x)
    i, q = yiq[:, 1], yiq[:, 2]
    cos, sin = torch.cos(angle), torch.sin(angle)
    yiq = torch.stack([yiq[:, 0], cos * i - sin * q, sin * i + cos * q], 1)
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_yiq), yiq).clamp(0, 1)


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


# rotation +-30 + horizontal flip | horizontal flip only | RandomCrop(S, padding 4) + flip | nothing
BASE_AUGMENTATIONS = ("paper", "flip", "crop_flip", "none")
CROP_PADDING = 4  # the toolkit's RandomCrop(32, padding=4)


class Augmenter:
    """The paper's train-time augmentations, batched on tensors.

    base (every style): 'paper' = horizontal flip + rotation U(-30, 30) (the R4VR default),
    'flip' = horizontal flip only, 'crop_flip' = RandomCrop(S, padding 4, zero fill) then a
    horizontal flip (the active-learning toolkit's CIFAR training transform), 'none' = neither
    (for images where a flip or rotation can change the class: marks, text, oriented parts).
    style 'neu' (NEU, casting, folders, synthetic, CIFAR): with use_aug a brightness gradient
    of strength U(0, 0.5) in a random direction. style 'severstal': with use_aug
    ColorJitter(0.6, 0.6, 0.4, 0.05) and gamma U(0.4, 2.5). style 'none': nothing at all.
    All randomness comes from `generator` (same device as the batch).
    """

    def __init__(self, style: str = "neu", use_aug: bool = False, base: str = "paper", rotation: float = 30.0):
        if style not in ("neu", "severstal", "none"):
            raise ValueError(f"unknown augmentation style {style!r}; choose neu, severstal or none")
        if base not in BASE_AUGMENTATIONS:
            raise ValueError(f"unknown base augmentation {base!r}; choose from {BASE_AUGMENTATIONS}")
        self.style, self.use_aug, self.base, self.rotation = style, use_aug, base, rotation

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """x float [B, 3, H, W] in [0, 1] -> augmented float [B, 3, H, W] in [0, 1]."""
        if self.style == "none":
            return x
        b, dev = x.shape[0], x.device

        def uniform(lo, hi):
            return torch.rand(b, generator=generator, device=generator.device).to(dev) * (hi - lo) + lo

        if self.base == "crop_flip":
            x = random_crop_padded(x, CROP_PADDING, generator)
        if self.base in ("paper", "flip", "crop_flip"):
            flip = torch.rand(b, generator=generator, device=generator.device).to(dev) < 0.5
            x = torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
        if self.base == "paper":
            x = rotate_batch(x, uniform(-self.rotation, self.rotation))
        if self.use_aug and self.style == "neu":
            x = brightness_gradient(x, uniform(0.0, 0.5), uniform(0.0, 2 * math.pi))
        elif self.use_aug and self.style == "severstal":
            x = color_jitter(x, uniform(0.4, 1.6), uniform(0.4, 1.6), uniform(0.6, 1.4))
            x = shift_hue(x, uniform(-0.05, 0.05))
            x = x.clamp_min(1e-6) ** uniform(0.4, 2.5).view(b, 1, 1, 1)
        return x


def to_model_input(images_uint8: torch.Tensor, mean: float, std: float, device: torch.device,
                   augment: Augmenter | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float normalised [B, 3, H, W] on `device`, augmented when given."""
    x = images_uint8.to(device, non_blocking=True).float().div_(255)
    if augment is not None:
        x = augment(x, generator)
    return (x - mean) / std
