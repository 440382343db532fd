"""The papers' settings, each declared once here with its source: one `Preset` row per data set
(what `reproduce.py --full --dataset X` runs, and where every script's paper default comes
from), with one `Protocol` row per model of the pair (how that model is trained).

    from safehil.settings.presets import preset_for, paper_T
    preset_for("severstal_kaggle").model_b.batch_size        # 64 (EfficientNet-B0)
    paper_T("neu")                                           # 20

How a setting is found (`Preset.value`, used by reproduce.py's scales): `model_a` / `model_b`
are the protocols' models; a name that is a `Protocol` field (`lr`, `batch_size`, `epochs`,
`patience`, ...) is model A's, the same name + `_b` is model B's; any other name is the
preset's own field. So a new per-model value is one `Protocol` field (with its value in each
row); a new data-set value is one `Preset` field with its source in `COMMON_SOURCES` (or a
row's `sources`); a row without a source for a field is refused when it is built. A data set without a
row is an error (`preset_for`), never another data set's settings.

`markdown_table()` renders the table of every row with its sources.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from safehil.core.utils import InputError


@dataclass(frozen=True)
class Protocol:
    """How one model of a paper's pair is trained."""
    model: str                         # models.ARCHITECTURES name
    lr: float                          # learning rate
    batch_size: int                    # training batch
    epochs: int                        # maximum epochs
    patience: int                      # early-stopping patience in epochs
    optimizer: str                     # training.OPTIMIZERS
    schedule: str                      # training.SCHEDULES (plateau: ReduceLROnPlateau on the val loss)
    source: str                        # where these values come from


@dataclass(frozen=True)
class Preset:
    """One data set's paper-scale settings; `sources` says where each value comes from."""
    name: str
    model_a: Protocol                  # trained with and without augmentation; MC, saliency, cascade model A
    model_b: Protocol                  # the cascade's second architecture
    weights: str                       # imagenet (with the paper's freezing) | none
    image_size: int
    seeds: tuple[int, ...]             # of the augmentation comparison
    T: int                             # MC-dropout samples per image
    shares: tuple[float, ...]          # saliency: revealed shares in percent
    dg_initial: tuple[int, ...]        # HIL grid: initial labelled images per class
    dg_steps: tuple[int, ...]          # HIL grid: new images per class per step
    dg_pool_per_class: int | None      # HIL pool cap per class; None = the whole train split
    dg_epochs: int                     # HIL: fine-tuning epochs per step
    dg_patience: int                   # HIL: early-stopping patience per step
    dg_baseline_epochs: int            # HIL: maximum epochs of the baseline on the initial set
    dg_baseline_patience: int          # HIL: its early-stopping patience
    dg_restore: str                    # HIL: the weights each fit hands on (training.RESTORES; last = never reloaded)
    dg_stopping: str                   # HIL: what resets each fit's early-stopping counter (training.STOPPING_RULES)
    dg_step_optimizer: str             # HIL: reuse = one optimiser for the baseline and every step; new = one per fit
    dg_schedule: str                   # HIL: the rate schedule of each fit (training.SCHEDULES)
    dg_batch_size: int                 # HIL: the fine-tuning steps' batch
    dg_baseline_batch_size: int        # HIL: the baseline's batch
    dg_model_b: bool                   # HIL: the grid of model B too (model A's always runs)
    mc_splits: tuple[str, ...]         # MC box plots: the splits scored
    mc_other_half: bool                # MC box plots: also the other model's training half (disjoint halves)
    sal_models: tuple[str, ...]        # saliency curves: the networks (model_a, model_b)
    sal_split: str                     # saliency curves: test | own_half (the network's own training half)
    sal_dropout: bool                  # saliency gradient with dropout on (batch norm on running statistics)
    base_augmentation: str             # augment.BASE_AUGMENTATIONS
    al_recipe: str                     # recipes.RECIPES name of every active-learning round
    al_image_size: int
    al_seeds: tuple[int, ...]
    al_initial_share: float
    al_step_share: float
    al_final_share: float
    stopping: str                      # training.STOPPING_RULES: what resets the early-stopping counter
    restore: str                       # training.RESTORES: the weights a training run keeps
    freeze: bool | None                # the paper's freezing (None: on only with pretrained weights)
    pair: str                          # the cascade's pair: disjoint_halves | same_data (reproduce.PAIRS)
    half_a: str                        # model A's half of the train split with disjoint_halves (first | second)
    half_b: str                        # model B's half
    pretrain: bool                     # pre-train on the balanced half, then fine-tune on the whole train split
    sources: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        missing = [f.name for f in fields(self) if f.name not in ("name", "sources", "model_a", "model_b")
                   and f.name not in self.sources]
        if missing:
            raise ValueError(f"preset {self.name!r}: no source for {missing}")

    def value(self, setting: str) -> tuple[object, str]:
        """(value, source) of a reproduce.py scale setting (the naming rule of the module docstring)."""
        per_model = {f.name for f in fields(Protocol)} - {"model", "source"}
        if setting in ("model_a", "model_b"):
            protocol = getattr(self, setting)
            return protocol.model, protocol.source
        if setting.endswith("_b") and setting[:-2] in per_model:
            return getattr(self.model_b, setting[:-2]), self.model_b.source
        if setting in per_model:
            return getattr(self.model_a, setting), self.model_a.source
        if setting in {f.name for f in fields(Preset)} - {"name", "sources"}:
            return getattr(self, setting), self.sources[setting]
        raise KeyError(f"presets.Preset has no setting {setting!r}")


NEU_GRID = ((5, 10, 15, 20), (2, 4, 6, 8, 10))
PAPER_SHARES = (5.0, 15.0, 25.0, 35.0, 45.0, 55.0, 65.0, 75.0, 85.0, 95.0)
# R4VR Severstal outputs/modeling_stats.md: the 10 seeds of the published with/without-augmentation table
R4VR_SEEDS = (1, 17, 22, 33, 42, 59, 66, 73, 88, 90)
TEN_SEEDS = tuple(range(10))   # 10 seeds where no seed list is published (the toolkit's data sets)

# the sources every preset shares (a row's own `sources` entries replace these)
COMMON_SOURCES = {
    "weights": "R4VR paper: ImageNet-pretrained, fine-tuned; ResNet18 layer1-3 and VGG16 conv features frozen",
    "image_size": "R4VR paper: crop 224",
    "seeds": "R4VR Severstal outputs/modeling_stats.md: the augmentation table's seeds 1, 17, 22, 33, 42, 59, 66, "
             "73, 88, 90 (NEU publishes no seed list: the same ten)",
    "T": "R4VR paper, NEU: T = 20", "shares": "R4VR paper: shares 5, 15, ..., 95 %",
    "dg_initial": "R4VR paper, NEU: initial/class {5,10,15,20}", "dg_steps": "R4VR paper, NEU: step/class {2,4,6,8,10}",
    "dg_pool_per_class": "R4VR paper, NEU: the whole train split (276/class)",
    "dg_epochs": "R4VR NEU train_model_data_generation.py / Severstal train_model_sequentially.py: num_epochs=20 per step",
    "dg_patience": "R4VR NEU train_model_data_generation.py / Severstal train_model_sequentially.py: early_stopping=3 "
                   "per step; train_loop stops when counter > 3 (4 epochs without gain: patience 4)",
    "dg_restore": "R4VR NEU train_model_data_generation.py / Severstal train_model_sequentially.py: train_loop never "
                  "reloads a saved model, so step k+1 fine-tunes step k's last epoch",
    "dg_stopping": "R4VR train_utils.py train_loop, called for the baseline and every step: counter reset when val "
                   "accuracy improves, else when val loss improves",
    "dg_step_optimizer": "R4VR NEU train_model_data_generation.py: one Adam(1e-3) per setting, made before the "
                         "baseline and reused by every step",
    "dg_schedule": "R4VR NEU train_model_data_generation.py: no scheduler (constant rate)",
    "dg_batch_size": "R4VR NEU train_model_data_generation.py: DataLoader batch_size=16",
    "dg_baseline_batch_size": "R4VR NEU train_model_data_generation.py: DataLoader batch_size=16",
    "dg_model_b": "R4VR NEU train_model_data_generation.py --model vgg | resnet: the grid of each model of the pair",
    "mc_splits": "R4VR NEU get_mc_scores.py: the test and valid folders",
    "mc_other_half": "R4VR NEU get_mc_scores.py: then the other model's training half (ResNet18 on elem[:138], VGG16 "
                     "on elem[138:]): 72 + 72 + 828 = 972 images per model",
    "sal_models": "R4VR NEU saliency_map_uncertainties.py: model_name = 'vgg' (VGG16 only)",
    "sal_split": "R4VR NEU saliency_map_uncertainties.py: VGG16 on elem[:138] of every class, its own training half "
                 "(828 images)",
    "sal_dropout": "R4VR NEU saliency_map_uncertainties.py: the model is never put in eval mode (dropout on during "
                   "the gradient; VGG16 has no batch norm)",
    "base_augmentation": "R4VR paper: RandomRotation 30 + HorizontalFlip",
    "al_recipe": "not in the R4VR paper: the toolkit's protocol with the R4VR training (recipe paper)",
    "al_image_size": "the R4VR crop 224", "al_seeds": "active-learning toolkit: 3 runs",
    "al_initial_share": "active-learning toolkit: 10 % labelled at first",
    "al_step_share": "active-learning toolkit: +10 % per round", "al_final_share": "active-learning toolkit: to 60 %",
    "dg_baseline_epochs": "R4VR train_model_data_generation.py / train_model_sequentially.py: the baseline's "
                          "train_loop with num_epochs at its default 100",
    "dg_baseline_patience": "R4VR train_model_data_generation.py / train_model_sequentially.py: the baseline's "
                            "early_stopping=5 (counter > 5: patience 6)",
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
NEU_HIL = dict(dg_epochs=20, dg_patience=4, dg_restore="last", dg_stopping="accuracy_or_loss", dg_step_optimizer="reuse",
               dg_schedule="constant", dg_batch_size=16, dg_baseline_batch_size=16, dg_model_b=True)
# the toolkit's active-learning protocol, the same in every row (10 % -> 60 % by 10 %, 3 seeds)
DG_BASELINE = dict(dg_baseline_epochs=100, dg_baseline_patience=6)  # the HIL baseline, the same in every row
AL_PROTOCOL = dict(al_seeds=(0, 1, 2), al_initial_share=0.1, al_step_share=0.1, al_final_share=0.6)

R4VR_NEU = Preset(
    name="R4VR NEU",
    model_a=Protocol("resnet18", lr=1e-3, batch_size=16, epochs=100, patience=21, optimizer="adam",
                     schedule="constant", source="R4VR NEU train_model.py / train_utils.py: ResNet18, Adam 1e-3, "
                     "batch 16, 100 epochs, stop when counter > 20"),
    model_b=Protocol("vgg16", lr=1e-3, batch_size=16, epochs=100, patience=21, optimizer="adam",
                     schedule="constant", source="R4VR NEU train_model.py / train_utils.py: VGG16, Adam 1e-3, "
                     "batch 16, 100 epochs, stop when counter > 20"),
    weights="imagenet", image_size=224, seeds=R4VR_SEEDS, T=20, shares=PAPER_SHARES,
    dg_initial=NEU_GRID[0], dg_steps=NEU_GRID[1], dg_pool_per_class=None, **NEU_HIL, mc_splits=("test", "valid"),
    mc_other_half=True, sal_models=("model_b",), sal_split="own_half", sal_dropout=True,
    base_augmentation="paper", al_recipe="paper", al_image_size=224, **AL_PROTOCOL, **DG_BASELINE, **NEU_TRAINING,
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
    weights="imagenet", image_size=256, seeds=R4VR_SEEDS, T=40, shares=PAPER_SHARES,
    dg_initial=(5, 10, 15, 20), dg_steps=(5, 10, 15), dg_pool_per_class=195,
    **{**NEU_HIL, "dg_step_optimizer": "new", "dg_schedule": "plateau", "dg_baseline_batch_size": 64},
    mc_splits=("valid", "test"), mc_other_half=False, sal_models=("model_a", "model_b"), sal_split="test",
    sal_dropout=True, base_augmentation="paper", al_recipe="paper", al_image_size=224, **AL_PROTOCOL, **DG_BASELINE,
    stopping="accuracy_or_loss", restore="best_accuracy", freeze=False, pair="disjoint_halves", half_a="first",
    half_b="second", pretrain=True,
    sources={**COMMON_SOURCES, "T": "R4VR paper, Severstal: T = 40",
             "restore": "R4VR Severstal train_utils.py: model_acc.pth (best val accuracy), which train_model.py "
                        "fine-tunes from",
             "freeze": "R4VR Severstal train_model.py: freeze_weights is never called; train_model_sequentially.py: "
                       "#model.freeze_weights() commented out (nothing frozen, in training and in the HIL grid)",
             "dg_step_optimizer": "R4VR Severstal train_model_sequentially.py: a new Adam(1e-3) (every model, "
                                  "EfficientNet-B0 too) and a new ReduceLROnPlateau for the baseline and each step",
             "dg_schedule": "R4VR Severstal train_model_sequentially.py: ReduceLROnPlateau(0.1, patience 5, threshold "
                            "1e-4, min 1e-6) on the val loss, new with each fit",
             "dg_batch_size": "R4VR Severstal train_model_sequentially.py: the steps' DataLoader batch_size=16",
             "dg_baseline_batch_size": "R4VR Severstal train_model_sequentially.py: the baseline's DataLoader "
                                       "batch_size=64",
             "dg_model_b": "R4VR Severstal outputs/data_collection: RuntimeStats_resnet_seed_42.csv and "
                          "RuntimeStats_effnet_seed_42.csv (both grids published)",
             "mc_splits": "R4VR Severstal get_mc_scores.py: val_files.csv (the validation split; test is scored too, "
                          "for the report's test rows: not published)",
             "mc_other_half": "R4VR Severstal get_mc_scores.py: no train images (both models fine-tuned on all of them)",
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
             "weights": "R4VR paper: ImageNet-pretrained, fine-tuned; ResNet18 layer1-3 frozen, EfficientNet-B0 "
                        "trains fully",
             "dg_initial": "R4VR paper, Severstal: initial {5,10,15,20}", "dg_steps": "R4VR paper, Severstal: "
                                                                                     "step {5,10,15}",
             "dg_pool_per_class": "R4VR paper, Severstal: about 195 images per class in the data-generation pool"})
TOOLKIT_SOURCES = {**COMMON_SOURCES, "weights": "active-learning toolkit: trained from scratch every round",
                   "seeds": "no published seed list for this data set: seeds 0-9",
                   "T": "R4VR default T = 20 (no published value)",
                   "dg_initial": "R4VR NEU grid (no published grid for this data set)",
                   "dg_steps": "R4VR NEU grid (no published grid for this data set)",
                   "dg_pool_per_class": "the whole train split",
                   "base_augmentation": "active-learning toolkit: RandomCrop(32, padding 4) + horizontal flip "
                                        "(crop_flip)",
                   "image_size": "casting images at the R4VR crop 224",
                   "al_recipe": "active-learning toolkit: recipe toolkit, 10 % -> 60 % by 10 %, 3 seeds",
                   "al_image_size": "casting images at the R4VR crop 224",
                   "stopping": "no published pair training: this project's val-loss counter",
                   "restore": "no published pair training: the lowest validation loss",
                   "freeze": "the toolkit trains from scratch: nothing pretrained to freeze",
                   "pair": "no published pair for this data set: both models on the whole train split",
                   "half_a": "unused (same_data)", "half_b": "unused (same_data)",
                   "pretrain": "no published pre-training",
                   "dg_step_optimizer": "R4VR NEU HIL protocol (no published grid for this data set)",
                   "dg_model_b": "no published grid for this data set: model A's only",
                   "mc_splits": "no published MC experiment: the test split",
                   "mc_other_half": "no published MC experiment (same_data pair)",
                   "sal_models": "no published saliency experiment: model A",
                   "sal_split": "no published saliency experiment: the test split",
                   "sal_dropout": "no published saliency experiment: eval mode (dropout off)"}
# no published MC or saliency experiment for the toolkit's data sets: this project's defaults
TOOLKIT_UQ = dict(mc_splits=("test",), mc_other_half=False, sal_models=("model_a",), sal_split="test", sal_dropout=False)
# no published pair training for the toolkit's data sets: this project's defaults
TOOLKIT_TRAINING = dict(stopping="val_loss", restore="best_loss", freeze=None, pair="same_data", half_a="first",
                        half_b="second", pretrain=False)
TOOLKIT_PAIR = dict(
    model_a=Protocol("resnet18_cifar", lr=1e-3, batch_size=96, epochs=100, patience=10, optimizer="adam",
                     schedule="constant",
                     source="active-learning toolkit: its CIFAR ResNet18 (3x3 stride-1 stem, Dropout 0.5; "
                            "resnet18_cifar), batch 96 (configs/cifar10/al/RESNET18.yaml); R4VR's Adam 1e-3, 100 epochs"),
    model_b=Protocol("vgg16", lr=1e-3, batch_size=96, epochs=100, patience=10, optimizer="adam", schedule="constant",
                     source="the cascade's second model: R4VR's VGG16 (no published pair for this data set)"))
TOOLKIT_CASTING = Preset(
    name="toolkit casting", **TOOLKIT_PAIR, weights="none", image_size=224, seeds=TEN_SEEDS, T=20,
    shares=PAPER_SHARES, dg_initial=NEU_GRID[0], dg_steps=NEU_GRID[1], dg_pool_per_class=None,
    **{**NEU_HIL, "dg_model_b": False}, **TOOLKIT_UQ, base_augmentation="crop_flip", al_recipe="toolkit", al_image_size=224, **AL_PROTOCOL, **DG_BASELINE,
    **TOOLKIT_TRAINING, sources=dict(TOOLKIT_SOURCES))
TOOLKIT_CIFAR = Preset(
    name="toolkit CIFAR", **TOOLKIT_PAIR, weights="none", image_size=32, seeds=TEN_SEEDS, T=20,
    shares=PAPER_SHARES, dg_initial=NEU_GRID[0], dg_steps=NEU_GRID[1], dg_pool_per_class=None,
    **{**NEU_HIL, "dg_model_b": False}, **TOOLKIT_UQ, base_augmentation="crop_flip", al_recipe="toolkit", al_image_size=32, **AL_PROTOCOL, **DG_BASELINE,
    **TOOLKIT_TRAINING, sources={**TOOLKIT_SOURCES, "image_size": "active-learning toolkit: 32 px native",
             "al_image_size": "active-learning toolkit: 32 px native"})

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
    """The paper's MC-dropout samples per image of `dataset` (20 NEU-like, 40 Severstal)."""
    return preset_for(dataset).T


def paper_default(setting: str) -> dict:
    """{'default': value, 'source': ...} of a script flag whose default is the paper's
    (`DEFAULT`'s row, model A's protocol for a per-model setting): `flag(help=..., **paper_default("lr"))`."""
    value, source = DEFAULT.value(setting)
    return {"default": value, "source": f"paper preset {DEFAULT.name}: {source}"}


def preset_record(dataset: str) -> dict:
    """The preset of `dataset` as plain JSON values with their sources (for reproduce.json)."""
    p = preset_for(dataset)
    values = {f.name: getattr(p, f.name) for f in fields(p) if f.name not in ("sources", "model_a", "model_b")}
    return {"name": p.name, "values": values, "sources": dict(p.sources),
            "protocols": {key: {f.name: getattr(getattr(p, key), f.name) for f in fields(Protocol)}
                          for key in ("model_a", "model_b")}}


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
        src = p.sources
        model = [f"{m.model}: lr {m.lr:g}, batch {m.batch_size}, {m.epochs} epochs, patience {m.patience} ({m.source})"
                 for m in (p.model_a, p.model_b)]
        lines.append(
            f"| {', '.join(names[name])} | {model[0]} | {model[1]} | {p.weights} ({src['weights']}) "
            f"| {p.image_size} ({src['image_size']}) | {p.T} ({src['T']}) "
            f"| {_set(p.dg_initial)} x {_set(p.dg_steps)} ({src['dg_initial']}; {src['dg_steps']}) "
            f"| {p.dg_pool_per_class or 'all'} ({src['dg_pool_per_class']}) "
            f"| {p.base_augmentation} ({src['base_augmentation']}) | recipe {p.al_recipe} at {p.al_image_size} px, "
            f"{100 * p.al_initial_share:g} % -> {100 * p.al_final_share:g} % by {100 * p.al_step_share:g} %, "
            f"seeds {list(p.al_seeds)} ({src['al_recipe']}) |")
    return "\n".join(lines)
