"""Noise-conditional score network s_θ(x, σ) over the ε-network contract (Song & Ermon 2019; 2020, technique 3)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ppl_dgm.nn.functional import expand_like
from ppl_dgm.sde.losses import check_sigmas

__all__ = ["NoiseConditionalScoreNet", "noise_level_time"]


def noise_level_time(sigma: Tensor, sigmas: Tensor) -> Tensor:
    """t(σ) = (1 + (L − 1)·log(σ/σ_L)/log(σ_1/σ_L))/L ∈ (0, 1] for σ_1 > … > σ_L (t = i/L at the i-th smallest σ;
    t = 1 when L = 1), shape like σ, float64 arithmetic: the network contract's time of a noise level."""
    levels = sigmas.numel()
    if levels == 1:
        return torch.ones_like(sigma, dtype=torch.float64)
    fraction = torch.log(sigma.double() / sigmas[-1]) / math.log(float(sigmas[0] / sigmas[-1]))
    return (1.0 + (levels - 1) * fraction) / levels


class NoiseConditionalScoreNet(nn.Module):
    """s_θ(x, σ) = −ε_θ(x, t(σ))/σ for σ_1 > … > σ_L, with t(σ) = (1 + (L − 1)·log(σ/σ_L)/log(σ_1/σ_L))/L.

    t is the σ-index in (0, 1] of the network contract (t = i/L at the i-th smallest σ); dividing by σ
    is Song & Ermon 2020's technique 3, and makes the σ²-weighted DSM loss ½‖ε_θ − z‖².
    """

    def __init__(self, eps_model: nn.Module, sigmas: Tensor):
        super().__init__()
        if not isinstance(eps_model, nn.Module):
            raise TypeError(f"eps_model must be an nn.Module eps_model(x, t), got {type(eps_model).__name__}")
        sigmas = check_sigmas(sigmas)
        if sigmas.numel() < 2:
            raise ValueError(f"sigmas must hold at least two noise levels, got {sigmas.tolist()}")
        self.eps_model = eps_model
        self.register_buffer("sigmas", sigmas)

    def time(self, sigma: Tensor) -> Tensor:
        """t(σ) ∈ (0, 1], shape like σ (float64 arithmetic): :func:`noise_level_time`."""
        return noise_level_time(sigma, self.sigmas)

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        sigma = sigma.to(device=x.device).expand(x.shape[0]) if sigma.ndim == 0 else sigma.to(x.device)
        if sigma.shape != (x.shape[0],):
            raise ValueError(f"sigma must be a scalar or of shape ({x.shape[0]},), got {tuple(sigma.shape)}")
        eps = self.eps_model(x, self.time(sigma).to(x.dtype))
        return -eps / expand_like(sigma.to(x.dtype), x)
