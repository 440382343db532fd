"""Active-learning query strategies, all with one signature, and a k-center coreset that scales.

    from safehil.active.acquisition import STRATEGIES, Pool
    picked = STRATEGIES["bald"](models, pool, budget, generator)   # LongTensor [budget] of pool indices

Every strategy is `fn(models, pool, budget, generator) -> LongTensor [budget]`:
`models` is one trained network or a list of them (only `ensemble_variation_ratio` uses more
than the first), `pool` a `Pool` (the pool images, which of them are labelled, the input
normalisation, the device and the MC-dropout settings), `budget` how many unlabelled images
to pick, `generator` a CPU `torch.Generator` for every random choice (random sampling, MC
dropout, tie-breaking). The answer holds distinct indices into the pool, none of them
already labelled. Scores come from `uncertainty.py`; higher score = picked first.

| name | picks the unlabelled images with |
|---|---|
| random | a uniform draw |
| entropy | the highest entropy of the softmax (one deterministic pass) |
| least_confidence | the lowest top-1 probability |
| margin | the smallest top-1 minus top-2 probability (the closest calls) |
| bald | the highest mutual information under MC dropout (T = pool.mc_samples) |
| dbal | the highest predictive entropy under MC dropout |
| coreset | k-center greedy on penultimate-layer features of labelled + pool (through `feature_augment`) |
| ensemble_variation_ratio | the highest variation ratio over K independently trained models |
| vaal | the lowest P(labelled) of a VAE + adversarial discriminator trained on labelled + pool (`vaal.py`) |

Add a strategy by writing one function with this signature and decorating it with
`@register("name")` (`ensemble=True` when it needs several trained models).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn as nn

from safehil.uq import uncertainty
from safehil.active import vaal
from safehil.data.augment import Augmenter, to_model_input
from safehil.data.datasets import ImageSet
from safehil.training.models import ARCHITECTURES, split_trunk_head
from safehil.training.training import predict

Strategy = Callable[[Sequence[nn.Module], "Pool", int, torch.Generator], torch.Tensor]
STRATEGIES: dict[str, Strategy] = {}
ENSEMBLE_STRATEGIES: set[str] = set()


def register(name: str, ensemble: bool = False):
    """Decorator: add a strategy to STRATEGIES (and to ENSEMBLE_STRATEGIES when it needs K models)."""
    def add(fn: Strategy) -> Strategy:
        if name in STRATEGIES:
            raise ValueError(f"strategy {name!r} is registered twice")
        STRATEGIES[name] = fn
        if ensemble:
            ENSEMBLE_STRATEGIES.add(name)
        return fn
    return add


@dataclass
class Pool:
    """What a strategy may look at.

    data: the whole pool (labelled and not), uint8 images [N, 3, S, S]; its labels are
    never read by a strategy. labelled: bool [N], True where the image is labelled.
    mean, std: the input normalisation; device: where the models run. mc_samples: T for
    the MC-dropout strategies; batch_size: images per forward pass; vaal_variant: the
    `vaal.VARIANTS` name the vaal strategy trains. eval_augment: the view the scoring
    strategies (entropy, least confidence, margin, bald, dbal, ensemble) see the images through
    (None: the images themselves; the toolkit: its eval ops, a random crop); feature_augment:
    the view of coreset's features and VAAL's inputs (the toolkit: its train ops, crop + flip).
    Views are drawn from the strategy's generator.
    """
    data: ImageSet
    labelled: torch.Tensor
    mean: float
    std: float
    device: torch.device
    mc_samples: int = 20
    batch_size: int = 128
    vaal_variant: str = "released"
    eval_augment: Augmenter | None = None
    feature_augment: Augmenter | None = None

    def __post_init__(self):
        self.labelled = torch.as_tensor(self.labelled, dtype=torch.bool).cpu()
        if self.labelled.shape != (len(self.data),):
            raise ValueError(f"labelled mask has shape {tuple(self.labelled.shape)}, the pool holds "
                             f"{len(self.data)} images")

    def unlabelled_indices(self) -> torch.Tensor:
        """Pool indices of the unlabelled images, ascending: LongTensor [M]."""
        return torch.nonzero(~self.labelled).flatten()

    def unlabelled_data(self) -> ImageSet:
        return self.data.subset(self.unlabelled_indices())


def as_models(models) -> list[nn.Module]:
    """One model or a sequence of models -> a non-empty list."""
    models = [models] if isinstance(models, nn.Module) else list(models)
    if not models:
        raise ValueError("a strategy needs at least one trained model")
    return models


# ============================================================================ selection helpers

def check_budget(budget: int, available: int) -> None:
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    if budget > available:
        raise ValueError(f"asked for {budget} images, but only {available} unlabelled images are left in the pool")


def select_top(scores: torch.Tensor, candidates: torch.Tensor, budget: int,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """The `budget` candidates with the highest scores.

    scores [M] belong to the pool indices `candidates` [M]; ties are broken in a random
    order drawn from `generator` (in index order without one). Returns LongTensor [budget].
    NaN scores rank last.
    """
    scores = torch.as_tensor(scores, dtype=torch.float64).flatten().cpu()
    candidates = torch.as_tensor(candidates, dtype=torch.long).flatten().cpu()
    if scores.shape != candidates.shape:
        raise ValueError(f"{len(scores)} scores for {len(candidates)} candidates")
    check_budget(budget, len(candidates))
    scores = torch.nan_to_num(scores, nan=-torch.inf)
    order = torch.randperm(len(scores), generator=generator) if generator is not None else torch.arange(len(scores))
    ranked = order[torch.argsort(scores[order], descending=True, stable=True)]
    return candidates[ranked[:budget]]


def check_query(picked: torch.Tensor, labelled: torch.Tensor, budget: int, name: str = "strategy") -> torch.Tensor:
    """Refuse a query that repeats an index, picks a labelled image or has the wrong size; returns it as LongTensor."""
    picked = torch.as_tensor(picked, dtype=torch.long).flatten().cpu()
    if len(picked) != budget:
        raise ValueError(f"{name} returned {len(picked)} indices, asked for {budget}")
    if len(picked) and (picked.min() < 0 or picked.max() >= len(labelled)):
        raise ValueError(f"{name} returned an index outside the pool of {len(labelled)}")
    if len(torch.unique(picked)) != len(picked):
        raise ValueError(f"{name} returned duplicate indices")
    if labelled[picked].any():
        raise ValueError(f"{name} picked already labelled images: {picked[labelled[picked]].tolist()[:10]}")
    return picked


# ============================================================================ scores (higher = more informative)

def entropy_scores(probs: torch.Tensor) -> torch.Tensor:
    """Entropy of one softmax: probs [N, C] -> [N] nats."""
    return uncertainty.entropy(probs)


def least_confidence_scores(probs: torch.Tensor) -> torch.Tensor:
    """1 - top-1 probability: probs [N, C] -> [N]."""
    return uncertainty.least_confidence(probs.unsqueeze(0))


def margin_scores(probs: torch.Tensor) -> torch.Tensor:
    """Minus (top-1 minus top-2 probability), so the closest call scores highest: probs [N, C] -> [N]."""
    return -uncertainty.margin(probs.unsqueeze(0))


def bald_scores(mc_probs: torch.Tensor) -> torch.Tensor:
    """Mutual information between prediction and weights: MC probs [T, N, C] -> [N] nats."""
    return uncertainty.mutual_information(mc_probs)


def dbal_scores(mc_probs: torch.Tensor) -> torch.Tensor:
    """Entropy of the MC-averaged softmax: MC probs [T, N, C] -> [N] nats."""
    return uncertainty.predictive_entropy(mc_probs)


def variation_ratio_scores(member_probs: torch.Tensor) -> torch.Tensor:
    """1 - share of the modal class among the members' argmaxes: probs [K, N, C] -> [N]."""
    return uncertainty.variation_ratio(member_probs)


# ============================================================================ model outputs on the pool

def softmax_probs(model: nn.Module, data: ImageSet, pool: Pool, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
    """Softmax of `model` in eval mode on `data` (through `pool.eval_augment`'s view, drawn from
    `generator`): probs [N, C] float32 on CPU."""
    logits, _, _ = predict(model, data, pool.mean, pool.std, pool.device, pool.batch_size, pool.eval_augment,
                           generator)
    return logits.softmax(1)


def mc_probs(model: nn.Module, data: ImageSet, pool: Pool, generator: torch.Generator,
             view_per_pass: bool = False) -> torch.Tensor:
    """MC-dropout softmax samples of `model` on `data`: [T, N, C] on CPU (T = pool.mc_samples), through
    `pool.eval_augment`'s view: one per image, or a new one in every pass (`view_per_pass`)."""
    return uncertainty.mc_dropout_predict(model, data, pool.mean, pool.std, pool.device, pool.mc_samples,
                                          batch_size=pool.batch_size, generator=generator,
                                          augment=pool.eval_augment, view_per_pass=view_per_pass)


@torch.no_grad()
def penultimate_features(model: nn.Module, data: ImageSet, mean: float, std: float, device: torch.device,
                         batch_size: int = 128, augment: Augmenter | None = None,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Penultimate-layer features (the input of the classifier head, i.e. the trunk of
    `models.split_trunk_head`) in eval mode: [N, D] float32 on CPU; with `augment` each image
    through one view drawn from `generator` (the toolkit's coreset: its train ops, crop + flip)."""
    parts = split_trunk_head(model)
    if parts is None:
        raise ValueError(f"coreset needs penultimate features, but {type(model).__name__} cannot be split into "
                         "trunk and head (models.split_trunk_head knows the registered models "
                         f"{', '.join(ARCHITECTURES)})")
    trunk = parts[0]
    model.eval()
    out = []
    for start in range(0, len(data), batch_size):
        x = to_model_input(data.images[start:start + batch_size], mean, std, device, augment, generator)
        out.append(trunk(x).float().flatten(1).cpu())
    return torch.cat(out) if out else torch.empty(0, 0)


# ============================================================================ coreset (k-center greedy)

def _sq_distances(features: torch.Tensor, sq_norms: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances of every row of features [N, D] to centres [c, D] -> [N, c] (>= 0)."""
    d = features @ centres.T  # the only [N, c] allocation; the rest is in place
    return d.mul_(-2).add_(sq_norms[:, None]).add_(centres.pow(2).sum(1)[None, :]).clamp_min_(0)


def coreset_select(features: torch.Tensor, labelled_mask: torch.Tensor, budget: int,
                   device: torch.device | str | None = None, chunk_elements: int = 1 << 22,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """k-center greedy: repeatedly pick the point farthest from every labelled or picked point.

    features [N, D] (float), labelled_mask bool [N]. Returns LongTensor [budget] of
    unlabelled indices in the order picked. Memory beyond the features is O(N): one running
    vector of squared distances to the nearest centre, updated with one matrix-vector
    product per pick; the distances to the initial labelled set are computed in blocks of
    at most `chunk_elements` entries ([N, c] with c = chunk_elements // N), never N x N.
    Runs on `device` (default: the GPU when present). With no labelled point the first
    centre is drawn from `generator` (index 0 without one).
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    labelled_mask = torch.as_tensor(labelled_mask, dtype=torch.bool).flatten()
    n = len(labelled_mask)
    if features.ndim != 2 or len(features) != n:
        raise ValueError(f"features must be [N, D] with N = {n} (the mask length), got {tuple(features.shape)}")
    check_budget(budget, int((~labelled_mask).sum()))
    if budget == 0:
        return torch.empty(0, dtype=torch.long)
    picked = torch.empty(budget, dtype=torch.long, device=device)
    x = features.to(device=device, dtype=torch.float32)
    sq = torch.linalg.vector_norm(x, dim=1).square_()  # [N] without an [N, D] temporary
    min_dist = torch.full((n,), torch.inf, device=device)
    labelled = torch.nonzero(labelled_mask).flatten().to(device)
    block = max(1, chunk_elements // n)
    for start in range(0, len(labelled), block):
        centres = x[labelled[start:start + block]]
        min_dist = torch.minimum(min_dist, _sq_distances(x, sq, centres).min(1).values)
    if len(labelled) == 0:
        first = int(torch.randint(n, (1,), generator=generator)) if generator is not None else 0
        min_dist = _sq_distances(x, sq, x[first:first + 1]).squeeze(1)
        picked[0] = first
        min_dist[first] = -1.0
        start_k = 1
    else:
        start_k = 0
    min_dist[labelled] = -1.0  # never picked again
    for k in range(start_k, budget):  # indices stay on the device: no host sync per pick
        idx = torch.argmax(min_dist)
        picked[k] = idx
        dist = torch.addmv(sq, x, x[idx], alpha=-2).add_(sq[idx])  # |x|^2 - 2 x.c + |c|^2, [N]
        torch.minimum(min_dist, dist, out=min_dist)  # rounding may leave -1e-7 for duplicates: still > -1
        min_dist[idx] = -1.0
    return picked.cpu()


# ============================================================================ the strategies

@register("random")
def random_sampling(models, pool: Pool, budget: int, generator: torch.Generator) -> torch.Tensor:
    """A uniform draw of `budget` unlabelled images (the baseline every strategy must beat)."""
    candidates = pool.unlabelled_indices()
    check_budget(budget, len(candidates))
    return candidates[torch.randperm(len(candidates), generator=generator)[:budget]]


@register("entropy")
def entropy_sampling(models, pool: Pool, budget: int, generator: torch.Generator) -> torch.Tensor:
    """Highest entropy of the softmax of the first model."""
    probs = softmax_probs(as_models(models)[0], pool.unlabelled_data(), pool, generator)
    return select_top(entropy_scores(probs), pool.unlabelled_indices(), budget, generator)


@register("least_confidence")
def least_confidence_sampling(models, pool: Pool, budget: int, generator: torch.Generator) -> torch.Tensor:
    """Lowest top-1 probability of the first model."""
    probs = softmax_probs(as_models(models)[0], pool.unlabelled_data(), pool, generator)
    return select_top(least_confidence_scores(probs), pool.unlabelled_indices(), budget, generator)


@register("margin")
def margin_sampling(models, pool: Pool, budget: int, generator: torch.Generator) -> torch.Tensor:
    """Smallest top-1 minus top-2 probability of the first model."""
    probs = softmax_probs(as_models(models)[0], pool.unlabelled_data(), pool, generator)
    return select_top(margin_scores(probs), pool.unlabelled_indices(), budget, generator)


@register("bald")
def bald_sampling(models, pool: Pool, budget: int, generator: torch.Generator) -> torch.Tensor:
    """Highest mutual information under MC dropout (BALD); with `pool.eval_augment` every pass sees
    a new view (the toolkit's BALD calls `get_predictions` T times through the loader's random crop)."""
    probs = mc_probs(as_models(models)[0], pool.unlabelled_data(), pool, generator, view_per_pass=True)
    return select_top(bald_scores(probs), pool.unlabelled_indices(), budget, generator)


@register("dbal")
def dbal_sampling(models, pool: Pool, budget: int, generator: torch.Generator) -> torch.Tensor:
    """Highest predictive entropy under MC dropout (deep Bayesian active learning, max entropy); with
    `pool.eval_augment` one view per image for all passes (the toolkit's DBAL: one loader pass)."""
    probs = mc_probs(as_models(models)[0], pool.unlabelled_data(), pool, generator)
    return select_top(dbal_scores(probs), pool.unlabelled_indices(), budget, generator)


@register("coreset")
def coreset_sampling(models, pool: Pool, budget: int, generator: torch.Generator) -> torch.Tensor:
    """k-center greedy on the first model's penultimate features of the whole pool."""
    features = penultimate_features(as_models(models)[0], pool.data, pool.mean, pool.std, pool.device,
                                    pool.batch_size, pool.feature_augment, generator)
    return coreset_select(features, pool.labelled, budget, device=pool.device, generator=generator)


@register("ensemble_variation_ratio", ensemble=True)
def ensemble_variation_ratio_sampling(models, pool: Pool, budget: int, generator: torch.Generator) -> torch.Tensor:
    """Highest variation ratio of the argmaxes of K independently trained models."""
    data = pool.unlabelled_data()
    probs = torch.stack([softmax_probs(m, data, pool, generator) for m in as_models(models)])
    return select_top(variation_ratio_scores(probs), pool.unlabelled_indices(), budget, generator)


@register("vaal")
def vaal_sampling(models, pool: Pool, budget: int, generator: torch.Generator) -> torch.Tensor:
    """Lowest P(labelled) by VAAL's discriminator (Sinha et al. 2019); task-agnostic: ignores `models`.
    Variant, sizes and training budget: `vaal.settings_for(pool.device, pool.vaal_variant)`."""
    candidates = pool.unlabelled_indices()
    check_budget(budget, len(candidates))
    if budget == 0:
        return torch.empty(0, dtype=torch.long)
    labelled = pool.data.images[pool.labelled]
    probs = vaal.labelled_probability(labelled, pool.data.images[candidates], pool.mean, pool.std, pool.device,
                                      generator, vaal.settings_for(pool.device, pool.vaal_variant),
                                      augment=pool.feature_augment)
    return select_top(-probs, candidates, budget, generator)


def query(name: str, models, pool: Pool, budget: int, generator: torch.Generator) -> torch.Tensor:
    """Run strategy `name` and check its answer (distinct, unlabelled, exactly `budget`): LongTensor [budget]."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose from {sorted(STRATEGIES)}")
    return check_query(STRATEGIES[name](models, pool, budget, generator), pool.labelled, budget, name)
