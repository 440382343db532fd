"""VAAL: the discriminator separates labelled from unlike unlabelled images, the query picks
those, answers `budget` distinct unlabelled indices, and repeats for a seed; networks fit 32/64/224 px."""
import pytest
import torch

import acquisition
import vaal
from acquisition import STRATEGIES, Pool, check_query
from datasets import ImageSet

CPU = torch.device("cpu")
TINY = vaal.VaalSettings(latent_dim=8, discriminator_width=32, discriminator_layers=3, vae_width=8,
                         batch_size=16, iterations=60)


def dark_and_bright_pool(n_dark=40, n_bright=20, size=16, seed=0):
    """A pool whose labelled half is dark: images 0..n_dark-1 dark (the first n_dark // 2 labelled),
    the rest bright and unlabelled. Returns (Pool, bool [N] True where bright)."""
    g = torch.Generator().manual_seed(seed)
    dark = torch.rand(n_dark, 3, size, size, generator=g) * 60
    bright = 180 + torch.rand(n_bright, 3, size, size, generator=g) * 60
    images = torch.cat([dark, bright]).to(torch.uint8)
    n = len(images)
    data = ImageSet(images, torch.zeros(n, dtype=torch.long), [f"i{i}" for i in range(n)], ["a", "b"])
    labelled = torch.zeros(n, dtype=torch.bool)
    labelled[: n_dark // 2] = True
    bright_mask = torch.zeros(n, dtype=torch.bool)
    bright_mask[n_dark:] = True
    return Pool(data, labelled, mean=0.4, std=0.3, device=CPU), bright_mask


@pytest.fixture
def tiny_settings(monkeypatch):
    """The registered strategy runs with the tiny networks (it reads vaal.settings_for)."""
    monkeypatch.setattr(vaal, "settings_for", lambda device: TINY)


def test_vaal_is_the_ninth_registered_strategy():
    assert "vaal" in STRATEGIES and len(STRATEGIES) == 9
    assert "vaal" not in acquisition.ENSEMBLE_STRATEGIES


def test_discriminator_rates_unlike_unlabelled_images_least_labelled():
    pool, bright = dark_and_bright_pool()
    unlabelled = pool.unlabelled_indices()
    probs = vaal.labelled_probability(pool.data.images[pool.labelled], pool.data.images[unlabelled],
                                      pool.mean, pool.std, CPU, torch.Generator().manual_seed(0), TINY)
    assert probs.shape == (len(unlabelled),) and ((probs >= 0) & (probs <= 1)).all()
    is_bright = bright[unlabelled]
    # every bright image scores below every dark one: a perfect separation of the two kinds
    assert probs[is_bright].max() < probs[~is_bright].min()


def test_vaal_queries_the_images_unlike_the_labelled_set_where_random_does_not(tiny_settings):
    pool, bright = dark_and_bright_pool()
    budget = 20  # the pool holds 20 dark and 20 bright unlabelled images
    picked = acquisition.query("vaal", None, pool, budget, torch.Generator().manual_seed(1))
    assert bright[picked].sum() >= 18
    random_picks = acquisition.query("random", None, pool, budget, torch.Generator().manual_seed(1))
    assert bright[random_picks].sum() <= 14  # a uniform draw takes about half


def test_vaal_returns_budget_distinct_unlabelled_indices_and_repeats_for_a_seed(tiny_settings):
    pool, _ = dark_and_bright_pool()
    runs = [STRATEGIES["vaal"](None, pool, 7, torch.Generator().manual_seed(3)) for _ in range(2)]
    check_query(runs[0], pool.labelled, 7, "vaal")
    assert torch.equal(runs[0], runs[1])
    assert len(STRATEGIES["vaal"](None, pool, 0, torch.Generator().manual_seed(3))) == 0
    with pytest.raises(ValueError, match="only 40 unlabelled"):
        STRATEGIES["vaal"](None, pool, 41, torch.Generator().manual_seed(3))


def test_vaal_leaves_the_global_random_stream_alone(tiny_settings):
    pool, _ = dark_and_bright_pool(n_dark=8, n_bright=4)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    STRATEGIES["vaal"](None, pool, 2, torch.Generator().manual_seed(0))
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("size,latent_side", [(32, 4), (64, 4), (224, 7), (8, 4), (45, 5)])
def test_vae_fits_each_image_size(size, latent_side):
    vae = vaal.VAE(size, latent_dim=4, width=2)
    x = torch.randn(2, 3, size, size)
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (2, 4) and vae.side == latent_side
    assert vae.decode(mu).shape == (2, 3, size, size)
    assert vaal.Discriminator(4, 8, 5)(mu).shape == (2,)


def test_kl_is_zero_at_the_prior_and_known_elsewhere():
    zeros = torch.zeros(3, 4)
    assert torch.equal(vaal.kl_to_standard_normal(zeros, zeros), torch.zeros(3))
    # KL(N(1, 1) || N(0, 1)) = 0.5 per dimension
    assert torch.allclose(vaal.kl_to_standard_normal(torch.ones(3, 4), zeros), torch.full((3,), 2.0))
