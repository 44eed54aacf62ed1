"""The variational autoencoder as a Pyro model/guide pair (Kingma & Welling 2014; Rezende et al. 2014)."""
from __future__ import annotations

import math
from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.nn import PyroModule
from torch import nn
from torch.nn import functional as F

from ppl_dgm._checks import check_image_shape, check_positive_int
from ppl_dgm.vae.likelihoods import decoder_output_shape, make_likelihood

__all__ = ["VAE", "GaussianEncoder", "FullCovarianceEncoder", "NormalWithoutRsample", "mlp_vae", "conv_vae", "POSTERIORS"]

POSTERIORS = ("diagonal", "full")


class NormalWithoutRsample(dist.Normal):
    """N(loc, scale) whose draws carry no pathwise gradient, so ELBOs use score-function gradients.

    A class attribute rather than ``has_rsample_(False)``: Pyro 1.9's plate broadcasting re-expands
    ``Independent`` distributions and fails to copy the instance flag onto them.
    """

    has_rsample = False


class GaussianEncoder(nn.Module):
    """Wraps a network with 2·latent_dim outputs into q(z|x) = N(loc, diag(scale²)); scale = softplus + 1e-5."""

    def __init__(self, net: nn.Module, latent_dim: int):
        super().__init__()
        self.net = net
        self.latent_dim = latent_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw_scale = self.net(x).split(self.latent_dim, dim=-1)
        return loc, F.softplus(raw_scale) + 1e-5


class FullCovarianceEncoder(nn.Module):
    """Wraps a network with k + k(k+1)/2 outputs into q(z|x) = N(loc, L Lᵀ): L lower triangular, its diagonal
    softplus + 1e-5 (the map of :class:`GaussianEncoder`, so a zero strict lower part gives the diagonal guide) and
    its strict lower part free; returns (loc, scale_tril)."""

    full_covariance = True

    def __init__(self, net: nn.Module, latent_dim: int):
        super().__init__()
        self.net = net
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        self.register_buffer("rows", torch.tril_indices(latent_dim, latent_dim, offset=-1)[0], persistent=False)
        self.register_buffer("cols", torch.tril_indices(latent_dim, latent_dim, offset=-1)[1], persistent=False)

    @staticmethod
    def num_outputs(latent_dim: int) -> int:
        return latent_dim + latent_dim * (latent_dim + 1) // 2

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.latent_dim
        loc, raw_diagonal, strict_lower = self.net(x).split([k, k, k * (k - 1) // 2], dim=-1)
        lower = strict_lower.new_zeros(*strict_lower.shape[:-1], k, k)
        lower[..., self.rows, self.cols] = strict_lower
        return loc, lower + torch.diag_embed(F.softplus(raw_diagonal) + 1e-5)


class VAE(PyroModule):
    """p(z) = N(0, I), p(x|z) = likelihood(decoder(z)); q(z|x) = N(encoder(x)) — per-example sites in plate "data".

    ``encoder(x) -> (loc, scale)`` each (B, latent_dim); ``decoder(z) -> (B, *image_shape)`` raw
    parameters that ``likelihood`` turns into a distribution. With a :class:`FullCovarianceEncoder` ``encoder(x)``
    gives (loc, scale_tril), q(z|x) = N(loc, L Lᵀ) and the prior is written as the equal N(0, I) multivariate normal,
    so TraceMeanField_ELBO uses torch's analytic KL ½(tr Σ + ‖μ‖² − k − log|Σ|). ``beta`` scales the KL term
    (β-VAE, Higgins et al. 2017) by scaling the z sites of model and guide alike. With
    ``reparameterized=False`` the guide hides its ``rsample`` so Pyro's ELBOs fall back to
    score-function (REINFORCE, Williams 1992) gradients for the encoder.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: nn.Module,
        latent_dim: int,
        beta: float = 1.0,
        reparameterized: bool = True,
    ):
        super().__init__()
        check_positive_int("latent_dim", latent_dim)
        if not isinstance(beta, (int, float)) or isinstance(beta, bool) or not beta > 0:
            raise ValueError(f"beta must be a positive float, got {beta!r}")
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.latent_dim = latent_dim
        self.beta = float(beta)
        self.reparameterized = bool(reparameterized)
        self.full_covariance = bool(getattr(encoder, "full_covariance", False))
        if self.full_covariance and not self.reparameterized:
            raise ValueError("reparameterized=False (score-function gradients) is implemented for the diagonal guide only")

    def _prior(self, batch_size: int, like: torch.Tensor) -> dist.TorchDistribution:
        zeros = torch.zeros(batch_size, self.latent_dim, device=like.device, dtype=like.dtype)
        if self.full_covariance:  # the same N(0, I), in the family of the guide so the KL is analytic
            eye = torch.eye(self.latent_dim, device=like.device, dtype=like.dtype).expand(batch_size, -1, -1)
            return dist.MultivariateNormal(zeros, scale_tril=eye)
        return dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        """q(z|x) as a distribution with event shape (latent_dim,)."""
        loc, scale = self.encoder(x)
        if self.full_covariance:
            return dist.MultivariateNormal(loc, scale_tril=scale)
        normal = dist.Normal if self.reparameterized else NormalWithoutRsample
        return normal(loc, scale).to_event(1)

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        with pyro.plate("data", x.shape[0]):
            with poutine.scale(scale=self.beta):
                z = pyro.sample("z", self._prior(x.shape[0], x))
            return pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        posterior = self.posterior(x)
        with pyro.plate("data", x.shape[0]):
            with poutine.scale(scale=self.beta):
                return pyro.sample("z", posterior)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and marginal standard deviations of q(z|x), each (B, latent_dim) (for a full covariance,
        the row norms of L)."""
        loc, scale = self.encoder(x)
        return (loc, scale.norm(dim=-1)) if self.full_covariance else (loc, scale)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Mean of p(x|z) (probabilities for Bernoulli, means for Gaussian), (B, *image_shape)."""
        return self.likelihood.mean(self.decoder(z))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean of each input: E[x | z = E_q[z|x]]."""
        loc, _ = self.encoder(x)
        return self.decode(loc)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, mean: bool = True) -> torch.Tensor:
        """n images from the generative model: z ~ p(z), then the mean of p(x|z) (or a draw with ``mean=False``)."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        parameter = next(self.parameters())
        z = torch.randn(n, self.latent_dim, generator=generator, device=parameter.device, dtype=parameter.dtype)
        output = self.decoder(z)
        return self.likelihood.mean(output) if mean else self.likelihood(output).sample()


def mlp_vae(
    image_shape: Sequence[int],
    latent_dim: int = 50,
    hidden: Sequence[int] = (400,),
    likelihood: str = "bernoulli",
    beta: float = 1.0,
    posterior: str = "diagonal",
    min_scale: float = 1e-3,
) -> VAE:
    """The MLP VAE of Kingma & Welling 2014 (784-400-50 as in the Pyro tutorial), SiLU hidden layers; ``posterior``
    "diagonal" or "full" (covariance of q(z|x)); ``min_scale`` is the σ floor of ``likelihood="gaussian_network"``."""
    from ppl_dgm.nn import MLP

    image_shape = check_image_shape(image_shape)
    check_positive_int("latent_dim", latent_dim)
    num_pixels = image_shape[0] * image_shape[1] * image_shape[2]
    encoder = _encoder(posterior, latent_dim, lambda outputs: MLP(num_pixels, outputs, hidden=tuple(hidden)))
    output_shape = decoder_output_shape(likelihood, image_shape)
    decoder = nn.Sequential(MLP(latent_dim, math.prod(output_shape), hidden=tuple(reversed(hidden))), nn.Unflatten(1, output_shape))
    return VAE(encoder, decoder, make_likelihood(likelihood, image_shape, min_scale), latent_dim, beta)


def _encoder(posterior: str, latent_dim: int, network) -> nn.Module:
    """q(z|x) around ``network(num_outputs)``: diagonal or full covariance."""
    if posterior == "diagonal":
        return GaussianEncoder(network(2 * latent_dim), latent_dim)
    if posterior == "full":
        return FullCovarianceEncoder(network(FullCovarianceEncoder.num_outputs(latent_dim)), latent_dim)
    raise ValueError(f"posterior={posterior!r} is not known; expected one of {POSTERIORS}")


def conv_vae(
    image_shape: Sequence[int],
    latent_dim: int = 32,
    channels: int = 32,
    likelihood: str = "bernoulli",
    beta: float = 1.0,
    posterior: str = "diagonal",
    min_scale: float = 1e-3,
) -> VAE:
    """A convolutional VAE for 8x8, 28x28 or 32x32 images (encoder/decoder from :mod:`ppl_dgm.nn.conv`); ``posterior``
    and ``min_scale`` as in :func:`mlp_vae`."""
    from ppl_dgm.nn import ConvDecoder, ConvEncoder

    image_shape = check_image_shape(image_shape)
    check_positive_int("latent_dim", latent_dim)
    encoder = _encoder(posterior, latent_dim, lambda outputs: ConvEncoder(image_shape, outputs, channels=channels))
    decoder = ConvDecoder(latent_dim, decoder_output_shape(likelihood, image_shape), channels=channels)
    return VAE(encoder, decoder, make_likelihood(likelihood, image_shape, min_scale), latent_dim, beta)
