"""Likelihood conventions: uniform dequantization of 8-bit images and bits per dimension."""
from __future__ import annotations

import math

import torch

__all__ = ["dequantize", "bits_per_dim"]


def dequantize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """8-bit images in [0, 1] (k/255) → (k + u) / 256 with u ~ U[0, 1) (Theis et al. 2016; Ho et al. 2020).

    A continuous density on the result, divided by 256^D, is a lower bound on the discrete
    probability of the 8-bit image, which is what bits/dim reports.
    """
    levels = torch.round(x * 255.0)
    noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (levels + noise) / 256.0


def bits_per_dim(nll_nats: float | torch.Tensor, num_dims: int, data_scale: float = 256.0) -> float | torch.Tensor:
    """Bits/dim of 8-bit data from an NLL in nats of data rescaled to [0, 1) by 1/``data_scale``.

    −log p(x_8bit) = −log p(x / 256) + D·log 256 (change of variables), then / (D·ln 2).
    """
    if num_dims < 1:
        raise ValueError(f"num_dims must be a positive int, got {num_dims!r}")
    return (nll_nats + num_dims * math.log(data_scale)) / (num_dims * math.log(2.0))
