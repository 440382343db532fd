"""The papers' settings, each declared once here with its source: one `Preset` row per data set
(what `reproduce.py --full --dataset X` runs, and where every script's paper default comes
from), and reproduce.py's smaller scales (`SCALES`) beside them, naming each value they replace.

    from safehil.settings.presets import preset_for, paper_T
    preset_for("severstal_kaggle").model_b.batch_size        # 64 (EfficientNet-B0)
    paper_T("neu")                                           # 20

Each setting has one name from the row through the scale to the flag and config.json: a shared
field's own (`T`, `image_size`), or group.flag for one script's flag: `model_a.lr` / `model_b.lr`
are train_model.py's --lr of each model (a `Protocol`), `data_generation.initial_samples` is
train_model_data_generation.py's --initial_samples, `active_learning.*` and `saliency.*` theirs.
A new per-model value is one `Protocol` field (with its value in each row); a new data-set value
is one field with its source in `COMMON_SOURCES` (or a row's `sources`); a row without a source
for a field is refused when it is built. A data set without a row is an error (`preset_for`),
never another data set's settings. A scale names only what it must shrink (and says why): every
other setting of `make run` is the row's, so editing a row changes it.

`markdown_table()` renders the table of every row with its sources.
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, replace

from safehil.core.utils import InputError


class _ScriptDefault:
    """A group field left to the script's own default (no paper gives it): not passed to the step."""

    def __repr__(self) -> str:
        return "SCRIPT_DEFAULT"


SCRIPT_DEFAULT = _ScriptDefault()


@dataclass(frozen=True)
class Protocol:
    """How one model of a paper's pair is trained: train_model.py's flags of that model."""
    model: str                         # models.ARCHITECTURES name
    lr: float                          # learning rate
    batch_size: int                    # training batch
    epochs: int                        # maximum epochs
    patience: int                      # early-stopping patience in epochs
    optimizer: str                     # training.OPTIMIZERS
    schedule: str                      # training.SCHEDULES (plateau: ReduceLROnPlateau on the val loss)
    source: str                        # where these values come from


@dataclass(frozen=True)
class DataGeneration:
    """The HIL grid: train_model_data_generation.py's flags (it takes model A's model and lr)."""
    initial_samples: tuple[int, ...]   # initial labelled images per class
    step_sizes: tuple[int, ...]        # new images per class per step
    pool_per_class: int | None         # pool cap per class; None = the whole train split
    epochs: int                        # fine-tuning epochs per step
    patience: int                      # early-stopping patience per step
    baseline_epochs: int               # maximum epochs of the baseline on the initial set
    baseline_patience: int             # its early-stopping patience
    restore: str                       # the weights each fit hands on (training.RESTORES; last = never reloaded)
    stopping: str                      # what resets each fit's early-stopping counter (training.STOPPING_RULES)
    step_optimizer: str                # reuse = one optimiser for the baseline and every step; new = one per fit
    schedule: str                      # the rate schedule of each fit (training.SCHEDULES)
    batch_size: int                    # the fine-tuning steps' batch
    baseline_batch_size: int           # the baseline's batch


@dataclass(frozen=True)
class ActiveLearning:
    """active_learning.py's flags (it takes model A's model; weights and base_augmentation are the row's).
    The fields with a default are no paper's: left at SCRIPT_DEFAULT, the script's (or recipe's) own apply."""
    recipe: str                        # recipes.RECIPES name of every round
    image_size: int
    seeds: tuple[int, ...]
    initial_share: float
    step_share: float
    final_share: float
    strategies: tuple[str, ...] = SCRIPT_DEFAULT   # every strategy registered in acquisition.py
    epochs: int | None = SCRIPT_DEFAULT            # with epochs set, lr and batch are model A's (a scale's rounds)
    patience: int | None = SCRIPT_DEFAULT
    min_steps: int | None = SCRIPT_DEFAULT         # optimiser steps per round at least
    mc_samples: int | None = SCRIPT_DEFAULT        # MC-dropout passes of bald and dbal
    ensemble_size: int | None = SCRIPT_DEFAULT     # members of ensemble_variation_ratio


@dataclass(frozen=True)
class Saliency:
    """saliency_map_uncertainties.py's flags (T is the row's)."""
    shares: tuple[float, ...]          # revealed shares in percent
    max_images: int = SCRIPT_DEFAULT   # a random subset of this many test images


GROUPS = {"model_a": Protocol, "model_b": Protocol, "data_generation": DataGeneration,
          "active_learning": ActiveLearning, "saliency": Saliency}


@dataclass(frozen=True)
class Preset:
    """One data set's paper-scale settings; `sources` says where each value comes from.

    Each setting has one name, used by the scale, the flag and config.json: a shared field's
    own name (`T`), or group.flag for a script's flag (`data_generation.initial_samples` is
    train_model_data_generation.py's --initial_samples; `model_b.lr` is train_model.py's --lr
    of model B)."""
    name: str
    model_a: Protocol                  # trained with and without augmentation; MC, saliency, cascade model A
    model_b: Protocol                  # the cascade's second architecture
    data_generation: DataGeneration
    active_learning: ActiveLearning
    saliency: Saliency
    weights: str                       # imagenet (with the paper's freezing) | none
    image_size: int
    seeds: tuple[int, ...]             # of the augmentation comparison
    T: int                             # MC-dropout samples per image (MC scores, saliency, safety)
    base_augmentation: str             # augment.BASE_AUGMENTATIONS
    stopping: str                      # training.STOPPING_RULES: what resets the early-stopping counter
    restore: str                       # training.RESTORES: the weights a training run keeps
    freeze: bool | None                # the paper's freezing (None: on only with pretrained weights)
    pair: str                          # the cascade's pair: disjoint_halves | same_data (reproduce.PAIRS)
    half_a: str                        # model A's half of the train split with disjoint_halves (first | second)
    half_b: str                        # model B's half
    pretrain: bool                     # pre-train on the balanced half, then fine-tune on the whole train split
    dg_model_b: bool                   # HIL: the grid of model B too (model A's always runs)
    mc_extra_splits: tuple[str, ...]   # MC box plots: the splits scored besides the test splits
    mc_other_half: bool                # MC box plots: also the other model's training half (disjoint halves)
    sal_models: tuple[str, ...]        # saliency curves: the networks (model_a, model_b)
    sal_split: str                     # saliency curves: test | own_half (the network's own training half)
    sal_dropout: bool                  # saliency gradient with dropout on (batch norm on running statistics)
    class_weights: str = "none"        # training.CLASS_WEIGHTS: the training loss's weight per class of every model
    sources: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        missing = [name for name in self.paper_settings() if name not in self.sources]
        if missing:
            raise ValueError(f"preset {self.name!r}: no source for {missing}")

    @staticmethod
    def settings() -> list[str]:
        """Every setting's one name: the shared fields', then group.flag of each group's fields."""
        shared = [f.name for f in fields(Preset) if f.name not in ("name", "sources", *GROUPS)]
        return shared + [f"{group}.{f.name}" for group, cls in GROUPS.items() for f in fields(cls)
                         if f.name != "source"]

    @staticmethod
    def paper_settings() -> list[str]:
        """The settings every row must source: all but the protocols' (each has its own `source`)
        and the group fields with a default (no paper gives them)."""
        groups = {group: {f.name for f in fields(cls) if f.default is MISSING} for group, cls in GROUPS.items()}
        return [name for name in Preset.settings() if not name.startswith(("model_a.", "model_b."))
                and ("." not in name or name.split(".", 1)[1] in groups[name.split(".", 1)[0]])]

    def value(self, setting: str) -> tuple[object, str]:
        """(value, source) of one setting by its one name (`T`, `model_b.lr`)."""
        if setting not in self.settings():
            raise KeyError(f"presets.Preset has no setting {setting!r}")
        owner, name = _owner(self, setting)
        source = owner.source if isinstance(owner, Protocol) else self.sources.get(setting, "no paper value")
        return getattr(owner, name), source

    def with_values(self, values: dict[str, object]) -> "Preset":
        """This row with `values` ({setting: value}, by one name) replacing its own."""
        unknown = [k for k in values if k not in self.settings()]
        if unknown:
            raise KeyError(f"presets.Preset has no setting {unknown}")
        shared = {k: v for k, v in values.items() if "." not in k}
        groups = {group: replace(getattr(self, group), **{k.split(".", 1)[1]: v for k, v in values.items()
                                                          if k.startswith(group + ".")}) for group in GROUPS}
        return replace(self, **shared, **groups)


def _owner(preset: Preset, setting: str) -> tuple[object, str]:
    """(the object holding `setting`, its field name): the row itself or one of its groups."""
    group, _, name = setting.rpartition(".")
    return (getattr(preset, group) if group else preset), name


NEU_GRID = ((5, 10, 15, 20), (2, 4, 6, 8, 10))
PAPER_SHARES = (5.0, 15.0, 25.0, 35.0, 45.0, 55.0, 65.0, 75.0, 85.0, 95.0)
# R4VR Severstal outputs/modeling_stats.md: the 10 seeds of the published with/without-augmentation table
R4VR_SEEDS = (1, 17, 22, 33, 42, 59, 66, 73, 88, 90)
TEN_SEEDS = tuple(range(10))   # 10 seeds where no seed list is published (the toolkit's data sets)

# the sources every preset shares (a row's own `sources` entries replace these)
COMMON_SOURCES = {
    "class_weights": "R4VR and the toolkit: plain cross-entropy (nn.CrossEntropyLoss() without weights)",
    "weights": "R4VR paper: ImageNet-pretrained, fine-tuned; ResNet18 layer1-3 and VGG16 conv features frozen",
    "image_size": "R4VR paper: crop 224",
    "seeds": "R4VR Severstal outputs/modeling_stats.md: the augmentation table's seeds 1, 17, 22, 33, 42, 59, 66, "
             "73, 88, 90 (NEU publishes no seed list: the same ten)",
    "T": "R4VR paper, NEU: T = 20", "saliency.shares": "R4VR paper: shares 5, 15, ..., 95 %",
    "data_generation.initial_samples": "R4VR paper, NEU: initial/class {5,10,15,20}",
    "data_generation.step_sizes": "R4VR paper, NEU: step/class {2,4,6,8,10}",
    "data_generation.pool_per_class": "R4VR paper, NEU: the whole train split (276/class)",
    "data_generation.epochs": "R4VR NEU train_model_data_generation.py / Severstal train_model_sequentially.py: "
                              "num_epochs=20 per step",
    "data_generation.patience": "R4VR NEU train_model_data_generation.py / Severstal train_model_sequentially.py: "
                                "early_stopping=3 per step; train_loop stops when counter > 3 (4 epochs without gain: "
                                "patience 4)",
    "data_generation.restore": "R4VR NEU train_model_data_generation.py / Severstal train_model_sequentially.py: "
                               "train_loop never reloads a saved model, so step k+1 fine-tunes step k's last epoch",
    "data_generation.stopping": "R4VR train_utils.py train_loop, called for the baseline and every step: counter "
                                "reset when val accuracy improves, else when val loss improves",
    "data_generation.step_optimizer": "R4VR NEU train_model_data_generation.py: one Adam(1e-3) per setting, made "
                                      "before the baseline and reused by every step",
    "data_generation.schedule": "R4VR NEU train_model_data_generation.py: no scheduler (constant rate)",
    "data_generation.batch_size": "R4VR NEU train_model_data_generation.py: DataLoader batch_size=16",
    "data_generation.baseline_batch_size": "R4VR NEU train_model_data_generation.py: DataLoader batch_size=16",
    "dg_model_b": "R4VR NEU train_model_data_generation.py --model vgg | resnet: the grid of each model of the pair",
    "mc_extra_splits": "R4VR NEU get_mc_scores.py: the valid folder, after the test folder",
    "mc_other_half": "R4VR NEU get_mc_scores.py: then the other model's training half (ResNet18 on elem[:138], VGG16 "
                     "on elem[138:]): 72 + 72 + 828 = 972 images per model",
    "sal_models": "R4VR NEU saliency_map_uncertainties.py: model_name = 'vgg' (VGG16 only)",
    "sal_split": "R4VR NEU saliency_map_uncertainties.py: VGG16 on elem[:138] of every class, its own training half "
                 "(828 images)",
    "sal_dropout": "R4VR NEU saliency_map_uncertainties.py: the model is never put in eval mode (dropout on during "
                   "the gradient; VGG16 has no batch norm)",
    "base_augmentation": "R4VR paper: RandomRotation 30 + HorizontalFlip",
    "active_learning.recipe": "not in the R4VR paper: the toolkit's protocol with the R4VR training (recipe paper)",
    "active_learning.image_size": "the R4VR crop 224", "active_learning.seeds": "active-learning toolkit: 3 runs",
    "active_learning.initial_share": "active-learning toolkit: 10 % labelled at first",
    "active_learning.step_share": "active-learning toolkit: +10 % per round",
    "active_learning.final_share": "active-learning toolkit: to 60 %",
    "data_generation.baseline_epochs": "R4VR train_model_data_generation.py / train_model_sequentially.py: the "
                                       "baseline's train_loop with num_epochs at its default 100",
    "data_generation.baseline_patience": "R4VR train_model_data_generation.py / train_model_sequentially.py: the "
                                         "baseline's early_stopping=5 (counter > 5: patience 6)",
    "stopping": "R4VR NEU/Severstal train_utils.py train_loop: counter reset when val accuracy improves, else when "
                "val loss improves; stop when counter > 20 (patience 21)",
    "restore": "R4VR NEU train_model.py: torch.save(model.state_dict()) after the loop = the last epoch's weights",
    "freeze": "R4VR modules.py freeze_weights (ResNet18 layer1-3, conv1/bn1 trainable; VGG16 features), called by "
              "NEU train_model.py and train_model_data_generation.py",
    "pair": "R4VR NEU train_model.py: the two models on disjoint halves of the train split",
    "half_a": "R4VR NEU train_model.py: ResNet18 on elem[138:] of every class (the second half)",
    "half_b": "R4VR NEU train_model.py: VGG16 on elem[:138] of every class (the first half)",
    "pretrain": "R4VR NEU train_model.py: one training on the half, no fine-tuning stage",
}
# the NEU protocol (train_utils.py: up to 100 epochs, the accuracy-or-loss counter, counter > 20)
NEU_TRAINING = dict(stopping="accuracy_or_loss", restore="last", freeze=True, pair="disjoint_halves",
                    half_a="second", half_b="first", pretrain=False)

# the NEU HIL step protocol (train_model_data_generation.py); Severstal's differs in optimiser, schedule and batch
NEU_HIL = dict(epochs=20, patience=4, restore="last", stopping="accuracy_or_loss", step_optimizer="reuse",
               schedule="constant", batch_size=16, baseline_batch_size=16)
# the toolkit's active-learning protocol, the same in every row (10 % -> 60 % by 10 %, 3 seeds)
DG_BASELINE = dict(baseline_epochs=100, baseline_patience=6)  # the HIL baseline, the same in every row
AL_PROTOCOL = dict(seeds=(0, 1, 2), initial_share=0.1, step_share=0.1, final_share=0.6)

R4VR_NEU = Preset(
    name="R4VR NEU",
    model_a=Protocol("resnet18", lr=1e-3, batch_size=16, epochs=100, patience=21, optimizer="adam",
                     schedule="constant", source="R4VR NEU train_model.py / train_utils.py: ResNet18, Adam 1e-3, "
                     "batch 16, 100 epochs, stop when counter > 20"),
    model_b=Protocol("vgg16", lr=1e-3, batch_size=16, epochs=100, patience=21, optimizer="adam",
                     schedule="constant", source="R4VR NEU train_model.py / train_utils.py: VGG16, Adam 1e-3, "
                     "batch 16, 100 epochs, stop when counter > 20"),
    data_generation=DataGeneration(initial_samples=NEU_GRID[0], step_sizes=NEU_GRID[1], pool_per_class=None,
                                   **NEU_HIL, **DG_BASELINE),
    active_learning=ActiveLearning(recipe="paper", image_size=224, **AL_PROTOCOL), saliency=Saliency(PAPER_SHARES),
    weights="imagenet", image_size=224, seeds=R4VR_SEEDS, T=20, base_augmentation="paper", **NEU_TRAINING,
    dg_model_b=True, mc_extra_splits=("valid",), mc_other_half=True, sal_models=("model_b",), sal_split="own_half",
    sal_dropout=True,
    sources=dict(COMMON_SOURCES))
R4VR_SEVERSTAL = Preset(
    name="R4VR Severstal",
    model_a=Protocol("resnet18", lr=1e-3, batch_size=16, epochs=200, patience=21, optimizer="adam",
                     schedule="constant", source="R4VR Severstal train_model.py: ResNet18, Adam 1e-3 (its plateau "
                     "scheduler commented out), batch 16, num_epochs=200; train_utils.py: stop when counter > 20"),
    model_b=Protocol("efficientnet_b0", lr=1e-3, batch_size=64, epochs=200, patience=21, optimizer="adamw",
                     schedule="plateau", source="R4VR Severstal train_model.py: EfficientNet-B0, AdamW 1e-3 + "
                     "ReduceLROnPlateau(0.1, patience 5, threshold 1e-4, min 1e-6) on val loss, batch 64, "
                     "num_epochs=200; train_utils.py: stop when counter > 20"),
    data_generation=DataGeneration(initial_samples=(5, 10, 15, 20), step_sizes=(5, 10, 15), pool_per_class=195,
                                   **{**NEU_HIL, "step_optimizer": "new", "schedule": "plateau",
                                      "baseline_batch_size": 64}, **DG_BASELINE),
    active_learning=ActiveLearning(recipe="paper", image_size=224, **AL_PROTOCOL), saliency=Saliency(PAPER_SHARES),
    weights="imagenet", image_size=256, seeds=R4VR_SEEDS, T=40, base_augmentation="paper",
    dg_model_b=True, mc_extra_splits=("valid",), mc_other_half=False, sal_models=("model_a", "model_b"),
    sal_split="test", sal_dropout=True,
    stopping="accuracy_or_loss", restore="best_accuracy", freeze=False, pair="disjoint_halves", half_a="first",
    half_b="second", pretrain=True,
    sources={**COMMON_SOURCES, "T": "R4VR paper, Severstal: T = 40",
             "restore": "R4VR Severstal train_utils.py: model_acc.pth (best val accuracy), which train_model.py "
                        "fine-tunes from",
             "freeze": "R4VR Severstal train_model.py: freeze_weights is never called; train_model_sequentially.py: "
                       "#model.freeze_weights() commented out (nothing frozen, in training and in the HIL grid)",
             "data_generation.step_optimizer": "R4VR Severstal train_model_sequentially.py: a new Adam(1e-3) (every "
                                               "model, EfficientNet-B0 too) and a new ReduceLROnPlateau for the "
                                               "baseline and each step",
             "data_generation.schedule": "R4VR Severstal train_model_sequentially.py: ReduceLROnPlateau(0.1, patience "
                                         "5, threshold 1e-4, min 1e-6) on the val loss, new with each fit",
             "data_generation.batch_size": "R4VR Severstal train_model_sequentially.py: the steps' DataLoader "
                                           "batch_size=16",
             "data_generation.baseline_batch_size": "R4VR Severstal train_model_sequentially.py: the baseline's "
                                                    "DataLoader batch_size=64",
             "dg_model_b": "R4VR Severstal outputs/data_collection: RuntimeStats_resnet_seed_42.csv and "
                           "RuntimeStats_effnet_seed_42.csv (both grids published)",
             "mc_extra_splits": "R4VR Severstal get_mc_scores.py: val_files.csv (the validation split; the test "
                                "split is scored too, for the report's test rows: not published)",
             "mc_other_half": "R4VR Severstal get_mc_scores.py: no train images (both models fine-tuned on all of "
                              "them)",
             "sal_models": "R4VR Severstal uncertainty_curve.py: effnet and resnet (UncertaintyCurveEffNet.png, "
                           "UncertaintyCurveResNet.png)",
             "sal_split": "R4VR Severstal uncertainty_curve.py: test_files.csv (the test split)",
             "sal_dropout": "R4VR Severstal uncertainty_curve.py: model.eval(), but mc_predict leaves dropout on after "
                            "the first image (batch norm stays on running statistics)",
             "pair": "R4VR Severstal train_model.py: pre-training on the two halves of train_files_large.csv",
             "half_a": "R4VR Severstal train_model.py: ResNet18 on the first half (iloc[:split])",
             "half_b": "R4VR Severstal train_model.py: EfficientNet-B0 on the second half (iloc[split:])",
             "pretrain": "R4VR Severstal train_model.py: pre-training on a balanced set's half, then both fine-tuned "
                         "on train_ims.json (the full unbalanced set) from model_acc.pth",
             "image_size": "R4VR Severstal data_utils.py: Resize(256) only, so a 1600 x 256 strip stays whole "
                           "(geometry whole)",
             "weights": "R4VR paper: ImageNet-pretrained, fine-tuned; the Severstal code freezes nothing (freeze_weights "
                        "never called, #model.freeze_weights() in train_model_sequentially.py)",
             "data_generation.initial_samples": "R4VR paper, Severstal: initial {5,10,15,20}",
             "data_generation.step_sizes": "R4VR paper, Severstal: step {5,10,15}",
             "data_generation.pool_per_class": "R4VR paper, Severstal: about 195 images per class in the "
                                               "data-generation pool"})
# the toolkit rows have no published grid: the R4VR NEU grid
NEU_DATA_GENERATION = DataGeneration(initial_samples=NEU_GRID[0], step_sizes=NEU_GRID[1], pool_per_class=None,
                                     **NEU_HIL, **DG_BASELINE)
TOOLKIT_SOURCES = {**COMMON_SOURCES, "weights": "active-learning toolkit: trained from scratch every round",
                   "seeds": "no published seed list for this data set: seeds 0-9",
                   "T": "R4VR default T = 20 (no published value)",
                   "data_generation.initial_samples": "R4VR NEU grid (no published grid for this data set)",
                   "data_generation.step_sizes": "R4VR NEU grid (no published grid for this data set)",
                   "data_generation.pool_per_class": "the whole train split",
                   "base_augmentation": "active-learning toolkit: RandomCrop(32, padding 4) + horizontal flip "
                                        "(crop_flip)",
                   "image_size": "casting images at the R4VR crop 224",
                   "active_learning.recipe": "active-learning toolkit: recipe toolkit, 10 % -> 60 % by 10 %, 3 seeds",
                   "active_learning.initial_share": "active-learning toolkit: INIT_L_RATIO 0.1 of its 50,000 "
                                                    "training images = 5,000 (recipe toolkit: share_of pool_and_valid)",
                   "active_learning.step_share": "active-learning toolkit: BUDGET_SIZE 5,000 = 10 % of 50,000 per "
                                                 "episode",
                   "active_learning.final_share": "active-learning toolkit: MAX_ITER 5 episodes, to 30,000 = 60 % "
                                                  "of 50,000",
                   "active_learning.image_size": "casting images at the R4VR crop 224",
                   "stopping": "no published pair training: this project's val-loss counter",
                   "restore": "no published pair training: the lowest validation loss",
                   "freeze": "the toolkit trains from scratch: nothing pretrained to freeze",
                   "pair": "no published pair for this data set: both models on the whole train split",
                   "half_a": "unused (same_data)", "half_b": "unused (same_data)",
                   "pretrain": "no published pre-training",
                   "data_generation.step_optimizer": "R4VR NEU HIL protocol (no published grid for this data set)",
                   "dg_model_b": "no published grid for this data set: model A's only",
                   "mc_extra_splits": "no published MC experiment: the test split alone",
                   "mc_other_half": "no published MC experiment (same_data pair)",
                   "sal_models": "no published saliency experiment: model A",
                   "sal_split": "no published saliency experiment: the test split",
                   "sal_dropout": "no published saliency experiment: eval mode (dropout off)"}
# no published MC or saliency experiment for the toolkit's data sets: this project's defaults
TOOLKIT_UQ = dict(dg_model_b=False, mc_extra_splits=(), mc_other_half=False, sal_models=("model_a",),
                  sal_split="test", sal_dropout=False)
# no published pair training for the toolkit's data sets: this project's defaults
TOOLKIT_TRAINING = dict(stopping="val_loss", restore="best_loss", freeze=None, pair="same_data", half_a="first",
                        half_b="second", pretrain=False)
TOOLKIT_PAIR = dict(
    model_a=Protocol("resnet18_cifar", lr=1e-3, batch_size=96, epochs=100, patience=10, optimizer="adam",
                     schedule="constant",
                     source="active-learning toolkit: its CIFAR ResNet18 (3x3 stride-1 stem + max-pool, "
                            "Dropout 0.5; resnet18_cifar), batch 96 (configs/cifar10/al/RESNET18.yaml); R4VR's Adam 1e-3, 100 epochs"),
    model_b=Protocol("vgg16", lr=1e-3, batch_size=96, epochs=100, patience=10, optimizer="adam", schedule="constant",
                     source="the cascade's second model: R4VR's VGG16 (no published pair for this data set)"))
TOOLKIT_CASTING = Preset(
    name="toolkit casting", **TOOLKIT_PAIR, data_generation=NEU_DATA_GENERATION,
    active_learning=ActiveLearning(recipe="toolkit", image_size=224, **AL_PROTOCOL), saliency=Saliency(PAPER_SHARES),
    weights="none", image_size=224, seeds=TEN_SEEDS, T=20, base_augmentation="crop_flip", **TOOLKIT_TRAINING,
    **TOOLKIT_UQ, sources=dict(TOOLKIT_SOURCES))
TOOLKIT_CIFAR = Preset(
    name="toolkit CIFAR", **TOOLKIT_PAIR, data_generation=NEU_DATA_GENERATION,
    active_learning=ActiveLearning(recipe="toolkit", image_size=32, **AL_PROTOCOL), saliency=Saliency(PAPER_SHARES),
    weights="none", image_size=32, seeds=TEN_SEEDS, T=20, base_augmentation="crop_flip", **TOOLKIT_TRAINING,
    **TOOLKIT_UQ, sources={**TOOLKIT_SOURCES, "image_size": "active-learning toolkit: 32 px native",
             "active_learning.image_size": "active-learning toolkit: 32 px native"})

PRESETS: dict[str, Preset] = {
    "neu": R4VR_NEU,
    "synthetic": R4VR_NEU,             # the built-in set imitates NEU
    "folders": R4VR_NEU,               # a user's own class folders: the R4VR defaults
    "severstal_kaggle": R4VR_SEVERSTAL,
    "severstal_supervisely": R4VR_SEVERSTAL,
    "casting": TOOLKIT_CASTING,
    "cifar10": TOOLKIT_CIFAR,
    "cifar100": TOOLKIT_CIFAR,
    "elpv": R4VR_NEU,                  # ELPV solar cells: no R4VR row of their own; the R4VR protocol (NEU's)
}

# The scripts' own defaults are the R4VR NEU row (the built-in data imitates NEU).
DEFAULT = R4VR_NEU


def preset_for(dataset: str) -> Preset:
    """The paper-scale settings of `dataset`; a data set without a row is an InputError."""
    if dataset not in PRESETS:
        raise InputError(f"no paper preset for --dataset {dataset}: add its row to presets.PRESETS "
                         f"(rows: {', '.join(PRESETS)}), or give the values as flags")
    return PRESETS[dataset]


def paper_T(dataset: str) -> int:
    """The paper's MC-dropout samples per image of `dataset` (its row's T)."""
    return preset_for(dataset).T


def paper_values(setting: str) -> str:
    """Every row's value of `setting`, for a help text: 'T' -> '20: R4VR NEU, toolkit casting, ...; 40: R4VR Severstal'."""
    rows: dict[str, list[str]] = {}
    for p in dict.fromkeys(PRESETS.values()):
        rows.setdefault(repr(p.value(setting)[0]), []).append(p.name)
    return "; ".join(f"{value}: {', '.join(names)}" for value, names in rows.items())


def paper_default(setting: str) -> dict:
    """{'default': value, 'source': ...} of a script flag whose default is the paper's
    (`DEFAULT`'s row; the setting by its one name): `flag(help=..., **paper_default("model_a.lr"))`."""
    value, source = DEFAULT.value(setting)
    return {"default": value, "source": f"paper preset {DEFAULT.name}: {source}"}


def preset_record(dataset: str) -> dict:
    """The preset of `dataset` as plain JSON values with their sources (for reproduce.json)."""
    p = preset_for(dataset)
    values = {name: p.value(name)[0] for name in p.settings() if not name.startswith(("model_a.", "model_b."))
              and p.value(name)[0] is not SCRIPT_DEFAULT}
    return {"name": p.name, "values": values, "sources": dict(p.sources),
            "protocols": {key: {f.name: getattr(getattr(p, key), f.name) for f in fields(Protocol)}
                          for key in ("model_a", "model_b")}}


# ============================================================================ reproduce.py's scales

@dataclass(frozen=True)
class Scale:
    """One scale of reproduce.py: the paper settings it replaces (by their one name, beside the
    paper rows above) and why, plus reproduce.py's own sizes (no paper gives them; these defaults
    are the full scale's). Every setting a scale leaves out is the data set's paper value, so
    editing a row above changes `make run` unless the scale names that setting here."""
    name: str
    why: str
    settings: dict[str, object] = field(default_factory=dict, hash=False)
    al_workers: int = 1             # processes sharing the active-learning runs on a CPU (shards, one thread each)
    safety_per_class: int = 0       # > 0: the cascade's own large valid/test splits of the built-in data (per class)
    dg_seeds: tuple[int, ...] = (0, 1, 2)  # arrival-order seeds of the data-generation grid (the unit of its verdicts)
    dg_workers: int = 1             # processes sharing those seeds on a CPU (one thread each)
    # the built-in Severstal-like strips (step `strips`): per class (0 = skip), file height (width 6.25 x),
    # input height (whole strips), epochs of each model of the pair
    strips_per_class: int = 0
    strips_height: int = 64
    strips_image_size: int = 32
    strips_epochs: int = 8

    def __post_init__(self):
        unknown = [name for name in self.settings if name not in Preset.settings()]
        if unknown:
            raise ValueError(f"scale {self.name!r}: no setting {unknown} in presets.Preset ({Preset.settings()})")


def scaled(dataset: str, scale: Scale, given: dict[str, tuple[object, str]] | None = None
           ) -> tuple[Preset, dict[str, str]]:
    """(`dataset`'s paper row with `scale`'s values and the `given` ones ({setting: (value, source)})
    applied, {setting: where its value came from}). Precedence: given, then the scale, then the row;
    a setting left to the script's default has no source. A data set without a row is an InputError."""
    paper = preset_for(dataset)
    values, sources = {}, {}
    for name in Preset.settings():
        value, source = paper.value(name)
        if name in (given or {}):
            values[name], sources[name] = given[name]
        elif name in scale.settings:
            values[name] = scale.settings[name]
            sources[name] = f"{scale.name} scale (presets.SCALES), " + (
                "no paper value" if value is SCRIPT_DEFAULT else f"paper {value!r}")
        elif value is not SCRIPT_DEFAULT:
            sources[name] = f"paper preset {dataset} ({paper.name}): {source}"
    return paper.with_values(values), sources


# The CPU scale's active learning: rounds of 600+ optimiser steps (cut from 1,000 for the 15-minute budget)
# over 3 seeds cost ~10 CPU-s each, so it runs one strategy per family: uncertainty
# (entropy), MC-dropout Bayesian (bald) and diversity (coreset) against random. least_confidence, margin, dbal,
# ensemble_variation_ratio and vaal (~25-50 s per query on a CPU) are not run at this scale (REPORT.md says so).
CPU_STRATEGIES = ("random", "entropy", "bald", "coreset")
SCALES = {
    # the CPU scales train from random weights: freeze None (nothing frozen without pretrained weights); the rest
    # of the training protocol (stopping, restore, optimiser, pair and halves) is the data set's preset, and so is
    # the HIL step protocol (restore, stopping, optimiser reuse, schedule) and the saliency gradient's dropout.
    # Smaller than the paper's at the CPU scales: HIL batches 32 (paper 16; Severstal baseline 64), model A's grid
    # only (paper: both models), MC scores and saliency on model A's test images (paper NEU: test + valid + the
    # other model's training half; saliency on VGG16's own training half)
    "smoke": Scale("smoke", why="tiny sizes: checks that everything runs (about a minute)", settings={
        "image_size": 24, "model_a.model": "tiny_cnn", "model_b.model": "tiny_cnn", "weights": "none", "freeze": None,
        "data_generation.baseline_epochs": 1, "data_generation.baseline_patience": 1, "seeds": (0,),
        "model_a.epochs": 1, "model_a.patience": 1, "model_a.lr": 3e-3, "model_a.batch_size": 32,
        "model_b.epochs": 1, "model_b.patience": 1, "model_b.lr": 3e-3, "model_b.batch_size": 32,
        "data_generation.initial_samples": (4,), "data_generation.step_sizes": (4,),
        "data_generation.pool_per_class": 8, "data_generation.epochs": 1, "data_generation.patience": 1,
        "data_generation.batch_size": 32, "data_generation.baseline_batch_size": 32, "dg_model_b": False,
        "mc_extra_splits": (), "mc_other_half": False, "sal_models": ("model_a",), "sal_split": "test",
        "T": 3, "saliency.shares": (25.0, 75.0), "saliency.max_images": 16, "active_learning.image_size": 24,
        "active_learning.strategies": ("random", "entropy"), "active_learning.seeds": (0,),
        "active_learning.epochs": 1, "active_learning.patience": 1, "active_learning.ensemble_size": 2,
        "active_learning.mc_samples": 2, "active_learning.final_share": 0.3, "active_learning.min_steps": 4},
        dg_seeds=(0,), strips_per_class=4, strips_height=32, strips_image_size=16, strips_epochs=1),
    # measured on 2 idle CPU cores: tiny_cnn 1.4 s and resnet18 8 s per epoch at 64 px (1,080 train images);
    # tiny_cnn at 32 px ~15 CPU-ms per optimiser step (batch 32, validating every 50 steps). The train step's
    # budget (~300 s): model A's three arms on its half (540 images; 1 + 2 + 2 passes per epoch) over 3 seeds at
    # 12 epochs ~ 3 x 12 x 5 x 0.7 s = 126 s; model B (two passes per epoch) on each half at 9 epochs ~ 2 x 9 x 8 s
    # = 144 s (before the three arms and the halves: 25 and 18 epochs, 379 s in all).
    # Measured with make run on 2 CPU cores at model B 9 epochs, HIL fine-tuning 4 / baseline 25 epochs and
    # active-learning rounds of 1,000 steps: 16.6 min (train 398 s, data generation 159 s, active learning 336 s),
    # over the 15-minute budget; so model B trains 6 epochs, HIL fine-tuning 3 (baseline 15) and each
    # active-learning round 600 steps (measured earlier: 600-step rounds end 7-11 points below 3,000-step ones at
    # 108-324 images).
    # On ELPV (the default data since 2026-12-07; halves of 668 cells, 1.24x the synthetic halves) make run measured
    # 16.9 min on a fresh clone on 2 quiet cores (reproduce.py 913 s: train 437, active learning 249, data generation
    # 99, cell_shift 43, strips 38 s), over the budget; so, chosen on time alone before any ELPV verdict was read:
    # model B 4 epochs (was 6), model A 10 (was 12), active-learning rounds 400 steps (were 600), strips 6 epochs
    # (were 8).
    "default": Scale("default", why="make run: every experiment within 15 minutes on 2 CPU cores, from random "
                                    "weights", settings={
        "image_size": 64, "model_a.model": "tiny_cnn", "model_b.model": "resnet18", "weights": "none", "freeze": None,
        "data_generation.baseline_epochs": 15, "seeds": (0, 1, 2),
        "model_a.epochs": 10, "model_a.patience": 6, "model_a.lr": 3e-3, "model_a.batch_size": 32,
        "model_b.epochs": 4, "model_b.patience": 8, "model_b.lr": 5e-4, "model_b.batch_size": 32,
        "data_generation.initial_samples": (5, 10), "data_generation.step_sizes": (5, 10),
        "data_generation.pool_per_class": 30, "data_generation.epochs": 3, "data_generation.patience": 2,
        "data_generation.batch_size": 32, "data_generation.baseline_batch_size": 32, "dg_model_b": False,
        "mc_extra_splits": (), "mc_other_half": False, "sal_models": ("model_a",), "sal_split": "test",
        "saliency.shares": (5.0, 15.0, 25.0, 35.0, 55.0, 75.0, 95.0), "saliency.max_images": 360,
        "active_learning.image_size": 32, "active_learning.strategies": CPU_STRATEGIES, "active_learning.epochs": 1,
        "active_learning.patience": 3, "active_learning.ensemble_size": 2, "active_learning.mc_samples": 10,
        "active_learning.final_share": 0.3, "active_learning.min_steps": 400,
        # a deviation (the papers' data were balanced): ELPV holds about twice as many functional as defective
        # cells; without weights a small CPU model drifts to 'functional' (defective recall about 50 %); a no-op
        # on balanced data such as the synthetic set
        "class_weights": "balanced"},
        al_workers=2, safety_per_class=500, dg_seeds=(0, 1, 2), dg_workers=2, strips_per_class=40, strips_epochs=6),
    "full": Scale("full", why="the papers' scale: the data set's row as published, for a GPU"),
}


def _set(values) -> str:
    return "{" + ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values) + "}"


def markdown_table() -> str:
    """One row per distinct preset: the value (source) of each setting, in markdown."""
    names: dict[str, list[str]] = {}
    rows: dict[str, Preset] = {}
    for dataset, p in PRESETS.items():
        names.setdefault(p.name, []).append(dataset)
        rows[p.name] = p
    lines = ["| data sets | model A | model B | weights | px | T | HIL grid (per class) | pool cap / class "
             "| base augmentation | active learning |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, p in rows.items():
        src, dg, al = p.sources, p.data_generation, p.active_learning
        model = [f"{m.model}: lr {m.lr:g}, batch {m.batch_size}, {m.epochs} epochs, patience {m.patience} ({m.source})"
                 for m in (p.model_a, p.model_b)]
        lines.append(
            f"| {', '.join(names[name])} | {model[0]} | {model[1]} | {p.weights} ({src['weights']}) "
            f"| {p.image_size} ({src['image_size']}) | {p.T} ({src['T']}) "
            f"| {_set(dg.initial_samples)} x {_set(dg.step_sizes)} ({src['data_generation.initial_samples']}; "
            f"{src['data_generation.step_sizes']}) "
            f"| {dg.pool_per_class or 'all'} ({src['data_generation.pool_per_class']}) "
            f"| {p.base_augmentation} ({src['base_augmentation']}) | recipe {al.recipe} at {al.image_size} px, "
            f"{100 * al.initial_share:g} % -> {100 * al.final_share:g} % by {100 * al.step_share:g} %, "
            f"seeds {list(al.seeds)} ({src['active_learning.recipe']}) |")
    return "\n".join(lines)
