"""Denoising score matching (Vincent 2011): the NCSN loss over a σ sequence and the continuous score-SDE loss.

Both are per-example sums over data dims, averaged over the batch (``reduction="mean"``) or
returned per example (``"none"``); randomness uses torch's global RNG unless a ``generator`` is given.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ppl_dgm._checks import check_same_shape
from ppl_dgm.nn.functional import expand_like
from ppl_dgm.sde.sdes import SDE, check_sde, check_time_range

__all__ = ["geometric_sigmas", "check_sigmas", "dsm_loss", "score_sde_loss"]

_REDUCTIONS = ("mean", "none")


def _listed(values: Tensor) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in values.tolist()) + "]"


def check_sigmas(sigmas: Tensor | list[float], name: str = "sigmas") -> Tensor:
    """Return σ_1 > σ_2 > … > σ_L > 0 as a float64 tensor, or raise naming ``name``."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    if sigmas.ndim != 1 or sigmas.numel() < 1:
        raise ValueError(f"{name} must be a 1-D sequence of at least one noise level, got shape {tuple(sigmas.shape)}")
    if not bool((sigmas > 0).all()) or not bool(torch.isfinite(sigmas).all()):
        raise ValueError(f"{name} must be positive and finite, got {_listed(sigmas)}")
    if sigmas.numel() > 1 and not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise ValueError(f"{name} must be strictly decreasing (σ_1 > … > σ_L, Song & Ermon 2019), got {_listed(sigmas)}")
    return sigmas


def geometric_sigmas(sigma_max: float, sigma_min: float, num_scales: int) -> Tensor:
    """σ_i = σ_max (σ_min/σ_max)^{(i−1)/(L−1)}, i = 1..L, float64 decreasing (Song & Ermon 2019, sec. 4.2)."""
    if not isinstance(num_scales, int) or isinstance(num_scales, bool) or num_scales < 2:
        raise ValueError(f"num_scales must be an int >= 2, got {num_scales!r}")
    if not (isinstance(sigma_min, (int, float)) and isinstance(sigma_max, (int, float)) and 0 < sigma_min < sigma_max):
        raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}")
    exponents = torch.linspace(0.0, 1.0, num_scales, dtype=torch.float64)
    return sigma_max * (sigma_min / sigma_max) ** exponents


def _reduce(losses: Tensor, reduction: str) -> Tensor:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not known; expected one of {_REDUCTIONS}")
    return losses.mean() if reduction == "mean" else losses


def dsm_loss(score_model: Callable[[Tensor, Tensor], Tensor], x0: Tensor, sigmas: Tensor, *, reduction: str = "mean",
             generator: torch.Generator | None = None) -> Tensor:
    """NCSN loss (1/L)Σ_i λ(σ_i) ½E‖s_θ(x̃, σ_i) + (x̃ − x)/σ_i²‖², λ(σ) = σ², σ_i drawn per example (Song & Ermon 2019, eq. 5–6).

    ``score_model(x, sigma)`` takes σ as a (B,) tensor in x's dtype. Returns nats²-free units: a sum over dims.
    """
    sigmas = check_sigmas(sigmas)
    index = torch.randint(0, sigmas.numel(), (x0.shape[0],), device=x0.device, generator=generator)
    sigma = sigmas.to(device=x0.device, dtype=x0.dtype)[index]
    noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
    perturbed = x0 + expand_like(sigma, x0) * noise  # x̃ ~ N(x, σ² I) (Vincent 2011)
    score = score_model(perturbed, sigma)
    check_same_shape("score_model's output", score, "x0", x0)  # a (B, 1) output would broadcast silently
    # λ(σ)·‖s + (x̃ − x)/σ²‖² = ‖σ s + z‖² (Song & Ermon 2019, eq. 6 with λ = σ²)
    losses = 0.5 * (expand_like(sigma, x0) * score + noise).pow(2).reshape(x0.shape[0], -1).sum(1)
    return _reduce(losses, reduction)


def score_sde_loss(eps_model: Callable[..., Tensor], sde: SDE, x0: Tensor, y: Tensor | None = None, *,
                   eps: float = 1e-5, likelihood_weighting: bool = False, reduction: str = "mean",
                   generator: torch.Generator | None = None) -> Tensor:
    """E_t λ(t) ½E‖s_θ(x_t, t) − ∇log p_0t(x_t|x_0)‖², t ~ U(eps, T) (Song et al. 2021, eq. 7), s_θ = −ε_θ/σ(t).

    λ(t) = σ(t)² (the ε-prediction loss ½‖ε_θ − z‖²) or, with ``likelihood_weighting``, λ(t) = g(t)²
    (Song et al. 2021b, Thm. 1: the weighted loss bounds the NLL).
    """
    check_sde(sde)
    eps = check_time_range("eps", eps, sde.T)
    batch = x0.shape[0]
    t = eps + (sde.T - eps) * torch.rand(batch, device=x0.device, dtype=torch.float64, generator=generator)
    noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
    coefficient, std = sde._mean_coefficient_std(t)
    perturbed = expand_like(coefficient.to(x0.dtype), x0) * x0 + expand_like(std.to(x0.dtype), x0) * noise
    time = t.to(x0.dtype)
    prediction = eps_model(perturbed, time) if y is None else eps_model(perturbed, time, y)
    check_same_shape("eps_model's output", prediction, "x0", x0)
    if likelihood_weighting:  # ½ g² ‖s_θ + z/σ‖² with s_θ = −ε_θ/σ
        weight = (sde._diffusion(t) / std) ** 2
        losses = 0.5 * weight.to(x0.dtype) * (noise - prediction).pow(2).reshape(batch, -1).sum(1)
    else:  # ½ σ² ‖s_θ + z/σ‖² = ½‖z − ε_θ‖²
        losses = 0.5 * (noise - prediction).pow(2).reshape(batch, -1).sum(1)
    return _reduce(losses, reduction)
