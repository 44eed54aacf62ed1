import math

import pytest
import torch

from ppl_dgm.sde import VESDE, VPSDE, SubVPSDE, check_sigmas, dsm_loss, geometric_sigmas, score_sde_loss
from .conftest import COVARIANCE, MEAN, GaussianScoreEps

EIGENVALUES = torch.linalg.eigvalsh(torch.tensor(COVARIANCE, dtype=torch.float64))


def gaussian_data(n, seed=0):
    generator = torch.Generator().manual_seed(seed)
    chol = torch.linalg.cholesky(torch.tensor(COVARIANCE, dtype=torch.float64))
    return torch.tensor(MEAN, dtype=torch.float64) + torch.randn(n, 2, generator=generator, dtype=torch.float64) @ chol.T


def noisy_gaussian_score(scale=1.0):
    """∇log N(x; μ, Σ + σ²I): the optimal noise-conditional score (times ``scale``)."""
    mean, covariance = torch.tensor(MEAN, dtype=torch.float64), torch.tensor(COVARIANCE, dtype=torch.float64)

    def score(x, sigma):
        full = covariance + sigma.view(-1, 1, 1) ** 2 * torch.eye(2, dtype=torch.float64)
        return -scale * torch.linalg.solve(full, (x - mean).unsqueeze(-1)).squeeze(-1)

    return score


def within_monte_carlo_error(losses, expected, z=4.0):
    return abs(float(losses.mean()) - expected) < z * float(losses.std()) / math.sqrt(losses.numel())


def test_ncsn_dsm_loss_at_the_true_score_equals_its_closed_form_minimum():
    sigmas = geometric_sigmas(2.0, 0.05, 6)
    # min over s of E ½‖σ s + z‖² = ½ Σ_k λ_k / (λ_k + σ²), averaged over the σ_i (Vincent 2011)
    minimum = float((0.5 * (EIGENVALUES / (EIGENVALUES + sigmas[:, None] ** 2)).sum(1)).mean())
    x = gaussian_data(100000)
    losses = dsm_loss(noisy_gaussian_score(), x, sigmas, reduction="none", generator=torch.Generator().manual_seed(1))
    assert within_monte_carlo_error(losses, minimum)
    worse = dsm_loss(noisy_gaussian_score(1.2), x, sigmas, generator=torch.Generator().manual_seed(1))
    assert float(worse) > minimum + 0.01


def _quadrature(function, eps, points=200001):
    t = torch.linspace(eps, 1.0, points, dtype=torch.float64)
    return float(torch.trapezoid(function(t), t) / (1.0 - eps))


@pytest.mark.parametrize("sde", [VPSDE(), VESDE(sigma_max=5.0)], ids=lambda s: type(s).__name__)
def test_score_sde_loss_at_the_true_score_equals_its_closed_form_minimum(sde):
    model = GaussianScoreEps(sde, MEAN, COVARIANCE)
    x = gaussian_data(100000)

    def sigma_weighted(t):  # ½ Σ_k a²λ_k/(a²λ_k + σ²) per t (Song et al. 2021, eq. 7, λ = σ²)
        a, std = sde._mean_coefficient_std(t)
        signal = a[:, None] ** 2 * EIGENVALUES
        return 0.5 * (signal / (signal + std[:, None] ** 2)).sum(1)

    losses = score_sde_loss(model, sde, x, eps=1e-5, reduction="none", generator=torch.Generator().manual_seed(2))
    assert within_monte_carlo_error(losses, _quadrature(sigma_weighted, 1e-5))

    def likelihood_weighted(t):  # λ = g²: ½ g² Σ_k a²λ_k/(σ²(a²λ_k + σ²))
        a, std = sde._mean_coefficient_std(t)
        signal = a[:, None] ** 2 * EIGENVALUES
        return 0.5 * sde._diffusion(t) ** 2 * (signal / (std[:, None] ** 2 * (signal + std[:, None] ** 2))).sum(1)

    losses = score_sde_loss(model, sde, x, eps=1e-2, likelihood_weighting=True, reduction="none", generator=torch.Generator().manual_seed(3))
    assert within_monte_carlo_error(losses, _quadrature(likelihood_weighted, 1e-2))
    scaled = score_sde_loss(lambda x, t: 0.8 * model(x, t), sde, x, eps=1e-5, generator=torch.Generator().manual_seed(2))
    assert float(scaled) > _quadrature(sigma_weighted, 1e-5) + 0.01


def test_importance_sampled_time_has_density_g2_over_sigma2_and_keeps_the_likelihood_weighted_mean():
    sde, eps = VPSDE(), 1e-5
    t, normalizer = sde.likelihood_weight_time(torch.rand(200000, generator=torch.Generator().manual_seed(0), dtype=torch.float64), eps)

    def weight(s):  # g²/σ² = β(t) / (1 − e^{−∫β}) (Song et al. 2021b, sec. 5)
        return sde._diffusion(s) ** 2 / sde._mean_coefficient_std(s)[1] ** 2

    assert abs(normalizer - (1 - eps) * _quadrature(weight, eps, points=2000001)) < 1e-3 * normalizer  # Z = ∫ g²/σ² dt
    assert eps <= float(t.min()) and float(t.max()) <= 1.0
    for s in (1e-4, 1e-2, 0.1, 0.5):  # P(t ≤ s) = ∫_eps^s g²/σ² / Z, against the empirical fraction (binomial error)
        grid = torch.linspace(eps, s, 2000001, dtype=torch.float64)
        probability = float(torch.trapezoid(weight(grid), grid)) / normalizer
        assert abs(float((t <= s).double().mean()) - probability) < 4 * math.sqrt(probability * (1 - probability) / t.numel()) + 1e-4
    model = GaussianScoreEps(sde, MEAN, COVARIANCE)
    x = gaussian_data(100000)

    def likelihood_weighted(s):  # the closed form of the test above
        a, std = sde._mean_coefficient_std(s)
        signal = a[:, None] ** 2 * EIGENVALUES
        return 0.5 * sde._diffusion(s) ** 2 * (signal / (std[:, None] ** 2 * (signal + std[:, None] ** 2))).sum(1)

    sampled = score_sde_loss(model, sde, x, eps=eps, likelihood_weighting=True, importance_sampling=True, reduction="none",
                             generator=torch.Generator().manual_seed(4))
    assert within_monte_carlo_error(sampled, _quadrature(likelihood_weighted, eps, points=2000001))
    uniform = score_sde_loss(model, sde, x, eps=eps, likelihood_weighting=True, reduction="none", generator=torch.Generator().manual_seed(4))
    assert float(sampled.std()) < 0.1 * float(uniform.std())  # the point of it
    with pytest.raises(ValueError, match=r"importance_sampling=True needs likelihood_weighting=True"):
        score_sde_loss(model, sde, x[:4], importance_sampling=True)
    for other in (SubVPSDE(), VESDE()):
        with pytest.raises(ValueError, match=rf"importance_sampling is implemented for the VP SDE only, got {type(other).__name__}"):
            score_sde_loss(model, other, x[:4], likelihood_weighting=True, importance_sampling=True)


def test_geometric_sigmas_and_sigma_checks():
    sigmas = geometric_sigmas(50.0, 0.01, 10)
    assert sigmas.dtype == torch.float64 and math.isclose(float(sigmas[0]), 50) and math.isclose(float(sigmas[-1]), 0.01)
    ratios = sigmas[1:] / sigmas[:-1]
    assert torch.allclose(ratios, ratios[0].expand(9))
    with pytest.raises(ValueError, match=r"sigmas must be strictly decreasing .*got \[1, 1, 0.5\]"):
        check_sigmas([1.0, 1.0, 0.5])
    with pytest.raises(ValueError, match=r"sigmas must be strictly decreasing .*got \[0.1, 1\]"):
        dsm_loss(noisy_gaussian_score(), torch.zeros(2, 2, dtype=torch.float64), torch.tensor([0.1, 1.0]))
    with pytest.raises(ValueError, match="sigmas must be positive and finite"):
        check_sigmas([1.0, -0.5])
    with pytest.raises(ValueError, match="num_scales must be an int >= 2, got 1"):
        geometric_sigmas(1.0, 0.1, 1)
    with pytest.raises(ValueError, match="reduction='sum' is not known"):
        score_sde_loss(GaussianScoreEps(VPSDE(), MEAN, COVARIANCE), VPSDE(), gaussian_data(4), reduction="sum")
