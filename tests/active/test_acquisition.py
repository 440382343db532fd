"""Query strategies: each picks what it must on hand-built probabilities or features; none ever
returns a labelled index or a duplicate; the coreset matches a brute-force k-center greedy."""
import math

import pytest
import torch

from safehil.active import acquisition
from safehil.active import vaal
from safehil.active.acquisition import (ENSEMBLE_STRATEGIES, STRATEGIES, Pool, bald_scores, check_query, coreset_select, dbal_scores, entropy_scores, least_confidence_scores, margin_scores, query, select_top, variation_ratio_scores)
from safehil.data.datasets import ImageSet
from safehil.training.models import build_model

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # tiny models run fastest on one thread

NINE = {"random", "entropy", "least_confidence", "margin", "bald", "dbal", "coreset", "ensemble_variation_ratio",
        "vaal"}

# Four classes; each row is the unique winner of one deterministic score:
# entropy -> row 2 (flattest), least_confidence -> row 1 (lowest top-1), margin -> row 4 (closest call).
PROBS = torch.tensor([
    [0.97, 0.01, 0.01, 0.01],
    [0.36, 0.34, 0.30, 0.00],
    [0.40, 0.20, 0.20, 0.20],
    [0.55, 0.45, 0.00, 0.00],
    [0.50, 0.495, 0.005, 0.00],
])


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def test_registry_holds_the_nine_strategies():
    assert set(STRATEGIES) == NINE
    assert ENSEMBLE_STRATEGIES == {"ensemble_variation_ratio"}
    with pytest.raises(ValueError, match="registered twice"):
        acquisition.register("random")(lambda *a: None)


def test_deterministic_scores_pick_their_winner():
    every = torch.arange(len(PROBS))
    assert select_top(entropy_scores(PROBS), every, 1).item() == 2
    assert select_top(least_confidence_scores(PROBS), every, 1).item() == 1
    assert select_top(margin_scores(PROBS), every, 1).item() == 4
    assert torch.allclose(margin_scores(PROBS), -(PROBS.topk(2).values[:, 0] - PROBS.topk(2).values[:, 1]))
    assert torch.allclose(least_confidence_scores(PROBS), 1 - PROBS.max(1).values)
    # the confident row is the last choice of every score
    for score in (entropy_scores, least_confidence_scores, margin_scores):
        assert select_top(score(PROBS), every, 5)[-1].item() == 0


def test_bald_zero_when_all_samples_agree_and_dbal_differs():
    T = 6
    uniform = torch.full((T, 1, 3), 1 / 3)                         # agree on a flat softmax: MI 0, PE ln 3
    flips = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).repeat(T // 2, 1).unsqueeze(1)  # disagree: MI = PE = ln 2
    confident = torch.tensor([0.9, 0.05, 0.05]).expand(T, 1, 3)    # agree, confident
    mc = torch.cat([uniform, flips, confident], 1)                 # [T, 3, 3]
    bald = bald_scores(mc)
    assert bald[0].abs() < 1e-6 and bald[2].abs() < 1e-6
    assert bald[1] == pytest.approx(math.log(2), abs=1e-5)
    assert select_top(bald, torch.arange(3), 1).item() == 1
    assert select_top(dbal_scores(mc), torch.arange(3), 1).item() == 0
    assert dbal_scores(mc)[0] == pytest.approx(math.log(3), abs=1e-5)


def test_variation_ratio_of_an_ensemble():
    one_hot = torch.eye(3)
    agree = one_hot[[0, 0, 0]]      # 3 members, all say class 0
    split = one_hot[[0, 1, 2]]      # all differ
    two_one = one_hot[[1, 1, 2]]
    probs = torch.stack([agree, split, two_one], 1)   # [K=3, N=3, C=3]
    assert torch.allclose(variation_ratio_scores(probs), torch.tensor([0.0, 2 / 3, 1 / 3]))
    assert select_top(variation_ratio_scores(probs), torch.arange(3), 2).tolist() == [1, 2]


def test_select_top_maps_to_candidates_and_breaks_ties_with_the_generator():
    candidates = torch.tensor([10, 11, 12, 13])
    assert select_top(torch.tensor([0.1, 0.9, 0.5, float("nan")]), candidates, 3).tolist() == [11, 12, 10]
    ties = torch.zeros(4)
    assert select_top(ties, candidates, 4).tolist() == [10, 11, 12, 13]   # no generator: index order
    draws = {tuple(select_top(ties, candidates, 2, generator(s)).tolist()) for s in range(20)}
    assert len(draws) > 3                                                 # random among the tied
    assert select_top(ties, candidates, 2, generator(3)).tolist() == select_top(ties, candidates, 2,
                                                                                generator(3)).tolist()
    with pytest.raises(ValueError, match="only 4 unlabelled"):
        select_top(ties, candidates, 5)


def test_check_query_refuses_bad_answers():
    labelled = torch.tensor([True, False, False, False])
    assert check_query(torch.tensor([2, 1]), labelled, 2).tolist() == [2, 1]
    with pytest.raises(ValueError, match="duplicate"):
        check_query(torch.tensor([1, 1]), labelled, 2)
    with pytest.raises(ValueError, match="already labelled"):
        check_query(torch.tensor([0, 1]), labelled, 2)
    with pytest.raises(ValueError, match="returned 1 indices"):
        check_query(torch.tensor([1]), labelled, 2)


# ============================================================================ coreset

def brute_force_k_center(points: torch.Tensor, labelled: torch.Tensor, budget: int) -> list[int]:
    """Reference k-center greedy with the full distance matrix (float64)."""
    d = torch.cdist(points.double(), points.double())
    centres = torch.nonzero(labelled).flatten().tolist()
    picked = []
    for _ in range(budget):
        nearest = d[:, centres].min(1).values
        nearest[centres] = -1
        idx = int(nearest.argmax())
        picked.append(idx)
        centres.append(idx)
    return picked


def test_coreset_on_2d_points_picks_the_farthest_point_first():
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [5.0, 5.0], [-3.0, 0.0], [5.0, 4.0]])
    labelled = torch.tensor([True, False, False, False, False, False])
    picked = coreset_select(points, labelled, 3, device="cpu")
    # (5,5) is farthest from the origin; then (-3,0) (distance 3 to the origin, > 2 of (0,2)); then (0,2)
    assert picked.tolist() == [3, 4, 2]


def test_coreset_matches_brute_force_with_tiny_chunks():
    g = generator(1)
    points = torch.randn(300, 8, generator=g)
    labelled = torch.zeros(300, dtype=torch.bool)
    labelled[torch.randperm(300, generator=g)[:25]] = True
    # chunk_elements 600 -> blocks of 2 labelled centres: exercises the blocked start-up
    picked = coreset_select(points, labelled, 40, device="cpu", chunk_elements=600)
    assert picked.tolist() == brute_force_k_center(points, labelled, 40)
    assert not labelled[picked].any() and len(set(picked.tolist())) == 40


def test_coreset_without_labelled_points_and_with_duplicates():
    points = torch.tensor([[0.0, 0.0]] * 4 + [[1.0, 1.0]] * 2)
    picked = coreset_select(points, torch.zeros(6, dtype=torch.bool), 5, device="cpu")
    assert picked[0] == 0 and picked[1] == 4      # first centre index 0, then the other cluster
    assert len(set(picked.tolist())) == 5         # duplicates still give distinct indices
    drawn = coreset_select(points, torch.zeros(6, dtype=torch.bool), 1, device="cpu", generator=generator(4))
    assert drawn.item() == torch.randint(6, (1,), generator=generator(4)).item()
    with pytest.raises(ValueError, match="features must be"):
        coreset_select(points[:5], torch.zeros(6, dtype=torch.bool), 1, device="cpu")


# ============================================================================ strategies on a pool

def random_pool(n=40, size=16, num_classes=3, labelled_every=3, seed=0) -> Pool:
    g = generator(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    data = ImageSet(images, torch.arange(n) % num_classes, [f"i{k}" for k in range(n)],
                    [f"c{k}" for k in range(num_classes)])
    labelled = torch.arange(n) % labelled_every == 0
    return Pool(data, labelled, 0.5, 0.25, CPU, mc_samples=4, batch_size=16)


def test_strategies_map_scores_back_to_unlabelled_pool_indices(monkeypatch):
    """Hand-built outputs for the unlabelled images only: each strategy returns the pool index of its winner."""
    pool = random_pool(n=10, labelled_every=2)              # unlabelled: 1, 3, 5, 7, 9
    unl = pool.unlabelled_indices()
    assert unl.tolist() == [1, 3, 5, 7, 9]
    monkeypatch.setattr(acquisition, "softmax_probs", lambda model, data, pool, *views: PROBS[:len(data)])
    mc = torch.stack([PROBS, PROBS])                        # all samples agree everywhere ...
    mc[0, 3], mc[1, 3] = torch.tensor([1.0, 0, 0, 0]), torch.tensor([0, 1.0, 0, 0])   # ... but row 3
    monkeypatch.setattr(acquisition, "mc_probs", lambda model, data, pool, g, **views: mc)
    models = [build_model("tiny_cnn", 4)] * 3
    assert query("entropy", models, pool, 1, generator()).tolist() == [unl[2].item()]
    assert query("least_confidence", models, pool, 1, generator()).tolist() == [unl[1].item()]
    assert query("margin", models, pool, 1, generator()).tolist() == [unl[4].item()]
    assert query("bald", models, pool, 1, generator()).tolist() == [unl[3].item()]
    feats = torch.zeros(10, 2)
    feats[7] = torch.tensor([9.0, 9.0])
    monkeypatch.setattr(acquisition, "penultimate_features", lambda *a: feats)
    assert query("coreset", models, pool, 1, generator()).tolist() == [7]


@pytest.mark.parametrize("name", sorted(NINE))
def test_every_strategy_returns_distinct_unlabelled_indices(name, monkeypatch):
    monkeypatch.setattr(vaal, "settings_for", lambda device, variant="released": vaal.VaalSettings(
        latent_dim=4, discriminator_width=8, discriminator_layers=2, vae_width=4, batch_size=8, iterations=3))
    pool = random_pool()
    torch.manual_seed(0)
    models = [build_model("tiny_cnn", 3, dropout=0.5) for _ in range(3 if name in ENSEMBLE_STRATEGIES else 1)]
    for budget in (0, 7, int((~pool.labelled).sum())):
        picked = STRATEGIES[name](models, pool, budget, generator())
        assert len(picked) == budget and len(set(picked.tolist())) == budget
        assert not pool.labelled[picked].any()
    assert torch.equal(query(name, models, pool, 5, generator(2)), query(name, models, pool, 5, generator(2)))
    with pytest.raises(ValueError, match="unlabelled images are left"):
        STRATEGIES[name](models, pool, int((~pool.labelled).sum()) + 1, generator())


def test_penultimate_features_are_the_trunk_output():
    pool = random_pool(n=12)
    model = build_model("tiny_cnn", 3).eval()
    feats = acquisition.penultimate_features(model, pool.data, pool.mean, pool.std, CPU, batch_size=5)
    assert feats.shape == (12, 64)   # TinyCNN: 4 * width 16
    x = (pool.data.images.float() / 255 - pool.mean) / pool.std
    with torch.no_grad():
        assert torch.allclose(model.classifier(feats), model(x), atol=1e-5)
    with pytest.raises(ValueError, match="cannot be split"):
        acquisition.penultimate_features(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(768, 3)),
                                         pool.data, pool.mean, pool.std, CPU)
