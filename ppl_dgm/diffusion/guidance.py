"""Classifier-free guidance (Ho & Salimans 2022): label dropout in training, guided ε at sampling."""
from __future__ import annotations

import numbers
from typing import Callable

import torch
from torch import Tensor

__all__ = ["drop_labels", "guided_eps", "check_guidance_scale"]

NULL_LABEL = -1  # the network contract's unconditional label


def drop_labels(y: Tensor, p_uncond: float, generator: torch.Generator | None = None) -> Tensor:
    """A copy of labels y (B,) with each replaced by −1 (null) with probability p_uncond (Ho & Salimans 2022, Alg. 1)."""
    if isinstance(p_uncond, bool) or not isinstance(p_uncond, numbers.Real) or not 0.0 <= p_uncond <= 1.0:
        raise ValueError(f"p_uncond must be a probability in [0, 1], got {p_uncond!r}")
    drop = torch.rand(y.shape, generator=generator, device=y.device) < p_uncond
    return torch.where(drop, torch.full_like(y, NULL_LABEL), y)


def check_guidance_scale(guidance_scale: float) -> float:
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, numbers.Real) or not guidance_scale >= 0.0:
        raise ValueError(f"guidance_scale must be a float >= 0 (w of Ho & Salimans 2022), got {guidance_scale!r}")
    return float(guidance_scale)


def guided_eps(eps_model: Callable[..., Tensor], y: Tensor | None, guidance_scale: float = 0.0) -> Callable[[Tensor, Tensor], Tensor]:
    """(x, t) -> ε̃ = (1 + w)·ε(x, t, y) − w·ε(x, t, ∅) (Ho & Salimans 2022, eq. 6); one batched call of 2B.

    With ``y=None`` the network is called unconditionally; with w = 0 it is plain ε(x, t, y).
    """
    guidance_scale = check_guidance_scale(guidance_scale)
    if y is None:
        if guidance_scale != 0.0:
            raise ValueError(f"guidance_scale={guidance_scale} needs class labels y, got y=None")
        return lambda x, t: eps_model(x, t)
    if guidance_scale == 0.0:
        return lambda x, t: eps_model(x, t, y)
    labels = torch.cat([y, torch.full_like(y, NULL_LABEL)])

    def eps(x: Tensor, t: Tensor) -> Tensor:
        conditional, unconditional = eps_model(torch.cat([x, x]), torch.cat([t, t]), labels).chunk(2)
        return (1.0 + guidance_scale) * conditional - guidance_scale * unconditional  # Ho & Salimans 2022, eq. 6

    return eps
