"""The two works' published numbers, written once: read by verdicts.py (the effect sizes a claim
is judged against) and plot_results.py (drawn beside this run's results).

    from safehil.report.published import HIL_SEVERSTAL, hil_time_ratio_per_step_doubling, AL_CIFAR10_AT_60
    hil_time_ratio_per_step_doubling()       # 0.49: the mean of EffNet-B0's 0.50 and ResNet18's 0.48

Every number is copied from ../shared/PAPER.md (rewritten from the works' own result files and
code: the R4VR repository jwiggerthale/Human-in-the-Loop-Machine-Learning and the toolkit
acl21/deep-active-learning-pytorch); `SOURCES` names the file behind each group, and each
verdict row quotes it. Derived
effects (a ratio per doubling, a change per doubling) are computed here from the tables, so a
number is never typed in twice. Nothing here is a result of this project's runs.
"""
from __future__ import annotations

import math

import numpy as np

PAPER = "../shared/PAPER.md"
R4VR_REPO = "jwiggerthale/Human-in-the-Loop-Machine-Learning"
TOOLKIT_REPO = "acl21/deep-active-learning-pytorch"
SOURCES = {
    "hil": "R4VR repo, HiL ML/Severstal/outputs runtime + effort CSVs (seed 42), NEU Fig. 4 (PAPER.md 1, HIL)",
    "augmentation": "R4VR repo, HiL ML/Severstal/outputs test accuracy, 10 seeds (PAPER.md 1, Augmentation)",
    "mc": "R4VR repo, MC-dropout box plots, medians read off (PAPER.md 1, MC dropout)",
    "saliency": "R4VR repo, HiL ML/Severstal/outputs saliency curves + NEU curve (PAPER.md 1, Saliency)",
    "active_learning": "toolkit repo README table, CIFAR-10 ResNet18, 3 runs, 60 % (PAPER.md 2)",
    "safety": "R4VR paper (Processes 2025, 13(12), 4086), claim only; threshold code not published (PAPER.md 1)",
}


# ============================================================================ HIL data generation (Fig. 4)

HIL_INITIAL = (5, 10, 15, 20)        # hand-labelled images per class
HIL_STEPS = (5, 10, 15)              # new images per class per step
HIL_POOL = 5 * 195                   # Severstal pool: 195 per class, 5 classes (manual effort's 100 %)
# {model: {(initial, step): (seconds, manual effort)}}; effort = wrongly predicted arriving images
HIL_SEVERSTAL = {
    "efficientnet_b0": {
        (5, 5): (2834, 348), (5, 10): (1482, 333), (5, 15): (939, 368),
        (10, 5): (2677, 345), (10, 10): (1424, 351), (10, 15): (1114, 331),
        (15, 5): (3032, 371), (15, 10): (1381, 368), (15, 15): (879, 368),
        (20, 5): (2823, 389), (20, 10): (1402, 374), (20, 15): (908, 355)},
    "resnet18": {
        (5, 5): (2515, 438), (5, 10): (1110, 464), (5, 15): (1105, 473),
        (10, 5): (2397, 442), (10, 10): (1442, 466), (10, 15): (928, 469),
        (15, 5): (3081, 459), (15, 10): (1237, 449), (15, 15): (846, 494),
        (20, 5): (2566, 448), (20, 10): (1238, 456), (20, 15): (809, 497)},
}
# NEU (Fig. 4, read off the figure): manual effort about 110-150 at initial 5, about 195-203 at 20
HIL_NEU_EFFORT = {5: (110, 150), 20: (195, 203)}


def hil_rounds(initial: int, step: int, per_class: int = HIL_POOL // 5) -> int:
    """Fine-tuning rounds of one setting: the arriving images per class cut into steps."""
    return math.ceil((per_class - initial) / step)


def hil_time_ratio_per_round() -> float:
    """The published time ratio per doubling of the step over the ratio of fine-tuning rounds
    (19 / 38 and the like): about 0.96, i.e. the time follows the number of rounds. A grid with
    other round counts expects this times its own round ratio."""
    rounds = np.mean([hil_rounds(i, 10) / hil_rounds(i, 5) for i in HIL_INITIAL])
    return hil_time_ratio_per_step_doubling() / float(rounds)


def hil_time_ratio_per_step_doubling(model: str | None = None) -> float:
    """Mean compute-time ratio t(step 10) / t(step 5) over the initial sizes (of both models when
    model is None): EffNet-B0 0.50, ResNet18 0.48."""
    models = [model] if model else list(HIL_SEVERSTAL)
    ratios = []
    for m in models:
        t = HIL_SEVERSTAL[m]
        ratios.append(np.mean([t[i, 10][0] for i in HIL_INITIAL]) / np.mean([t[i, 5][0] for i in HIL_INITIAL]))
    return float(np.mean(ratios))


def hil_round_sizes(initial: int, step: int, per_class: int = HIL_POOL // 5) -> list[int]:
    """Labelled images per class at each fine-tuning round: initial + step, + 2 step, ... up to the pool."""
    return [min(initial + k * step, per_class) for k in range(1, hil_rounds(initial, step, per_class) + 1)]


def hil_time_ratio_per_work() -> float:
    """The published time ratio per doubling of the step over the ratio of fine-tuning work it implies
    (image passes per epoch: the labelled images summed over the rounds, step 10 over step 5, mean over
    the initial sizes): about 0.96, i.e. the time follows the work. A grid expects this times its own
    work ratio."""
    work = np.mean([sum(hil_round_sizes(i, 10)) / sum(hil_round_sizes(i, 5)) for i in HIL_INITIAL])
    return hil_time_ratio_per_step_doubling() / float(work)


def hil_time_ratio_range() -> tuple[float, float]:
    """The smallest and largest per-setting ratio t(step 10) / t(step 5) of the published table
    (both models, every initial size): 0.40 and 0.60."""
    ratios = [t[i, 10][0] / t[i, 5][0] for t in HIL_SEVERSTAL.values() for i in HIL_INITIAL]
    return float(min(ratios)), float(max(ratios))


def hil_time_tolerance() -> tuple[float, float]:
    """'Roughly' in "time roughly halves", fixed in advance from the paper's own table: the
    smallest and largest per-setting ratio over their mean (about x0.82 to x1.22)."""
    low, high = hil_time_ratio_range()
    mean = hil_time_ratio_per_step_doubling()
    return low / mean, high / mean


HIL_CLASSES = 5


def hil_arriving(initial: int) -> int:
    """Images that arrive after the initial set (the pool minus the hand-labelled initial images)."""
    return HIL_POOL - HIL_CLASSES * initial


def hil_effort_change_per_initial_doubling(model: str | None = None) -> float:
    """Mean change of manual effort, as a share of the arriving images (a larger initial set leaves
    fewer to arrive), when the initial set doubles (5 -> 10, 10 -> 20) at the same step, over
    steps (and models when model is None)."""
    models = [model] if model else list(HIL_SEVERSTAL)
    t = HIL_SEVERSTAL
    changes = [t[m][2 * i, s][1] / hil_arriving(2 * i) - t[m][i, s][1] / hil_arriving(i)
               for m in models for s in HIL_STEPS for i in HIL_INITIAL if 2 * i in HIL_INITIAL]
    return float(np.mean(changes))


def hil_effort_change_per_step_doubling(model: str | None = None) -> float:
    """Mean change of manual effort, as a share of the arriving images, when the step doubles
    (5 -> 10) at the same initial size, over initial sizes (and models when model is None)."""
    models = [model] if model else list(HIL_SEVERSTAL)
    changes = [(HIL_SEVERSTAL[m][i, 2 * s][1] - HIL_SEVERSTAL[m][i, s][1]) / hil_arriving(i)
               for m in models for i in HIL_INITIAL for s in HIL_STEPS if 2 * s in HIL_STEPS]
    return float(np.mean(changes))


# ============================================================================ augmentation (Severstal test)

# {variant: (accuracy without use_aug, with use_aug)}, mean over 10 seeds, the normal test split
AUGMENTATION = {"resnet18 pre": (0.841, 0.929), "efficientnet_b0 pre": (0.863, 0.940),
                "resnet18 fine": (0.851, 0.980), "efficientnet_b0 fine": (0.880, 0.971)}
AUGMENTATION_SEEDS = 10


def augmentation_gain() -> float:
    """Mean test-accuracy gain of use_aug over the four variants (a fraction: 0.097 = 9.7 points)."""
    return float(np.mean([w - wo for wo, w in AUGMENTATION.values()]))


# ============================================================================ MC dropout (box plots)

# median predictive entropy (nats) of (correct, wrong) predictions, read off the box plots
MC_MEDIANS = {"NEU vgg16": (0.0, 0.32), "NEU resnet18": (0.0, 0.50),
              "Severstal efficientnet_b0": (0.0, 0.81), "Severstal resnet18": (0.04, 0.91)}

# ============================================================================ saliency-masked uncertainty

SALIENCY_SHARES = (5, 15, 25, 35, 45, 55, 65, 75, 85, 95)
SALIENCY_SEVERSTAL = {
    "efficientnet_b0": (.311, .443, .562, .518, .500, .435, .384, .331, .272, .194),
    "resnet18": (.053, .121, .270, .257, .212, .142, .098, .088, .090, .061),
}
SALIENCY_NEU = {"peak_share": 65, "range": (1.706, 1.739)}   # VGG16: nearly flat near ln 6; curve not tabled


def saliency_peak_rise(curve) -> float:
    """Mean entropy at the peak share minus the larger of the two ends (how far the peak stands
    above both ends; 0 when the peak is an end)."""
    c = np.asarray(curve, dtype=float)
    return float(c.max() - max(c[0], c[-1]))


def saliency_published_rise() -> float:
    """The Severstal curves' peak rise above both ends, mean of the two models (nats): 0.23."""
    return float(np.mean([saliency_peak_rise(c) for c in SALIENCY_SEVERSTAL.values()]))


# ============================================================================ active learning (toolkit)

# test accuracy (%) at 60 % labelled, CIFAR-10, ResNet18, mean of 3 runs; keys = acquisition.py names
AL_CIFAR10_AT_60 = {"dbal": 91.67, "least_confidence": 91.51, "bald": 91.47, "coreset": 91.43, "entropy": 91.37,
                    "margin": 91.33, "ensemble_variation_ratio": 89.87, "random": 89.80, "vaal": 89.69}
AL_CIFAR10_RANDOM_STD = 0.23
AL_CIFAR100_AT_60 = {"dbal": 55.40, "coreset": 55.33, "entropy": 55.23, "bald": 55.19, "least_confidence": 55.00,
                     "margin": 54.54, "ensemble_variation_ratio": 54.19, "vaal": 53.94, "random": 53.55}
# the toolkit's "level with random": a gap smaller than this (points) on CIFAR-10
AL_LEVEL_BELOW = 0.5


def al_gap(strategy: str) -> float:
    """The toolkit's CIFAR-10 gap at 60 %, strategy minus random, as a fraction (0.0187 for DBAL);
    NaN for a strategy it did not publish."""
    if strategy not in AL_CIFAR10_AT_60:
        return math.nan
    return (AL_CIFAR10_AT_60[strategy] - AL_CIFAR10_AT_60["random"]) / 100


def al_level_margin() -> float:
    """The smallest gap of the strategies that beat random (fraction): how close to random
    'level' has to be shown to be."""
    return min(g for g in (al_gap(s) for s in AL_CIFAR10_AT_60 if s != "random") if g * 100 >= AL_LEVEL_BELOW)


# ============================================================================ safety cascade

SAFETY_ALPHA = 0.001   # < 0.1 % wrong and undetected
