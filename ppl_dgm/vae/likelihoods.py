"""Decoder likelihoods p(x | z): a decoder's raw output → a Pyro distribution over one image."""
from __future__ import annotations

import math
from typing import Sequence

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["BernoulliLikelihood", "GaussianLikelihood", "make_likelihood", "LIKELIHOOD_NAMES"]

LIKELIHOOD_NAMES = ("bernoulli", "gaussian")


class BernoulliLikelihood(nn.Module):
    """Independent Bernoulli pixels with logits = decoder output (binarized data; Kingma & Welling 2014, App. C.1)."""

    def __init__(self, event_dim: int = 3):
        super().__init__()
        self.event_dim = event_dim

    def forward(self, decoder_output: torch.Tensor) -> dist.TorchDistribution:
        return dist.Bernoulli(logits=decoder_output).to_event(self.event_dim)

    def mean(self, decoder_output: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(decoder_output)


class GaussianLikelihood(nn.Module):
    """Independent Gaussian pixels, mean = decoder output (Kingma & Welling 2014, App. C.2).

    ``scale=None`` learns one standard deviation per pixel (a free parameter, shared over images,
    floored at ``min_scale``); a float fixes it, which makes −log p an MSE up to constants.
    """

    def __init__(self, event_shape: Sequence[int], scale: float | None = None, init_scale: float = 0.1, min_scale: float = 1e-3):
        super().__init__()
        self.event_shape = tuple(event_shape)
        self.min_scale = min_scale
        if scale is None:
            if init_scale <= min_scale:
                raise ValueError(f"init_scale must exceed min_scale={min_scale}, got {init_scale}")
            # softplus(raw) + min_scale = init_scale at start
            raw = math.log(math.expm1(init_scale - min_scale))
            self.raw_scale = nn.Parameter(torch.full(self.event_shape, raw))
            self.fixed_scale = None
        else:
            if not scale > 0:
                raise ValueError(f"scale must be positive or None (learned), got {scale!r}")
            self.raw_scale = None
            self.fixed_scale = float(scale)

    def scale(self) -> torch.Tensor | float:
        if self.fixed_scale is not None:
            return self.fixed_scale
        return F.softplus(self.raw_scale) + self.min_scale

    def forward(self, decoder_output: torch.Tensor) -> dist.TorchDistribution:
        scale = self.scale()
        if isinstance(scale, torch.Tensor):
            scale = scale.expand_as(decoder_output)
        else:
            scale = torch.full_like(decoder_output, scale)
        return dist.Normal(decoder_output, scale).to_event(len(self.event_shape))

    def mean(self, decoder_output: torch.Tensor) -> torch.Tensor:
        return decoder_output


def make_likelihood(name: str, event_shape: Sequence[int]) -> nn.Module:
    """``"bernoulli"`` or ``"gaussian"`` (learned per-pixel scale) for images of ``event_shape``."""
    if name == "bernoulli":
        return BernoulliLikelihood(event_dim=len(event_shape))
    if name == "gaussian":
        return GaussianLikelihood(event_shape)
    raise ValueError(f"likelihood={name!r} is not known; expected one of {LIKELIHOOD_NAMES}")
