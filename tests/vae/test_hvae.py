import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from torch import nn

from ppl_dgm.metrics.likelihood import iwae_log_likelihood
from ppl_dgm.train import evaluate_elbo, fit_svi
from ppl_dgm.vae import GaussianLikelihood
from ppl_dgm.vae.hvae import HVAE, mlp_hvae


class LinearGaussian(nn.Module):
    """input ↦ (input·Mᵀ + c, fixed scale): a linear-Gaussian conditional."""

    def __init__(self, matrix, offset, scale):
        super().__init__()
        self.register_buffer("matrix", matrix)
        self.register_buffer("offset", offset)
        self.register_buffer("scale", scale)

    def forward(self, inputs):
        loc = inputs.flatten(1) @ self.matrix.T + self.offset
        return loc, self.scale.expand_as(loc)


def linear_hvae(exact_guide=True):
    """z2 ~ N(0, 1), z1 | z2 ~ N(A z2, S), x | z1 ~ N(W z1 + b, σ² I): everything Gaussian and diagonal."""
    f64 = dict(dtype=torch.float64)
    a, s = torch.tensor([[1.5], [0.0]], **f64), torch.tensor([0.6, 1.2], **f64)
    q, _ = torch.linalg.qr(torch.randn(4, 2, generator=torch.Generator().manual_seed(0), **f64))
    w, b, sigma = q * torch.tensor([2.0, 0.8], **f64), torch.tensor([0.1, -0.2, 0.3, 0.0], **f64), 0.4
    prior_cov_z1 = a @ a.T + torch.diag(s**2)  # diagonal by construction
    # p(z1 | x) (Bishop PRML eq. 2.116–2.117) and p(z2 | z1) = p(z2 | z1, x)
    post_cov_z1 = torch.linalg.inv(torch.linalg.inv(prior_cov_z1) + w.T @ w / sigma**2)
    post_var_z2 = 1.0 / (1.0 + (a.T @ torch.diag(s**-2) @ a))
    inflate = 1.0 if exact_guide else 1.7
    encoder1 = LinearGaussian(post_cov_z1 @ w.T / sigma**2, -(post_cov_z1 @ w.T / sigma**2) @ b, post_cov_z1.diagonal().sqrt() * inflate)
    encoder2 = LinearGaussian(post_var_z2 @ a.T @ torch.diag(s**-2), torch.zeros(1, **f64), post_var_z2.diagonal().sqrt())
    prior1 = LinearGaussian(a, torch.zeros(2, **f64), s)
    decoder = nn.Sequential(nn.Linear(2, 4).double(), nn.Unflatten(1, (1, 2, 2)))
    decoder[0].weight.data.copy_(w)
    decoder[0].bias.data.copy_(b)
    hvae = HVAE(encoder1, encoder2, prior1, decoder, GaussianLikelihood((1, 2, 2), scale=sigma), latent_dims=(2, 1))
    marginal = torch.distributions.MultivariateNormal(b, w @ prior_cov_z1 @ w.T + sigma**2 * torch.eye(4, **f64))
    x = marginal.sample((30,))
    return hvae, x.view(30, 1, 2, 2), marginal.log_prob(x)


def test_hvae_elbo_with_exact_posterior_is_exact_log_marginal():
    hvae, x, exact = linear_hvae(exact_guide=True)
    assert evaluate_elbo(hvae.model, hvae.guide, (x,), loss=Trace_ELBO()) == pytest.approx(exact.mean().item(), abs=1e-9)


def test_hvae_iwae_closes_the_gap_of_an_inexact_guide():
    hvae, x, exact = linear_hvae(exact_guide=False)
    elbo = evaluate_elbo(hvae.model, hvae.guide, (x,), loss=Trace_ELBO())
    bound = iwae_log_likelihood(hvae.model, hvae.guide, x, k=500).mean().item()
    assert elbo < bound < exact.mean().item() + 0.01
    assert exact.mean().item() - bound < 0.05 < exact.mean().item() - elbo


def test_hvae_elbo_is_sum_of_five_log_densities():
    hvae = mlp_hvae((1, 8, 8), latent_dims=(6, 3), hidden=(16, 8))
    x = torch.bernoulli(torch.rand(4, 1, 8, 8))
    pyro.set_rng_seed(5)
    loss = Trace_ELBO().differentiable_loss(hvae.model, hvae.guide, x)
    pyro.set_rng_seed(5)
    guide = poutine.trace(hvae.guide).get_trace(x)
    z1, z2 = guide.nodes["z1"]["value"], guide.nodes["z2"]["value"]
    log_joint = (dist.Normal(0.0, 1.0).log_prob(z2).sum() + dist.Normal(*hvae.prior1(z2)).log_prob(z1).sum()
                 + dist.Bernoulli(logits=hvae.decoder(z1)).log_prob(x).sum())
    log_q = dist.Normal(*hvae.encoder1(x)).log_prob(z1).sum() + dist.Normal(*hvae.encoder2(z1)).log_prob(z2).sum()
    torch.testing.assert_close(loss, -(log_joint - log_q))


def test_hvae_trains_and_samples():
    torch.manual_seed(0)
    x = torch.bernoulli(torch.rand(1, 1, 8, 8).expand(200, 1, 8, 8))  # one noisy prototype
    hvae = mlp_hvae((1, 8, 8), latent_dims=(4, 2), hidden=(32, 16))
    before = evaluate_elbo(hvae.model, hvae.guide, (x,))
    fit_svi(hvae.model, hvae.guide, (x,), epochs=40, batch_size=50, device="cpu", progress=False)
    assert evaluate_elbo(hvae.model, hvae.guide, (x,)) > before + 5.0
    samples = hvae.sample(7, generator=torch.Generator().manual_seed(1))
    assert samples.shape == (7, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 1
    assert hvae.reconstruct(x[:3]).shape == (3, 1, 8, 8)


def test_hvae_errors():
    with pytest.raises(ValueError, match="latent_dims must be a positive int, got 0"):
        mlp_hvae((1, 8, 8), latent_dims=(0, 2))
    with pytest.raises(ValueError, match="n must be a positive int, got 0"):
        mlp_hvae((1, 8, 8)).sample(0)


def test_package_exports_the_hvae_and_vqvae_of_their_modules():
    import subprocess
    import sys

    import ppl_dgm.vae
    from ppl_dgm.vae import hvae, vqvae

    for name, module in (("HVAE", hvae), ("mlp_hvae", hvae), ("VQVAE", vqvae), ("VectorQuantizer", vqvae)):
        assert getattr(ppl_dgm.vae, name) is getattr(module, name)
        assert name in ppl_dgm.vae.__all__
    # the package import stays lean: the SDE solvers and ArviZ load only in the modules that use them
    check = "import sys, ppl_dgm.vae; print(','.join(m for m in ('torchsde', 'torchdiffeq', 'arviz') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True).stdout.strip() == ""
