"""VAAL's networks and their training: a VAE and a latent discriminator that score the pool.

Variational Adversarial Active Learning (Sinha, Ebrahimi, Darrell, ICCV 2019), written from
the paper's description. A VAE (conv encoder -> mu, logvar; conv decoder) learns one latent
space for the labelled and the unlabelled images; a discriminator (an MLP on the latent mean
mu) learns to tell labelled (1) from unlabelled (0). The two play a minimax game: the VAE
minimises reconstruction + beta * KL on both sets plus an adversarial term that makes the
discriminator believe every latent is labelled, the discriminator minimises binary
cross-entropy. The unlabelled images the trained discriminator rates least likely to be
labelled are the ones least like the labelled set: VAAL queries those
(acquisition.py's `vaal` strategy does the ranking).

    probs = labelled_probability(labelled_uint8, unlabelled_uint8, mean, std, device, generator)
    # float [M] on CPU: P(labelled) of every unlabelled image; query the lowest

The networks are sized by the image size (32, 64, 224 px, or any size >= 8): stride-2 convs
halve the side while it is >= 8 (32 -> 4, 64 -> 4, 224 -> 7); the decoder doubles it back
(and resizes to the input size when an odd side was rounded down). Everything random
(initial weights, batches, reparameterisation noise) comes from the given generator, so a
seed gives the same scores on CPU. Batches run on `device` (the GPU when the pool is there).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from augment import to_model_input
from datasets import gather_images

# Paper constants (Sinha et al. 2019, Sec. 4 "implementation details", as we read them):
LATENT_DIM = 32         # latent size d for CIFAR-10/100 (64 for ImageNet)
BETA = 1.0              # weight of the KL term of the beta-VAE
ADVERSARY_WEIGHT = 1.0  # lambda_2: weight of the VAE's adversarial term (lambda_1 = 1 on the VAE loss)
LR = 5e-4               # Adam learning rate of the VAE and of the discriminator
DISCRIMINATOR_LAYERS = 5  # "a 5-layer multilayer perceptron"
DISCRIMINATOR_WIDTH = 512
VAE_WIDTH = 128         # channels of the first conv; the encoder follows the WAE layout 128-256-512-1024
# Our choices (the paper trains VAAL for as long as the task model; here a fixed number of
# iterations, so the budget does not shrink with the labelled set):
BATCH_SIZE = 64         # labelled and unlabelled images per iteration (each)
VAE_STEPS = 2           # VAE updates per iteration (the authors' released setting, as we read it)
DISCRIMINATOR_STEPS = 1  # discriminator updates per iteration
ITERATIONS = 1000       # iterations on a GPU
# On CPU (measured at 32 px, 1 thread on a shared 2-core machine): width 32 costs ~0.8 s per
# iteration, width 16 ~0.25-0.5 s, so one query takes ~25-50 s with these two:
CPU_ITERATIONS = 100
CPU_VAE_WIDTH = 16      # first-conv channels on CPU (64x fewer conv multiply-adds than 128)


@dataclass(frozen=True)
class VaalSettings:
    """Sizes and training budget of one VAAL query (defaults: the constants above)."""
    latent_dim: int = LATENT_DIM
    beta: float = BETA
    adversary_weight: float = ADVERSARY_WEIGHT
    lr: float = LR
    discriminator_layers: int = DISCRIMINATOR_LAYERS
    discriminator_width: int = DISCRIMINATOR_WIDTH
    vae_width: int = VAE_WIDTH
    batch_size: int = BATCH_SIZE
    vae_steps: int = VAE_STEPS
    discriminator_steps: int = DISCRIMINATOR_STEPS
    iterations: int = ITERATIONS

    def __post_init__(self):
        if min(self.latent_dim, self.discriminator_layers, self.discriminator_width, self.vae_width,
               self.batch_size, self.vae_steps, self.discriminator_steps) < 1 or self.iterations < 0:
            raise ValueError(f"invalid VAAL settings: {self}")
        if self.lr <= 0 or self.beta < 0 or self.adversary_weight < 0:
            raise ValueError(f"invalid VAAL settings: {self}")


def settings_for(device: torch.device) -> VaalSettings:
    """The paper-sized networks on a GPU; narrower convs and fewer iterations on CPU."""
    if torch.device(device).type == "cuda":
        return VaalSettings()
    return VaalSettings(vae_width=CPU_VAE_WIDTH, iterations=CPU_ITERATIONS)


# ============================================================================ networks

def halvings(image_size: int) -> int:
    """How many stride-2 convs the encoder applies: halve (rounding down) while the side is >= 8."""
    if image_size < 8:
        raise ValueError(f"VAAL needs images of at least 8 px, got {image_size}")
    n, side = 0, image_size
    while side >= 8:
        side //= 2
        n += 1
    return n


def _channels(width: int, layers: int) -> list[int]:
    """width, 2 width, 4 width, 8 width, 8 width, ... (the WAE encoder's doubling, capped at 8x)."""
    return [width * min(2 ** i, 8) for i in range(layers)]


class VAE(nn.Module):
    """Conv encoder -> (mu, logvar) [B, latent_dim]; decoder: latent [B, latent_dim] -> [B, 3, S, S].

    Encoder: `halvings(S)` convs (4x4, stride 2, batch norm, ReLU), then linear maps of the
    flattened [C, s, s] feature map to mu and logvar. Decoder: the mirror image with
    transposed convs and a final 1x1 conv to 3 channels (no output activation: it
    reconstructs the normalised input).
    """

    def __init__(self, image_size: int, latent_dim: int = LATENT_DIM, width: int = VAE_WIDTH):
        super().__init__()
        layers = halvings(image_size)
        chans = _channels(width, layers)
        self.image_size = image_size
        self.side = image_size
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
        self.from_latent = nn.Linear(latent_dim, flat)
        dec = []
        for c_in, c in zip(chans[::-1], chans[::-1][1:] + [chans[0]]):
            dec += [nn.ConvTranspose2d(c_in, c, 4, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        self.decoder = nn.Sequential(*dec, nn.Conv2d(chans[0], 3, 1))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, 3, S, S] -> (mu, logvar), each [B, latent_dim]."""
        h = self.encoder(x)
        return self.to_mu(h), self.to_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, latent_dim] -> reconstruction [B, 3, S, S]."""
        h = self.from_latent(z).view(len(z), self.top, self.side, self.side)
        x = self.decoder(h)
        if x.shape[-1] != self.image_size:  # an odd side was rounded down on the way in
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return x


class Discriminator(nn.Module):
    """MLP on the latent mean: mu [B, latent_dim] -> logit of P(labelled) [B]."""

    def __init__(self, latent_dim: int = LATENT_DIM, width: int = DISCRIMINATOR_WIDTH,
                 layers: int = DISCRIMINATOR_LAYERS):
        super().__init__()
        blocks, d_in = [], latent_dim
        for _ in range(layers - 1):
            blocks += [nn.Linear(d_in, width), nn.ReLU(inplace=True)]
            d_in = width
        self.net = nn.Sequential(*blocks, nn.Linear(d_in, 1))

    def forward(self, mu: torch.Tensor) -> torch.Tensor:
        return self.net(mu).squeeze(1)


# ============================================================================ losses

def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over latent dims: mu, logvar [B, d] -> [B]."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)


def _both_sets(per_image: torch.Tensor, n_labelled: int) -> torch.Tensor:
    """Mean over the labelled part plus mean over the unlabelled part of per-image values [B] -> scalar."""
    return per_image[:n_labelled].mean() + per_image[n_labelled:].mean()


def vae_loss(vae: VAE, discriminator: Discriminator, x: torch.Tensor, n_labelled: int,
             noise_generator: torch.Generator, beta: float, adversary_weight: float) -> torch.Tensor:
    """VAAL's VAE objective on a joint batch x [B, 3, S, S] (labelled rows first, then unlabelled).

    For each set: reconstruction (the negative log-likelihood of a unit-variance Gaussian
    decoder, 0.5 * squared error summed over pixels, up to a constant) + beta * KL + adversary_weight * BCE of
    D(mu) against "labelled", summed over the two sets. The adversarial target is
    "labelled" for both, so the VAE learns latents the discriminator cannot tell apart.
    Both sets go through one forward pass, so batch norm normalises them with the same
    statistics (separate passes would erase what tells them apart, e.g. brightness).
    """
    mu, logvar = vae.encode(x)
    eps = torch.randn(mu.shape, generator=noise_generator, device=mu.device)
    recon = vae.decode(mu + eps * (0.5 * logvar).exp())
    logits = discriminator(mu)
    per_image = (0.5 * (recon.float() - x).pow(2).flatten(1).sum(1) + beta * kl_to_standard_normal(mu, logvar)
                 + adversary_weight * F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits),
                                                                         reduction="none"))
    return _both_sets(per_image, n_labelled)


def discriminator_loss(vae: VAE, discriminator: Discriminator, x: torch.Tensor, n_labelled: int) -> torch.Tensor:
    """BCE of the discriminator on the (fixed) latent means of a joint batch x [B, 3, S, S]:
    the first n_labelled rows -> 1 (labelled), the rest -> 0; summed over the two sets."""
    with torch.no_grad():
        mu, _ = vae.encode(x)
    logits = discriminator(mu)
    target = torch.zeros_like(logits)
    target[:n_labelled] = 1
    return _both_sets(F.binary_cross_entropy_with_logits(logits, target, reduction="none"), n_labelled)


# ============================================================================ training and scoring

def _batch(images: torch.Tensor, size: int, generator: torch.Generator, mean: float, std: float,
           device: torch.device) -> torch.Tensor:
    """`size` images drawn with replacement from uint8 [N, 3, S, S] -> normalised float [size, 3, S, S]."""
    idx = torch.randint(len(images), (size,), generator=generator)
    return to_model_input(gather_images(images, idx), mean, std, device)


def train_vaal(labelled: torch.Tensor, unlabelled: torch.Tensor, mean: float, std: float, device: torch.device,
               generator: torch.Generator, settings: VaalSettings) -> tuple[VAE, Discriminator]:
    """Train a VAE and a discriminator on uint8 images labelled [L, 3, S, S] and unlabelled [M, 3, S, S].

    Each iteration draws `batch_size` labelled and `batch_size` unlabelled images (one joint
    batch), takes `vae_steps` VAE updates and `discriminator_steps` discriminator updates
    (Adam, lr each). Returns both networks in eval mode.
    """
    seed = int(torch.randint(2 ** 62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):  # initial weights from the seed; the caller's global stream is kept
        torch.manual_seed(seed)
        vae = VAE(labelled.shape[-1], settings.latent_dim, settings.vae_width)
        discriminator = Discriminator(settings.latent_dim, settings.discriminator_width,
                                      settings.discriminator_layers)
    vae.to(device).train()
    discriminator.to(device).train()
    noise = torch.Generator(device=device).manual_seed(seed + 1)
    vae_opt = torch.optim.Adam(vae.parameters(), lr=settings.lr)
    disc_opt = torch.optim.Adam(discriminator.parameters(), lr=settings.lr)
    for _ in range(settings.iterations):
        x = torch.cat([_batch(labelled, settings.batch_size, generator, mean, std, device),
                       _batch(unlabelled, settings.batch_size, generator, mean, std, device)])
        for _ in range(settings.vae_steps):
            loss = vae_loss(vae, discriminator, x, settings.batch_size, noise, settings.beta,
                            settings.adversary_weight)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"VAAL: VAE loss became {loss.item()} (check the input normalisation)")
            vae_opt.zero_grad(set_to_none=True)
            loss.backward()
            vae_opt.step()
        for _ in range(settings.discriminator_steps):
            loss = discriminator_loss(vae, discriminator, x, settings.batch_size)
            disc_opt.zero_grad(set_to_none=True)
            loss.backward()
            disc_opt.step()
    return vae.eval(), discriminator.eval()


@torch.no_grad()
def score(vae: VAE, discriminator: Discriminator, images: torch.Tensor, mean: float, std: float,
          device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """P(labelled) by the discriminator on the latent means of uint8 images [N, 3, S, S] -> float [N] on CPU."""
    out = []
    for start in range(0, len(images), batch_size):
        x = to_model_input(images[start:start + batch_size], mean, std, device)
        out.append(torch.sigmoid(discriminator(vae.encode(x)[0])).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def labelled_probability(labelled: torch.Tensor, unlabelled: torch.Tensor, mean: float, std: float,
                         device: torch.device, generator: torch.Generator,
                         settings: VaalSettings | None = None) -> torch.Tensor:
    """Train VAAL on uint8 labelled [L, 3, S, S] + unlabelled [M, 3, S, S] images and return the
    discriminator's P(labelled) of every unlabelled image: float [M] on CPU (query the lowest).
    `settings` default: `settings_for(device)`."""
    if len(labelled) == 0 or len(unlabelled) == 0:
        raise ValueError(f"VAAL needs labelled and unlabelled images, got {len(labelled)} and {len(unlabelled)}")
    settings = settings or settings_for(device)
    vae, discriminator = train_vaal(labelled, unlabelled, mean, std, device, generator, settings)
    return score(vae, discriminator, unlabelled, mean, std, device)


if __name__ == "__main__":
    raise SystemExit("vaal.py is a library module; run active_learning.py with --strategies vaal instead.")
