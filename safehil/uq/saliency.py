"""Saliency maps (vanilla gradient, Grad-CAM) and the pixel-reveal masks of the paper's XAI
experiment: keep only a share of the pixels, ordered by saliency, and fill the rest.

Maps, both [N, 3, H, W] normalised float images -> [N, H, W] float32, >= 0, one forward
and one backward pass per batch (the model runs in eval mode, or with `dropout=True` with its
dropout layers on as the R4VR scripts take the gradient; batch norm stays on running statistics
either way, so images do not interact and the gradient of the summed target logits is each
image's own gradient):
- `gradient_saliency`: |d logit_target / d input|, maximum over the colour channels.
- `gradcam`: Grad-CAM on the last convolutional block (`gradcam_layer`), ReLU of the
  gradient-weighted sum of its feature maps, bilinearly upsampled to H x W.
The target is the predicted class unless `target` is given.

Reveal orders (`ORDERS`): 'saliency' (most salient pixels first), 'random' and
'least_salient' (the baselines). `order_ranks` turns a map into a rank per pixel
(0 = revealed first; ties go to the lower raster index, so it is deterministic); revealing
a share keeps the pixels whose rank is below round(share * H * W), so the revealed sets are
nested as the share grows. Hidden pixels are set to `fill` in normalised space (the paper:
0, i.e. the data set's mean grey).
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from safehil.training.models import TinyCNN
from safehil.training.training import unwrap

ORDERS = ("saliency", "random", "least_salient")
METHODS = ("gradient", "gradcam")


# ============================================================================ saliency maps

@contextlib.contextmanager
def _eval_mode(model: nn.Module, dropout: bool = False):
    """Every module in eval mode (dropout off, batch norm on running statistics) inside the
    block, or with `dropout` every dropout layer in train mode (one random mask per image: the
    R4VR saliency scripts' gradient, see `gradient_saliency`); each module's own mode is
    restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    if dropout:
        for m in model.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.train()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def _check_images(images: torch.Tensor) -> None:
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"expected normalised float images [N, C, H, W], got {tuple(images.shape)} "
                         f"{images.dtype}")


def _target_index(logits: torch.Tensor, target) -> torch.Tensor:
    """Class index per image [N]: the argmax of `logits` [N, C] when target is None, else
    `target` (an int for every image or a tensor [N])."""
    n, c = logits.shape
    if target is None:
        return logits.detach().argmax(1)
    index = torch.as_tensor(target, dtype=torch.long, device=logits.device).reshape(-1)
    if index.numel() == 1:
        index = index.expand(n)
    if index.numel() != n or bool(((index < 0) | (index >= c)).any()):
        raise ValueError(f"target must be one class index or {n} indices in [0, {c}), got {target}")
    return index


def _target_score(logits: torch.Tensor, target) -> torch.Tensor:
    """Sum over the batch of each image's target logit (a scalar to differentiate)."""
    return logits.gather(1, _target_index(logits, target)[:, None]).sum()


def gradient_saliency(model: nn.Module, images: torch.Tensor, target=None, dropout: bool = False) -> torch.Tensor:
    """Vanilla gradient saliency: [N, 3, H, W] -> [N, H, W] float32.

    |d logit_target / d x| with the maximum over channels; target: None (predicted class of
    this forward pass), an int or a tensor [N]. The model runs in eval mode, or with `dropout`
    with its dropout layers on (a random mask per image, drawn from torch's global generator;
    batch norm stays on running statistics): as R4VR's saliency scripts take the gradient (NEU
    never calls eval, Severstal's mc_predict leaves dropout on). Modes are restored afterwards;
    one backward pass for the whole batch; parameter .grad fields are left untouched.
    """
    _check_images(images)
    net = unwrap(model)
    x = images.detach().float().clone().requires_grad_(True)
    with _eval_mode(net, dropout), torch.enable_grad():
        logits = net(x).float()
        (grad,) = torch.autograd.grad(_target_score(logits, target), x)
    return grad.abs().amax(1)


def gradcam_layer(model: nn.Module) -> nn.Module:
    """The layer Grad-CAM reads: ResNet layer4, the last conv of VGG's features,
    EfficientNet features[-1], the tiny CNN's last conv; else the model's last nn.Conv2d."""
    net = unwrap(model)
    if isinstance(net, torchvision.models.ResNet):
        return net.layer4
    if isinstance(net, torchvision.models.EfficientNet):
        return net.features[-1]
    scope = net.features if isinstance(net, (torchvision.models.VGG, TinyCNN)) else net
    convs = [m for m in scope.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(net).__name__} has no Conv2d layer for Grad-CAM; pass layer=...")
    return convs[-1]


def gradcam(model: nn.Module, images: torch.Tensor, target=None, layer: nn.Module | None = None,
            dropout: bool = False) -> torch.Tensor:
    """Grad-CAM: [N, 3, H, W] -> [N, H, W] float32, >= 0.

    A = the output [N, K, h, w] of `layer` (default `gradcam_layer(model)`), weights
    alpha [N, K] = spatial mean of d logit_target / d A; map = ReLU(sum_k alpha_k A_k),
    bilinearly upsampled to H x W (a convex combination, so it stays >= 0). Eval mode (or
    dropout on, as in `gradient_saliency`), one forward and one backward pass per batch; target
    as in `gradient_saliency`.
    """
    _check_images(images)
    net = unwrap(model)
    layer = gradcam_layer(net) if layer is None else layer
    kept = {}

    def keep_output(module, inputs, output):
        kept["a"] = output
        return output.clone()  # a later in-place op (VGG's ReLU(inplace=True)) must not change A

    # the input requires grad so that A does too when the layers up to it are frozen
    x = images.detach().float().clone().requires_grad_(True)
    handle = layer.register_forward_hook(keep_output)
    try:
        with _eval_mode(net, dropout), torch.enable_grad():
            logits = net(x).float()
            if "a" not in kept:
                raise ValueError(f"the Grad-CAM layer {type(layer).__name__} did not run in the forward pass")
            a = kept["a"]
            if a.ndim != 4:
                raise ValueError(f"the Grad-CAM layer must output [N, K, h, w], got {tuple(a.shape)}")
            (grad,) = torch.autograd.grad(_target_score(logits, target), a)
    finally:
        handle.remove()
    weights = grad.float().mean((2, 3), keepdim=True)                   # [N, K, 1, 1]
    cam = (weights * a.detach().float()).sum(1, keepdim=True).relu()   # [N, 1, h, w]
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return cam[:, 0].clamp_min(0.0)  # clamp: rounding in the interpolation must not leave -0.0


SALIENCY = {"gradient": gradient_saliency, "gradcam": gradcam}


def saliency_map(model: nn.Module, images: torch.Tensor, method: str = "gradient", target=None,
                 dropout: bool = False) -> torch.Tensor:
    """[N, 3, H, W] -> [N, H, W] with the named method ('gradient' or 'gradcam'); `dropout`: dropout
    layers on during the gradient (the R4VR scripts), else eval mode."""
    if method not in SALIENCY:
        raise ValueError(f"unknown saliency method {method!r}; choose from {METHODS}")
    return SALIENCY[method](model, images, target=target, dropout=dropout)


# ============================================================================ reveal masks

def pixels_for_share(share: float, n_pixels: int) -> int:
    """How many of `n_pixels` a share in [0, 1] reveals: round half up of share * n_pixels."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1] (a fraction of the pixels), got {share}")
    return min(n_pixels, int(math.floor(share * n_pixels + 0.5)))


def ranks_from_scores(scores: torch.Tensor) -> torch.Tensor:
    """Rank of every pixel, highest score first: [N, H, W] -> int64 [N, H, W], 0 = revealed
    first; equal scores go to the lower raster index (a stable sort: deterministic)."""
    if scores.ndim != 3:
        raise ValueError(f"expected scores [N, H, W], got {tuple(scores.shape)}")
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("saliency holds NaN or inf values")
    flat = scores.flatten(1)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)  # pixel index per rank
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks.view(scores.shape)


def random_ranks(n: int, height: int, width: int, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """A uniformly random reveal order per image: int64 [n, height, width] (a permutation of
    0 .. H*W-1 each), drawn from `generator` on its own device, returned on `device`."""
    draw_device = generator.device if generator is not None else torch.device("cpu")
    scores = torch.rand(n, height, width, generator=generator, device=draw_device)
    return ranks_from_scores(scores).to(device)


def order_ranks(order: str, saliency: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Reveal ranks [N, H, W] for one of ORDERS from a saliency map [N, H, W] (the random
    order ignores the map's values and draws from `generator`)."""
    if order == "saliency":
        return ranks_from_scores(saliency)
    if order == "least_salient":
        return ranks_from_scores(-saliency)
    if order == "random":
        n, h, w = saliency.shape
        return random_ranks(n, h, w, generator, saliency.device)
    raise ValueError(f"unknown reveal order {order!r}; choose from {ORDERS}")


def reveal_mask(ranks: torch.Tensor, share: float) -> torch.Tensor:
    """bool [N, H, W]: True for the round(share * H * W) pixels of lowest rank in each image."""
    return ranks < pixels_for_share(share, ranks.shape[-2] * ranks.shape[-1])


def apply_reveal(images: torch.Tensor, mask: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """Keep images [N, C, H, W] where mask [N, H, W] is True, set every channel elsewhere to `fill`."""
    if mask.shape != (images.shape[0], *images.shape[-2:]):
        raise ValueError(f"mask {tuple(mask.shape)} does not fit images {tuple(images.shape)}")
    return images.where(mask[:, None], torch.as_tensor(fill, dtype=images.dtype, device=images.device))


def reveal_top_k(images: torch.Tensor, saliency: torch.Tensor, share: float, fill: float = 0.0) -> torch.Tensor:
    """Keep exactly round(share * H * W) most salient pixels per image, the rest = fill.

    images [N, C, H, W] (normalised), saliency [N, H, W], share in [0, 1]; ties go to the
    lower raster index.
    """
    return apply_reveal(images, reveal_mask(order_ranks("saliency", saliency), share), fill)


def reveal_least_salient(images: torch.Tensor, saliency: torch.Tensor, share: float,
                         fill: float = 0.0) -> torch.Tensor:
    """Baseline: keep the round(share * H * W) least salient pixels per image, the rest = fill."""
    return apply_reveal(images, reveal_mask(order_ranks("least_salient", saliency), share), fill)


def reveal_random(images: torch.Tensor, share: float, generator: torch.Generator | None = None,
                  fill: float = 0.0) -> torch.Tensor:
    """Baseline: keep round(share * H * W) uniformly random pixels per image, the rest = fill."""
    n, _, h, w = images.shape
    return apply_reveal(images, reveal_mask(random_ranks(n, h, w, generator, images.device), share), fill)
