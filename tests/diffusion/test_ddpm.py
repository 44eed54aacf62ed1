import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch.distributions import Normal, kl_divergence

from ppl_dgm.diffusion import DDPM, cosine_schedule, linear_schedule, simple_loss, to_model_space
from ppl_dgm.train import fit_svi
from .conftest import GaussianOptimalEps, LinearEps


def eight_bit(shape, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, generator=generator).double() * 2 / 255 - 1


def decoder_log_prob_by_hand(x0, loc, scale):
    """Ho et al. 2020, eq. 13: log(Φ((x+1/255−μ)/σ) − Φ((x−1/255−μ)/σ)), edge bins open."""
    normal = Normal(loc, scale)
    upper = torch.where(x0 > 0.999, torch.full_like(x0, math.inf), x0 + 1 / 255)
    lower = torch.where(x0 < -0.999, torch.full_like(x0, -math.inf), x0 - 1 / 255)
    return (normal.cdf(upper) - normal.cdf(lower)).log().flatten(1).sum(1)


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_full_pyro_elbo_equals_the_hand_computed_eq5(variance):
    torch.set_default_dtype(torch.float64)
    try:
        schedule = linear_schedule(4, 0.05, 0.5)
        net = LinearEps()
        ddpm = DDPM(net, schedule, variance=variance, estimator="full")
        x0 = eight_bit((3, 1, 2, 2), 0)
        x0[0, 0, 0, 0], x0[1, 0, 1, 1] = -1.0, 1.0  # both edge bins
        pyro.set_rng_seed(11)
        loss = TraceMeanField_ELBO().differentiable_loss(ddpm.model, ddpm.guide, x0)
        pyro.set_rng_seed(11)
        guide_trace = poutine.trace(ddpm.guide).get_trace(x0)
        x = {t: guide_trace.nodes[f"x_{t}"]["value"] for t in range(1, 5)}

        betas = torch.linspace(0.05, 0.5, 4, dtype=torch.float64)
        alphas = 1 - betas
        alpha_bar = torch.cumprod(alphas, 0)
        alpha_bar_prev = torch.cat([torch.ones(1), alpha_bar[:-1]])
        beta_tilde = (1 - alpha_bar_prev) / (1 - alpha_bar) * betas
        sigma2 = (betas if variance == "beta" else beta_tilde).clone()
        sigma2[0] = beta_tilde[1]

        def mu_theta(xt, t):  # eq. 11
            eps = net.a * xt + net.c * t / 4 + net.b
            return (xt - betas[t - 1] / (1 - alpha_bar[t - 1]).sqrt() * eps) / alphas[t - 1].sqrt()

        # L_T = KL(q(x_T|x_0) || N(0, I))
        terms = kl_divergence(Normal(alpha_bar[3].sqrt() * x0, (1 - alpha_bar[3]).sqrt()), Normal(0.0, 1.0)).sum()
        for t in range(4, 1, -1):  # L_{t−1} = KL(q(x_{t−1}|x_t, x_0) || p_θ(x_{t−1}|x_t)), eq. 6–7
            posterior_mean = (alpha_bar_prev[t - 1].sqrt() * betas[t - 1] * x0 + alphas[t - 1].sqrt() * (1 - alpha_bar_prev[t - 1]) * x[t]) / (1 - alpha_bar[t - 1])
            terms = terms + kl_divergence(Normal(posterior_mean, beta_tilde[t - 1].sqrt()), Normal(mu_theta(x[t], t), sigma2[t - 1].sqrt())).sum()
        terms = terms - decoder_log_prob_by_hand(x0, mu_theta(x[1], 1), sigma2[0].sqrt()).sum()  # L_0
        torch.testing.assert_close(loss, terms, rtol=1e-10, atol=1e-10)
        # gradients reach the ε-network through the KLs and the decoder
        loss.backward()
        assert all(p.grad is not None and p.grad.abs() > 0 for p in net.parameters())
    finally:
        torch.set_default_dtype(torch.float32)


def batch_losses(ddpm, x0, estimator, repeats):
    ddpm.estimator = estimator
    elbo = TraceMeanField_ELBO()
    with torch.no_grad():
        return torch.stack([elbo.differentiable_loss(ddpm.model, ddpm.guide, x0) / x0.shape[0] for _ in range(repeats)])


def test_sampled_t_estimator_is_unbiased_for_the_full_elbo():
    torch.set_default_dtype(torch.float64)
    try:
        schedule = cosine_schedule(6)
        x0 = eight_bit((1, 1, 2, 2), 3).expand(64, 1, 2, 2)
        # a near-optimal ε-network (data ≈ N(x0, 0.05²)) keeps every term of eq. 5 moderate
        ddpm = DDPM(GaussianOptimalEps(schedule, x0[0], 0.05), schedule)
        full = batch_losses(ddpm, x0, "full", 50)
        sampled = batch_losses(ddpm, x0, "sampled_t", 300)
        standard_error = (full.var() / full.numel() + sampled.var() / sampled.numel()).sqrt()
        assert (full.mean() - sampled.mean()).abs() < 3 * standard_error, (full.mean(), sampled.mean(), standard_error)
        assert sampled.std() > full.std()  # it is a noisier estimate of the same expectation
        # no bias hidden by a huge variance: the standard error is small against the ELBO itself
        assert standard_error < 0.03 * full.mean().abs()
    finally:
        torch.set_default_dtype(torch.float32)


def test_sampled_t_loss_trains_a_tiny_model_with_fit_svi():
    images = (torch.rand(64, 1, 2, 2) > 0.5).float()
    ddpm = DDPM(LinearEps(0.0, 0.0, 0.0), linear_schedule(8, 0.01, 0.3), estimator="sampled_t")
    history = fit_svi(ddpm.model, ddpm.guide, (to_model_space(images),), loss=TraceMeanField_ELBO(), epochs=30, batch_size=32, device="cpu", progress=False, optim=lambda p: torch.optim.Adam(p, lr=3e-2))
    assert history.loss[-1] < history.loss[0] - 0.1


def test_simple_loss_is_the_mse_of_alg1():
    schedule = linear_schedule(10)
    net = LinearEps()
    x0 = torch.rand(5, 1, 2, 2) * 2 - 1
    torch.manual_seed(4)
    loss = simple_loss(net, schedule, x0)
    torch.manual_seed(4)
    t = torch.randint(1, 11, (5,))
    noise = torch.randn_like(x0)
    alpha_bar = schedule.alpha_bar.float()[t - 1].view(-1, 1, 1, 1)
    xt = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise
    torch.testing.assert_close(loss, ((noise - net(xt, t.float() / 10)) ** 2).mean())


def test_to_model_space_maps_8bit_levels_to_bin_centres():
    images = torch.tensor([0.0, 1 / 255, 0.5, 1.0])
    torch.testing.assert_close(to_model_space(images), torch.tensor([-1.0, -1 + 2 / 255, 1 / 255, 1.0]))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="variance='large' is not known"):
        DDPM(LinearEps(), linear_schedule(4), variance="large")
    with pytest.raises(ValueError, match="estimator='x' is not known"):
        DDPM(LinearEps(), linear_schedule(4), estimator="x")
    with pytest.raises(TypeError, match="schedule must be a NoiseSchedule"):
        DDPM(LinearEps(), torch.linspace(0.1, 0.2, 4))


def test_elbo_terms_sum_to_the_pyro_loss_and_bits_per_dim_follows():
    from ppl_dgm.diffusion import ddpm_bits_per_dim, elbo_terms

    schedule = linear_schedule(5, 0.05, 0.6)
    ddpm = DDPM(LinearEps(), schedule)
    x0 = eight_bit((4, 1, 2, 2), 1).float()
    pyro.set_rng_seed(5)
    loss = TraceMeanField_ELBO().differentiable_loss(ddpm.model, ddpm.guide, x0)
    pyro.set_rng_seed(5)
    terms = elbo_terms(ddpm, x0)
    assert terms.shape == (4, 6) and (terms[:, 1:] >= 0).all()
    torch.testing.assert_close(terms.sum().float(), loss.detach(), rtol=1e-5, atol=1e-4)
    pyro.set_rng_seed(5)
    result = ddpm_bits_per_dim(ddpm, (x0 + 1) / 2, batch_size=4)
    assert ddpm_bits_per_dim(ddpm, (x0 + 1) / 2, batch_size=3)["num_images"] == 4
    assert result["bits_per_dim"] == pytest.approx(terms.sum(1).mean().item() / (4 * math.log(2)), rel=1e-5)
