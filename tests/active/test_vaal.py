"""VAAL: the discriminator separates labelled from unlike unlabelled images (both variants), the
query picks those, answers `budget` distinct unlabelled indices, and repeats for a seed; networks
fit 32/64/224 px; the released variant's loss, layer sizes, iteration count and rate decay."""
import math
from dataclasses import replace

import pytest
import torch

from safehil.active import acquisition
from safehil.active import vaal
from safehil.active.acquisition import STRATEGIES, Pool, check_query
from safehil.data.datasets import ImageSet

CPU = torch.device("cpu")
TINY = replace(vaal.VARIANTS["balanced"], latent_dim=8, discriminator_width=32, discriminator_layers=3, vae_width=8,
               batch_size=16, iterations=60)
# the released loss needs more iterations on this toy: its summed KL pulls the latent means to the prior
TINY_RELEASED = replace(vaal.VARIANTS["released"], latent_dim=8, discriminator_width=32, discriminator_layers=3,
                        vae_width=8, batch_size=16, iterations=200)


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
    monkeypatch.setattr(vaal, "settings_for", lambda device, variant="released": TINY)


def test_vaal_is_the_ninth_registered_strategy():
    assert "vaal" in STRATEGIES and len(STRATEGIES) == 9
    assert "vaal" not in acquisition.ENSEMBLE_STRATEGIES


@pytest.mark.parametrize("settings", [TINY, TINY_RELEASED], ids=["balanced", "released"])
def test_discriminator_rates_unlike_unlabelled_images_least_labelled(settings):
    pool, bright = dark_and_bright_pool()
    unlabelled = pool.unlabelled_indices()
    probs = vaal.labelled_probability(pool.data.images[pool.labelled], pool.data.images[unlabelled],
                                      pool.mean, pool.std, CPU, torch.Generator().manual_seed(0), settings)
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


def test_released_loss_is_mean_squared_error_plus_kl_summed_over_the_batch():
    x = torch.zeros(1, 1, 1, 2)
    recon = torch.tensor([[[[1.0, 3.0]]]])
    mu, logvar = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(2.0)]])
    # by hand: MSE = (1 + 9) / 2 = 5; KL = -0.5 (1 + 0 - 1 - 1) - 0.5 (1 + ln 2 - 0 - 2) = 0.5 + 0.5 (1 - ln 2)
    expected = 5.0 + 0.5 + 0.5 * (1 - math.log(2.0))
    assert vaal.released_reconstruction_kl(x, recon, mu, logvar, beta=1.0).item() == pytest.approx(expected)
    assert vaal.released_reconstruction_kl(x, recon, mu, logvar, beta=2.0).item() == pytest.approx(5.0 + 2 * (expected - 5))
    # a batch of the same image twice: the squared error is a mean (stays 5), the KL a sum (doubles)
    two = vaal.released_reconstruction_kl(x.repeat(2, 1, 1, 1), recon.repeat(2, 1, 1, 1), mu.repeat(2, 1),
                                          logvar.repeat(2, 1), beta=1.0)
    assert two.item() == pytest.approx(5.0 + 2 * (expected - 5.0))


def test_released_vae_loss_adds_both_sets_and_the_adversarial_term():
    torch.manual_seed(0)
    vae, disc = vaal.VAE(16, 4, 2, layout="released"), vaal.Discriminator(4, 8, 3, kaiming=True)
    x_l, x_u = torch.randn(3, 3, 16, 16), torch.randn(5, 3, 16, 16)
    total = vaal.released_vae_loss(vae, disc, x_l, x_u, torch.Generator().manual_seed(1), 1.0, 0.5)
    noise = torch.Generator().manual_seed(1)   # the same noise, drawn in the same order by hand
    parts = []
    for x in (x_l, x_u):
        mu, logvar = vae.encode(x)
        eps = torch.randn(mu.shape, generator=noise)
        recon = vae.decode(mu + eps * (0.5 * logvar).exp())
        parts.append((((recon - x) ** 2).mean() - 0.5 * (1 + logvar - mu ** 2 - logvar.exp()).sum(),
                      -torch.log(torch.sigmoid(disc(mu))).mean()))
    by_hand = parts[0][0] + parts[1][0] + 0.5 * (parts[0][1] + parts[1][1])
    assert total.item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_released_networks_have_the_released_layer_sizes_at_32_px():
    vae = vaal.VAE(32, 32, 128, layout="released")
    convs = [m for m in vae.encoder if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [128, 256, 512, 1024]
    assert vae.to_mu.in_features == 1024 * 2 * 2 and vae.from_latent.out_features == 1024 * 4 * 4
    ups = [m for m in vae.decoder if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [u.out_channels for u in ups] == [512, 256, 128, 3] and ups[-1].kernel_size == (1, 1)
    x = torch.randn(2, 3, 32, 32)
    assert vae.decode(vae.encode(x)[0]).shape == (2, 3, 32, 32)
    disc = vaal.Discriminator()
    assert [m.out_features for m in disc.net if isinstance(m, torch.nn.Linear)] == [512, 512, 512, 512, 1]


def test_released_budget_is_100_epochs_of_the_pool_with_the_rate_decayed_25_times():
    released = vaal.VARIANTS["released"]
    assert (released.vae_steps, released.discriminator_steps, released.batch_size, released.lr) == (1, 1, 64, 5e-4)
    assert released.total_iterations(45_000) == 100 * (45_000 // 64)
    total = 1000
    assert vaal.decayed_lr(5e-4, 0, total, 0.9, 25) == 5e-4
    assert vaal.decayed_lr(5e-4, 39, total, 0.9, 25) == 5e-4
    assert vaal.decayed_lr(5e-4, 40, total, 0.9, 25) == pytest.approx(5e-4 * 0.9)
    assert vaal.decayed_lr(5e-4, 999, total, 0.9, 25) == pytest.approx(5e-4 * 0.9 ** 24)
    cpu = vaal.settings_for(CPU, "released")
    assert cpu.total_iterations(45_000) == vaal.CPU_ITERATIONS and cpu.vae_width == vaal.CPU_VAE_WIDTH
    assert vaal.VARIANTS["balanced"].total_iterations(45_000) == 1000
