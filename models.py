"""The paper's networks (ResNet18, VGG16, EfficientNet-B0) with their dropout heads, a tiny
CNN for fast checks, the paper's layer freezing, weight loading, and the split of a
network into a deterministic trunk and a stochastic head used by fast MC dropout.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torchvision

from utils import InputError, load_checkpoint, log, seed_everything

MODELS = ("resnet18", "vgg16", "efficientnet_b0", "tiny_cnn")
DEFAULT_DROPOUT = {"resnet18": 0.5, "vgg16": 0.5, "efficientnet_b0": 0.2, "tiny_cnn": 0.5}


class TinyCNN(nn.Module):
    """A small CNN for tests and quick runs: 3 conv blocks, global pooling, Dropout + Linear."""

    def __init__(self, num_classes: int, dropout: float = 0.5, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.BatchNorm2d(4 * width), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, 3, H, W] -> logits [N, C]."""
        return self.classifier(self.features(x))


def _imagenet_weights(name: str):
    enum = {"resnet18": torchvision.models.ResNet18_Weights, "vgg16": torchvision.models.VGG16_Weights,
            "efficientnet_b0": torchvision.models.EfficientNet_B0_Weights}[name]
    return enum.DEFAULT


def _torchvision_model(name: str, imagenet: bool) -> nn.Module:
    builder = getattr(torchvision.models, name)
    if not imagenet:
        return builder(weights=None)
    try:
        return builder(weights=_imagenet_weights(name))
    except Exception as e:  # URLError, socket errors, corrupt cache
        raise RuntimeError(
            f"could not load ImageNet weights for {name} ({type(e).__name__}: {e}). This needs a network "
            f"connection on first use (the file is cached under {torch.hub.get_dir()}); "
            f"run once online, or use --weights none or --weights PATH to a saved state dict.") from None


def build_model(name: str, num_classes: int, weights: str | None = None, dropout: float | None = None,
                freeze: bool | None = None) -> nn.Module:
    """Build one of MODELS with a `num_classes` classifier.

    weights: None/'none' (random init), 'imagenet' (torchvision weights API; downloads once)
    or a PATH to a state dict / checkpoint (a classifier of another size is skipped).
    dropout: the head's dropout rate (default: the paper's, 0.5 / 0.5 / 0.2).
    freeze: the paper's freezing (ResNet18 layer1-3, VGG16 conv features); default on only
    when pretrained weights are used.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {MODELS}")
    weights = None if weights in (None, "", "none") else weights
    p = DEFAULT_DROPOUT[name] if dropout is None else dropout
    if name == "tiny_cnn":
        model = TinyCNN(num_classes, p)
    else:
        model = _torchvision_model(name, weights == "imagenet")
        if name == "resnet18":
            model.fc = nn.Sequential(nn.Dropout(p), nn.Linear(model.fc.in_features, num_classes))
        elif name == "vgg16":
            for i in (2, 5):
                model.classifier[i] = nn.Dropout(p)
            model.classifier[6] = nn.Linear(model.classifier[6].in_features, num_classes)
        elif name == "efficientnet_b0":
            model.classifier = nn.Sequential(nn.Dropout(p), nn.Linear(model.classifier[1].in_features, num_classes))
    if weights not in (None, "imagenet"):
        load_weights_file(model, weights)
    if freeze if freeze is not None else weights is not None:
        freeze_paper_layers(model, name)
    return model


def fresh_model(cfg, num_classes: int, seed: int) -> nn.Module:
    """A new network from the config's model fields (model, weights, dropout, freeze), its
    random weights drawn from `seed` alone, so it never depends on what ran before."""
    seed_everything(seed)
    return build_model(cfg.model, num_classes, cfg.weights, cfg.dropout, cfg.freeze)


def load_weights_file(model: nn.Module, path: str | Path) -> None:
    """Load a state dict (or a checkpoint with 'model') into `model`, skipping tensors whose
    shape differs (another classifier head); any other mismatch is an error naming the keys."""
    checkpoint = load_checkpoint(path)
    state = checkpoint.get("model", checkpoint)
    recorded = f" (the checkpoint records model {checkpoint['model_name']!r})" if "model_name" in checkpoint else ""
    own = model.state_dict()
    skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    state = {k: v for k, v in state.items() if k not in skipped}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in skipped]
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit this model{recorded}; missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    if skipped:
        log(f"{path}: kept this model's own {', '.join(skipped)} (shape differs: another classifier head)")


def freeze_paper_layers(model: nn.Module, name: str) -> None:
    """Freeze what the paper freezes with pretrained weights: ResNet18 layer1-3, VGG16 conv features."""
    if name == "resnet18":
        frozen = [model.conv1, model.bn1, model.layer1, model.layer2, model.layer3]
    elif name == "vgg16":
        frozen = [model.features]
    else:
        return  # EfficientNet-B0 and the tiny CNN train fully in the paper / here
    for module in frozen:
        for param in module.parameters():
            param.requires_grad_(False)


def split_trunk_head(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """Split into (trunk, head) with head(trunk(x)) == model(x) in eval mode.

    The trunk is everything before the first dropout layer, so it is deterministic under
    MC dropout and can run once per batch; the head holds every dropout. Returns None
    when the model is not one of ours (then MC dropout uses full forward passes).
    """
    model = model.module if hasattr(model, "module") else model  # unwrap DDP
    if isinstance(model, TinyCNN):
        return model.features, model.classifier
    if isinstance(model, torchvision.models.ResNet):
        trunk = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2,
                              model.layer3, model.layer4, model.avgpool, nn.Flatten(1))
        return trunk, model.fc
    if isinstance(model, torchvision.models.VGG):
        first = next(i for i, m in enumerate(model.classifier) if isinstance(m, nn.Dropout))
        trunk = nn.Sequential(model.features, model.avgpool, nn.Flatten(1), *model.classifier[:first])
        return trunk, nn.Sequential(*model.classifier[first:])
    if isinstance(model, torchvision.models.EfficientNet):
        return nn.Sequential(model.features, model.avgpool, nn.Flatten(1)), model.classifier
    return None


def has_dropout(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.dropout._DropoutNd) for m in module.modules())


def enable_mc_dropout(model: nn.Module) -> nn.Module:
    """Eval mode everywhere (batch norm uses running stats) except dropout layers, which sample."""
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.train()
    return model


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def load_trained_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the network saved by train_model.py from its checkpoint -> (model in eval mode, meta).

    meta holds everything else in the checkpoint: model_name, class_names, mean, std,
    image_size, dataset and the training config. A checkpoint whose weights do not fit
    the recorded model says so. Every such problem is an `InputError` naming the file, so
    scripts run through `utils.run_main` report it without a traceback.
    """
    try:
        state = load_checkpoint(path)
    except ValueError as e:  # refused: corrupt, or needs arbitrary code to unpickle
        raise InputError(str(e)) from None
    missing = [k for k in ("model", "model_name", "class_names") if k not in state]
    if missing:
        raise InputError(f"{path}: not a train_model.py checkpoint (lacks {missing})")
    model = build_model(state["model_name"], len(state["class_names"]), weights=None,
                        dropout=state.get("config", {}).get("dropout"))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise InputError(f"{path}: weights do not match a {state['model_name']} with "
                         f"{len(state['class_names'])} classes: {str(e).splitlines()[0]}") from None
    meta = {k: v for k, v in state.items() if k != "model"}
    return model.to(device).eval(), meta
