"""The papers' settings per data set, with their source: what `reproduce.py --full --dataset X`
runs (model pair, weights, input size, batch, MC samples T, data-generation grid and pool cap,
base augmentation, active-learning recipe). One row per data set; every value can still be
overridden by a reproduce.py flag.

    from presets import preset_for
    preset_for("severstal_kaggle").batch_size        # 64

| data set | models | weights | px | batch | T | HIL grid (initial x step, per class) | pool cap / class | base aug. | AL recipe (px) |
|---|---|---|---|---|---|---|---|---|---|
| neu (also synthetic, folders) | resnet18 + vgg16 | imagenet, paper freezing | 224 | 16 | 20 | {5,10,15,20} x {2,4,6,8,10} | all | paper | paper (224) |
| severstal_kaggle, severstal_supervisely | resnet18 + efficientnet_b0 | imagenet | 256 (whole strips) | 64 | 40 | {5,10,15,20} x {5,10,15} | 195 | paper | paper (224) |
| casting | resnet18_cifar + vgg16 | none | 224 | 96 | 20 | {5,10,15,20} x {2,4,6,8,10} | all | crop_flip | toolkit (224) |
| cifar10, cifar100 | resnet18_cifar + vgg16 | none | 32 | 96 | 20 | {5,10,15,20} x {2,4,6,8,10} | all | crop_flip | toolkit (32) |

Active learning at paper scale is the toolkit's protocol for every data set: every registered
strategy (nine), 10 % -> 60 % labelled in steps of 10 %, 3 seeds; the recipe is recipes.py's.
`SOURCES` says where each value comes from; `markdown_table()` renders the table above from
the rows themselves.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

NEU_GRID = ((5, 10, 15, 20), (2, 4, 6, 8, 10))


@dataclass(frozen=True)
class Preset:
    """One data set's paper-scale settings (see `SOURCES` for where each comes from)."""
    model_a: str                       # trained with and without augmentation; MC, saliency, cascade model A
    model_b: str                       # the cascade's second architecture
    weights: str                       # imagenet (with the paper's freezing) | none
    image_size: int
    batch_size: int
    T: int                             # MC-dropout samples per image
    dg_initial: tuple[int, ...]        # HIL grid: initial labelled images per class
    dg_steps: tuple[int, ...]          # HIL grid: new images per class per step
    dg_pool_per_class: int | None      # HIL pool cap per class; None = the whole train split
    base_augmentation: str             # augment.BASE_AUGMENTATIONS
    al_recipe: str                     # recipes.RECIPES name of every active-learning round
    al_image_size: int
    al_seeds: tuple[int, ...] = (0, 1, 2)
    al_initial_share: float = 0.1
    al_step_share: float = 0.1
    al_final_share: float = 0.6


R4VR_NEU = Preset(model_a="resnet18", model_b="vgg16", weights="imagenet", image_size=224, batch_size=16, T=20,
                  dg_initial=NEU_GRID[0], dg_steps=NEU_GRID[1], dg_pool_per_class=None, base_augmentation="paper",
                  al_recipe="paper", al_image_size=224)
R4VR_SEVERSTAL = Preset(model_a="resnet18", model_b="efficientnet_b0", weights="imagenet", image_size=256,
                        batch_size=64, T=40, dg_initial=(5, 10, 15, 20), dg_steps=(5, 10, 15), dg_pool_per_class=195,
                        base_augmentation="paper", al_recipe="paper", al_image_size=224)
TOOLKIT_CASTING = Preset(model_a="resnet18_cifar", model_b="vgg16", weights="none", image_size=224, batch_size=96,
                         T=20, dg_initial=NEU_GRID[0], dg_steps=NEU_GRID[1], dg_pool_per_class=None,
                         base_augmentation="crop_flip", al_recipe="toolkit", al_image_size=224)
TOOLKIT_CIFAR = Preset(model_a="resnet18_cifar", model_b="vgg16", weights="none", image_size=32, batch_size=96, T=20,
                       dg_initial=NEU_GRID[0], dg_steps=NEU_GRID[1], dg_pool_per_class=None,
                       base_augmentation="crop_flip", al_recipe="toolkit", al_image_size=32)

PRESETS: dict[str, Preset] = {
    "neu": R4VR_NEU,
    "synthetic": R4VR_NEU,             # the built-in set imitates NEU
    "folders": R4VR_NEU,               # a user's own class folders: the R4VR defaults
    "severstal_kaggle": R4VR_SEVERSTAL,
    "severstal_supervisely": R4VR_SEVERSTAL,
    "casting": TOOLKIT_CASTING,
    "cifar10": TOOLKIT_CIFAR,
    "cifar100": TOOLKIT_CIFAR,
}

# where each value comes from, per preset (PAPER.md holds the papers' constants)
SOURCES: dict[str, dict[str, str]] = {
    "neu": {
        "models": "R4VR paper, NEU: ResNet18 and VGG16 (PAPER.md sec. 1, constants)",
        "weights": "R4VR paper: ImageNet-pretrained, fine-tuned; ResNet18 layer1-3 and VGG16 conv features frozen",
        "batch_size": "R4VR paper, NEU: batch 16", "T": "R4VR paper, NEU: T = 20",
        "grid": "R4VR paper, NEU: initial/class {5,10,15,20} x step/class {2,4,6,8,10}",
        "pool": "R4VR paper, NEU: the whole train split",
        "augmentation": "R4VR paper: RandomRotation 30 + HorizontalFlip", "image_size": "R4VR paper: crop 224",
        "active_learning": "not in the R4VR paper: the toolkit's protocol with the R4VR training (recipe paper)",
    },
    "severstal": {
        "models": "R4VR paper, Severstal: ResNet18 and EfficientNet-B0 (PAPER.md sec. 1, constants)",
        "weights": "R4VR paper: ImageNet-pretrained, fine-tuned; ResNet18 layer1-3 frozen, EfficientNet-B0 "
                   "trains fully",
        "batch_size": "R4VR paper, Severstal: batch 64", "T": "R4VR paper, Severstal: T = 40",
        "grid": "R4VR paper, Severstal: initial {5,10,15,20} x step {5,10,15}",
        "pool": "R4VR paper, Severstal: about 195 images per class in the data-generation pool",
        "augmentation": "R4VR paper: RandomRotation 30 + HorizontalFlip",
        "image_size": "R4VR Severstal data_utils.py: Resize(256) only, so a 1600 x 256 strip stays whole (geometry whole)",
        "active_learning": "not in the R4VR paper: the toolkit's protocol with the R4VR training (recipe paper)",
    },
    "toolkit": {
        "models": "active-learning toolkit: its CIFAR ResNet18 (3x3 stride-1 stem, Dropout 0.5; resnet18_cifar); "
                  "the cascade's second model: R4VR's VGG16 (no published pair)",
        "weights": "active-learning toolkit: trained from scratch every round",
        "batch_size": "active-learning toolkit: batch 96 (configs/cifar10/al/RESNET18.yaml)", "T": "R4VR default T = 20 (no published value)",
        "grid": "R4VR NEU grid (no published grid for this data set)", "pool": "the whole train split",
        "augmentation": "active-learning toolkit: RandomCrop(32, padding 4) + horizontal flip (crop_flip)",
        "image_size": "toolkit: 32 px for CIFAR; casting images at the R4VR crop 224",
        "active_learning": "active-learning toolkit: recipe toolkit, 9 strategies, 10 % -> 60 % by 10 %, 3 seeds",
    },
}
SOURCE_OF = {"neu": "neu", "synthetic": "neu", "folders": "neu", "severstal_kaggle": "severstal",
             "severstal_supervisely": "severstal", "casting": "toolkit", "cifar10": "toolkit", "cifar100": "toolkit"}


def preset_for(dataset: str) -> Preset:
    """The paper-scale settings of `dataset`; a data set without its own row gets the R4VR NEU row."""
    return PRESETS.get(dataset, R4VR_NEU)


def sources_for(dataset: str) -> dict[str, str]:
    """{setting: where its value comes from} for `dataset`'s preset."""
    return SOURCES[SOURCE_OF.get(dataset, "neu")]


def preset_record(dataset: str) -> dict:
    """The preset of `dataset` as plain JSON values with its sources (for reproduce.json)."""
    p = preset_for(dataset)
    return {"values": {f.name: getattr(p, f.name) for f in fields(p)}, "sources": sources_for(dataset)}


def _grid(p: Preset) -> str:
    return "{" + ",".join(map(str, p.dg_initial)) + "} x {" + ",".join(map(str, p.dg_steps)) + "}"


def markdown_table() -> str:
    """One row per distinct preset: value (source) of each setting, in markdown."""
    names: dict[Preset, list[str]] = {}
    for dataset, p in PRESETS.items():
        names.setdefault(p, []).append(dataset)
    lines = ["| data set | models | weights | px | batch | T | HIL grid (per class) | pool cap / class "
             "| base augmentation | active learning |", "|---|---|---|---|---|---|---|---|---|---|"]
    for p, datasets in names.items():
        src = sources_for(datasets[0])
        lines.append(
            f"| {', '.join(datasets)} | {p.model_a} + {p.model_b} ({src['models']}) | {p.weights} ({src['weights']}) "
            f"| {p.image_size} ({src['image_size']}) | {p.batch_size} ({src['batch_size']}) | {p.T} ({src['T']}) "
            f"| {_grid(p)} ({src['grid']}) | {p.dg_pool_per_class or 'all'} ({src['pool']}) "
            f"| {p.base_augmentation} ({src['augmentation']}) | recipe {p.al_recipe} at {p.al_image_size} px, "
            f"{100 * p.al_initial_share:g} % -> {100 * p.al_final_share:g} % by {100 * p.al_step_share:g} %, "
            f"seeds {list(p.al_seeds)} ({src['active_learning']}) |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit("presets.py is a library module; reproduce.py --full uses it "
                     "(python -c 'import presets; print(presets.markdown_table())' prints the table).")
