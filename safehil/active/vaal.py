"""VAAL's networks and their training: a VAE and a latent discriminator that score the pool.

Variational Adversarial Active Learning (Sinha, Ebrahimi, Darrell, ICCV 2019). A VAE (conv
encoder -> mu, logvar; conv decoder) learns one latent space for the labelled and the unlabelled
images; a discriminator (an MLP on the latent mean mu) learns to tell labelled (1) from
unlabelled (0). The VAE minimises reconstruction + beta * KL on both sets plus an adversarial
term that makes the discriminator believe every latent is labelled; the discriminator minimises
binary cross-entropy. The unlabelled images the trained discriminator rates least likely to be
labelled are the least like the labelled set: VAAL queries those (acquisition.py's `vaal`).

    probs = labelled_probability(labelled_uint8, unlabelled_uint8, mean, std, device, generator)
    # float [M] on CPU: P(labelled) of every unlabelled image; query the lowest

Two variants (`VARIANTS`, `--vaal_variant` of active_learning.py):
- `released`: as the toolkit's released code (`pycls/al/vaal_util.py`, `pycls/models/vaal_model.py`,
  PAPER.md sec. 2): 100 epochs of (|L| + |U|) // 64 iterations, the rate x0.9 every 1/25 of the
  run, one VAE step per discriminator step, labelled and unlabelled batches through the VAE in
  separate passes, loss = mean squared error (over every pixel of the batch) + KL summed over
  the batch, the discriminator step on latents of the VAE in eval mode; encoder 4 convs
  128-256-512-1024 (4x4, stride 2, batch norm, ReLU; 32 px -> 2 x 2), decoder from twice that
  side (a linear map to 1024 x 4 x 4, 3 transposed convs back to 32, a 1x1 transposed conv to 3
  channels), Kaiming-normal init of the linear and conv layers.
- `balanced`: this project's earlier variant: 1,000 iterations, two VAE steps per discriminator
  step, per image 0.5 * squared error summed over pixels (a unit-variance Gaussian's negative
  log-likelihood) + KL, both sets in one pass; encoder convs halve the side while it is >= 8.
  Kept because the released weighting puts 0.5 * batch * pixels (about 98,000 at 64 images of
  32 x 32 x 3) times more weight on the KL than a likelihood does, which pushes the latent means
  towards the prior; `balanced` is the VAE objective the paper writes down.
On CPU both are narrowed (first conv `CPU_VAE_WIDTH` channels) and capped at `CPU_ITERATIONS`
(the rate decay then spans the capped run). Everything random (initial weights, batches,
reparameterisation noise) comes from the given generator, so a seed gives the same scores on CPU.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from safehil.data.augment import Augmenter, to_model_input
from safehil.data.datasets import gather_images

# Paper / released-code constants (Sinha et al. 2019; the toolkit's VAAL config, PAPER.md sec. 2):
LATENT_DIM = 32         # latent size d for CIFAR-10/100
BETA = 1.0              # weight of the KL term of the beta-VAE
ADVERSARY_WEIGHT = 1.0  # weight of the VAE's adversarial term
LR = 5e-4               # Adam learning rate of the VAE and of the discriminator
DISCRIMINATOR_LAYERS = 5  # 4 x (Linear 512 + ReLU), then Linear 1 (+ sigmoid)
DISCRIMINATOR_WIDTH = 512
VAE_WIDTH = 128         # channels of the first conv: 128-256-512-1024
BATCH_SIZE = 64         # labelled and unlabelled images per iteration (each)
EPOCHS = 100            # released: epochs of (|L| + |U|) // BATCH_SIZE iterations
LR_DECAY, LR_DECAYS = 0.9, 25  # released: the rate x 0.9 every 1/25 of the run
LOSSES = ("released", "balanced")
LAYOUTS = ("released", "halving")
# On CPU (measured at 32 px, 1 thread on a shared 2-core machine): width 32 costs ~0.8 s per
# iteration, width 16 ~0.25-0.5 s, so one query takes ~25-50 s with these two:
CPU_ITERATIONS = 100
CPU_VAE_WIDTH = 16      # first-conv channels on CPU (64x fewer conv multiply-adds than 128)


@dataclass(frozen=True)
class VaalSettings:
    """Sizes and training budget of one VAAL query (defaults: the released code's).

    iterations: a fixed number of iterations, or 0 = `epochs` * ((|L| + |U|) // batch_size);
    max_iterations caps either (0 = no cap). lr_decays: the rate is multiplied by lr_decay
    every (total iterations // lr_decays) iterations (0 = constant). loss: 'released' or
    'balanced' (see the module docstring); layout: the VAE's 'released' or 'halving' convs.
    """
    latent_dim: int = LATENT_DIM
    beta: float = BETA
    adversary_weight: float = ADVERSARY_WEIGHT
    lr: float = LR
    discriminator_layers: int = DISCRIMINATOR_LAYERS
    discriminator_width: int = DISCRIMINATOR_WIDTH
    vae_width: int = VAE_WIDTH
    batch_size: int = BATCH_SIZE
    vae_steps: int = 1
    discriminator_steps: int = 1
    epochs: int = EPOCHS
    iterations: int = 0
    max_iterations: int = 0
    lr_decay: float = LR_DECAY
    lr_decays: int = LR_DECAYS
    loss: str = "released"
    layout: str = "released"

    def __post_init__(self):
        if min(self.latent_dim, self.discriminator_layers, self.discriminator_width, self.vae_width,
               self.batch_size, self.vae_steps, self.discriminator_steps) < 1 or \
                min(self.iterations, self.epochs, self.max_iterations, self.lr_decays) < 0:
            raise ValueError(f"invalid VAAL settings: {self}")
        if self.lr <= 0 or self.beta < 0 or self.adversary_weight < 0 or not 0 < self.lr_decay <= 1:
            raise ValueError(f"invalid VAAL settings: {self}")
        if self.loss not in LOSSES or self.layout not in LAYOUTS:
            raise ValueError(f"VAAL loss must be one of {LOSSES} and layout one of {LAYOUTS}: {self}")

    def total_iterations(self, pool_size: int) -> int:
        """Iterations of one query on a pool of |L| + |U| = pool_size images."""
        total = self.iterations or self.epochs * (pool_size // self.batch_size)
        return min(total, self.max_iterations) if self.max_iterations else total


VARIANTS: dict[str, VaalSettings] = {
    "released": VaalSettings(),
    "balanced": VaalSettings(vae_steps=2, epochs=0, iterations=1000, lr_decays=0, loss="balanced",
                             layout="halving"),
}


def settings_for(device: torch.device, variant: str = "released") -> VaalSettings:
    """The variant's full-size networks on a GPU; narrower convs and at most CPU_ITERATIONS on CPU."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown VAAL variant {variant!r}; choose from {tuple(VARIANTS)}")
    settings = VARIANTS[variant]
    if torch.device(device).type == "cuda":
        return settings
    return replace(settings, vae_width=CPU_VAE_WIDTH, max_iterations=CPU_ITERATIONS)


def decayed_lr(lr: float, iteration: int, total: int, decay: float, decays: int) -> float:
    """The rate of 0-based `iteration` of `total`: lr * decay ** (iteration // (total // decays))
    (the released code multiplies by 0.9 before iteration k, k, 2k, ... with k = total // 25)."""
    if decays == 0:
        return lr
    return lr * decay ** (iteration // max(1, total // decays))


# ============================================================================ networks

def halvings(image_size: int) -> int:
    """How many stride-2 convs the 'halving' encoder applies: halve (rounding down) while the side is >= 8."""
    if image_size < 8:
        raise ValueError(f"VAAL needs images of at least 8 px, got {image_size}")
    n, side = 0, image_size
    while side >= 8:
        side //= 2
        n += 1
    return n


RELEASED_CONVS = 4  # the released encoder: 128-256-512-1024


def _channels(width: int, layers: int) -> list[int]:
    """width, 2 width, 4 width, 8 width, 8 width, ... (the WAE encoder's doubling, capped at 8x)."""
    return [width * min(2 ** i, 8) for i in range(layers)]


def _kaiming_init(module: nn.Module) -> None:
    """The released init: Kaiming-normal weights and zero biases of every Linear and Conv2d
    (transposed convs keep torch's default), batch norm at weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class VAE(nn.Module):
    """Conv encoder -> (mu, logvar) [B, latent_dim]; decoder: latent [B, latent_dim] -> [B, 3, S, S].

    layout 'halving': `halvings(S)` convs (4x4, stride 2, batch norm, ReLU), linear maps of the
    flattened [C, s, s] map to mu and logvar; the decoder mirrors it with transposed convs from
    s x s and a final 1x1 conv to 3 channels. layout 'released' (S >= 16): 4 such convs
    (128-256-512-1024 at width 128; 32 px -> 2 x 2), the decoder starts at twice that side
    (2 s x 2 s, 1024 channels) with 3 transposed convs and a 1x1 transposed conv to 3 channels,
    Kaiming init. No output activation (it reconstructs the normalised input); when a side was
    rounded down on the way in, the output is resized to S.
    """

    def __init__(self, image_size: int, latent_dim: int = LATENT_DIM, width: int = VAE_WIDTH,
                 layout: str = "halving"):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"unknown VAE layout {layout!r}; choose from {LAYOUTS}")
        if layout == "released" and image_size < 16:
            raise ValueError(f"the released VAAL layout needs images of at least 16 px, got {image_size}")
        layers = RELEASED_CONVS if layout == "released" else halvings(image_size)
        chans = _channels(width, layers)
        self.image_size, self.side = image_size, image_size
        for _ in range(layers):
            self.side //= 2
        self.top = chans[-1]
        enc, c_in = [], 3
        for c in chans:
            enc += [nn.Conv2d(c_in, c, 4, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            c_in = c
        self.encoder = nn.Sequential(*enc, nn.Flatten())
        flat = self.top * self.side ** 2
        self.to_mu = nn.Linear(flat, latent_dim)
        self.to_logvar = nn.Linear(flat, latent_dim)
        # released: the decoder starts at twice the encoder's last side and has one transposed conv fewer
        up = chans[::-1][1:] if layout == "released" else chans[::-1][1:] + [chans[0]]
        self.start_side = self.side * 2 if layout == "released" else self.side
        self.from_latent = nn.Linear(latent_dim, self.top * self.start_side ** 2)
        dec, c_in = [], self.top
        for c in up:
            dec += [nn.ConvTranspose2d(c_in, c, 4, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            c_in = c
        last = nn.ConvTranspose2d(c_in, 3, 1) if layout == "released" else nn.Conv2d(c_in, 3, 1)
        self.decoder = nn.Sequential(*dec, last)
        if layout == "released":
            _kaiming_init(self)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, 3, S, S] -> (mu, logvar), each [B, latent_dim]."""
        h = self.encoder(x)
        return self.to_mu(h), self.to_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, latent_dim] -> reconstruction [B, 3, S, S]."""
        h = self.from_latent(z).view(len(z), self.top, self.start_side, self.start_side)
        x = self.decoder(h)
        if x.shape[-1] != self.image_size:  # an odd side was rounded down on the way in
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return x


class Discriminator(nn.Module):
    """MLP on the latent mean: mu [B, latent_dim] -> logit of P(labelled) [B] (the sigmoid is in the loss)."""

    def __init__(self, latent_dim: int = LATENT_DIM, width: int = DISCRIMINATOR_WIDTH,
                 layers: int = DISCRIMINATOR_LAYERS, kaiming: bool = False):
        super().__init__()
        blocks, d_in = [], latent_dim
        for _ in range(layers - 1):
            blocks += [nn.Linear(d_in, width), nn.ReLU(inplace=True)]
            d_in = width
        self.net = nn.Sequential(*blocks, nn.Linear(d_in, 1))
        if kaiming:
            _kaiming_init(self)

    def forward(self, mu: torch.Tensor) -> torch.Tensor:
        return self.net(mu).squeeze(1)


# ============================================================================ losses

def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over latent dims: mu, logvar [B, d] -> [B]."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)


def released_reconstruction_kl(x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                               beta: float) -> torch.Tensor:
    """The released VAE term of one batch: mean squared error over every element of x [B, 3, S, S]
    + beta * KL summed over the batch and the latent dims (mu, logvar [B, d]) -> scalar."""
    return F.mse_loss(recon.float(), x) + beta * kl_to_standard_normal(mu, logvar).sum()


def _reparameterise(vae: VAE, x: torch.Tensor, noise: torch.Generator):
    """-> (reconstruction of x, mu, logvar) with z = mu + eps * sigma, eps from `noise`."""
    mu, logvar = vae.encode(x)
    eps = torch.randn(mu.shape, generator=noise, device=mu.device)
    return vae.decode(mu + eps * (0.5 * logvar).exp()), mu, logvar


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def released_vae_loss(vae: VAE, discriminator: Discriminator, labelled: torch.Tensor, unlabelled: torch.Tensor,
                      noise: torch.Generator, beta: float, adversary_weight: float) -> torch.Tensor:
    """The released VAE objective: each set [B, 3, S, S] through the VAE in its own pass,
    `released_reconstruction_kl` of each, + adversary_weight * (mean BCE of D(mu_labelled) and of
    D(mu_unlabelled) against 'labelled') -> scalar."""
    recon_l, mu_l, logvar_l = _reparameterise(vae, labelled, noise)
    recon_u, mu_u, logvar_u = _reparameterise(vae, unlabelled, noise)
    adversarial = _bce(discriminator(mu_l), 1.0) + _bce(discriminator(mu_u), 1.0)
    return (released_reconstruction_kl(labelled, recon_l, mu_l, logvar_l, beta)
            + released_reconstruction_kl(unlabelled, recon_u, mu_u, logvar_u, beta)
            + adversary_weight * adversarial)


def released_discriminator_loss(vae: VAE, discriminator: Discriminator, labelled: torch.Tensor,
                                unlabelled: torch.Tensor) -> torch.Tensor:
    """Mean BCE of D on labelled (-> 1) plus on unlabelled (-> 0) latent means, the VAE in eval
    mode (batch norm on its running statistics, as released) and without gradients -> scalar."""
    was_training = vae.training
    vae.eval()
    with torch.no_grad():
        mu_l, mu_u = vae.encode(labelled)[0], vae.encode(unlabelled)[0]
    vae.train(was_training)
    return _bce(discriminator(mu_l), 1.0) + _bce(discriminator(mu_u), 0.0)


def _both_sets(per_image: torch.Tensor, n_labelled: int) -> torch.Tensor:
    """Mean over the labelled part plus mean over the unlabelled part of per-image values [B] -> scalar."""
    return per_image[:n_labelled].mean() + per_image[n_labelled:].mean()


def vae_loss(vae: VAE, discriminator: Discriminator, x: torch.Tensor, n_labelled: int,
             noise_generator: torch.Generator, beta: float, adversary_weight: float) -> torch.Tensor:
    """The 'balanced' VAE objective on a joint batch x [B, 3, S, S] (labelled rows first, then unlabelled).

    For each set: reconstruction (the negative log-likelihood of a unit-variance Gaussian
    decoder, 0.5 * squared error summed over pixels, up to a constant) + beta * KL + adversary_weight * BCE of
    D(mu) against "labelled", summed over the two sets. Both sets go through one forward
    pass, so batch norm normalises them with the same statistics.
    """
    recon, mu, logvar = _reparameterise(vae, x, noise_generator)
    logits = discriminator(mu)
    per_image = (0.5 * (recon.float() - x).pow(2).flatten(1).sum(1) + beta * kl_to_standard_normal(mu, logvar)
                 + adversary_weight * F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits),
                                                                         reduction="none"))
    return _both_sets(per_image, n_labelled)


def discriminator_loss(vae: VAE, discriminator: Discriminator, x: torch.Tensor, n_labelled: int) -> torch.Tensor:
    """The 'balanced' discriminator BCE on the (fixed) latent means of a joint batch x [B, 3, S, S]:
    the first n_labelled rows -> 1 (labelled), the rest -> 0; summed over the two sets."""
    with torch.no_grad():
        mu, _ = vae.encode(x)
    logits = discriminator(mu)
    target = torch.zeros_like(logits)
    target[:n_labelled] = 1
    return _both_sets(F.binary_cross_entropy_with_logits(logits, target, reduction="none"), n_labelled)


# ============================================================================ training and scoring

def _batches(n: int, size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless index batches [<= size] over n images: shuffled epochs one after another, the last
    batch of an epoch smaller (a shuffling DataLoader read in a loop, as released)."""
    while True:
        order = torch.randperm(n, generator=generator)
        yield from order.split(size)


def _step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, what: str) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(f"VAAL: {what} loss became {loss.item()} (check the input normalisation)")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def train_vaal(labelled: torch.Tensor, unlabelled: torch.Tensor, mean: float, std: float, device: torch.device,
               generator: torch.Generator, settings: VaalSettings,
               augment: Augmenter | None = None) -> tuple[VAE, Discriminator]:
    """Train a VAE and a discriminator on uint8 images labelled [L, 3, S, S] and unlabelled [M, 3, S, S].

    `settings.total_iterations(L + M)` iterations; each takes `batch_size` labelled and
    `batch_size` unlabelled images (shuffled epochs of each set), `vae_steps` VAE updates and
    `discriminator_steps` discriminator updates (Adam at the decayed rate `decayed_lr`).
    augment: each batch's view, drawn from `generator` (the toolkit's VAAL reads the train
    loader: crop + flip, then normalised). Returns both networks in eval mode.
    """
    seed = int(torch.randint(2 ** 62, (1,), generator=generator))
    released = settings.loss == "released"
    with torch.random.fork_rng(devices=[]):  # initial weights from the seed; the caller's global stream is kept
        torch.manual_seed(seed)
        vae = VAE(labelled.shape[-1], settings.latent_dim, settings.vae_width, settings.layout)
        discriminator = Discriminator(settings.latent_dim, settings.discriminator_width,
                                      settings.discriminator_layers, kaiming=settings.layout == "released")
    vae.to(device).train()
    discriminator.to(device).train()
    noise = torch.Generator(device=device).manual_seed(seed + 1)
    vae_opt = torch.optim.Adam(vae.parameters(), lr=settings.lr)
    disc_opt = torch.optim.Adam(discriminator.parameters(), lr=settings.lr)
    total = settings.total_iterations(len(labelled) + len(unlabelled))
    labelled_batches = _batches(len(labelled), settings.batch_size, generator)
    unlabelled_batches = _batches(len(unlabelled), settings.batch_size, generator)
    for iteration in range(total):
        lr = decayed_lr(settings.lr, iteration, total, settings.lr_decay, settings.lr_decays)
        for group in (*vae_opt.param_groups, *disc_opt.param_groups):
            group["lr"] = lr
        x_l = to_model_input(gather_images(labelled, next(labelled_batches)), mean, std, device, augment, generator)
        x_u = to_model_input(gather_images(unlabelled, next(unlabelled_batches)), mean, std, device, augment,
                             generator)
        x = torch.cat([x_l, x_u])
        for _ in range(settings.vae_steps):
            loss = (released_vae_loss(vae, discriminator, x_l, x_u, noise, settings.beta, settings.adversary_weight)
                    if released else
                    vae_loss(vae, discriminator, x, len(x_l), noise, settings.beta, settings.adversary_weight))
            _step(vae_opt, loss, "VAE")
        for _ in range(settings.discriminator_steps):
            loss = (released_discriminator_loss(vae, discriminator, x_l, x_u) if released
                    else discriminator_loss(vae, discriminator, x, len(x_l)))
            _step(disc_opt, loss, "discriminator")
    return vae.eval(), discriminator.eval()


@torch.no_grad()
def score(vae: VAE, discriminator: Discriminator, images: torch.Tensor, mean: float, std: float,
          device: torch.device, batch_size: int = 256, augment: Augmenter | None = None,
          generator: torch.Generator | None = None) -> torch.Tensor:
    """P(labelled) by the discriminator on the latent means of uint8 images [N, 3, S, S] -> float [N] on CPU
    (each image through one `augment` view drawn from `generator` when given)."""
    out = []
    for start in range(0, len(images), batch_size):
        x = to_model_input(images[start:start + batch_size], mean, std, device, augment, generator)
        out.append(torch.sigmoid(discriminator(vae.encode(x)[0])).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def labelled_probability(labelled: torch.Tensor, unlabelled: torch.Tensor, mean: float, std: float,
                         device: torch.device, generator: torch.Generator,
                         settings: VaalSettings | None = None, augment: Augmenter | None = None) -> torch.Tensor:
    """Train VAAL on uint8 labelled [L, 3, S, S] + unlabelled [M, 3, S, S] images and return the
    discriminator's P(labelled) of every unlabelled image: float [M] on CPU (query the lowest).
    `settings` default: `settings_for(device)` (the released variant). augment: the view of every
    image in training and scoring (the toolkit's: its train ops, crop + flip, normalised)."""
    if len(labelled) == 0 or len(unlabelled) == 0:
        raise ValueError(f"VAAL needs labelled and unlabelled images, got {len(labelled)} and {len(unlabelled)}")
    settings = settings or settings_for(device)
    vae, discriminator = train_vaal(labelled, unlabelled, mean, std, device, generator, settings, augment)
    return score(vae, discriminator, unlabelled, mean, std, device, augment=augment, generator=generator)
