"""Named training recipes: every hyper-parameter of one published training protocol, in one row.

    from safehil.settings.recipes import RECIPES
    fit(model, train, valid, **RECIPES["toolkit"].fit_kwargs(), mean=..., std=..., device=..., seed=...)

`fit_kwargs()` gives `training.fit` its optimiser, learning rate, weight decay, schedule,
epochs, batch size, patience, early-stopping switch and which weights it keeps (`restore`).
The remaining fields belong to the script that loads the data and runs the rounds (augmentation,
image size, validation share, whether a round goes on training the previous round's model, MC
samples T, ensemble size and which accuracy an ensemble reports, the VAAL variant); `training.fit`
never reads them.

| name | source | optimiser | lr | schedule | weight decay | epochs | batch | early stopping | weights kept | augmentation | px | validation | rounds | T | ensemble | VAAL | test / valid / query view | coreset / VAAL view | shares of |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
| paper | R4VR paper (PAPER.md sec. 1), presets.R4VR_NEU model A; active_learning.py's defaults | Adam | 1e-3 | constant | 0 | 100 | 16 | patience 21 on val loss (R4VR's counter > 20) | best val loss | rotation 30 + flip | 224 | the layout's valid split | from scratch | 20 | 5, member 0's accuracy | balanced | the image | the image | the pool |
| toolkit | deep-active-learning toolkit, ResNet18 on CIFAR (PAPER.md sec. 2) | SGD, Nesterov 0.9 | 0.025 | cosine, restarting each round | 3e-4 | 200 | 96 | none | last epoch | RandomCrop(32, pad 4) + flip | 32 | 10 % of train | warm start | 25 | 3, mean of the members' accuracies | released | RandomCrop(32, pad 4) (its eval ops); BALD a new crop per pass | crop + flip (its train ops) | pool + valid (5,000 of 50,000 per episode) |

The paper recipe's round columns (rounds to shares) are this project's own defaults (the R4VR
paper has no active learning); the toolkit's are read from its code at the commit of its published
table (`tools/train_al.py`, `tools/ensemble_al.py`, `configs/cifar10/al/RESNET18*.yaml`,
`pycls/al/Sampling.py`, `pycls/al/vaal_util.py`, `pycls/datasets/data.py`;
docs/faithfulness_toolkit.md).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from safehil.data.augment import BASE_AUGMENTATIONS, VIEW_AUGMENTATIONS
from safehil.settings.presets import R4VR_NEU, TOOLKIT_CIFAR
from safehil.training.training import OPTIMIZERS, RESTORES, SCHEDULES
from safehil.active.vaal import VARIANTS as VAAL_VARIANTS

ROUNDS = ("from_scratch", "warm_start")     # a fresh model each round | the previous round's model and optimiser
ENSEMBLE_ACCURACIES = ("member0", "members_mean")  # what an ensemble strategy reports as its test accuracy
# what the labelled shares count: the pool (the train split) | the pool and the validation split together
# (the toolkit's INIT_L_RATIO and BUDGET_SIZE are of its 50,000 training images, 5,000 of which validate)
SHARE_BASES = ("pool", "pool_and_valid")


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
    restore: str = "best_loss"
    rounds: str = "from_scratch"
    mc_samples: int = 20
    ensemble_size: int = 5
    ensemble_accuracy: str = "member0"
    vaal_variant: str = "balanced"
    eval_augmentation: str = "none"
    feature_augmentation: str = "none"
    share_of: str = "pool"

    def __post_init__(self):
        if (self.optimizer not in OPTIMIZERS or self.schedule not in SCHEDULES
                or self.augmentation not in BASE_AUGMENTATIONS or self.restore not in RESTORES
                or self.rounds not in ROUNDS or self.ensemble_accuracy not in ENSEMBLE_ACCURACIES
                or self.vaal_variant not in VAAL_VARIANTS or self.share_of not in SHARE_BASES
                or {self.eval_augmentation, self.feature_augmentation} - set(VIEW_AUGMENTATIONS)):
            raise ValueError(f"recipe has an unknown optimizer, schedule, augmentation, restore, rounds, "
                             f"ensemble accuracy, VAAL variant, view or share base: {self}")
        if self.valid_share is not None and not 0 < self.valid_share < 1:
            raise ValueError(f"recipe valid_share must be in (0, 1) or None, got {self.valid_share}")

    def fit_kwargs(self) -> dict:
        """The keyword arguments of `training.fit` this recipe fixes."""
        keys = ("optimizer", "lr", "weight_decay", "schedule", "epochs", "batch_size", "early_stopping", "patience",
                "restore")
        return {k: v for k, v in asdict(self).items() if k in keys}


RECIPES: dict[str, Recipe] = {
    # the R4VR values are model A's protocol in presets.py (their one home)
    "paper": Recipe(optimizer="adam", lr=R4VR_NEU.model_a.lr, weight_decay=0.0, schedule="constant",
                    epochs=R4VR_NEU.model_a.epochs, batch_size=R4VR_NEU.model_a.batch_size, early_stopping=True,
                    patience=R4VR_NEU.model_a.patience, augmentation="paper", image_size=224, valid_share=None,
                    source="R4VR paper, NEU: model A's protocol (presets.R4VR_NEU: Adam 1e-3, batch 16, 100 epochs "
                           "with early stopping)"),
    "toolkit": Recipe(optimizer="sgd_nesterov", lr=0.025, weight_decay=3e-4, schedule="cosine", epochs=200,
                      batch_size=TOOLKIT_CIFAR.model_a.batch_size, early_stopping=False, patience=0,
                      augmentation="crop_flip", image_size=32, valid_share=0.1, restore="last", rounds="warm_start", mc_samples=25, ensemble_size=3,
                      ensemble_accuracy="members_mean", vaal_variant="released",
                      # 7f679d9 (the code of the table's commit 0c12d82): test, validation and the scoring
                      # strategies read getPreprocessOps' eval ops (RandomCrop(32, 4) kept), coreset and VAAL the
                      # train ops (get_representation / vaal_util never set no_aug); shares of all 50,000
                      eval_augmentation="crop", feature_augmentation="crop_flip", share_of="pool_and_valid",
                      source="deep-active-learning toolkit, ResNet18 CIFAR config and AL loop (PAPER.md sec. 2)"),
}
