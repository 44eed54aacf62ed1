import math
import re

import pytest
import torch
from torch import nn

from ppl_dgm.diffusion import (
    NoiseLevels,
    linear_schedule,
    sample_ddim,
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_euler_ancestral,
    sample_heun,
)
from ppl_dgm.sde import VESDE, VPSDE, SubVPSDE

from .conftest import LabelShiftEps

SOLVERS = [sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_heun, sample_euler_ancestral]
T = 1000


def view(values, x):
    return values.view(-1, *([1] * (x.ndim - 1))).to(x.dtype)


class TanhDenoiserEps(nn.Module):
    """A fixed nonlinear network on a discrete schedule: x̂_0(x, t) = tanh(x)(0.5 + t), ε = (x − √ᾱ x̂_0)/√(1 − ᾱ).

    Parametrized through x̂_0 (bounded) so the samples stay O(1) and an absolute tolerance means something.
    """

    def __init__(self, schedule):
        super().__init__()
        self.register_buffer("alpha_bar", torch.cat([torch.ones(1, dtype=torch.float64), schedule.alpha_bar]))  # ᾱ_0 = 1
        self.num_steps = schedule.num_steps

    def forward(self, x, t, y=None):
        alpha_bar = view(self.alpha_bar[torch.round(t.double() * self.num_steps).long()], x)
        return (x - alpha_bar.sqrt() * torch.tanh(x) * (0.5 + view(t, x))) / (1 - alpha_bar).sqrt()


class GaussianEps(nn.Module):
    """The exact ε of data N(μ, diag s²) under any NoiseLevels: ε*(x_t, t) = σ_t(x_t − α_t μ)/(α_t² s² + σ_t²).

    μ and s are float parameters, so the solvers run in their dtype (float64 for the order fits).
    """

    def __init__(self, levels, mean, std, dtype=torch.float64):
        super().__init__()
        self.levels = levels
        self.mean = nn.Parameter(torch.as_tensor(mean, dtype=dtype))
        self.std = nn.Parameter(torch.as_tensor(std, dtype=dtype))
        self.calls = 0

    def forward(self, x, t, y=None):
        self.calls += 1
        alpha, sigma = view(self.levels.alpha(t.double()), x), view(self.levels.sigma(t.double()), x)
        return sigma * (x - alpha * self.mean) / (alpha**2 * self.std**2 + sigma**2)


def exact_flow_then_denoise(levels, x_T, mean, std, t_end):
    """D(Φ(x_T), t_end): the probability-flow map from t = 1 to t_end, then the exact denoiser E[x_0 | x_{t_end}].

    For Gaussian data each coordinate keeps its standardized value z = (x_t − α_t μ)/√(α_t² s² + σ_t²) along the
    flow (the marginals stay Gaussian and the map is monotone affine), whatever the schedule between the ends.
    """
    times = torch.tensor([1.0, t_end], dtype=torch.float64)
    alpha, sigma = levels.alpha(times), levels.sigma(times)
    z = (x_T - alpha[0] * mean) / (alpha[0] ** 2 * std**2 + sigma[0] ** 2).sqrt()
    return mean + alpha[1] * std**2 * z / (alpha[1] ** 2 * std**2 + sigma[1] ** 2).sqrt()


def fitted_order(step_counts, errors):
    """−slope of the least-squares line through (log steps, log error)."""
    log_n, log_e = torch.tensor(step_counts, dtype=torch.float64).log(), torch.tensor(errors, dtype=torch.float64).log()
    log_n = log_n - log_n.mean()
    return float(-(log_n * (log_e - log_e.mean())).sum() / (log_n**2).sum())


MEAN = torch.tensor([0.3, -0.2, 0.0, 1.0], dtype=torch.float64)
STD = torch.tensor([0.5, 1.0, 0.1, 2.0], dtype=torch.float64)


# ---- (a) agreement with diffusers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def diffusers_schedulers():
    pytest.importorskip("diffusers")
    from diffusers import DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler

    return DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler


@pytest.mark.parametrize("steps", [10, 20])
def test_dpmpp_2m_matches_diffusers(diffusers_schedulers, steps):
    """Ours vs diffusers' ``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2)``, linear T = 1000.

    Spacing: diffusers' ``timestep_spacing="trailing"``, 0-indexed timesteps j = round(T − kT/steps) − 1; our
    1-indexed step is i = j + 1 (``alphas_cumprod[j]`` is our ᾱ_i) and the network sees t = i/T = (j + 1)/T in both
    runs. Both end at σ = 0 (``final_sigmas_type="zero"``, our t = 0), the last step first order
    (``lower_order_final``). diffusers keeps its float32 ``alphas_cumprod``; they limit agreement to ~2e-6 here
    (swapping in float64 ones gives ~2e-7), so 1e-5 holds without the swap. The SDE variant
    (``"sde-dpmsolver++"``, midpoint) draws one float32 N(0, I) of x's shape per step from its generator, as ours
    does: equal seeds feed both the same noise tensors.
    """
    DPMSolverMultistepScheduler, _ = diffusers_schedulers
    schedule = linear_schedule(T)
    model = TanhDenoiserEps(schedule)
    x_T = torch.randn(8, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    for algorithm, solver in (("dpmsolver++", sample_dpmpp_2m), ("sde-dpmsolver++", sample_dpmpp_2m_sde)):
        for order in (2, 1):
            scheduler = DPMSolverMultistepScheduler(num_train_timesteps=T, beta_schedule="linear", algorithm_type=algorithm,
                                                    solver_order=order, timestep_spacing="trailing")
            scheduler.set_timesteps(steps)
            grid = NoiseLevels.from_schedule(schedule).time_grid(steps)
            assert (scheduler.timesteps + 1).tolist() == torch.round(grid[:-1] * T).long().tolist()
            x, reference_states, generator = x_T.clone(), [], torch.Generator().manual_seed(1)
            for j in scheduler.timesteps:
                reference_states.append(x)
                eps = model(x, torch.full((x.shape[0],), (int(j) + 1) / T))
                x = scheduler.step(eps, j, x, generator=generator).prev_sample
            if order == 1:  # the comparison can fail: first order differs from ours by far more than 1e-5
                assert (ours - x).abs().max() > 1e-3
                continue
            states = []
            ours = solver(model, schedule, x_T.shape, steps=steps, x_T=x_T, generator=torch.Generator().manual_seed(1),
                          callback=lambda k, state, denoised: states.append(state))
            torch.testing.assert_close(ours, x, rtol=0, atol=1e-5)
            torch.testing.assert_close(torch.stack(states), torch.stack(reference_states), rtol=0, atol=1e-5)


@pytest.mark.parametrize("steps", [10, 20])
def test_euler_ancestral_matches_diffusers(diffusers_schedulers, steps):
    """Ours vs diffusers' ``EulerAncestralDiscreteScheduler``, linear T = 1000, ``timestep_spacing="trailing"``.

    Step mapping as in the DPM-Solver++ test: diffusers' timestep j is our step i = j + 1, t = (j + 1)/T.
    diffusers works in x̃ = x/α = x√(σ̃² + 1) (σ̃² = (1 − ᾱ)/ᾱ): it starts from x_T√(σ̃_max² + 1) and
    ``scale_model_input`` hands the network α x̃, the x our loop holds. Each step draws one float32 N(0, I) of
    x's shape from the generator, in ours as in diffusers' (ours skips the unused last one): equal seeds, equal
    noise. diffusers' float32 coefficients are kept (agreement ~1e-6).
    """
    _, EulerAncestralDiscreteScheduler = diffusers_schedulers
    schedule = linear_schedule(T)
    model = TanhDenoiserEps(schedule)
    x_T = torch.randn(8, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    scheduler = EulerAncestralDiscreteScheduler(num_train_timesteps=T, beta_schedule="linear", timestep_spacing="trailing")
    scheduler.set_timesteps(steps)
    x, reference_states, generator = x_T * (scheduler.sigmas[0] ** 2 + 1).sqrt(), [], torch.Generator().manual_seed(1)
    for j in scheduler.timesteps:
        model_input = scheduler.scale_model_input(x, j)
        reference_states.append(model_input)
        x = scheduler.step(model(model_input, torch.full((x.shape[0],), (float(j) + 1) / T)), j, x, generator=generator).prev_sample
    states = []
    ours = sample_euler_ancestral(model, schedule, x_T.shape, steps=steps, x_T=x_T, generator=torch.Generator().manual_seed(1),
                                  callback=lambda k, state, denoised: states.append(state))
    torch.testing.assert_close(ours, x, rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.stack(states), torch.stack(reference_states), rtol=0, atol=1e-5)
    unseeded = sample_euler_ancestral(model, schedule, x_T.shape, steps=steps, x_T=x_T, generator=torch.Generator().manual_seed(2))
    assert (unseeded - x).abs().max() > 1e-2  # other noise, other samples: the comparison can fail


# ---- (b) convergence order on the probability-flow ODE ------------------------------------------------------


@pytest.mark.parametrize("solver, step_counts", [(sample_dpmpp_2m, [16, 32, 64, 128]), (sample_heun, [8, 16, 32, 64])])
def test_deterministic_solvers_are_second_order_on_the_continuous_vpsde(solver, step_counts):
    """Max error against the exact map D(Φ_{1→eps}(x_T)) (both grids end at eps, then step to σ = 0 through the
    data prediction) falls like steps^−2: the fitted order lies in (1.6, 2.5)."""
    sde = VPSDE()
    levels = NoiseLevels.from_vpsde(sde)
    x_T = torch.randn(64, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = exact_flow_then_denoise(levels, x_T, MEAN, STD, levels.t_min)
    errors = [(solver(GaussianEps(levels, MEAN, STD), sde, x_T.shape, steps=n, x_T=x_T) - exact).abs().max().item()
              for n in step_counts]
    order = fitted_order(step_counts, errors)
    assert 1.6 < order < 2.5, (order, errors)


def test_ddim_is_first_order_on_the_discrete_schedule():
    """sample_ddim takes a NoiseSchedule only: its grid runs from step T to step 1, then to ᾱ_0 = 1 through the data
    prediction, so its limit is D(Φ_{T→1}(x_T)) at step 1. The fitted order lies in (0.8, 1.3)."""
    schedule = linear_schedule(T)
    levels = NoiseLevels.from_schedule(schedule)
    x_T = torch.randn(64, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = exact_flow_then_denoise(levels, x_T, MEAN, STD, 1 / T)
    step_counts = [10, 20, 40, 80]
    errors = [(sample_ddim(GaussianEps(levels, MEAN, STD), schedule, x_T.shape, steps=n, x_T=x_T) - exact).abs().max().item()
              for n in step_counts]
    order = fitted_order(step_counts, errors)
    assert 0.8 < order < 1.3, (order, errors)


def test_dpmpp_2m_error_falls_with_steps_on_the_discrete_schedule():
    """On the linear T = 1000 schedule (trailing grid) the error against the exact flow to the data, x_0 = μ + s z,
    falls at every doubling, and beats DDIM at equal network calls."""
    schedule = linear_schedule(T)
    levels = NoiseLevels.from_schedule(schedule)
    x_T = torch.randn(64, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = exact_flow_then_denoise(levels, x_T, MEAN, STD, 0.0)
    errors = [(sample_dpmpp_2m(GaussianEps(levels, MEAN, STD), schedule, x_T.shape, steps=n, x_T=x_T) - exact).abs().max().item()
              for n in (10, 20, 40, 80, 160)]
    assert all(later < 0.7 * earlier for earlier, later in zip(errors, errors[1:])), errors
    ddim = sample_ddim(GaussianEps(levels, MEAN, STD), schedule, x_T.shape, steps=80, x_T=x_T)
    assert errors[3] < 0.5 * (ddim - exact).abs().max().item()


# ---- (c) the stochastic solvers sample the data law --------------------------------------------------------


@pytest.mark.parametrize("solver, noise, steps", [
    (sample_dpmpp_2m_sde, VPSDE(), 50),
    (sample_dpmpp_2m_sde, linear_schedule(T), 200),
    # Euler ancestral is first order: at 50 steps its std is ~9% too small (VPSDE), at 500 within MC error
    (sample_euler_ancestral, VPSDE(), 500),
], ids=["2m_sde-vpsde-50", "2m_sde-linear-200", "euler_ancestral-vpsde-500"])
def test_stochastic_solvers_sample_gaussian_data(solver, noise, steps):
    """Sample mean and std of each coordinate within 4 standard errors of the data N(μ, diag s²), 20,000 samples."""
    mean, std, n = torch.tensor([0.3, -0.2]), torch.tensor([0.5, 1.5]), 20000
    levels = NoiseLevels.from_vpsde(noise) if isinstance(noise, VPSDE) else NoiseLevels.from_schedule(noise)
    samples = solver(GaussianEps(levels, mean, std, torch.float32), noise, (n, 2), steps=steps,
                     generator=torch.Generator().manual_seed(0))
    assert ((samples.mean(0) - mean).abs() < 4 * std / n**0.5).all(), samples.mean(0)
    assert ((samples.std(0) - std).abs() < 4 * std / (2 * n) ** 0.5).all(), samples.std(0)


def test_the_data_law_check_can_fail():
    # the same check rejects Euler ancestral at 50 steps, whose std is biased low (first order)
    mean, std, n = torch.tensor([0.3, -0.2]), torch.tensor([0.5, 1.5]), 20000
    sde = VPSDE()
    samples = sample_euler_ancestral(GaussianEps(NoiseLevels.from_vpsde(sde), mean, std, torch.float32), sde, (n, 2), steps=50,
                                     generator=torch.Generator().manual_seed(0))
    assert ((samples.std(0) - std).abs() > 4 * std / (2 * n) ** 0.5).all(), samples.std(0)
    assert (samples.std(0) < 0.95 * std).all()


@pytest.mark.parametrize("solver", [sample_dpmpp_2m_sde, sample_euler_ancestral])
def test_stochastic_solvers_are_seeded_and_do_not_mutate_inputs(solver):
    schedule = linear_schedule(50)
    model = TanhDenoiserEps(schedule)
    x_T = torch.randn(4, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    before = x_T.clone()
    first = solver(model, schedule, (4, 1, 2, 2), steps=10, generator=torch.Generator().manual_seed(3))
    second = solver(model, schedule, (4, 1, 2, 2), steps=10, generator=torch.Generator().manual_seed(3))
    third = solver(model, schedule, (4, 1, 2, 2), steps=10, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert not torch.allclose(first, third)
    from_x_T = solver(model, schedule, (4, 1, 2, 2), steps=10, x_T=x_T, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(x_T, before, rtol=0, atol=0)
    assert not torch.allclose(from_x_T, first) and not first.requires_grad


# ---- (d) callbacks, network calls, guidance, clipping, bad arguments -----------------------------------------


@pytest.mark.parametrize("solver, calls", [(sample_dpmpp_2m, lambda s: s), (sample_dpmpp_2m_sde, lambda s: s),
                                           (sample_heun, lambda s: 2 * s - 1), (sample_euler_ancestral, lambda s: s)])
@pytest.mark.parametrize("noise", [linear_schedule(T), VPSDE()], ids=["linear", "vpsde"])
def test_callback_and_network_calls(solver, calls, noise):
    levels = NoiseLevels.from_vpsde(noise) if isinstance(noise, VPSDE) else NoiseLevels.from_schedule(noise)
    model = GaussianEps(levels, 0.1, 0.7, torch.float32)
    seen = []
    for steps in (1, 2, 7):
        seen.clear()
        model.calls = 0
        out = solver(model, noise, (3, 1, 2, 2), steps=steps, generator=torch.Generator().manual_seed(0),
                     callback=lambda k, x, denoised: seen.append((k, x.shape, denoised.shape)))
        assert model.calls == calls(steps)
        assert seen == [(k, torch.Size([3, 1, 2, 2]), torch.Size([3, 1, 2, 2])) for k in range(calls(steps))]  # one per network call
        assert out.shape == (3, 1, 2, 2) and out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("solver", SOLVERS)
def test_guidance_uses_the_classifier_free_combination(solver):
    """With y and w the solver follows (1 + w)ε(x, t, y) − wε(x, t, ∅) (Ho & Salimans 2022, eq. 6), in one call of 2B."""
    schedule, w, y = linear_schedule(100), 2.0, torch.tensor([0, 3, 1])
    model = LabelShiftEps()

    def combined(x, t, _=None):
        return (1 + w) * model(x, t, y) - w * model(x, t, torch.full_like(y, -1))

    kwargs = {"steps": 5, "x_T": torch.randn(3, 2, generator=torch.Generator().manual_seed(0))}
    guided = solver(model, schedule, (3, 2), y=y, guidance_scale=w, generator=torch.Generator().manual_seed(1), **kwargs)
    assert set(model.batch_sizes) == {6}
    expected = solver(combined, schedule, (3, 2), generator=torch.Generator().manual_seed(1), **kwargs)
    torch.testing.assert_close(guided, expected, rtol=1e-6, atol=1e-6)
    conditional = solver(model, schedule, (3, 2), y=y, generator=torch.Generator().manual_seed(1), **kwargs)
    assert (guided - conditional).abs().max() > 1e-2  # guidance changed the samples


@pytest.mark.parametrize("solver", SOLVERS)
def test_clip_x0_keeps_the_result_in_the_data_range(solver):
    schedule = linear_schedule(50)
    model = LabelShiftEps()  # a poor network: its x̂_0 leave [−1, 1]
    unclipped = solver(model, schedule, (64, 2), steps=8, generator=torch.Generator().manual_seed(0))
    clipped = solver(model, schedule, (64, 2), steps=8, clip_x0=True, generator=torch.Generator().manual_seed(0))
    assert unclipped.abs().max() > 1.5 and clipped.abs().max() <= 1.0


def test_noise_levels():
    schedule = linear_schedule(T)
    discrete = NoiseLevels.from_schedule(schedule)
    grid = discrete.time_grid(7)
    assert (grid * T).round().long().tolist() == [1000, 857, 714, 571, 429, 286, 143, 0]  # diffusers' trailing + 1
    steps = torch.arange(1, T + 1, dtype=torch.float64)
    torch.testing.assert_close(discrete.alpha(steps / T) ** 2, schedule.alpha_bar, rtol=1e-12, atol=0)
    assert discrete.sigma(torch.zeros(1, dtype=torch.float64)).item() == 0.0
    assert discrete.half_log_snr(torch.zeros(1, dtype=torch.float64)).item() == math.inf
    karras = discrete.karras_time_grid(10)
    assert karras[0] == 1.0 and karras[-2] == 1 / T and karras[-1] == 0.0 and (karras.diff() <= 0).all()
    assert (karras * T - (karras * T).round()).abs().max() < 1e-9  # snapped to steps: the network sees t = i/T

    sde = VPSDE()
    continuous = NoiseLevels.from_vpsde(sde, eps=1e-3)
    t = torch.tensor([1e-3, 0.1, 0.5, 1.0], dtype=torch.float64)
    _, std = sde.marginal_prob(torch.zeros(4, 1, dtype=torch.float64), t)
    torch.testing.assert_close(continuous.sigma(t), std, rtol=1e-12, atol=0)
    torch.testing.assert_close(continuous.time_of_half_log_snr(continuous.half_log_snr(t)), t, rtol=1e-10, atol=0)
    grid = continuous.time_grid(5)
    assert grid[0] == 1.0 and grid[-2] == 1e-3 and grid[-1] == 0.0
    lam = continuous.half_log_snr(grid[:-1])
    torch.testing.assert_close(lam.diff(), torch.full((4,), float(lam.diff().mean()), dtype=torch.float64))  # uniform in λ
    sigma_tilde = (continuous.sigma(continuous.karras_time_grid(6)[:-1]) / continuous.alpha(continuous.karras_time_grid(6)[:-1]))
    ramp = sigma_tilde ** (1 / 7)
    torch.testing.assert_close(ramp.diff(), torch.full((5,), float(ramp.diff().mean()), dtype=torch.float64))  # EDM eq. 5


def zero_eps(x, t, y=None):
    return torch.zeros_like(x)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("kwargs, error, message", [
    ({"steps": 0}, ValueError, "steps must be a positive int, got 0"),
    ({"steps": 2.5}, TypeError, "steps must be an int, got 2.5"),
    ({"steps": 11}, ValueError, "steps must be at most T=10, got 11"),
    ({"steps": 3, "shape": (2, 0)}, ValueError, "shape must be a sequence of positive ints (B, ...), got (2, 0)"),
    ({"steps": 3, "guidance_scale": -1.0, "y": torch.zeros(2, dtype=torch.long)}, ValueError,
     "guidance_scale must be a float >= 0 (w of Ho & Salimans 2022), got -1.0"),
    ({"steps": 3, "guidance_scale": 1.0}, ValueError, "guidance_scale=1.0 needs class labels y, got y=None"),
    ({"steps": 3, "x_T": torch.zeros(2, 4)}, ValueError, "x_T must have shape (2, 3) (the shape argument), got (2, 4)"),
    ({"steps": 3, "x_T": [[0.0] * 3] * 2}, TypeError, "x_T must be a floating tensor (B, ...) or None, got list"),
    ({"steps": 3, "callback": 1}, TypeError, "callback must be callable callback(step, x, denoised), got int"),
    ({"steps": 3, "noise": VESDE()}, TypeError, "noise must be a NoiseSchedule, a VPSDE or NoiseLevels, got VESDE"),
    ({"steps": 3, "noise": SubVPSDE()}, TypeError, "noise must be a NoiseSchedule, a VPSDE or NoiseLevels, got SubVPSDE"),
    ({"steps": 3, "eps_model": None}, TypeError, "eps_model must be callable eps_model(x, t, y=None), got NoneType"),
], ids=["steps-zero", "steps-float", "steps-above-T", "shape", "guidance-negative", "guidance-without-y", "x_T-shape",
        "x_T-list", "callback", "noise-VESDE", "noise-subVP", "eps_model"])
def test_bad_arguments_raise_naming_them(solver, kwargs, error, message):
    arguments = {"eps_model": zero_eps, "noise": linear_schedule(10), "shape": (2, 3)} | kwargs
    with pytest.raises(error, match=re.escape(message)):
        solver(arguments.pop("eps_model"), arguments.pop("noise"), arguments.pop("shape"), **arguments)


def test_bad_noise_level_arguments_raise():
    with pytest.raises(ValueError, match=r"eps must be a float in \(0, T=1.0\), got 0.0"):
        NoiseLevels.from_vpsde(VPSDE(), eps=0.0)
    with pytest.raises(TypeError, match="sde must be a VPSDE, got VESDE"):
        NoiseLevels.from_vpsde(VESDE())
    with pytest.raises(TypeError, match="schedule must be a NoiseSchedule, got VPSDE"):
        NoiseLevels.from_schedule(VPSDE())
    # a continuous VPSDE has no T: any step count goes
    assert sample_dpmpp_2m(zero_eps, VPSDE(), (2, 3), steps=2000).shape == (2, 3)


@pytest.mark.cuda
@pytest.mark.parametrize("solver", SOLVERS)
def test_solvers_run_on_cuda(solver):
    schedule = linear_schedule(T)
    model = TanhDenoiserEps(schedule).cuda()
    generator = torch.Generator(device="cuda").manual_seed(0)
    out = solver(model, schedule, (3, 2), steps=10, device="cuda", generator=generator)
    assert out.device.type == "cuda" and torch.isfinite(out).all()
