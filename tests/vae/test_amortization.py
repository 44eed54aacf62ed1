"""The amortization gap on a linear-Gaussian VAE, where every quantity has a closed form.

Decoder x = W z + b + σ ε, z ~ N(0, I): log p(x) = log N(x; b, W Wᵀ + σ² I); the posterior is N(μ, Σ) with
Σ⁻¹ = Λ = I + WᵀW/σ², μ = Σ Wᵀ (x − b)/σ²; the best diagonal Gaussian (minimizing KL(q ‖ p(z|x))) has mean μ and
precisions diag(Λ), and any Gaussian q has ELBO = log p(x) − KL(q ‖ p(z|x)).
"""
import math

import pyro
import pytest
import torch
from pyro import poutine
from torch import nn
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from ppl_dgm.metrics.likelihood import iwae_log_likelihood, log_importance_weights
from ppl_dgm.vae import VAE, GaussianEncoder, GaussianLikelihood, mlp_hvae, mlp_vae
from ppl_dgm.vae.amortization import (
    LocalGaussianGuide,
    amortization_gap,
    gaussian_posterior_errors,
    nuts_posterior,
    optimize_local_posteriors,
)

WEIGHT = torch.tensor([[1.0, 0.8], [0.5, -0.3], [0.2, 1.1], [0.9, 0.4]], dtype=torch.float64)  # (P, D)
BIAS = torch.tensor([0.3, -0.2, 0.1, 0.5], dtype=torch.float64)
SIGMA = 0.5
LATENT, PIXELS = WEIGHT.shape[1], WEIGHT.shape[0]


def inverse_softplus(value: torch.Tensor) -> torch.Tensor:
    return value + torch.log(-torch.expm1(-value))


def exact_posterior(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """μ (N, D) and Σ (D, D) of p(z | x) for the rows of x (N, P)."""
    precision = torch.eye(LATENT, dtype=torch.float64) + WEIGHT.T @ WEIGHT / SIGMA**2
    covariance = torch.linalg.inv(precision)
    return (x - BIAS) @ WEIGHT @ covariance / SIGMA**2, covariance


def exact_log_likelihood(x: torch.Tensor) -> torch.Tensor:
    marginal = WEIGHT @ WEIGHT.T + SIGMA**2 * torch.eye(PIXELS, dtype=torch.float64)
    return MultivariateNormal(BIAS, marginal).log_prob(x)


def optimal_scale() -> torch.Tensor:
    """The best diagonal Gaussian's sds: 1/√Λ_dd."""
    return (1 + (WEIGHT**2).sum(0) / SIGMA**2).rsqrt()


def exact_elbo(x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log p(x) − KL(N(loc, diag scale²) ‖ p(z|x)) per row."""
    mean, covariance = exact_posterior(x)
    q = MultivariateNormal(loc, torch.diag_embed(scale**2))
    return exact_log_likelihood(x) - kl_divergence(q, MultivariateNormal(mean, covariance))


def linear_vae(encoder: str) -> VAE:
    """The linear-Gaussian VAE; encoder "exact" outputs q* itself (μ(x) is linear, the sds constant), "prior" N(0, I)."""
    decoder = nn.Sequential(nn.Linear(LATENT, PIXELS), nn.Unflatten(1, (1, 1, PIXELS)))
    network = nn.Sequential(nn.Flatten(), nn.Linear(PIXELS, 2 * LATENT))
    vae = VAE(GaussianEncoder(network, LATENT), decoder, GaussianLikelihood((1, 1, PIXELS), scale=SIGMA), LATENT).double()
    with torch.no_grad():
        decoder[0].weight.copy_(WEIGHT)
        decoder[0].bias.copy_(BIAS)
        linear = network[1]
        linear.weight.zero_()
        if encoder == "exact":
            _, covariance = exact_posterior(BIAS[None])
            gain = covariance @ WEIGHT.T / SIGMA**2  # μ = gain (x − b)
            linear.weight[:LATENT] = gain
            linear.bias[:LATENT] = -gain @ BIAS
            linear.bias[LATENT:] = inverse_softplus(optimal_scale() - 1e-5)
        else:
            linear.bias[:LATENT] = 0.0
            linear.bias[LATENT:] = inverse_softplus(torch.ones(LATENT, dtype=torch.float64) - 1e-5)
    return vae


def data(n: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, LATENT, generator=generator, dtype=torch.float64)
    x = z @ WEIGHT.T + BIAS + SIGMA * torch.randn(n, PIXELS, generator=generator, dtype=torch.float64)
    return x.view(n, 1, 1, PIXELS)


def test_local_guide_finds_each_rows_example_with_or_without_index():
    loc = torch.arange(6.0).view(3, 2)
    guide = LocalGaussianGuide(loc, torch.full((3, 2), 0.5))
    x = torch.zeros(3, 1, 1, 4)
    trace = poutine.trace(guide.guide).get_trace(x.repeat(4, 1, 1, 1))  # particle-major, as Trace_ELBO over repeats
    torch.testing.assert_close(trace.nodes["z"]["fn"].base_dist.loc, loc.repeat(4, 1))
    index = torch.tensor([2, 0, 2, 1, 1])
    trace = poutine.trace(guide.guide).get_trace(torch.zeros(5, 1, 1, 4), index)
    torch.testing.assert_close(trace.nodes["z"]["fn"].base_dist.loc, loc[index])
    torch.testing.assert_close(trace.nodes["z"]["fn"].base_dist.scale, torch.full((5, 2), 0.5))
    with pytest.raises(ValueError, match="not a multiple of the guide's 3 examples"):
        guide.guide(torch.zeros(4, 1, 1, 4))


def test_iwae_of_the_local_guide_is_the_log_mean_exp_of_its_log_weights():
    """iwae_log_likelihood chunks examples (max_rows) and hands the guide each row's example index through y."""
    vae, x = linear_vae("prior"), data(5)
    mean, _ = exact_posterior(x.flatten(1))
    guide = LocalGaussianGuide(mean, optimal_scale().expand(5, -1))
    index = torch.arange(5)
    pyro.set_rng_seed(3)
    bound = iwae_log_likelihood(vae.model, guide.guide, x, 400, max_rows=300, y=index)  # 1 example, passes of 300 + 100
    pyro.set_rng_seed(3)
    weights = log_importance_weights(vae.model, guide.guide, x, 400, max_rows=300, y=index)
    assert weights.shape == (400, 5)
    torch.testing.assert_close(bound, torch.logsumexp(weights, 0) - math.log(400))
    # q* is close to the posterior (log-weight sd about 0.5): 400 draws give log p(x) within ~0.035 nats (one s.e.)
    assert (bound - exact_log_likelihood(x.flatten(1))).abs().max() < 0.15


def test_one_step_moves_every_guide_parameter_and_no_network_parameter():
    vae, x = linear_vae("prior"), data(3)
    before = {name: p.detach().clone() for name, p in vae.named_parameters()}
    vae.decoder[0].weight.requires_grad_(False)  # the caller's flags come back as they were
    guide = optimize_local_posteriors(vae, x, steps=1, num_particles=2)
    start = LocalGaussianGuide.from_encoder(vae, x)
    assert (guide.loc != start.loc).all() and (guide.log_scale != start.log_scale).all()
    for name, parameter in vae.named_parameters():
        assert torch.equal(parameter, before[name]), name
        assert parameter.requires_grad == (name != "decoder.0.weight"), name
    assert vae.training


def test_optimized_local_gaussian_reaches_the_analytic_diagonal_optimum():
    vae, x = linear_vae("prior"), data(6)
    guide = optimize_local_posteriors(vae, x, steps=1500, lr=0.02, num_particles=20)
    mean, _ = exact_posterior(x.flatten(1))
    torch.testing.assert_close(guide.loc.detach(), mean, atol=0.02, rtol=0)
    torch.testing.assert_close(guide.scale.detach(), optimal_scale().expand(6, -1), atol=0, rtol=0.03)
    optimum = exact_elbo(x.flatten(1), mean, optimal_scale().expand(6, -1))
    reached = exact_elbo(x.flatten(1), guide.loc.detach(), guide.scale.detach())
    assert (reached <= optimum + 1e-12).all()  # the optimum of the family cannot be beaten
    assert (optimum - reached).max() < 2e-3


@pytest.fixture(scope="module")
def gaps_with_prior_encoder():
    pyro.set_rng_seed(0)
    x = data(6)
    return x.flatten(1), amortization_gap(linear_vae("prior"), x, k=5000, steps=1500, lr=0.02, num_particles=10, seed=0)


def test_log_likelihood_estimate_is_exact_within_monte_carlo_error_and_above_the_elbos(gaps_with_prior_encoder):
    x, gaps = gaps_with_prior_encoder
    exact = exact_log_likelihood(x)
    # log p̂ is the IWAE bound of the proposal whose bound is higher on average (in 2-D both are close to exact)
    tighter = max(("optimized", gaps.iwae_optimized), ("encoder", gaps.iwae_encoder), key=lambda pair: pair[1].mean())
    assert gaps.log_likelihood_proposal == tighter[0] and torch.equal(gaps.log_likelihood, tighter[1])
    assert ((gaps.log_likelihood - exact).abs() < 4 * gaps.log_likelihood_mc_se + 1e-3).all()
    assert gaps.log_likelihood_mc_se.max() < 0.05  # a few hundredths of a nat at k = 5000
    assert (gaps.iwae_optimized - exact).abs().max() < 0.1 and (gaps.iwae_encoder - exact).abs().max() < 0.15
    assert (gaps.log_likelihood > gaps.elbo_optimized).all() and (gaps.elbo_optimized > gaps.elbo_encoder).all()


def test_elbos_and_gaps_equal_their_closed_forms(gaps_with_prior_encoder):
    x, gaps = gaps_with_prior_encoder
    mean, covariance = exact_posterior(x)
    posterior = MultivariateNormal(mean, covariance)
    best = MultivariateNormal(mean, torch.diag_embed(optimal_scale().expand(6, -1) ** 2))
    prior = MultivariateNormal(torch.zeros_like(mean), torch.eye(LATENT, dtype=torch.float64).expand(6, -1, -1))
    optimum, encoder_elbo = exact_log_likelihood(x) - kl_divergence(best, posterior), exact_log_likelihood(x) - kl_divergence(prior, posterior)
    assert ((gaps.elbo_optimized - optimum).abs() < 4 * gaps.elbo_optimized_mc_se + 2e-3).all()
    assert ((gaps.elbo_encoder - encoder_elbo).abs() < 4 * gaps.elbo_encoder_mc_se).all()
    # approximation gap = KL(q* ‖ p(z|x)) ≥ 0 (Cremer et al. 2018, Table 1), here 0.1–0.3 nats
    approximation = kl_divergence(best, posterior)
    assert (gaps.approximation_gap >= 0).all()
    tolerance = 4 * (gaps.elbo_optimized_mc_se**2 + gaps.log_likelihood_mc_se**2).sqrt() + 2e-3
    assert ((gaps.approximation_gap - approximation).abs() < tolerance).all()
    # a deliberately bad encoder (q_φ = the prior): amortization gap = KL(prior ‖ p) − KL(q* ‖ p), several nats
    amortization = kl_divergence(prior, posterior) - approximation
    assert amortization.min() > 1.0
    assert ((gaps.amortization_gap - amortization).abs() < 4 * (gaps.elbo_encoder_mc_se + gaps.elbo_optimized_mc_se) + 2e-3).all()
    summary = gaps.summary()
    assert summary["num_examples"] == 6 and summary["k"] == 5000
    assert summary["inference_gap"] == pytest.approx(summary["approximation_gap"] + summary["amortization_gap"])


def test_an_encoder_that_outputs_q_star_has_no_amortization_gap():
    x = data(6, seed=2)
    gaps = amortization_gap(linear_vae("exact"), x, k=4000, steps=300, lr=0.01, num_particles=10, seed=1)
    assert (gaps.amortization_gap.abs() < 4 * (gaps.elbo_encoder_mc_se + gaps.elbo_optimized_mc_se) + 2e-3).all()
    assert gaps.amortization_gap.abs().max() < 0.05


def test_nuts_matches_the_exact_posterior_and_measures_each_gaussian():
    x = data(1, seed=3)
    vae = linear_vae("prior")
    result = nuts_posterior(vae, x[0], num_samples=400, warmup_steps=300, num_chains=2, seed=0)
    mean, covariance = exact_posterior(x.flatten(1))
    std = covariance.diagonal().sqrt()
    assert result.samples.shape == (2, 400, LATENT) and result.divergences == 0
    assert (result.r_hat < 1.05).all() and (result.ess > 100).all()
    assert ((result.mean - mean[0]).abs() < 4 * std / result.ess.sqrt()).all()
    assert ((result.std / std - 1).abs() < 4 / (2 * result.ess).sqrt()).all()  # the sd's relative s.e. is 1/√(2 ESS)
    # q*: the right mean, sds 1/√Λ_dd below the marginal sds (mean field is too narrow)
    errors = gaussian_posterior_errors(result, mean[0], optimal_scale())
    assert errors["mean_error"] < 4 * errors["reference_mcse"]
    exact_ratio = (optimal_scale() / std).log().mean().exp().item()
    assert errors["sd_ratio"] == pytest.approx(exact_ratio, rel=0.1) and exact_ratio < 0.9
    # the prior as q: its errors are those of N(0, I) against N(μ, Σ)'s marginals, up to NUTS's Monte-Carlo error
    prior_errors = gaussian_posterior_errors(result, torch.zeros(LATENT), torch.ones(LATENT))
    assert prior_errors["mean_error"] == pytest.approx((mean[0] / std).square().mean().sqrt().item(), rel=0.1)
    assert prior_errors["sd_ratio"] == pytest.approx(std.log().neg().mean().exp().item(), rel=0.1)
    assert prior_errors["sd_ratio"] > 2.0


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda vae, x: amortization_gap(vae, x, k=0), ValueError, "k must be a positive int, got 0"),
        (lambda vae, x: amortization_gap(vae, x[:, :, :4]), ValueError, r"x must have shape \(N, 1, 8, 8\) with N >= 1 for this VAE, got \(2, 1, 4, 8\)"),
        (lambda vae, x: amortization_gap(vae, x * 0.5), ValueError, "x must be binary"),
        (lambda vae, x: optimize_local_posteriors(vae, x, steps=0), ValueError, "steps must be a positive int"),
        (lambda vae, x: optimize_local_posteriors(vae, x, lr=-1.0), ValueError, "lr must be a positive float"),
        (lambda vae, x: nuts_posterior(vae, x), ValueError, r"x_one must be one image, got 2"),
        (lambda vae, x: amortization_gap(mlp_hvae((1, 8, 8), (4, 2), (16, 8)), x), TypeError, "vae is an HVAE"),
        (lambda vae, x: amortization_gap(nn.Linear(2, 2), x), TypeError, "vae must be a ppl_dgm.vae.VAE"),
        (lambda vae, x: amortization_gap(mlp_vae((1, 8, 8), 4, (16,), posterior="full"), x), ValueError, "full-covariance"),
        (lambda vae, x: amortization_gap(mlp_vae((1, 8, 8), 4, (16,), beta=2.0), x), ValueError, "beta=2.0"),
    ],
)
def test_bad_inputs_are_refused_with_a_message(call, error, message):
    vae = mlp_vae((1, 8, 8), 4, (16,))
    x = torch.bernoulli(torch.full((2, 1, 8, 8), 0.5))
    with pytest.raises(error, match=message):
        call(vae, x)
