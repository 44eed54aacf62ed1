import math

import pytest
import torch
from torch import nn

from ppl_dgm.metrics import bits_per_dim, dequantize
from ppl_dgm.metrics.likelihood import iwae_log_likelihood
from ppl_dgm.train import evaluate_elbo
from ppl_dgm.vae import VAE, GaussianLikelihood


class ScaledPosteriorEncoder(nn.Module):
    """The exact posterior of a linear-Gaussian model (Tipping & Bishop 1999) with its scale multiplied by ``inflate``."""

    def __init__(self, weight, bias, sigma, inflate):
        super().__init__()
        precision = torch.eye(weight.shape[1], dtype=weight.dtype) + weight.T @ weight / sigma**2
        covariance = torch.linalg.inv(precision)
        self.register_buffer("gain", covariance @ weight.T / sigma**2)
        self.register_buffer("bias", bias)
        self.register_buffer("scale", covariance.diagonal().sqrt() * inflate)

    def forward(self, x):
        loc = (x.flatten(1) - self.bias) @ self.gain.T
        return loc, self.scale.expand_as(loc)


def linear_gaussian(inflate):
    generator = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(4, 2, generator=generator, dtype=torch.float64))
    weight, bias, sigma = q * torch.tensor([2.0, 0.7], dtype=torch.float64), torch.zeros(4, dtype=torch.float64), 0.5
    decoder = nn.Sequential(nn.Linear(2, 4), nn.Unflatten(1, (1, 2, 2))).double()
    decoder[0].weight.data.copy_(weight)
    decoder[0].bias.data.copy_(bias)
    vae = VAE(ScaledPosteriorEncoder(weight, bias, sigma, inflate), decoder, GaussianLikelihood((1, 2, 2), scale=sigma), 2)
    x = (torch.randn(20, 2, generator=generator, dtype=torch.float64) @ weight.T + sigma * torch.randn(20, 4, generator=generator, dtype=torch.float64))
    marginal = torch.distributions.MultivariateNormal(bias, weight @ weight.T + sigma**2 * torch.eye(4, dtype=torch.float64))
    return vae, x.view(20, 1, 2, 2), marginal.log_prob(x)


def test_iwae_is_exact_with_exact_posterior():
    vae, x, exact = linear_gaussian(inflate=1.0)
    torch.testing.assert_close(iwae_log_likelihood(vae.model, vae.guide, x, k=3), exact)


def test_iwae_bound_tightens_towards_log_marginal():
    vae, x, exact = linear_gaussian(inflate=2.0)
    # k = 1: E[log w] = ELBO = log p(x) − KL(q || p(z|x)); with q's std twice the posterior's on each of
    # the 2 latent dims, KL = 2 (log ½ + 4/2 − ½) in closed form (Burda et al. 2016, Thm 1)
    repeats = 300
    gap_k1 = exact.repeat(repeats) - iwae_log_likelihood(vae.model, vae.guide, x.repeat(repeats, 1, 1, 1), k=1)
    standard_error = gap_k1.std() / math.sqrt(gap_k1.numel())
    assert abs(gap_k1.mean().item() - 2 * (math.log(0.5) + 1.5)) < 3 * standard_error.item()
    gaps, errors = {}, {}
    for k in (4, 64):
        gap = exact.repeat(50) - iwae_log_likelihood(vae.model, vae.guide, x.repeat(50, 1, 1, 1), k=k, max_rows=8000)
        assert gap.shape == (1000,)
        gaps[k], errors[k] = gap.mean().item(), (gap.std() / math.sqrt(gap.numel())).item()
    assert gap_k1.mean().item() > gaps[4] > gaps[64] > -3 * errors[64]  # a bound that tightens with k
    assert gaps[64] < 0.03
    assert evaluate_elbo(vae.model, vae.guide, (x,)) < exact.mean().item() - 1.0


def test_iwae_rejects_bad_k():
    vae, x, _ = linear_gaussian(1.0)
    with pytest.raises(ValueError, match="k must be a positive int, got 0"):
        iwae_log_likelihood(vae.model, vae.guide, x, k=0)


def test_dequantize_and_bits_per_dim():
    x = torch.tensor([0.0, 1.0, 128 / 255])
    y = dequantize(x, generator=torch.Generator().manual_seed(0))
    levels = torch.tensor([0.0, 255.0, 128.0])
    assert ((y * 256 - levels) >= 0).all() and ((y * 256 - levels) < 1).all()
    # a uniform density on [0, 1)^D has NLL 0 on the rescaled data → exactly 8 bits/dim on 8-bit data
    assert bits_per_dim(0.0, 784) == pytest.approx(8.0)
    assert bits_per_dim(784 * math.log(2), 784) == pytest.approx(9.0)
    with pytest.raises(ValueError, match="num_dims must be a positive int, got 0"):
        bits_per_dim(1.0, 0)
