"""Named training recipes: every hyper-parameter of one published training protocol, in one row.

    from recipes import RECIPES
    fit(model, train, valid, **RECIPES["toolkit"].fit_kwargs(), mean=..., std=..., device=..., seed=...)

`fit_kwargs()` gives `training.fit` its optimiser, learning rate, weight decay, schedule,
epochs, batch size, patience and early-stopping switch. The remaining fields (augmentation,
image size, validation share) belong to the script that loads the data; `training.fit`
never reads them.

| name | source | optimiser | lr | schedule | weight decay | epochs | batch | early stopping | augmentation | px | validation |
|---|---|---|---|---|---|---|---|---|---|---|---|
| paper | R4VR paper (PAPER.md sec. 1); active_learning.py's defaults | Adam | 1e-3 | constant | 0 | 100 | 64 | patience 10 | rotation 30 + flip | 224 | the layout's valid split |
| toolkit | deep-active-learning toolkit, ResNet18 on CIFAR (PAPER.md sec. 2) | SGD, Nesterov 0.9 | 0.025 | cosine | 3e-4 | 200 | 100 | none | flip only | 32 | 10 % of train |
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from augment import BASE_AUGMENTATIONS
from training import OPTIMIZERS, SCHEDULES


@dataclass(frozen=True)
class Recipe:
    """One training protocol. valid_share None = use the data layout's own validation split."""
    optimizer: str
    lr: float
    weight_decay: float
    schedule: str
    epochs: int
    batch_size: int
    early_stopping: bool
    patience: int
    augmentation: str
    image_size: int
    valid_share: float | None
    source: str

    def __post_init__(self):
        if (self.optimizer not in OPTIMIZERS or self.schedule not in SCHEDULES
                or self.augmentation not in BASE_AUGMENTATIONS):
            raise ValueError(f"recipe has an unknown optimizer, schedule or augmentation: {self}")
        if self.valid_share is not None and not 0 < self.valid_share < 1:
            raise ValueError(f"recipe valid_share must be in (0, 1) or None, got {self.valid_share}")

    def fit_kwargs(self) -> dict:
        """The keyword arguments of `training.fit` this recipe fixes."""
        keys = ("optimizer", "lr", "weight_decay", "schedule", "epochs", "batch_size", "early_stopping", "patience")
        return {k: v for k, v in asdict(self).items() if k in keys}


RECIPES: dict[str, Recipe] = {
    "paper": Recipe(optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="constant", epochs=100, batch_size=64,
                    early_stopping=True, patience=10, augmentation="paper", image_size=224, valid_share=None,
                    source="R4VR paper: Adam 1e-3, 100 epochs with early stopping (PAPER.md sec. 1)"),
    "toolkit": Recipe(optimizer="sgd_nesterov", lr=0.025, weight_decay=3e-4, schedule="cosine", epochs=200,
                      batch_size=100, early_stopping=False, patience=0, augmentation="flip", image_size=32,
                      valid_share=0.1,
                      source="deep-active-learning toolkit, ResNet18 CIFAR config (PAPER.md sec. 2)"),
}


if __name__ == "__main__":
    raise SystemExit("recipes.py is a library module; scripts pick a recipe by name.")
