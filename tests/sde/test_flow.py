import math
import warnings

import pytest
import torch

from ppl_dgm.metrics.likelihood import dequantize
from ppl_dgm.sde import VESDE, VPSDE, SubVPSDE, ode_bits_per_dim, ode_log_likelihood, probability_flow_field, sample_ode
from .conftest import COVARIANCE, MEAN, GaussianScoreEps, moment_errors

SDES = [VPSDE(), SubVPSDE(), VESDE()]


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_ode_log_likelihood_equals_the_analytic_gaussian_log_density(sde):
    model = GaussianScoreEps(sde, MEAN, COVARIANCE)
    eps = 1e-5
    x = model.marginal(eps).sample((8,))
    result = ode_log_likelihood(model, sde, x, eps=eps, prior_logp=model.marginal(sde.T).log_prob)
    exact = model.marginal(eps).log_prob(x)
    assert result.log_likelihood.dtype == torch.float64 and result.z.shape == x.shape
    assert (result.log_likelihood - exact).abs().max() < 1e-3
    assert result.nfe == model.calls > 10


def test_ode_log_likelihood_with_the_sde_prior_is_close_for_vp():
    sde = VPSDE()
    model = GaussianScoreEps(sde, [0.0, 0.0], COVARIANCE)
    x = model.marginal(1e-5).sample((8,))
    result = ode_log_likelihood(model, sde, x)  # prior N(0, I) vs the true p_1: differs by O(a(1)²) = 4e-5
    assert (result.log_likelihood - model.marginal(1e-5).log_prob(x)).abs().max() < 1e-3


def test_hutchinson_divergence_is_unbiased():
    sde = VPSDE()
    model = GaussianScoreEps(sde, MEAN, COVARIANCE)
    x = model.marginal(1e-5).sample((1,)).repeat(400, 1)
    exact = ode_log_likelihood(model, sde, x[:1], divergence="exact").log_likelihood
    estimates = ode_log_likelihood(model, sde, x, divergence="hutchinson", generator=torch.Generator().manual_seed(0)).log_likelihood
    standard_error = estimates.std() / math.sqrt(estimates.numel())
    assert estimates.std() > 1e-3  # an estimator, not the exact divergence
    assert abs(float(estimates.mean() - exact)) < 4 * float(standard_error)


def test_vector_field_is_safe_outside_eps_T():
    sde = VPSDE()
    model = GaussianScoreEps(sde, MEAN, COVARIANCE)
    field = probability_flow_field(model, sde, eps=1e-5)
    x = torch.randn(4, 2, dtype=torch.float64)
    for outside, inside in ((-0.104, 1e-5), (1.075, 1.0)):
        value = field(x, torch.tensor(outside, dtype=torch.float64))
        assert torch.isfinite(value).all()
        assert torch.equal(value, field(x, torch.tensor(inside, dtype=torch.float64)))


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=lambda s: type(s).__name__)
def test_sample_ode_reproduces_the_data_moments(sde):
    model = GaussianScoreEps(sde, MEAN, COVARIANCE)
    eps = 1e-3
    x_T = model.marginal(sde.T).sample((10000,))
    calls = []
    samples = sample_ode(model, sde, x_T.shape, x_T=x_T, eps=eps, callback=lambda call, x, denoised: calls.append(call))
    mean_z, cov_z = moment_errors(samples, model.marginal(eps))
    assert mean_z < 4 and cov_z < 4 and calls == list(range(model.calls))  # the callback counts every network call
    assert not torch.equal(samples, x_T)


def test_ode_bits_per_dim_follows_the_dequantization_convention():
    sde = VPSDE()
    model = GaussianScoreEps(sde, torch.zeros(4), 0.2 * torch.eye(4))
    images = torch.round(torch.rand(6, 1, 2, 2, generator=torch.Generator().manual_seed(1)) * 255) / 255
    result = ode_bits_per_dim(model, sde, images, batch_size=3, divergence="exact", generator=torch.Generator().manual_seed(0))
    dequantized = dequantize(images.double(), generator=torch.Generator().manual_seed(0))
    manual = 0.0
    for half in (dequantized[:3], dequantized[3:]):
        manual += float(ode_log_likelihood(model, sde, 2 * half - 1, divergence="exact").log_likelihood.sum())
    nll = -manual / 6 - 4 * math.log(2.0)  # nats of x̃ ∈ [0, 1)
    assert math.isclose(result["bits_per_dim"], (nll + 4 * math.log(256)) / (4 * math.log(2)), rel_tol=1e-6)
    assert result["num_images"] == 6


def test_bad_arguments_raise_clear_errors():
    sde, model = VPSDE(), GaussianScoreEps(VPSDE(), MEAN, COVARIANCE)
    x = torch.zeros(3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"eps must be a float in \(0, T=1.0\), got 0"):
        ode_log_likelihood(model, sde, x, eps=0)
    with pytest.raises(ValueError, match=r"eps must be a float in \(0, T=1.0\), got 1.5"):
        sample_ode(model, sde, (3, 2), eps=1.5)
    with pytest.raises(ValueError, match="divergence='trace' is not known"):
        ode_log_likelihood(model, sde, x, divergence="trace")
    with pytest.raises(ValueError, match=r"rtol must be a float in \(0, 1\), got -1"):
        ode_log_likelihood(model, sde, x, rtol=-1)
    with pytest.raises(TypeError, match="x must be a floating tensor"):
        ode_log_likelihood(model, sde, torch.zeros(3, dtype=torch.long))


def test_safety_reaches_the_adaptive_controller_and_fixed_grid_methods_ignore_it():
    sde = VPSDE()
    model = GaussianScoreEps(sde, MEAN, COVARIANCE)
    x = model.marginal(1e-5).sample((8,))
    exact = model.marginal(1e-5).log_prob(x)
    results = {safety: ode_log_likelihood(model, sde, x, safety=safety, prior_logp=model.marginal(sde.T).log_prob) for safety in (0.8, 0.9, 0.5)}
    for result in results.values():
        assert (result.log_likelihood - exact).abs().max() < 1e-3
    assert len({result.nfe for result in results.values()}) > 1  # the controller saw different safeties
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torchdiffeq warns about options a fixed-grid solver does not use
        fixed = ode_log_likelihood(model, sde, x, method="rk4", prior_logp=model.marginal(sde.T).log_prob)
    assert fixed.nfe == 4  # one rk4 step over [eps, T]
    with pytest.raises(ValueError, match=r"safety must be a float in \(0, 1\], got 1.5"):
        ode_log_likelihood(model, sde, x, safety=1.5)


def test_ddim_eta0_converges_to_the_probability_flow_ode_map():
    from ppl_dgm.diffusion.samplers import sample_ddim
    from ppl_dgm.diffusion.schedules import linear_schedule

    # DDPM's linear schedule is VPSDE(0.1, 20) discretized (Song et al. 2021, App. B), and DDIM with η = 0 is its
    # probability-flow ODE discretized (Song, Meng & Ermon 2021, sec. 4.3): the same x_T must land at the same x_0.
    sde = VPSDE(0.1, 20.0)
    model = GaussianScoreEps(sde, MEAN, COVARIANCE)
    x_T = torch.randn(2000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ode = sample_ode(model, sde, x_T.shape, x_T=x_T, eps=1e-3)
    rms = {steps: float((sample_ddim(model, linear_schedule(1000), x_T.shape, steps=steps, x_T=x_T) - ode).pow(2).mean().sqrt())
           for steps in (100, 1000)}
    assert rms[1000] < 5e-3 and rms[1000] < rms[100] / 4  # measured 0.0026 and 0.016; the data std is 0.5–0.8


def test_a_field_that_is_not_finite_stops_with_a_clear_error_not_a_solver_assertion():
    def broken(x, t):  # NaN on every point: dopri5's error estimate is NaN and its step shrinks to 0
        return x * float("nan")

    message = r"the probability-flow ODE could not be integrated from t = 1e-05 to 1: dopri5's adaptive step underflowed"
    with pytest.raises(FloatingPointError, match=message):
        ode_log_likelihood(broken, VPSDE(), torch.randn(4, 2))
    with pytest.raises(FloatingPointError, match=r"could not be integrated from t = 1 to 0.001: dopri5"):
        sample_ode(broken, VPSDE(), (4, 2))
