"""Decoder likelihoods p(x | z): a decoder's raw output → a Pyro distribution over one image."""
from __future__ import annotations

import math
from typing import Sequence

import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all
from torch.nn import functional as F

__all__ = [
    "BernoulliLikelihood",
    "DiscretizedGaussian",
    "DiscretizedGaussianLikelihood",
    "GaussianLikelihood",
    "NetworkGaussianLikelihood",
    "decoder_output_shape",
    "make_likelihood",
    "LIKELIHOOD_NAMES",
]

LIKELIHOOD_NAMES = ("bernoulli", "gaussian", "gaussian_network", "discretized_gaussian")
# Likelihoods whose density is over (k + u)/256, uniformly dequantized 8-bit data (docs/design.md, bits/dim convention)
CONTINUOUS_LIKELIHOODS = ("gaussian", "gaussian_network")


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
        # `not x >= 0` rejects NaN, which would otherwise make every log-likelihood NaN
        if not min_scale >= 0 or not math.isfinite(float(min_scale)):
            raise ValueError(f"min_scale must be a finite float >= 0, got {min_scale!r}")
        self.min_scale = min_scale
        if scale is None:
            if not init_scale > min_scale or not math.isfinite(float(init_scale)):
                raise ValueError(f"init_scale must be finite and exceed min_scale={min_scale}, got {init_scale!r}")
            # softplus(raw) + min_scale = init_scale at start
            raw = math.log(math.expm1(init_scale - min_scale))
            self.raw_scale = nn.Parameter(torch.full(self.event_shape, raw))
            self.fixed_scale = None
        else:
            if not scale > 0 or not math.isfinite(float(scale)):
                raise ValueError(f"scale must be positive and finite, or None (learned), got {scale!r}")
            self.raw_scale = None
            self.fixed_scale = float(scale)

    def scale(self) -> torch.Tensor | float:
        if self.fixed_scale is not None:
            return self.fixed_scale
        return F.softplus(self.raw_scale) + self.min_scale

    def scale_like(self, decoder_output: torch.Tensor) -> torch.Tensor:
        """The pixel scales broadcast to the decoder output's shape."""
        scale = self.scale()
        if isinstance(scale, torch.Tensor):
            return scale.expand_as(decoder_output)
        return torch.full_like(decoder_output, scale)

    def forward(self, decoder_output: torch.Tensor) -> dist.TorchDistribution:
        return dist.Normal(decoder_output, self.scale_like(decoder_output)).to_event(len(self.event_shape))

    def mean(self, decoder_output: torch.Tensor) -> torch.Tensor:
        return decoder_output


class NetworkGaussianLikelihood(nn.Module):
    """N(μ_θ(z), diag σ_θ(z)²) with both from the decoder (Kingma & Welling 2014, App. C.2): the decoder outputs 2C
    channels, the first C the mean and the last C a raw scale, σ = softplus(raw) + ``min_scale``.

    A per-example variance lets the decoder say which pixels it is unsure of, but the likelihood is unbounded as
    σ → 0 where the data is (nearly) constant; the floor ``min_scale`` bounds it (Rybkin et al. 2021, σ-VAE, clamp
    log σ ≥ −6, σ ≥ 0.0025; the default 1e-3 is about a third of the 1/256 dequantization bin, the spread of a
    uniform bin being (1/256)/√12 ≈ 0.0011, so the floor never binds on dequantized 8-bit data).
    """

    parameters_per_channel = 2

    def __init__(self, event_shape: Sequence[int], min_scale: float = 1e-3):
        super().__init__()
        self.event_shape = tuple(event_shape)
        if isinstance(min_scale, bool) or not isinstance(min_scale, (int, float)) or not (math.isfinite(min_scale) and min_scale > 0):
            raise ValueError(f"min_scale must be a finite float > 0 (the σ floor of the network variance), got {min_scale!r}")
        self.min_scale = float(min_scale)

    def split(self, decoder_output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, σ) from the decoder's (…, 2C, H, W) output."""
        channel_dim = -len(self.event_shape)
        if decoder_output.shape[channel_dim] != 2 * self.event_shape[0]:
            raise ValueError(f"decoder output has {decoder_output.shape[channel_dim]} channels; gaussian_network expects "
                             f"2 × {self.event_shape[0]} (mean and raw scale)")
        loc, raw_scale = decoder_output.chunk(2, dim=channel_dim)
        return loc, F.softplus(raw_scale) + self.min_scale

    def forward(self, decoder_output: torch.Tensor) -> dist.TorchDistribution:
        loc, scale = self.split(decoder_output)
        return dist.Normal(loc, scale).to_event(len(self.event_shape))

    def mean(self, decoder_output: torch.Tensor) -> torch.Tensor:
        return self.split(decoder_output)[0]


def decoder_output_shape(name: str, event_shape: Sequence[int]) -> tuple[int, ...]:
    """The decoder output a likelihood ``name`` reads: the image shape, or twice the channels for ``gaussian_network``."""
    channels, *rest = tuple(event_shape)
    return (2 * channels, *rest) if name == "gaussian_network" else (channels, *rest)


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − exp(x)) for x ≤ 0, stable at both ends (Mächler 2012)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def _log_normal_cdf_difference(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """log(Φ(upper) − Φ(lower)) for lower < upper, in log space; reflected (Φ(−a) − Φ(−b)) on the right tail."""
    reflect = lower > 0
    low = torch.where(reflect, -upper, lower)
    high = torch.where(reflect, -lower, upper)
    log_high = torch.special.log_ndtr(high)
    log_low = torch.special.log_ndtr(low)
    tiny = torch.finfo(log_high.dtype).tiny
    return log_high + _log1mexp((log_low - log_high).clamp(max=-tiny))


class DiscretizedGaussian(dist.TorchDistribution):
    """N(loc, scale²) discretized to 256 bins of 8-bit data on [low, high] (default [−1, 1]; Ho et al. 2020, eq. 13).

    Bin k has centre low + k·Δ, Δ = (high − low)/255, and edges ±Δ/2; the two edge bins extend to ±∞,
    so the 256 probabilities sum to one. ``log_prob`` is elementwise (use ``.to_event``), in nats.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    has_rsample = False
    num_bins = 256

    def __init__(self, loc, scale, *, low: float = -1.0, high: float = 1.0, validate_args=None):
        if not float(low) < float(high):
            raise ValueError(f"low must be below high, got low={low!r}, high={high!r}")
        self.loc, self.scale = broadcast_all(loc, scale)
        self.low, self.high = float(low), float(high)
        super().__init__(self.loc.shape, validate_args=validate_args)

    @property
    def bin_width(self) -> float:
        return (self.high - self.low) / (self.num_bins - 1)

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        return constraints.interval(self.low, self.high)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return DiscretizedGaussian(self.loc.expand(batch_shape), self.scale.expand(batch_shape), low=self.low, high=self.high)

    @property
    def mean(self) -> torch.Tensor:
        """The loc clamped to [low, high] (the exact mean differs by the discretization; used as a point estimate)."""
        return self.loc.clamp(self.low, self.high)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        half_bin = self.bin_width / 2
        centred = value - self.loc
        # Ho et al. 2020, eq. 13: δ± = x ± 1/255 (for [−1, 1]); edge bins open to ∓∞.
        upper = (centred + half_bin) / self.scale
        lower = (centred - half_bin) / self.scale
        log_cdf_upper = torch.special.log_ndtr(upper)  # first bin: log Φ(δ+)
        log_survival_lower = torch.special.log_ndtr(-lower)  # last bin: log(1 − Φ(δ−))
        log_middle = _log_normal_cdf_difference(lower, upper)
        # Bin index of the value; thresholds at half a bin inside the edges, as Ho et al.'s ±0.999.
        is_first = value < self.low + half_bin
        is_last = value > self.high - half_bin
        return torch.where(is_first, log_cdf_upper, torch.where(is_last, log_survival_lower, log_middle))

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """Bin centres: a Gaussian draw clamped to [low, high] and rounded to the nearest of the 256 levels."""
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            draw = torch.normal(self.loc.expand(shape), self.scale.expand(shape)).clamp(self.low, self.high)
            level = torch.round((draw - self.low) / self.bin_width)
            return self.low + level * self.bin_width


class DiscretizedGaussianLikelihood(GaussianLikelihood):
    """8-bit pixels: a Gaussian of mean = decoder output discretized to 256 bins on [low, high] (Ho et al. 2020, eq. 13).

    The scale is learned per pixel (``scale=None``) or fixed, as in :class:`GaussianLikelihood`; the
    default range [0, 1] is the library's image convention, so −log p is in nats of the 8-bit image.
    """

    def __init__(self, event_shape: Sequence[int], scale: float | None = None, init_scale: float = 0.1, min_scale: float = 1e-3, low: float = 0.0, high: float = 1.0):
        super().__init__(event_shape, scale=scale, init_scale=init_scale, min_scale=min_scale)
        if not float(low) < float(high):
            raise ValueError(f"low must be below high, got low={low!r}, high={high!r}")
        self.low, self.high = float(low), float(high)

    def forward(self, decoder_output: torch.Tensor) -> dist.TorchDistribution:
        scale = self.scale_like(decoder_output)
        return DiscretizedGaussian(decoder_output, scale, low=self.low, high=self.high).to_event(len(self.event_shape))

    def mean(self, decoder_output: torch.Tensor) -> torch.Tensor:
        return decoder_output.clamp(self.low, self.high)


def make_likelihood(name: str, event_shape: Sequence[int], min_scale: float = 1e-3) -> nn.Module:
    """``"bernoulli"``, ``"gaussian"`` (learned σ per pixel, shared by all images), ``"gaussian_network"`` (μ and σ from
    the decoder, σ ≥ ``min_scale``) or ``"discretized_gaussian"`` (learned per-pixel scale) for images of ``event_shape``."""
    if name == "bernoulli":
        return BernoulliLikelihood(event_dim=len(event_shape))
    if name == "gaussian":
        return GaussianLikelihood(event_shape)
    if name == "gaussian_network":
        return NetworkGaussianLikelihood(event_shape, min_scale)
    if name == "discretized_gaussian":
        return DiscretizedGaussianLikelihood(event_shape)
    raise ValueError(f"likelihood={name!r} is not known; expected one of {LIKELIHOOD_NAMES}")
