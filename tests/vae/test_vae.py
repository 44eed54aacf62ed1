import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import nn

from ppl_dgm.data import load_dataset
from ppl_dgm.train import evaluate_elbo, fit_svi
from ppl_dgm.vae import VAE, GaussianLikelihood, conv_vae, mlp_vae


def sampled_z(guide, x, seed):
    pyro.set_rng_seed(seed)
    return poutine.trace(guide).get_trace(x).nodes["z"]["value"]


@pytest.mark.parametrize("beta", [1.0, 2.5])
def test_meanfield_elbo_uses_torch_analytic_kl(beta):
    vae = mlp_vae((1, 8, 8), latent_dim=3, hidden=(16,), likelihood="bernoulli", beta=beta)
    x = torch.bernoulli(torch.rand(5, 1, 8, 8))
    pyro.set_rng_seed(7)
    loss = TraceMeanField_ELBO().differentiable_loss(vae.model, vae.guide, x)
    z = sampled_z(vae.guide, x, 7)  # the ELBO runs the guide first, so the same seed gives the same z
    loc, scale = vae.encode(x)
    kl = torch.distributions.kl_divergence(dist.Normal(loc, scale), dist.Normal(0.0, 1.0)).sum()
    # KL(N(m, s²) || N(0, 1)) = ½ Σ (s² + m² − 1 − 2 log s)   (Kingma & Welling 2014, App. B)
    closed_form = 0.5 * (scale**2 + loc**2 - 1 - 2 * scale.log()).sum()
    torch.testing.assert_close(kl, closed_form)
    log_likelihood = dist.Bernoulli(logits=vae.decoder(z)).to_event(3).log_prob(x).sum()
    torch.testing.assert_close(loss, -(log_likelihood - beta * kl))


def test_trace_elbo_is_log_joint_minus_log_q():
    vae = mlp_vae((1, 8, 8), latent_dim=3, hidden=(16,), likelihood="gaussian")
    x = torch.rand(4, 1, 8, 8)
    pyro.set_rng_seed(3)
    loss = Trace_ELBO().differentiable_loss(vae.model, vae.guide, x)
    z = sampled_z(vae.guide, x, 3)
    loc, scale = vae.encode(x)
    log_q = dist.Normal(loc, scale).log_prob(z).sum()
    log_prior = dist.Normal(0.0, 1.0).log_prob(z).sum()
    pixel_scale = vae.likelihood.scale()
    log_likelihood = dist.Normal(vae.decoder(z), pixel_scale).log_prob(x).sum()
    torch.testing.assert_close(loss, -(log_likelihood + log_prior - log_q))


class ExactPosteriorEncoder(nn.Module):
    """q(z|x) = p(z|x) for x = Wz + b + σε with orthogonal columns of W (Tipping & Bishop 1999, eq. 6–7)."""

    def __init__(self, weight, bias, sigma):
        super().__init__()
        precision = torch.eye(weight.shape[1], dtype=weight.dtype) + weight.T @ weight / sigma**2
        covariance = torch.linalg.inv(precision)
        self.register_buffer("gain", covariance @ weight.T / sigma**2)
        self.register_buffer("bias", bias)
        self.register_buffer("scale", covariance.diagonal().sqrt())
        assert torch.allclose(covariance, torch.diag(covariance.diagonal()))

    def forward(self, x):
        loc = (x.flatten(1) - self.bias) @ self.gain.T
        return loc, self.scale.expand_as(loc)


def test_linear_gaussian_vae_with_exact_posterior_has_elbo_equal_to_log_marginal():
    torch.set_default_dtype(torch.float64)
    try:
        generator = torch.Generator().manual_seed(0)
        q, _ = torch.linalg.qr(torch.randn(4, 2, generator=generator))
        weight = q * torch.tensor([2.0, 0.7])  # orthogonal columns → diagonal posterior covariance
        bias = torch.randn(4, generator=generator)
        sigma = 0.5
        decoder = nn.Sequential(nn.Linear(2, 4), nn.Unflatten(1, (1, 2, 2)))
        decoder[0].weight.data.copy_(weight)
        decoder[0].bias.data.copy_(bias)
        vae = VAE(ExactPosteriorEncoder(weight, bias, sigma), decoder, GaussianLikelihood((1, 2, 2), scale=sigma), latent_dim=2)
        z = torch.randn(50, 2, generator=generator)
        x = (z @ weight.T + bias + sigma * torch.randn(50, 4, generator=generator)).view(50, 1, 2, 2)
        marginal = torch.distributions.MultivariateNormal(bias, weight @ weight.T + sigma**2 * torch.eye(4))
        exact = marginal.log_prob(x.flatten(1)).mean().item()
        # log p(x, z) − log q(z|x) = log p(x) for every z when q is the exact posterior
        assert evaluate_elbo(vae.model, vae.guide, (x,), loss=Trace_ELBO()) == pytest.approx(exact, abs=1e-9)
        # a wrong posterior scale gives a strictly lower bound
        vae.encoder.scale.mul_(1.5)
        assert evaluate_elbo(vae.model, vae.guide, (x,), loss=TraceMeanField_ELBO()) < exact - 0.05
    finally:
        torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize("builder", [mlp_vae, conv_vae])
def test_vae_shapes(builder, shape):
    vae = builder(shape, latent_dim=4, likelihood="bernoulli")
    x = torch.rand(3, *shape)
    loc, scale = vae.encode(x)
    assert loc.shape == scale.shape == (3, 4) and (scale > 0).all()
    assert vae.reconstruct(x).shape == (3, *shape)
    samples = vae.sample(5, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, *shape) and samples.min() >= 0 and samples.max() <= 1
    again = vae.sample(5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(samples, again)
    binary = vae.sample(5, mean=False)
    assert set(binary.unique().tolist()) <= {0.0, 1.0}


def test_vae_errors():
    with pytest.raises(ValueError, match="latent_dim must be a positive int, got 0"):
        mlp_vae((1, 8, 8), latent_dim=0)
    with pytest.raises(ValueError, match="beta must be a positive float, got -1"):
        mlp_vae((1, 8, 8), beta=-1)
    with pytest.raises(ValueError, match="likelihood='poisson' is not known; expected one of \\('bernoulli', 'gaussian'"):
        mlp_vae((1, 8, 8), likelihood="poisson")
    with pytest.raises(ValueError, match="image_shape must be \\(C, H, W\\)"):
        mlp_vae((8, 8))
    with pytest.raises(ValueError, match="n must be a positive int, got 0"):
        mlp_vae((1, 8, 8)).sample(0)
    with pytest.raises(ValueError, match="scale must be positive"):
        GaussianLikelihood((1, 8, 8), scale=0.0)


def test_vae_learns_binarized_mnist5k():
    train = load_dataset("binarized_mnist5k", "train")
    test = load_dataset("binarized_mnist5k", "test")
    vae = mlp_vae((1, 28, 28), latent_dim=20, hidden=(200,))
    initial = evaluate_elbo(vae.model, vae.guide, test, loss=TraceMeanField_ELBO())
    fit_svi(vae.model, vae.guide, train, loss=TraceMeanField_ELBO(), epochs=3, batch_size=100, device="cpu", progress=False)
    final = evaluate_elbo(vae.model, vae.guide, test, loss=TraceMeanField_ELBO())
    assert initial < -500  # 784 pixels at chance are 543 nats
    assert final > -200, final  # a few epochs already beat any pixel-independent model
    assert math.isfinite(final)
