"""GANs on the 2-D mixture toys (ring8, grid25): MLP generator/discriminator, mode-coverage evaluation."""
from __future__ import annotations

import time
from typing import Any, Sequence

import torch
from torch import nn

from ppl_dgm.gan.losses import Objective, apply_spectral_norm, objective
from ppl_dgm.gan.trainer import fit_gan
from ppl_dgm.nn import MLP

__all__ = ["toy_critic", "toy_networks", "train_toy_gan"]


def toy_critic(in_features: int = 2, hidden: Sequence[int] = (256, 256, 256), spectral_norm: bool = False) -> nn.Module:
    """Discriminator / critic MLP x (B, in_features) -> score (B,), ReLU; ``spectral_norm`` divides every weight by its
    largest singular value (Miyato et al. 2018, eq. 8)."""
    critic = nn.Sequential(MLP(in_features, 1, hidden, activation=nn.ReLU), nn.Flatten(0))
    return apply_spectral_norm(critic) if spectral_norm else critic


def toy_networks(latent_dim: int = 2, hidden: Sequence[int] = (256, 256, 256),
                 spectral_norm: bool = False) -> tuple[nn.Module, nn.Module]:
    """Generator MLP z (B, latent_dim) -> x (B, 2) and discriminator MLP x (B, 2) -> score (B,), ReLU;
    ``spectral_norm`` divides every discriminator weight by its largest singular value (Miyato et al. 2018, eq. 8)."""
    return MLP(latent_dim, 2, hidden, activation=nn.ReLU), toy_critic(2, hidden, spectral_norm)


def _half_constant_half_linear(done: float) -> float:
    return min(1.0, 2.0 * (1.0 - done))


def train_toy_gan(name: str, loss: str | Objective, *, steps: int = 6000, batch_size: int | None = None,
                  lr: float | None = None, latent_dim: int = 2, hidden: Sequence[int] = (256, 256, 256), num_train: int = 50_000,
                  num_samples: int = 2500, n_critic: int | None = None, lr_decay: bool = False,
                  spectral_norm: bool = False, data_scale: float = 1.0, seed: int = 0,
                  progress: bool = False) -> dict[str, Any]:
    """Train a GAN with objective ``loss`` for ``steps`` discriminator steps on ``num_train`` points of toy ``name``.

    ``loss`` is an objective's name, with its paper's recipe (:mod:`ppl_dgm.gan.losses`), or an :class:`Objective`
    carrying another recipe (e.g. ``dataclasses.replace(wasserstein_gp(0.1), betas=(0.5, 0.9))``). Its optimizer,
    lr, betas, n_critic and batch size are used unless given here; ``lr_decay`` keeps the learning rates for half the
    steps, then decays them linearly to 0; ``spectral_norm`` normalizes the discriminator (:func:`toy_networks`). The
    networks see the data divided by ``data_scale`` and the samples are multiplied back (Gulrajani et al.'s toy code
    divides 8 Gaussians by 1.414 and 25 Gaussians by 2.828, to about unit std). Returns the mode-coverage metrics of
    ``num_samples`` samples, the samples (N, 2), the recipe used (``generator_steps`` = ``steps`` // n_critic) and
    the seconds taken. Deterministic for a seed.
    """
    from ppl_dgm.data import toy2d
    from ppl_dgm.metrics.modes import mode_coverage

    if isinstance(data_scale, bool) or not isinstance(data_scale, (int, float)) or not 0 < data_scale < float("inf"):
        raise ValueError(f"data_scale must be a finite float > 0, got {data_scale!r}")
    torch.manual_seed(seed)
    data = toy2d(name, num_train, generator=torch.Generator().manual_seed(seed)) / data_scale
    generator, discriminator = toy_networks(latent_dim, hidden, spectral_norm)
    recipe = loss if isinstance(loss, Objective) else objective(loss)
    batch_size = batch_size or recipe.batch_size
    steps_per_epoch = -(-num_train // batch_size)
    started = time.perf_counter()
    fit_gan(generator, discriminator, data, loss=recipe, latent_dim=latent_dim, epochs=-(-steps // steps_per_epoch),
            batch_size=batch_size, lr=lr, max_steps=steps, device="cpu", seed=seed, progress=progress,
            log_every=500, n_critic=n_critic,
            lr_factor=_half_constant_half_linear if lr_decay else None, description=f"{recipe.name} {name}")
    seconds = time.perf_counter() - started
    generator.eval()
    with torch.no_grad():
        z = torch.randn(num_samples, latent_dim, generator=torch.Generator().manual_seed(seed + 1))
        samples = generator(z) * data_scale
    result = mode_coverage(samples, name)
    n_critic = recipe.n_critic if n_critic is None else n_critic
    result.update(loss=recipe.name, dataset=name, steps=steps, generator_steps=steps // n_critic,
                  batch_size=batch_size, optimizer=recipe.optimizer, lr=recipe.lr if lr is None else lr,
                  betas=list(recipe.betas) if recipe.optimizer == "adam" else None, n_critic=n_critic,
                  weight_clip=recipe.weight_clip, penalty_weight=recipe.penalty_weight, spectral_norm=spectral_norm,
                  data_scale=data_scale, seconds=seconds, samples=samples)
    return result
