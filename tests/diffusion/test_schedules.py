import math

import pytest
import torch

from ppl_dgm.diffusion import NoiseSchedule, cosine_schedule, linear_schedule


def test_linear_schedule_matches_the_diffusers_definitions():
    schedule = linear_schedule()
    # diffusers DDPMScheduler(beta_schedule="linear"): betas = linspace(1e-4, 0.02, 1000), alphas_cumprod = cumprod(1 − β)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    assert schedule.betas.dtype == torch.float64 and schedule.num_steps == 1000
    torch.testing.assert_close(schedule.betas, betas, rtol=0, atol=1e-12)
    torch.testing.assert_close(schedule.alpha_bar, alphas_cumprod, rtol=0, atol=1e-6)
    # its "fixed_small" variance at 0-indexed t is (1 − ᾱ_{t−1}) / (1 − ᾱ_t) β_t with ᾱ_{−1} = 1 (→ 0 at the first step)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    torch.testing.assert_close(schedule.posterior_variance, (1 - prev) / (1 - alphas_cumprod) * betas, rtol=0, atol=1e-6)
    assert schedule.posterior_variance[0] == 0
    # Ho et al. 2020, sec. 4: ᾱ_T ≈ 4.04e-5 (L_T ≈ 0)
    assert schedule.alpha_bar[-1].item() == pytest.approx(4.0358e-5, rel=1e-3)


def test_cosine_schedule_matches_nichol_dhariwal_and_diffusers_squaredcos_cap_v2():
    schedule = cosine_schedule(1000)

    def f(t):
        return math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2

    expected = torch.tensor([min(1 - f(i + 1) / f(i), 0.999) for i in range(1000)], dtype=torch.float64)
    torch.testing.assert_close(schedule.betas, expected, rtol=0, atol=1e-12)
    assert schedule.betas.max().item() == pytest.approx(0.999)  # the clip binds at the end
    # ᾱ_t = f(t)/f(0) before clipping binds (Nichol & Dhariwal 2021, eq. 17)
    torch.testing.assert_close(schedule.alpha_bar[:900], torch.tensor([f(t) / f(0) for t in range(1, 901)], dtype=torch.float64), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("make", [lambda: linear_schedule(50, 1e-3, 0.2), lambda: cosine_schedule(50)])
def test_composing_the_per_step_kernels_gives_q_xt_given_x0(make):
    schedule = make()
    # x_t = √α_t x_{t−1} + √β_t ε (eq. 2): mean coefficient ∏√α_s, variance v_t = α_t v_{t−1} + β_t
    coefficient, variance = 1.0, 0.0
    x0 = torch.tensor([[0.7, -1.3]], dtype=torch.float64)
    for t in range(1, schedule.num_steps + 1):
        coefficient *= math.sqrt(1 - schedule.betas[t - 1].item())
        variance = (1 - schedule.betas[t - 1].item()) * variance + schedule.betas[t - 1].item()
        mean, std = schedule.q_mean_std(x0, t)
        torch.testing.assert_close(mean, coefficient * x0, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(std, torch.full_like(x0, math.sqrt(variance)), rtol=1e-12, atol=1e-14)


def test_posterior_is_the_product_of_the_forward_kernel_and_the_marginal():
    schedule = cosine_schedule(20)
    x0 = torch.tensor([[0.3], [-0.8]], dtype=torch.float64)
    xt = torch.tensor([[1.1], [0.2]], dtype=torch.float64)
    for t in range(2, 21):
        beta, alpha_bar_prev = schedule.betas[t - 1].item(), schedule.alpha_bar[t - 2].item()
        # Bayes: q(x_{t−1}|x_t, x_0) ∝ N(x_t; √α x_{t−1}, β) · N(x_{t−1}; √ᾱ_{t−1} x_0, 1 − ᾱ_{t−1})
        precision = (1 - beta) / beta + 1 / (1 - alpha_bar_prev)
        mean = (math.sqrt(1 - beta) * xt / beta + math.sqrt(alpha_bar_prev) * x0 / (1 - alpha_bar_prev)) / precision
        posterior_mean, posterior_variance = schedule.posterior_mean_variance(x0, xt, t)
        torch.testing.assert_close(posterior_mean, mean, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(posterior_variance, torch.full_like(x0, 1 / precision), rtol=1e-10, atol=1e-14)


def test_per_example_steps_and_predict_x0_inverts_q_sample():
    schedule = linear_schedule(10)
    x0 = torch.randn(3, 1, 2, 2, dtype=torch.float64)
    noise = torch.randn_like(x0)
    t = torch.tensor([1, 5, 10])
    xt = schedule.q_sample(x0, t, noise)
    torch.testing.assert_close(xt[1], schedule.alpha_bar[4].sqrt() * x0[1] + (1 - schedule.alpha_bar[4]).sqrt() * noise[1])
    torch.testing.assert_close(schedule.predict_x0(xt, t, noise), x0)
    assert schedule.tables("cpu", torch.float32)["alpha_bar"].dtype == torch.float32


def test_bad_arguments_raise_naming_the_argument():
    with pytest.raises(ValueError, match=r"betas must lie in \(0, 1\), got betas\[1\] = 1.0 \(step t=2\)"):
        NoiseSchedule(torch.tensor([0.1, 1.0]))
    with pytest.raises(ValueError, match="betas must lie in"):
        NoiseSchedule(torch.tensor([0.0, 0.5]))
    with pytest.raises(ValueError, match="T >= 1"):
        NoiseSchedule(torch.tensor([]))
    with pytest.raises(ValueError, match=r"beta_end must be a float in \(0, 1\), got 1.5"):
        linear_schedule(10, 1e-4, 1.5)
    with pytest.raises(ValueError, match="num_steps must be a positive int, got 0"):
        linear_schedule(0)
    with pytest.raises(TypeError, match="num_steps must be an int"):
        cosine_schedule(10.0)
    schedule = linear_schedule(10)
    with pytest.raises(ValueError, match=r"t must lie in 1..T = 1..10, got values in \[0, 3\]"):
        schedule.q_mean_std(torch.zeros(2, 1), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"t must lie in 1..T = 1..10, got values in \[11, 11\]"):
        schedule.posterior_mean_variance(torch.zeros(1), torch.zeros(1), 11)
    with pytest.raises(TypeError, match="t must be an integer step"):
        schedule.q_mean_std(torch.zeros(1), torch.tensor([0.5]))
