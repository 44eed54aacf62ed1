"""Explicit, implicit and sliced score matching on Gaussian data N(μ, Σ), whose score −Σ⁻¹(x − μ) is linear.

For a linear model s_θ(x) = A x + b every objective is a quadratic polynomial in x (and in the noise), so on
moment-matched samples (empirical mean μ and covariance Σ exactly) its sample mean equals its expectation
exactly and the identities below hold to float64 precision.
"""
import math

import pytest
import torch
from torch import nn

from ppl_dgm.sde import dsm_loss, explicit_score_matching, implicit_score_matching, sliced_score_matching
from .conftest import COVARIANCE, MEAN

DTYPE = torch.float64
MU = torch.tensor(MEAN, dtype=DTYPE)
SIGMA = torch.tensor(COVARIANCE, dtype=DTYPE)
PRECISION = torch.linalg.inv(SIGMA)


class LinearScore(nn.Module):
    """s_θ(x) = A x + b, float64."""

    def __init__(self, weight, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.as_tensor(weight, dtype=DTYPE).clone())
        self.bias = nn.Parameter(torch.as_tensor(bias, dtype=DTYPE).clone())

    def forward(self, x):
        return x @ self.weight.T + self.bias


def true_score(x):
    return -(x - MU) @ PRECISION  # ∇log N(x; μ, Σ) = −Σ⁻¹(x − μ), Σ symmetric


def gaussian_samples(n, seed):
    generator = torch.Generator().manual_seed(seed)
    return MU + torch.randn(n, 2, generator=generator, dtype=DTYPE) @ torch.linalg.cholesky(SIGMA).T


def whitened(samples):
    """Affinely map samples to empirical mean 0 and empirical (1/n) second moment I, exactly."""
    centered = samples - samples.mean(0)
    chol = torch.linalg.cholesky(centered.T @ centered / samples.shape[0])
    return torch.linalg.solve_triangular(chol, centered.T, upper=False).T


def moment_matched(n, seed):
    """Samples whose empirical mean is μ and empirical (1/n) covariance is Σ, to rounding."""
    return MU + whitened(gaussian_samples(n, seed)) @ torch.linalg.cholesky(SIGMA).T


MODEL_1 = ([[-1.0, 0.4], [-0.7, -2.5]], [0.3, 1.1])
MODEL_2 = ([[0.5, -1.2], [0.2, 0.8]], [-0.6, 0.2])


def implicit_closed_form(weight, bias):
    """E_p[tr A + ½‖A x + b‖²] = tr A + ½ tr(A Σ Aᵀ) + ½‖A μ + b‖² for x ~ N(μ, Σ)."""
    weight, bias = torch.tensor(weight, dtype=DTYPE), torch.tensor(bias, dtype=DTYPE)
    return float(weight.trace() + 0.5 * (weight @ SIGMA @ weight.T).trace() + 0.5 * (weight @ MU + bias).pow(2).sum())


# (a) the minimizer of each objective is the true score: A → −Σ⁻¹, b → Σ⁻¹μ


def empirical_minimizer(x):
    """argmin of tr A + ½ mean‖A x + b‖² on the samples: A = −Ŝ⁻¹, b = Ŝ⁻¹x̄, Ŝ the (1/n) covariance."""
    centered = x - x.mean(0)
    precision = torch.linalg.inv(centered.T @ centered / x.shape[0])
    return -precision, precision @ x.mean(0)


def minimizer_standard_errors(n):
    """Delta-method standard errors of Ŝ⁻¹ and Ŝ⁻¹x̄ for n Gaussian samples, P = Σ⁻¹.

    d(Ŝ⁻¹) = −P dŜ P and Cov(Ŝ_ij, Ŝ_kl) = (Σ_ik Σ_jl + Σ_il Σ_jk)/n give Var(Ŝ⁻¹_ij) = (P_ii P_jj + P_ij²)/n;
    x̄ is independent of Ŝ, so Var((Ŝ⁻¹x̄)_i) = (P_ii μᵀPμ + (Pμ)_i² + P_ii)/n.
    """
    diagonal = PRECISION.diagonal()
    weight = ((diagonal[:, None] * diagonal[None, :] + PRECISION**2) / n).sqrt()
    bias = ((diagonal * (MU @ PRECISION @ MU) + (PRECISION @ MU) ** 2 + diagonal) / n).sqrt()
    return weight, bias


OBJECTIVES = {
    "implicit": lambda model, x, generator: implicit_score_matching(model, x),
    "sliced-rademacher": lambda model, x, generator: sliced_score_matching(model, x, num_projections=2, generator=generator),
    "sliced-gaussian": lambda model, x, generator: sliced_score_matching(
        model, x, num_projections=2, projection="gaussian", generator=generator
    ),
    "sliced-gaussian-no-vr": lambda model, x, generator: sliced_score_matching(
        model, x, num_projections=2, projection="gaussian", generator=generator, variance_reduction=False
    ),
}
# Adam with a linearly decaying step reaches the implicit minimizer to ~2e-5 in 300 steps. Fresh projections every
# step jitter the sliced gradient by mean(vvᵀ) − I, entries ~ 1/√(n·M) = 0.011 here, i.e. A by up to
# ‖Σ⁻¹‖·0.011 ≈ 0.05 for one step; the decaying step averages most of it away (measured: 0.0044 Rademacher,
# 0.0051 Gaussian, 0.022 Gaussian without variance reduction, whose (vᵀs)² term adds noise).
OPTIMIZATION_TOLERANCE = {"implicit": 1e-4, "sliced-rademacher": 0.015, "sliced-gaussian": 0.015, "sliced-gaussian-no-vr": 0.05}
TRAINING_SAMPLES = 4000


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_training_a_linear_score_recovers_the_gaussian_score(objective):
    x = gaussian_samples(TRAINING_SAMPLES, seed=0)
    model = LinearScore(torch.zeros(2, 2), torch.zeros(2))
    steps = 300
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        optimizer.zero_grad()
        OBJECTIVES[objective](model, x, generator).backward()
        optimizer.step()
        schedule.step()
    weight, bias = model.weight.detach(), model.bias.detach()
    # E_v of every objective is the implicit one, whose minimizer on these samples is closed-form
    best_weight, best_bias = empirical_minimizer(x)
    tolerance = OPTIMIZATION_TOLERANCE[objective]
    assert torch.allclose(weight, best_weight, rtol=0, atol=tolerance)
    assert torch.allclose(bias, best_bias, rtol=0, atol=tolerance)
    # and that minimizer is −Σ⁻¹, Σ⁻¹μ up to Monte Carlo error: z < 4 per entry (this seed: 0.98 for A, 2.2 for b)
    weight_error, bias_error = minimizer_standard_errors(TRAINING_SAMPLES)
    assert bool(((best_weight + PRECISION).abs() < 4 * weight_error).all())
    assert bool(((best_bias - PRECISION @ MU).abs() < 4 * bias_error).all())


# (b) implicit SM is explicit SM less ½E‖∇log p‖², a constant (Hyvärinen 2005, Thm. 1)


def test_implicit_equals_explicit_less_a_model_free_constant():
    x = moment_matched(500, seed=3)
    first, second = LinearScore(*MODEL_1), LinearScore(*MODEL_2)
    explicit = [explicit_score_matching(model, x, true_score).item() for model in (first, second)]
    implicit = [implicit_score_matching(model, x).item() for model in (first, second)]
    assert implicit == pytest.approx([implicit_closed_form(*MODEL_1), implicit_closed_form(*MODEL_2)], rel=1e-12)
    assert explicit[0] - explicit[1] == pytest.approx(implicit[0] - implicit[1], rel=1e-12)
    # ½E‖Σ⁻¹(x − μ)‖² = ½ tr Σ⁻¹
    constant = 0.5 * float(PRECISION.trace())
    assert [e - i for e, i in zip(explicit, implicit)] == pytest.approx([constant, constant], rel=1e-12)
    # a tensor of true scores is the same as the function
    assert explicit_score_matching(first, x, true_score(x)).item() == explicit[0]


def test_implicit_trace_and_its_parameter_gradient_match_torch_func_jacobians():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2)).to(DTYPE)
    x = gaussian_samples(64, seed=5)
    loss = implicit_score_matching(model, x)
    jacobians = torch.func.vmap(torch.func.jacrev(model))(x)  # (B, D, D)
    reference = (jacobians.diagonal(dim1=1, dim2=2).sum(1) + 0.5 * model(x).pow(2).sum(1)).mean()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-12)
    gradients = torch.autograd.grad(loss, list(model.parameters()))
    references = torch.autograd.grad(reference, list(model.parameters()))
    for gradient, expected in zip(gradients, references):
        assert torch.allclose(gradient, expected, rtol=1e-10, atol=1e-12)
    with torch.no_grad():  # the objective builds its own graph in x
        assert implicit_score_matching(model, x).item() == pytest.approx(reference.item(), rel=1e-12)
    assert not x.requires_grad and x.grad is None


# (c) sliced SM is implicit SM in expectation over v: E[vᵀJv] = tr J when E[vvᵀ] = I (Song et al. 2019)


def test_sliced_with_rademacher_projections_is_exact_for_a_diagonal_jacobian():
    # vᵀAv = Σ_i A_ii v_i² = tr A when v_i = ±1 and A is diagonal
    model = LinearScore([[-1.5, 0.0], [0.0, 0.7]], [0.2, -0.4])
    x = gaussian_samples(200, seed=6)
    sliced = sliced_score_matching(model, x, generator=torch.Generator().manual_seed(7))
    assert sliced.item() == pytest.approx(implicit_score_matching(model, x).item(), rel=1e-13)


@pytest.mark.parametrize("variance_reduction", [True, False], ids=["vr", "plain"])
@pytest.mark.parametrize("projection", ["rademacher", "gaussian"])
def test_sliced_with_many_projections_approaches_implicit(projection, variance_reduction):
    model = LinearScore(*MODEL_1)
    x = moment_matched(400, seed=8)
    implicit = implicit_score_matching(model, x).item()
    generator = torch.Generator().manual_seed(9)
    calls, projections = 24, 16
    estimates = torch.tensor([
        sliced_score_matching(model, x, num_projections=projections, projection=projection, generator=generator,
                              variance_reduction=variance_reduction).item()
        for _ in range(calls)
    ], dtype=DTYPE)
    spread = float(estimates.std())
    assert abs(float(estimates.mean()) - implicit) < 5 * spread / math.sqrt(calls)
    if variance_reduction:
        # SSM-VR − ISM = mean over n·M draws of vᵀAv − tr A, whose variance per draw is Σ_{i<j}(A_ij + A_ji)²
        # for Rademacher v and 2‖(A + Aᵀ)/2‖_F² for Gaussian v; the spread of 24 calls estimates it to ~15 %
        weight = torch.tensor(MODEL_1[0], dtype=DTYPE)
        symmetric = (weight + weight.T) / 2
        variance = 4 * symmetric[0, 1] ** 2 if projection == "rademacher" else 2 * symmetric.pow(2).sum()
        expected_spread = math.sqrt(float(variance) / (x.shape[0] * projections))
        assert 0.6 < spread / expected_spread < 1.5


# (d) denoising SM at noise σ is explicit SM on p plus ½σ²‖A‖_F² plus a constant (Vincent 2011)


def denoising_score_matching(score, x, noise, sigma):
    """½ mean‖s(x + σz) + z/σ‖²: ½‖s(x̃) − ∇log q_σ(x̃|x)‖² with x̃ = x + σz (Vincent 2011, eq. 11)."""
    return 0.5 * (score(x + sigma * noise) + noise / sigma).pow(2).sum(1).mean()


def test_denoising_approaches_explicit_as_sigma_shrinks():
    # antithetic, moment-matched noise: the terms odd in z cancel and E[zzᵀ] = I holds on the sample, so the
    # sample DSM is its expectation and DSM(θ) − J_SM(θ) = ½σ²‖A‖_F² + C(σ) exactly
    points = moment_matched(500, seed=10)
    draws = whitened(torch.randn(points.shape[0], 2, generator=torch.Generator().manual_seed(11), dtype=DTYPE))
    x, noise = torch.cat([points, points]), torch.cat([draws, -draws])  # each x with z and −z
    first, second = LinearScore(*MODEL_1), LinearScore(*MODEL_2)
    explicit_gap = (explicit_score_matching(first, x, true_score) - explicit_score_matching(second, x, true_score)).item()
    frobenius_gap = (first.weight.pow(2).sum() - second.weight.pow(2).sum()).item()
    gaps = []
    for sigma in (0.3, 0.1, 0.03, 0.01):
        denoising_gap = (denoising_score_matching(first, x, noise, sigma) - denoising_score_matching(second, x, noise, sigma)).item()
        gaps.append(denoising_gap - explicit_gap)
        assert gaps[-1] == pytest.approx(0.5 * sigma**2 * frobenius_gap, rel=1e-7)
    assert abs(gaps[-1]) < 1e-3 * abs(explicit_gap)


def test_dsm_loss_over_sigma_squared_is_vincents_objective():
    # dsm_loss with one σ returns ½‖σ s + z‖² = σ²·½‖s + z/σ‖² per example; with the same seed both models see
    # the same noise, so the per-example differences give the Monte Carlo error of the gap
    sigma = 0.5
    x = gaussian_samples(20000, seed=12)
    first, second = LinearScore(*MODEL_1), LinearScore(*MODEL_2)
    losses = [
        dsm_loss(lambda points, noise_level: model(points), x, torch.tensor([sigma]), reduction="none",
                 generator=torch.Generator().manual_seed(13)).detach() / sigma**2
        for model in (first, second)
    ]
    differences = losses[0] - losses[1]
    expected = implicit_closed_form(*MODEL_1) - implicit_closed_form(*MODEL_2)
    expected += 0.5 * sigma**2 * (first.weight.pow(2).sum() - second.weight.pow(2).sum()).item()  # ½σ²‖A‖_F²
    standard_error = float(differences.std()) / math.sqrt(x.shape[0])
    assert abs(float(differences.mean()) - expected) < 4 * standard_error  # this seed: 0.4 standard errors
    gap = 0.5 * sigma**2 * (first.weight.pow(2).sum() - second.weight.pow(2).sum()).item()
    assert abs(float(differences.mean()) - (expected - gap)) > 8 * standard_error  # the σ² term is resolved (14.5)


# (e) arguments are checked at the boundary


def test_bad_arguments_raise_naming_the_argument():
    model = LinearScore(*MODEL_1)
    x = gaussian_samples(8, seed=14)
    with pytest.raises(ValueError, match=r"x must have shape \(B, D\) with B, D >= 1, got \(8, 2, 1\)"):
        implicit_score_matching(model, x[..., None])
    with pytest.raises(ValueError, match=r"x must have shape \(B, D\) with B, D >= 1, got \(2,\)"):
        sliced_score_matching(model, x[0])
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        implicit_score_matching(model, x.long())
    with pytest.raises(TypeError, match="x must be a torch.Tensor of shape"):
        explicit_score_matching(model, x.tolist(), true_score)
    with pytest.raises(ValueError, match=r"score's output and x must have the same shape, got \(8, 1\) and \(8, 2\)"):
        implicit_score_matching(lambda points: points[:, :1], x)
    with pytest.raises(ValueError, match=r"score's output and x must have the same shape, got \(8, 1\) and \(8, 2\)"):
        sliced_score_matching(lambda points: points[:, :1], x)
    with pytest.raises(ValueError, match=r"true_score and x must have the same shape, got \(8,\) and \(8, 2\)"):
        explicit_score_matching(model, x, true_score(x)[:, 0])
    with pytest.raises(ValueError, match="num_projections must be a positive int, got 0"):
        sliced_score_matching(model, x, num_projections=0)
    with pytest.raises(TypeError, match="num_projections must be an int, got 2.0"):
        sliced_score_matching(model, x, num_projections=2.0)
    with pytest.raises(ValueError, match=r"projection='normal' is not known; expected one of \('rademacher', 'gaussian'\)"):
        sliced_score_matching(model, x, projection="normal")
    with pytest.raises(TypeError, match="variance_reduction must be a bool, got 'yes'"):
        sliced_score_matching(model, x, variance_reduction="yes")
