"""A hierarchical VAE with two stochastic layers as a Pyro model/guide pair.

Generative (top-down): p(z2) p(z1 | z2) p(x | z1). Two inference models over the same networks:

- ``inference="bottom_up"``: q(z1 | x) q(z2 | z1) (Burda et al. 2016, §5: the two-stochastic-layer architecture;
  Sønderby et al. 2016 call this the bottom-up inference path). Because q(z2 | z1) depends on the sampled z1, the
  KL of z1 against p(z1 | z2) has no closed form under q: train with ``Trace_ELBO`` (Pyro's TraceMeanField_ELBO
  would treat z2 as independent of z1).
- ``inference="top_down"`` (the Ladder VAE, Sønderby et al. 2016, §2.2): a deterministic bottom-up pass gives
  (μ̂1, σ̂1) = encoder1(x) and q(z2 | x) = N(encoder2(μ̂1)); then q(z1 | z2, x) is the precision-weighted
  combination of the bottom-up Gaussian N(μ̂1, σ̂1²) with the generative p(z1 | z2) = N(μ_p, σ_p²) (eqs. 17–20).
  The guide samples z2 then z1, in the model's order, so every KL is analytic given the sampled parents and
  ``TraceMeanField_ELBO`` is unbiased.
"""
from __future__ import annotations

import math

from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from ppl_dgm._checks import check_choice, check_image_shape, check_positive_int
from ppl_dgm.vae.likelihoods import decoder_output_shape, make_likelihood
from ppl_dgm.vae.vae import GaussianEncoder

__all__ = ["HVAE", "mlp_hvae", "INFERENCE", "precision_weighted"]

INFERENCE = ("bottom_up", "top_down")


def precision_weighted(loc_up: torch.Tensor, scale_up: torch.Tensor, loc_down: torch.Tensor,
                       scale_down: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(loc, scale) of the normalized product N(loc_up, scale_up²)·N(loc_down, scale_down²) per coordinate.

    Sønderby et al. 2016, eqs. 18–19: σ_q² = 1 / (σ̂_q⁻² + σ_p⁻²), μ_q = (μ̂_q σ̂_q⁻² + μ_p σ_p⁻²) σ_q².
    """
    precision_up, precision_down = scale_up.pow(-2), scale_down.pow(-2)
    variance = 1.0 / (precision_up + precision_down)
    return (loc_up * precision_up + loc_down * precision_down) * variance, variance.sqrt()


class HVAE(PyroModule):
    """Two Gaussian latent layers; every network maps to (loc, scale) through :class:`GaussianEncoder`.

    ``encoder1(x) -> q(z1|x)`` (top-down: the bottom-up Gaussian (μ̂1, σ̂1)), ``encoder2(z1) -> q(z2|z1)``
    (top-down: ``encoder2(μ̂1) -> q(z2|x)``), ``prior1(z2) -> p(z1|z2)``, ``decoder(z1) -> likelihood parameters``;
    all sites per example in plate "data". ``inference`` is "bottom_up" or "top_down" (module docstring).
    """

    def __init__(
        self,
        encoder1: nn.Module,
        encoder2: nn.Module,
        prior1: nn.Module,
        decoder: nn.Module,
        likelihood: nn.Module,
        latent_dims: tuple[int, int],
        inference: str = "bottom_up",
    ):
        super().__init__()
        self.latent_dims = tuple(check_positive_int("latent_dims", d) for d in latent_dims)
        if len(self.latent_dims) != 2:
            raise ValueError(f"latent_dims must be two positive ints (z1, z2), got {latent_dims!r}")
        self.inference = check_choice("inference", inference, INFERENCE)
        self.encoder1, self.encoder2, self.prior1, self.decoder, self.likelihood = encoder1, encoder2, prior1, decoder, likelihood

    @property
    def latent_dim(self) -> int:
        """Size of the layer next to the data, z1 (what :meth:`encode` returns)."""
        return self.latent_dims[0]

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        zeros = torch.zeros(x.shape[0], self.latent_dims[1], device=x.device, dtype=x.dtype)
        with pyro.plate("data", x.shape[0]):
            z2 = pyro.sample("z2", dist.Normal(zeros, torch.ones_like(zeros)).to_event(1))
            z1 = pyro.sample("z1", dist.Normal(*self.prior1(z2)).to_event(1))
            return pyro.sample("x", self.likelihood(self.decoder(z1)), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.inference == "top_down":
            loc_up, scale_up = self.encoder1(x)
            with pyro.plate("data", x.shape[0]):
                z2 = pyro.sample("z2", dist.Normal(*self.encoder2(loc_up)).to_event(1))
                return pyro.sample("z1", dist.Normal(*precision_weighted(loc_up, scale_up, *self.prior1(z2))).to_event(1))
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(*self.encoder1(x)).to_event(1))
            return pyro.sample("z2", dist.Normal(*self.encoder2(z1)).to_event(1))

    def encode_layers(self, x: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """(loc, scale) of each layer's Gaussian along the guide's mean path, ((B, z1), (B, z2)): bottom-up q(z1 | x)
        and q(z2 | z1 = μ1); top-down q(z1 | x, z2 = μ2) and q(z2 | x)."""
        loc_up, scale_up = self.encoder1(x)
        if self.inference == "top_down":
            loc2, scale2 = self.encoder2(loc_up)
            return precision_weighted(loc_up, scale_up, *self.prior1(loc2)), (loc2, scale2)
        return (loc_up, scale_up), self.encoder2(loc_up)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Parameters (loc, scale) of q(z1 | x), each (B, latent_dims[0]) (top-down: of q(z1 | x, z2 = E_q[z2 | x]))."""
        return self.encoder1(x) if self.inference == "bottom_up" else self.encode_layers(x)[0]

    def decode(self, z1: torch.Tensor) -> torch.Tensor:
        """Mean of p(x | z1)."""
        return self.likelihood.mean(self.decoder(z1))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)[0])

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, mean: bool = True) -> torch.Tensor:
        """Ancestral samples z2 ~ p(z2), z1 ~ p(z1|z2), then the mean of p(x|z1) (or a draw)."""
        check_positive_int("n", n)
        parameter = next(self.parameters())
        options = dict(generator=generator, device=parameter.device, dtype=parameter.dtype)
        z2 = torch.randn(n, self.latent_dims[1], **options)
        loc, scale = self.prior1(z2)
        z1 = loc + scale * torch.randn(loc.shape, **options)
        output = self.decoder(z1)
        return self.likelihood.mean(output) if mean else self.likelihood(output).sample()


def mlp_hvae(
    image_shape: Sequence[int],
    latent_dims: tuple[int, int] = (64, 32),
    hidden: Sequence[int] = (512, 256),
    likelihood: str = "bernoulli",
    min_scale: float = 1e-3,
    inference: str = "bottom_up",
    depth: int = 2,
) -> HVAE:
    """MLP HVAE close to Burda et al. 2016's two-layer net (x–hidden[0]–z1–hidden[1]–z2), ``depth`` hidden layers in each
    of its four networks (Burda et al.: 2); ``min_scale`` is the σ floor of ``likelihood="gaussian_network"``;
    ``inference`` "bottom_up" or "top_down" (the same networks either way)."""
    from ppl_dgm.nn import MLP

    image_shape = check_image_shape(image_shape)
    z1_dim, z2_dim = (check_positive_int("latent_dims", d) for d in latent_dims)
    first, second = (check_positive_int("hidden", h) for h in hidden)
    depth = check_positive_int("depth", depth)
    num_pixels = image_shape[0] * image_shape[1] * image_shape[2]
    output_shape = decoder_output_shape(likelihood, image_shape)
    return HVAE(
        encoder1=GaussianEncoder(MLP(num_pixels, 2 * z1_dim, hidden=(first,) * depth), z1_dim),
        encoder2=GaussianEncoder(MLP(z1_dim, 2 * z2_dim, hidden=(second,) * depth), z2_dim),
        prior1=GaussianEncoder(MLP(z2_dim, 2 * z1_dim, hidden=(second,) * depth), z1_dim),
        decoder=nn.Sequential(MLP(z1_dim, math.prod(output_shape), hidden=(first,) * depth), nn.Unflatten(1, output_shape)),
        likelihood=make_likelihood(likelihood, image_shape, min_scale),
        latent_dims=(z1_dim, z2_dim),
        inference=inference,
    )
