"""MC-dropout sampling and every score computed from it, calibration and risk-coverage.

Sampling: `mc_dropout_probs(model, images, T)` -> softmax probabilities [T, N, C] for one
batch; `mc_dropout_predict(model, data, mean, std, device, T)` does a whole split. Only the
dropout layers sample; batch norm and everything else stay in eval mode.

Fast path: the network is split into a deterministic trunk and a stochastic head
(models.split_trunk_head). The trunk runs once per batch, the head runs on the T copies of
the trunk's features in one batched call. The dropout masks are drawn by this module, layer
by layer as [T, N, ...] from the explicit torch.Generator, in the same order in the fast and
in the plain path (T full forward passes), so with the same seed both give the same samples.
A model whose dropout sits in the trunk (or that cannot be split) uses the plain path.

Scores, each from probs [T, N, C] -> [N] in nats where it is an entropy, safe at p = 0:
predictive_entropy (entropy of the mean), expected_entropy (mean of the entropies),
mutual_information (BALD: their difference), variation_ratio (1 - share of the modal class
among the T argmaxes), margin (top-1 minus top-2 of the mean; HIGH = certain) and
least_confidence (1 - max of the mean). `SCORES` holds them all oriented so that higher
means less certain (margin enters as one_minus_margin = 1 - margin).

Calibration and selective prediction from the mean probabilities [N, C]:
expected_calibration_error, reliability_diagram, risk_coverage_curve, aurc, and score_auroc
(how well a score separates wrong from right predictions).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from safehil.data.augment import Augmenter, to_model_input
from safehil.data.datasets import ImageSet
from safehil.training.models import enable_mc_dropout, has_dropout, split_trunk_head
from safehil.training.training import _autocast, unwrap
from safehil.core.utils import progress_enabled

# dropout layers whose masks this module draws itself (elementwise or per channel)
_ELEMENTWISE = (nn.Dropout,)
_CHANNELWISE = (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


# ============================================================================ sampling

def _dropout_layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]


def _draw_masks(layer: nn.Module, shape: torch.Size, T: int, generator: torch.Generator | None,
                device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Scaled keep-masks [T, *shape] (per channel for DropoutNd) for one layer's input of `shape`."""
    return dropout_masks(float(layer.p), isinstance(layer, _CHANNELWISE), shape, T, generator, device, dtype)


def dropout_masks(p: float, channelwise: bool, shape, T: int, generator: torch.Generator | None,
                  device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Scaled keep-masks of one dropout layer with rate p whose input is `shape` ([B, ...]):
    [T, *shape], or [T, B, C, 1, ...] per channel. The draws of the MC paths, also fed to the
    exported ONNX graph (deploy.py) so it samples exactly like them."""
    shape = tuple(shape)
    mask_shape = (T, shape[0], shape[1]) + (1,) * (len(shape) - 2) if channelwise else (T, *shape)
    draw_device = generator.device if generator is not None else device
    keep = torch.empty(mask_shape, device=draw_device).bernoulli_(1.0 - p, generator=generator)
    scale = 0.0 if p >= 1.0 else 1.0 / (1.0 - p)
    return (keep * scale).to(device=device, dtype=dtype)


class _MaskedDropout:
    """Forward hooks that make eval-mode dropout layers apply masks drawn from one generator.

    Each layer draws all T masks [T, B, ...] the first time it runs, so draws happen layer
    by layer in execution order in both modes. mode 'fast': the layer sees [T * B, ...] once
    (T copies, t-major) and gets all masks; mode 'plain': it sees [B, ...] T times and gets
    mask t on call t.
    """

    def __init__(self, layers: list[nn.Module], T: int, generator: torch.Generator | None, mode: str):
        self.T, self.generator, self.mode = T, generator, mode
        self.masks: dict[int, torch.Tensor] = {}
        self.calls: dict[int, int] = {}
        self.handles = [layer.register_forward_hook(self._hook) for layer in layers]

    def _hook(self, layer: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        key = id(layer)
        x = inputs[0]
        if self.mode == "fast":
            per_pass = (x.shape[0] // self.T, *x.shape[1:])
            masks = _draw_masks(layer, torch.Size(per_pass), self.T, self.generator, x.device, x.dtype)
            return x * masks.reshape(x.shape[0], *masks.shape[2:])
        if key not in self.masks:
            self.masks[key] = _draw_masks(layer, x.shape, self.T, self.generator, x.device, x.dtype)
            self.calls[key] = 0
        t = self.calls[key]
        if t >= self.T:
            raise RuntimeError("a dropout layer ran more than T times in one MC call (is it reused?)")
        self.calls[key] = t + 1
        return x * self.masks[key][t]

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _maskable(layers: list[nn.Module]) -> bool:
    return all(type(m) in _ELEMENTWISE + _CHANNELWISE for m in layers)


def fast_path_available(model: nn.Module) -> bool:
    """True when `model` splits into a dropout-free trunk and a head whose dropouts we can mask."""
    parts = split_trunk_head(unwrap(model))
    return parts is not None and not has_dropout(parts[0]) and _maskable(_dropout_layers(parts[1]))


def _plain_native(model: nn.Module, x: torch.Tensor, T: int, generator: torch.Generator | None) -> torch.Tensor:
    """T full passes with the layers' own dropout sampling (unknown dropout types) -> logits [T, N, C]."""
    enable_mc_dropout(model)
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        if generator is not None:
            torch.manual_seed(int(torch.randint(2 ** 62, (1,), generator=generator, device=generator.device)))
        return torch.stack([model(x).float() for _ in range(T)])


@torch.no_grad()
def mc_dropout_probs(model: nn.Module, images: torch.Tensor, T: int, generator: torch.Generator | None = None,
                     use_fast: bool = True) -> torch.Tensor:
    """MC-dropout softmax probabilities float32 [T, N, C] for one batch.

    images: normalised float [N, 3, H, W] on the model's device. Only dropout layers sample;
    batch norm uses its running statistics and is never updated. use_fast: run the trunk once
    and the head T times in one call (falls back to T full passes when the model cannot be
    split or has dropout in its trunk); both paths draw the same masks from `generator`.
    The modes of the model's modules are restored afterwards.
    """
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    net = unwrap(model)
    modes = [(m, m.training) for m in net.modules()]
    parts = split_trunk_head(net) if use_fast else None
    fast = parts is not None and not has_dropout(parts[0]) and _maskable(_dropout_layers(parts[1]))
    layers = _dropout_layers(net)
    net.eval()
    try:
        with _autocast(images.device):
            if fast:
                trunk, head = parts
                feats = trunk(images)
                stacked = feats.unsqueeze(0).expand(T, *feats.shape).reshape(T * feats.shape[0], *feats.shape[1:])
                hooks = _MaskedDropout(_dropout_layers(head), T, generator, "fast")
                try:
                    logits = head(stacked).float().reshape(T, feats.shape[0], -1)
                finally:
                    hooks.remove()
            elif _maskable(layers):
                hooks = _MaskedDropout(layers, T, generator, "plain")
                try:
                    logits = torch.stack([net(images).float() for _ in range(T)])
                finally:
                    hooks.remove()
            else:
                logits = _plain_native(net, images, T, generator)
    finally:
        for m, training in modes:
            m.training = training
    return logits.softmax(-1)


@torch.no_grad()
def mc_dropout_predict(model: nn.Module, data: ImageSet, mean: float, std: float, device: torch.device | str,
                       T: int, batch_size: int = 64, generator: torch.Generator | None = None,
                       use_fast: bool = True, desc: str = "MC dropout", augment: Augmenter | None = None,
                       view_per_pass: bool = False) -> torch.Tensor:
    """MC-dropout probabilities float32 [T, N, C] on the CPU for a whole split (uint8 images).

    The batches draw their masks one after another from `generator`, so a fixed seed and
    batch_size reproduce the samples exactly (another batch_size gives other, equally valid ones).
    augment: the view the images are seen through (e.g. the toolkit's eval crop), drawn from
    `generator`: one view per image for all T passes (the toolkit's DBAL: one loader pass, T
    dropout passes on it), or with `view_per_pass` a new view in every pass (its BALD: T calls of
    `get_predictions`, each through the loader's random ops; T full passes, no shared trunk).
    """
    device = torch.device(device)
    chunks = []
    starts = range(0, len(data), batch_size)

    def view(raw):
        x = to_model_input(raw, mean, std, device, augment, generator)
        return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x

    for start in tqdm(starts, desc=desc, leave=False, disable=not progress_enabled()):
        raw = data.images[start:start + batch_size]
        if augment is not None and view_per_pass:
            chunks.append(torch.cat([mc_dropout_probs(model, view(raw), 1, generator, use_fast)
                                     for _ in range(T)]).cpu())
        else:
            chunks.append(mc_dropout_probs(model, view(raw), T, generator, use_fast).cpu())
    if not chunks:
        return torch.empty(T, 0, len(data.class_names))
    return torch.cat(chunks, dim=1)


# ============================================================================ scores

def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats over the last axis: [..., C] -> [...]; 0 * log 0 = 0."""
    probs = probs.float()
    return -torch.special.xlogy(probs, probs).sum(-1)


def predictive_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy of the mean prediction: [T, N, C] -> [N] nats."""
    return entropy(probs.float().mean(0))


def expected_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Mean entropy of the T samples (aleatoric part): [T, N, C] -> [N] nats."""
    return entropy(probs).mean(0)


def mutual_information(probs: torch.Tensor) -> torch.Tensor:
    """BALD: predictive minus expected entropy (epistemic part), >= 0: [T, N, C] -> [N] nats."""
    return (predictive_entropy(probs) - expected_entropy(probs)).clamp_min(0.0)


def variation_ratio(probs: torch.Tensor) -> torch.Tensor:
    """1 - share of the modal class among the T argmaxes: [T, N, C] -> [N] in [0, 1 - 1/T]."""
    T, _, C = probs.shape
    votes = torch.nn.functional.one_hot(probs.argmax(-1), C).sum(0)  # [N, C]
    return (T - votes.max(-1).values).float() / T


def margin(probs: torch.Tensor) -> torch.Tensor:
    """Top-1 minus top-2 of the mean prediction: [T, N, C] -> [N] in [0, 1]; HIGH = certain."""
    mean = probs.float().mean(0)
    if mean.shape[-1] < 2:
        return torch.ones(mean.shape[:-1])
    top = mean.topk(2, dim=-1).values
    return top[..., 0] - top[..., 1]


def one_minus_margin(probs: torch.Tensor) -> torch.Tensor:
    """1 - margin: [T, N, C] -> [N] in [0, 1]; high = uncertain."""
    return 1.0 - margin(probs)


def least_confidence(probs: torch.Tensor) -> torch.Tensor:
    """1 - max of the mean prediction: [T, N, C] -> [N] in [0, 1 - 1/C]."""
    return 1.0 - probs.float().mean(0).max(-1).values


# every score, oriented so that higher = less certain
SCORES = {
    "predictive_entropy": predictive_entropy,
    "expected_entropy": expected_entropy,
    "mutual_information": mutual_information,
    "variation_ratio": variation_ratio,
    "one_minus_margin": one_minus_margin,
    "least_confidence": least_confidence,
}


def all_scores(probs: torch.Tensor) -> dict[str, torch.Tensor]:
    """{score name: [N]} for every score in SCORES from probs [T, N, C]."""
    return {name: fn(probs) for name, fn in SCORES.items()}


# ============================================================================ calibration

def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def reliability_diagram(probs, labels, n_bins: int = 15) -> dict:
    """Per confidence bin (equal width on [0, 1], bins (lo, hi]): probs [N, C], labels [N] ->
    {'lower', 'upper', 'confidence' (mean max-probability), 'accuracy', 'count'}, lists of
    n_bins; confidence and accuracy are NaN in an empty bin."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    p, y = _as_numpy(probs).astype(np.float64), _as_numpy(labels)
    if p.ndim != 2 or len(p) != len(y):
        raise ValueError(f"probs must be [N, C] and labels [N]; got {p.shape} and {y.shape}")
    conf, correct = p.max(1), (p.argmax(1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, conf, n_bins) / count
        accuracy = np.bincount(which, correct, n_bins) / count
    return {"lower": edges[:-1].tolist(), "upper": edges[1:].tolist(), "confidence": mean_conf.tolist(),
            "accuracy": accuracy.tolist(), "count": count.tolist()}


def expected_calibration_error(probs, labels, n_bins: int = 15) -> float:
    """ECE: sum over equal-width confidence bins of (bin share) * |accuracy - confidence|.
    probs [N, C] (e.g. the MC mean), labels [N] -> float in [0, 1]; NaN for N = 0."""
    bins = reliability_diagram(probs, labels, n_bins)
    count = np.asarray(bins["count"], dtype=np.float64)
    if count.sum() == 0:
        return math.nan
    gap = np.abs(np.asarray(bins["accuracy"]) - np.asarray(bins["confidence"]))
    return float(np.nansum(gap * count) / count.sum())


def risk_coverage_curve(uncertainty, wrong) -> tuple[np.ndarray, np.ndarray]:
    """Selective risk when only the k most certain images are accepted, k = 1..N.

    uncertainty [N] (higher = less certain), wrong [N] bool -> (coverage [N] = k / N,
    risk [N] = share wrong among the accepted). Ties are resolved by expectation over their
    order (the wrong ones of a tie group are spread evenly), so the curve does not depend on
    how a sort breaks ties.
    """
    u, w = _as_numpy(uncertainty).astype(np.float64), _as_numpy(wrong).astype(np.float64)
    if u.shape != w.shape or u.ndim != 1:
        raise ValueError(f"uncertainty and wrong must both be [N]; got {u.shape} and {w.shape}")
    n = len(u)
    if n == 0:
        return np.empty(0), np.empty(0)
    values, group, group_size = np.unique(u, return_inverse=True, return_counts=True)
    group_wrong = np.bincount(group, w, len(values))
    ends = np.cumsum(group_size)
    starts = ends - group_size
    wrong_before = np.cumsum(group_wrong) - group_wrong
    k = np.arange(1, n + 1)
    g = np.searchsorted(ends, k, side="left")  # the tie group that holds the k-th accepted image
    expected_wrong = wrong_before[g] + (k - starts[g]) * group_wrong[g] / group_size[g]
    return k / n, expected_wrong / k


def aurc(uncertainty, wrong) -> float:
    """Area under the risk-coverage curve (mean selective risk over k = 1..N); lower is better."""
    _, risk = risk_coverage_curve(uncertainty, wrong)
    return float(risk.mean()) if len(risk) else math.nan


def score_auroc(scores, wrong) -> float:
    """AUROC of `scores` [N] (higher = less certain) for telling wrong [N] (bool) from right
    predictions: P(score of a wrong one > score of a right one), ties count 1/2; NaN when all
    predictions are right or all are wrong."""
    s, w = _as_numpy(scores).astype(np.float64), _as_numpy(wrong).astype(bool)
    if s.shape != w.shape or s.ndim != 1:
        raise ValueError(f"scores and wrong must both be [N]; got {s.shape} and {w.shape}")
    if w.all() or not w.any():  # one class only: the AUROC is undefined
        return math.nan
    return float(roc_auc_score(w, s))
