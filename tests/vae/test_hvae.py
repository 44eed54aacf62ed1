"""The two-layer HVAE: exact bounds on linear-Gaussian HVAEs (bottom-up and top-down), the five log-densities, the
Ladder VAE's precision-weighted combination, training, depth and errors."""
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import nn

from ppl_dgm.metrics.likelihood import iwae_log_likelihood
from ppl_dgm.train import evaluate_elbo, fit_svi
from ppl_dgm.vae import GaussianLikelihood
from ppl_dgm.vae.experiment import latent_usage
from ppl_dgm.vae.hvae import HVAE, mlp_hvae, precision_weighted
from ppl_dgm.vae.kl_control import FreeBitsELBO


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


def test_precision_weighted_combination_is_the_normalized_product_of_two_gaussians():
    grid = torch.linspace(-8, 8, 20001, dtype=torch.float64)
    loc, scale = precision_weighted(*(torch.tensor(v, dtype=torch.float64) for v in (1.0, 0.5, -2.0, 1.5)))
    product = dist.Normal(1.0, 0.5).log_prob(grid) + dist.Normal(-2.0, 1.5).log_prob(grid)
    weights = torch.softmax(product, 0)
    mean = (weights * grid).sum()
    torch.testing.assert_close(loc, mean)
    torch.testing.assert_close(scale, ((weights * (grid - mean) ** 2).sum()).sqrt())
    torch.testing.assert_close(loc, torch.tensor((1.0 / 0.25 - 2.0 / 2.25) / (1 / 0.25 + 1 / 2.25), dtype=torch.float64))


def linear_top_down_hvae():
    """z2 ~ N(0, 1), z1 | z2 ~ N(A z2, S), x | z1 ~ N(W z1 + b, σ² I) with WᵀW diagonal, and the top-down guide that is
    the exact posterior: the bottom-up Gaussian is the likelihood of z1, N(μ̂1; z1, σ²(WᵀW)⁻¹) with
    μ̂1 = (WᵀW)⁻¹Wᵀ(x − b), so q(z1 | z2, x) ∝ p(z1 | z2)·N(μ̂1; z1, ·) = p(z1 | z2, x), and q(z2 | x) = p(z2 | μ̂1)
    (μ̂1 is sufficient for z1, hence for z2): μ̂1 | z2 ~ N(A z2, S + σ²(WᵀW)⁻¹) (Bishop PRML eqs. 2.116–2.117)."""
    f64 = dict(dtype=torch.float64)
    a, s = torch.tensor([[1.5], [0.4]], **f64), torch.tensor([0.6, 1.2], **f64)
    q, _ = torch.linalg.qr(torch.randn(4, 2, generator=torch.Generator().manual_seed(0), **f64))
    w, b, sigma = q * torch.tensor([2.0, 0.8], **f64), torch.tensor([0.1, -0.2, 0.3, 0.0], **f64), 0.4
    gram = w.T @ w  # diagonal: orthogonal columns
    up_matrix = torch.linalg.inv(gram) @ w.T
    up_variance = sigma**2 / gram.diagonal()
    marginal_up = torch.diag(s**2 + up_variance)  # Cov(μ̂1 | z2)
    top_variance = 1.0 / (1.0 + a.T @ torch.linalg.inv(marginal_up) @ a)
    encoder1 = LinearGaussian(up_matrix, -up_matrix @ b, up_variance.sqrt())
    encoder2 = LinearGaussian(top_variance @ a.T @ torch.linalg.inv(marginal_up), torch.zeros(1, **f64), top_variance.diagonal().sqrt())
    decoder = nn.Sequential(nn.Linear(2, 4).double(), nn.Unflatten(1, (1, 2, 2)))
    decoder[0].weight.data.copy_(w)
    decoder[0].bias.data.copy_(b)
    hvae = HVAE(encoder1, encoder2, LinearGaussian(a, torch.zeros(2, **f64), s), decoder, GaussianLikelihood((1, 2, 2), scale=sigma),
                latent_dims=(2, 1), inference="top_down")
    marginal = torch.distributions.MultivariateNormal(b, w @ (a @ a.T + torch.diag(s**2)) @ w.T + sigma**2 * torch.eye(4, **f64))
    x = marginal.sample((30,))
    return hvae, x.view(30, 1, 2, 2), marginal.log_prob(x)


def test_top_down_guide_with_the_exact_posterior_gives_the_exact_log_marginal():
    hvae, x, exact = linear_top_down_hvae()
    # log p(x, z) − log q(z | x) = log p(x) at every draw: the one-sample bound is exact
    assert evaluate_elbo(hvae.model, hvae.guide, (x,), loss=Trace_ELBO()) == pytest.approx(exact.mean().item(), abs=1e-9)
    # analytic KLs given the sampled parent (the guide samples z2, then z1: the model's order) are unbiased, not exact
    # per draw (E_q log p(x | z1) is still one sample): 2,000 draws per digit
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        elbo = evaluate_elbo(hvae.model, hvae.guide, (x.repeat(2000, 1, 1, 1),), loss=TraceMeanField_ELBO())
    assert not [w for w in caught if "mean field" in str(w.message)]
    assert elbo == pytest.approx(exact.mean().item(), abs=0.02)
    hvae.inference = "bottom_up"  # the same networks wired bottom-up: Pyro's mean-field check notices the order
    with pytest.warns(UserWarning, match="Failed to verify mean field restriction"):
        evaluate_elbo(hvae.model, hvae.guide, (x,), loss=TraceMeanField_ELBO())


def test_top_down_hvae_reads_its_layers_along_the_mean_path_and_one_step_trains_every_network():
    hvae = mlp_hvae((1, 8, 8), latent_dims=(4, 3), hidden=(16, 8), inference="top_down")
    x = torch.bernoulli(torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(0)))
    (loc1, scale1), (loc2, scale2) = hvae.encode_layers(x)
    torch.testing.assert_close((loc2, scale2), hvae.encoder2(hvae.encoder1(x)[0]))
    torch.testing.assert_close((loc1, scale1), precision_weighted(*hvae.encoder1(x), *hvae.prior1(loc2)))
    torch.testing.assert_close(hvae.encode(x), (loc1, scale1))
    usage = latent_usage(hvae, x)
    assert set(usage) == {"active_units_z1", "active_units_z2", "kl_per_dim_z2"} and len(usage["kl_per_dim_z2"]) == 3
    before = {name: p.detach().clone() for name, p in hvae.named_parameters()}
    fit_svi(hvae.model, hvae.guide, (x,), loss=FreeBitsELBO(0.1, 0.5), epochs=1, batch_size=20, device="cpu", progress=False)
    unchanged = [name for name, p in hvae.named_parameters() if torch.equal(p, before[name])]
    assert unchanged == []


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


def test_hvae_depth_sets_the_hidden_layers_of_all_four_networks():
    hvae = mlp_hvae((1, 8, 8), latent_dims=(4, 2), hidden=(16, 8), depth=1)
    linear_layers = lambda net: [m.out_features for m in net.modules() if isinstance(m, nn.Linear)]  # noqa: E731
    assert linear_layers(hvae.encoder1) == [16, 8] and linear_layers(hvae.encoder2) == [8, 4]
    assert linear_layers(hvae.prior1) == [8, 8] and linear_layers(hvae.decoder) == [16, 64]
    assert linear_layers(mlp_hvae((1, 8, 8), latent_dims=(4, 2), hidden=(16, 8)).decoder) == [16, 16, 64]  # default: 2
    with pytest.raises(ValueError, match="depth must be a positive int, got 0"):
        mlp_hvae((1, 8, 8), depth=0)


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
