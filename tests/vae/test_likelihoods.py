import math

import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch.nn import functional as F

from ppl_dgm.vae import GaussianLikelihood, mlp_vae


def test_fixed_variance_gaussian_is_mse_up_to_constants():
    sigma = 0.3
    mean, x = torch.randn(5, 1, 4, 4), torch.randn(5, 1, 4, 4)
    log_prob = GaussianLikelihood((1, 4, 4), scale=sigma)(mean).log_prob(x)
    # −log N(x | μ, σ² I) = ‖x − μ‖² / (2σ²) + (D/2) log(2πσ²)
    mse = F.mse_loss(mean, x, reduction="none").flatten(1).sum(1)
    torch.testing.assert_close(-log_prob, mse / (2 * sigma**2) + 16 / 2 * math.log(2 * math.pi * sigma**2))
    # so gradients w.r.t. the mean are those of MSE scaled by 1/(2σ²)
    mean.requires_grad_(True)
    GaussianLikelihood((1, 4, 4), scale=sigma)(mean).log_prob(x).sum().neg().backward()
    torch.testing.assert_close(mean.grad, (mean - x).detach() / sigma**2)


def test_learned_scale_starts_at_init_and_respects_floor():
    likelihood = GaussianLikelihood((1, 2, 2), init_scale=0.1, min_scale=1e-3)
    torch.testing.assert_close(likelihood.scale(), torch.full((1, 2, 2), 0.1))
    with torch.no_grad():
        likelihood.raw_scale.fill_(-100.0)
    assert torch.all(likelihood.scale() >= 1e-3)


def test_monte_carlo_kl_and_analytic_kl_estimate_the_same_elbo():
    vae = mlp_vae((1, 8, 8), latent_dim=3, hidden=(16,), likelihood="bernoulli")
    x = torch.bernoulli(torch.rand(8, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    draws = 400
    with torch.no_grad():
        monte_carlo = torch.stack([Trace_ELBO().differentiable_loss(vae.model, vae.guide, x) for _ in range(draws)])
        analytic = torch.stack([TraceMeanField_ELBO().differentiable_loss(vae.model, vae.guide, x) for _ in range(draws)])
    standard_error = math.sqrt(monte_carlo.var() / draws + analytic.var() / draws)
    assert abs(monte_carlo.mean() - analytic.mean()) < 3 * standard_error
    assert analytic.var() < monte_carlo.var()  # the analytic KL removes the KL term's sampling noise
