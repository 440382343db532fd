"""The networks, one registered builder each (`ARCHITECTURES`): the paper's ResNet18, VGG16 and
EfficientNet-B0 with their dropout heads, the active-learning toolkit's CIFAR ResNet18 (3x3
stride-1 stem before torchvision's max-pool) and a tiny CNN for fast checks, each with its default
dropout, the paper's layer freezing and its split into a deterministic trunk and a stochastic
head (used by fast MC dropout). Also building by name, weight loading and reloading a trained
checkpoint.

A new network is one `@register_model(...)` builder (with its trunk/head split) in the
architectures section; `MODELS`, the scripts' --model choices, follows the registry.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torchvision

from safehil.core.utils import InputError, load_checkpoint, log, seed_everything


# ============================================================================ the registry

@dataclass(frozen=True)
class Architecture:
    """One `--model` name.

    build(num_classes, dropout, imagenet) -> the network with a `num_classes` dropout head,
    from the torchvision ImageNet weights when `imagenet`. dropout: the paper's head rate.
    module_type: the class `build` returns, so `split_trunk_head` recognises the network.
    trunk_head(model) -> (trunk, head) with head(trunk(x)) == model(x) in eval mode and every
    dropout in the head. frozen(model) -> the modules the paper freezes with pretrained weights.
    imagenet: the torchvision weights entry `build` loads when `imagenet` (None: there are none).
    """
    name: str
    build: Callable[[int, float, bool], nn.Module]
    dropout: float
    module_type: type
    trunk_head: Callable[[nn.Module], tuple[nn.Module, nn.Module]]
    frozen: Callable[[nn.Module], list[nn.Module]]
    imagenet: torchvision.models.WeightsEnum | None = None


ARCHITECTURES: dict[str, Architecture] = {}
MODELS = ARCHITECTURES.keys()  # the names in ARCHITECTURES (a live view), the scripts' --model choices


def _nothing_frozen(model: nn.Module) -> list[nn.Module]:
    return []


def register_model(name: str, *, dropout: float, module_type: type,
                   trunk_head: Callable[[nn.Module], tuple[nn.Module, nn.Module]],
                   frozen: Callable[[nn.Module], list[nn.Module]] = _nothing_frozen,
                   imagenet: torchvision.models.WeightsEnum | None = None):
    """Decorator: register `build(num_classes, dropout, imagenet) -> nn.Module` as `--model name`
    (see `Architecture`); MODELS, a view of the registry, follows."""
    def register(build):
        ARCHITECTURES[name] = Architecture(name, build, dropout, module_type, trunk_head, frozen, imagenet)
        return build
    return register


def architecture_of(name: str) -> Architecture:
    """The registered network called `name`; an unknown name is an InputError listing the known ones."""
    if name not in ARCHITECTURES:
        raise InputError(f"unknown model {name!r}; choose from {tuple(ARCHITECTURES)}")
    return ARCHITECTURES[name]


# ============================================================================ architectures

def _torchvision_model(name: str, imagenet: bool) -> nn.Module:
    """torchvision.models.<name>, randomly initialised or from its registered ImageNet weights (downloads once)."""
    builder = getattr(torchvision.models, name)
    if not imagenet:
        return builder(weights=None)
    try:
        return builder(weights=ARCHITECTURES[name].imagenet)
    except Exception as e:  # URLError, socket errors, corrupt cache
        raise RuntimeError(
            f"could not load ImageNet weights for {name} ({type(e).__name__}: {e}). This needs a network "
            f"connection on first use (the file is cached under {torch.hub.get_dir()}); "
            f"run once online, or use --weights none or --weights PATH to a saved state dict.") from None


def _resnet_trunk_head(model: torchvision.models.ResNet) -> tuple[nn.Module, nn.Module]:
    trunk = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2,
                          model.layer3, model.layer4, model.avgpool, nn.Flatten(1))
    return trunk, model.fc


@register_model("resnet18", dropout=0.5, module_type=torchvision.models.ResNet, trunk_head=_resnet_trunk_head,
                frozen=lambda m: [m.layer1, m.layer2, m.layer3],  # R4VR freeze_weights: the stem conv1/bn1 trains
                imagenet=torchvision.models.ResNet18_Weights.DEFAULT)
def _resnet18(num_classes: int, p: float, imagenet: bool) -> nn.Module:
    model = _torchvision_model("resnet18", imagenet)
    model.fc = nn.Sequential(nn.Dropout(p), nn.Linear(model.fc.in_features, num_classes))
    return model


class CifarResNet18(torchvision.models.ResNet):
    """The CIFAR ResNet18 of the active-learning toolkit as it stood when its CIFAR table was
    published (`pycls/models/resnet.py` at a688c87 / 7f679d9, read in docs/faithfulness_toolkit.md):
    torchvision's ResNet18 with a 3x3 stride-1 stem that KEEPS torchvision's 3x3 stride-2 max-pool
    (a 32 px input enters layer1 at 16 px and reaches layer4 at 2 x 2; torchvision's 7x7/2 stem:
    1 x 1) and Dropout(p) before the classifier; trained from scratch (no ImageNet weights fit
    the stem). x [N, 3, H, W] -> logits [N, C]."""

    def __init__(self, num_classes: int, dropout: float = 0.5):
        super().__init__(torchvision.models.resnet.BasicBlock, [2, 2, 2, 2])
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")  # torchvision's conv init
        # self.maxpool stays torchvision's MaxPool2d(3, stride 2, padding 1), as in the toolkit's resnet.py
        self.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(512, num_classes))


@register_model("resnet18_cifar", dropout=0.5, module_type=CifarResNet18, trunk_head=_resnet_trunk_head)
def _resnet18_cifar(num_classes: int, p: float, imagenet: bool) -> nn.Module:
    if imagenet:
        raise InputError("resnet18_cifar has no ImageNet weights (its 3x3 stem differs from torchvision's); "
                         "use --weights none, or --model resnet18 for the ImageNet-pretrained network")
    return CifarResNet18(num_classes, p)


def _vgg_trunk_head(model: torchvision.models.VGG) -> tuple[nn.Module, nn.Module]:
    first = next(i for i, m in enumerate(model.classifier) if isinstance(m, nn.Dropout))
    trunk = nn.Sequential(model.features, model.avgpool, nn.Flatten(1), *model.classifier[:first])
    return trunk, nn.Sequential(*model.classifier[first:])


@register_model("vgg16", dropout=0.5, module_type=torchvision.models.VGG, trunk_head=_vgg_trunk_head,
                frozen=lambda m: [m.features], imagenet=torchvision.models.VGG16_Weights.DEFAULT)
def _vgg16(num_classes: int, p: float, imagenet: bool) -> nn.Module:
    model = _torchvision_model("vgg16", imagenet)
    for i in (2, 5):
        model.classifier[i] = nn.Dropout(p)
    model.classifier[6] = nn.Linear(model.classifier[6].in_features, num_classes)
    return model


@register_model("efficientnet_b0", dropout=0.2, module_type=torchvision.models.EfficientNet,
                trunk_head=lambda m: (nn.Sequential(m.features, m.avgpool, nn.Flatten(1)), m.classifier),
                imagenet=torchvision.models.EfficientNet_B0_Weights.DEFAULT)
def _efficientnet_b0(num_classes: int, p: float, imagenet: bool) -> nn.Module:
    model = _torchvision_model("efficientnet_b0", imagenet)
    model.classifier = nn.Sequential(nn.Dropout(p), nn.Linear(model.classifier[1].in_features, num_classes))
    return model


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


@register_model("tiny_cnn", dropout=0.5, module_type=TinyCNN, trunk_head=lambda m: (m.features, m.classifier))
def _tiny_cnn(num_classes: int, p: float, imagenet: bool) -> nn.Module:
    return TinyCNN(num_classes, p)  # no pretrained weights exist: always random


# ============================================================================ building and loading

def build_model(name: str, num_classes: int, weights: str | None = None, dropout: float | None = None,
                freeze: bool | None = None) -> nn.Module:
    """Build the registered network `name` with a `num_classes` classifier.

    weights: None/'none' (random init), 'imagenet' (torchvision weights API; downloads once)
    or a PATH to a state dict / checkpoint (a classifier of another size is skipped).
    dropout: the head's dropout rate (default: the architecture's, the paper's 0.5 / 0.5 / 0.2).
    freeze: the paper's freezing (ResNet18 layer1-3, VGG16 conv features); default on only
    when pretrained weights are used.
    """
    arch = architecture_of(name)
    weights = None if weights in (None, "", "none") else weights
    model = arch.build(num_classes, arch.dropout if dropout is None else dropout, weights == "imagenet")
    if weights not in (None, "imagenet"):
        load_weights_file(model, weights)
    if freeze if freeze is not None else weights is not None:
        freeze_paper_layers(model, name)
    return model


def imagenet_weights_file(name: str) -> Path | None:
    """Where torch hub keeps the ImageNet weights of `name` (checkpoints/<file of the URL>); None
    when the architecture has none (tiny_cnn)."""
    weights = architecture_of(name).imagenet
    if weights is None:
        return None
    return Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]


def ensure_imagenet_weights(names) -> None:
    """Make sure the ImageNet weights of every architecture in `names` are in the torch hub cache,
    downloading each missing file once; before anything trains. When one cannot be had
    (offline, no cached file) an InputError says where to put which file, or to pass --weights none."""
    missing = []
    for name in dict.fromkeys(names):
        path = imagenet_weights_file(name)
        if path is None or path.is_file():
            continue
        try:
            torch.hub.load_state_dict_from_url(architecture_of(name).imagenet.url, progress=False, check_hash=True)
        except Exception as e:  # URLError, socket errors, a bad hash: no weights, say where they go
            missing.append((name, path, architecture_of(name).imagenet.url, f"{type(e).__name__}: {e}"))
    if missing:  # one line: each file, where it goes, why it could not be had, and the way out
        where = "; ".join(f"{name}: put {url.rsplit('/', 1)[-1]} at {path} (from {url}; here: {why})"
                          for name, path, url, why in missing)
        raise InputError(f"--weights imagenet: the ImageNet weights of {', '.join(m[0] for m in missing)} could not "
                         f"be loaded, nothing was decoded or trained; pass --weights none to train from random "
                         f"initialisation, or {where}")


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
    """Freeze what the paper freezes with pretrained weights (the architecture's `frozen`:
    ResNet18 layer1-3 with the stem conv1/bn1 trainable, VGG16 conv features; EfficientNet-B0 and
    the tiny CNN train fully; the R4VR Severstal code freezes nothing: --freeze False)."""
    for module in architecture_of(name).frozen(model):
        for param in module.parameters():
            param.requires_grad_(False)


def split_trunk_head(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """Split into (trunk, head) with head(trunk(x)) == model(x) in eval mode.

    The trunk is everything before the first dropout layer, so it is deterministic under
    MC dropout and can run once per batch; the head holds every dropout. Returns None
    when the model is of no registered architecture (then MC dropout uses full forward passes).
    """
    model = model.module if hasattr(model, "module") else model  # unwrap DDP
    for arch in ARCHITECTURES.values():
        if isinstance(model, arch.module_type):
            return arch.trunk_head(model)
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


CHECKPOINT_FIELDS = ("model", "model_name", "class_names", "mean", "std", "image_size")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_stat(value) -> bool:
    """A normalisation mean or std: one number, or 3 per-channel numbers (ImageNet's for Severstal)."""
    return _is_number(value) or (isinstance(value, (list, tuple)) and len(value) == 3 and all(map(_is_number, value)))


def checkpoint_problems(state) -> list[str]:
    """What keeps `state` (a loaded checkpoint) from being a train_model.py checkpoint: missing
    fields and fields of the wrong kind (a list where a dict belongs, ...); [] when it is one."""
    if not isinstance(state, dict):
        return [f"it holds a {type(state).__name__}, not a dict"]
    missing = [k for k in CHECKPOINT_FIELDS if k not in state]
    problems = [f"lacks {missing}"] if missing else []
    checks = {"model": isinstance(state.get("model"), dict),
              "model_name": state.get("model_name") in ARCHITECTURES,
              "class_names": isinstance(state.get("class_names"), (list, tuple)) and len(state["class_names"]) >= 1
              and all(isinstance(c, str) for c in state["class_names"]),
              "mean": _is_stat(state.get("mean")), "std": _is_stat(state.get("std")),
              "image_size": isinstance(state.get("image_size"), int) and not isinstance(state["image_size"], bool),
              "config": isinstance(state.get("config", {}), dict)}
    expected = {"model": "a dict of tensors", "model_name": f"one of {sorted(ARCHITECTURES)}",
                "class_names": "a list of names", "mean": "a number or 3", "std": "a number or 3",
                "image_size": "an integer", "config": "a dict"}
    problems += [f"{k} is {type(state[k]).__name__} {state[k]!r:.40}, expected {expected[k]}"
                 for k, ok in checks.items() if not ok and k in state]
    return problems


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
    problems = checkpoint_problems(state)
    if problems:
        raise InputError(f"{path}: not a train_model.py checkpoint ({'; '.join(problems)}); "
                         "pass a best.pt written by train_model.py")
    model = build_model(state["model_name"], len(state["class_names"]), weights=None,
                        dropout=state.get("config", {}).get("dropout"))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise InputError(f"{path}: weights do not match a {state['model_name']} with "
                         f"{len(state['class_names'])} classes: {str(e).splitlines()[0]}") from None
    meta = {k: v for k, v in state.items() if k != "model"}
    return model.to(device).eval(), meta
