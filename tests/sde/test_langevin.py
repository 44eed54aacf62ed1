import math

import pytest
import torch

from ppl_dgm.nn import TimeConditionedMLP
from ppl_dgm.sde import NoiseConditionalScoreNet, annealed_langevin, geometric_sigmas, langevin_dynamics


def test_langevin_reaches_the_exact_stationary_law_of_the_unadjusted_chain():
    # For N(μ, λ) the chain x' = x + (ε/2)s(x) + √ε z is an AR(1) with stationary variance λ/(1 − ε/(4λ)).
    mean, variance, step = 1.0, 0.5, 0.1
    score = lambda x: -(x - mean) / variance
    x = langevin_dynamics(score, torch.zeros(20000, 1, dtype=torch.float64), step_size=step, steps=200,
                          generator=torch.Generator().manual_seed(0))
    stationary = variance / (1 - step / (4 * variance))
    assert abs(float(x.mean()) - mean) < 4 * math.sqrt(stationary / 20000)
    assert abs(float(x.var()) - stationary) < 4 * stationary * math.sqrt(2 / 20000)
    assert abs(stationary - variance) > 0.02  # the bias is visible: the test can tell the two apart


def test_annealed_langevin_uses_alpha_i_equal_eps_sigma_i_squared_over_sigma_L_squared():
    sigmas = torch.tensor([2.0, 0.5], dtype=torch.float64)
    score = lambda x, sigma: -x / sigma[:, None] ** 2
    x_init = torch.full((3, 2), 0.7, dtype=torch.float64)
    seen = []
    out = annealed_langevin(score, sigmas, (3, 2), steps=2, step_size=0.01, x_T=x_init, generator=torch.Generator().manual_seed(5),
                            callback=lambda call, x, denoised: seen.append((call, x, denoised)))
    generator, x = torch.Generator().manual_seed(5), x_init.clone()
    for sigma in (2.0, 0.5):
        alpha = 0.01 * sigma**2 / 0.5**2
        for _ in range(2):
            x = x + alpha / 2 * (-x / sigma**2) + math.sqrt(alpha) * torch.randn(3, 2, generator=generator, dtype=torch.float64)
    assert torch.allclose(out, x) and [call for call, _, _ in seen] == [0, 1, 2, 3]  # one call per step, 2 levels x 2
    _, x_first, denoised_first = seen[0]
    assert torch.equal(x_first, x_init) and torch.allclose(denoised_first, x_init + 4.0 * (-x_init / 4.0))  # x + σ² s
    assert torch.equal(x_init, torch.full((3, 2), 0.7, dtype=torch.float64))


def test_annealed_langevin_samples_a_gaussian_from_its_noise_conditional_scores():
    sigmas = geometric_sigmas(3.0, 0.01, 10)
    mean, variance = 1.0, 0.25
    score = lambda x, sigma: -(x - mean) / (variance + sigma[:, None] ** 2)
    x = annealed_langevin(score, sigmas, (5000, 2), steps=50, step_size=2e-4,
                          generator=torch.Generator().manual_seed(0)).double()
    assert abs(float(x.mean()) - mean) < 0.03 and abs(float(x.var()) - variance) < 0.03


def test_ncsn_maps_sigma_to_its_index_time_and_divides_by_sigma():
    sigmas = geometric_sigmas(1.0, 0.01, 5)
    net = NoiseConditionalScoreNet(TimeConditionedMLP(2, hidden=(8,)), sigmas)
    assert torch.allclose(net.time(sigmas), torch.tensor([1.0, 0.8, 0.6, 0.4, 0.2], dtype=torch.float64))
    x = torch.randn(5, 2)
    expected = -net.eps_model(x, net.time(sigmas).float()) / sigmas.float()[:, None]
    assert torch.allclose(net(x, sigmas.float()), expected)
    with pytest.raises(ValueError, match="sigmas must be strictly decreasing"):
        NoiseConditionalScoreNet(TimeConditionedMLP(2, hidden=(8,)), torch.tensor([0.1, 0.2]))


def test_bad_arguments_raise_clear_errors():
    score = lambda x: -x
    with pytest.raises(ValueError, match="step_size must be a positive float, got 0"):
        langevin_dynamics(score, torch.zeros(2, 2), step_size=0, steps=3)
    with pytest.raises(ValueError, match="steps must be a positive int, got 0"):
        annealed_langevin(lambda x, s: -x, torch.tensor([1.0, 0.1]), (2, 2), steps=0)
    with pytest.raises(ValueError, match=r"sigmas must be strictly decreasing .*got \[0.1, 0.1\]"):
        annealed_langevin(lambda x, s: -x, torch.tensor([0.1, 0.1]), (2, 2))
