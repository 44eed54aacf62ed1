import pytest
import torch

from ppl_dgm.diffusion import cosine_schedule, ddim_encode, ddim_timesteps, linear_schedule, sample_ancestral, sample_ddim

from .conftest import GaussianOptimalEps, LinearEps

MEAN, STD, N = torch.tensor([0.3, -0.2]), 0.5, 20000


def assert_gaussian(samples, mean, std):
    """Sample mean and std of each coordinate within 4 standard errors of N(mean, std²)."""
    n = samples.shape[0]
    assert ((samples.mean(0) - mean).abs() < 4 * std / n**0.5).all(), samples.mean(0)
    assert ((samples.std(0) - std).abs() < 4 * std / (2 * n) ** 0.5).all(), samples.std(0)


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_ancestral_sampling_with_the_optimal_eps_reproduces_gaussian_data(variance):
    schedule = linear_schedule()
    eps_model = GaussianOptimalEps(schedule, MEAN, STD)
    samples = sample_ancestral(eps_model, schedule, (N, 2), variance=variance, generator=torch.Generator().manual_seed(0))
    assert eps_model.calls == 1000
    assert_gaussian(samples, MEAN, STD)


def ddim_law_for_gaussian_data(schedule, timesteps, eta, mean, std):
    """Exact mean/std of DDIM's output for data N(mean, std²) and the optimal ε, from x_T ~ N(0, 1).

    With ε* each step is affine in x_t: x_prev − m_prev = k (x_t − m_t) (+ σ z), with m_t = √ᾱ_t μ,
    v_t = ᾱ_t σ² + 1 − ᾱ_t and k = (√(ᾱ_prev ᾱ_t) σ² + √(1 − ᾱ_prev − σ_η²) √(1 − ᾱ_t)) / v_t.
    """
    alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), schedule.alpha_bar])
    current_mean, current_var = torch.zeros_like(mean, dtype=torch.float64), 1.0
    previous = [0] + list(timesteps[:-1])
    for t, p in zip(reversed(timesteps), reversed(previous)):
        a, a_prev = alpha_bar[t], alpha_bar[p]
        sigma2 = eta**2 * (1 - a_prev) / (1 - a) * (1 - a / a_prev)
        v = a * std**2 + 1 - a
        k = ((a_prev * a).sqrt() * std**2 + (1 - a_prev - sigma2).sqrt() * (1 - a).sqrt()) / v
        current_mean = a_prev.sqrt() * mean + k * (current_mean - a.sqrt() * mean)
        current_var = k**2 * current_var + sigma2
    return current_mean.float(), float(current_var) ** 0.5


@pytest.mark.parametrize("eta, steps", [(0.0, 20), (1.0, 100), (0.5, [1, 10, 100, 400, 1000])])
def test_ddim_with_the_optimal_eps_samples_its_exact_law_for_gaussian_data(eta, steps):
    schedule = linear_schedule()
    eps_model = GaussianOptimalEps(schedule, MEAN, STD)
    samples = sample_ddim(eps_model, schedule, (N, 2), steps=steps, eta=eta, generator=torch.Generator().manual_seed(1))
    timesteps = ddim_timesteps(schedule, steps)
    assert eps_model.calls == len(timesteps)
    mean, std = ddim_law_for_gaussian_data(schedule, timesteps, eta, MEAN, STD)
    assert_gaussian(samples, mean, std)
    # few steps shrink the spread (the DDIM discretization error); many steps reproduce μ and σ
    assert std < STD
    exact_mean, exact_std = ddim_law_for_gaussian_data(schedule, list(range(1, 1001)), 0.0, MEAN, STD)
    torch.testing.assert_close(exact_mean, MEAN, rtol=0, atol=1e-3)
    assert abs(exact_std - STD) < 2e-3


def test_ddim_with_many_steps_reproduces_gaussian_data():
    schedule = cosine_schedule()
    samples = sample_ddim(GaussianOptimalEps(schedule, MEAN, STD), schedule, (N, 2), steps=1000, generator=torch.Generator().manual_seed(2))
    assert_gaussian(samples, MEAN, STD)


def test_a_wrong_eps_is_detected():
    # the same check fails for a network that is optimal for other data: the test can fail
    schedule = linear_schedule()
    samples = sample_ddim(GaussianOptimalEps(schedule, MEAN, 0.45), schedule, (N, 2), steps=50, generator=torch.Generator().manual_seed(1))
    with pytest.raises(AssertionError):
        assert_gaussian(samples, MEAN, STD)


def test_ddim_encode_then_decode_recovers_x0():
    schedule = linear_schedule()
    eps_model = LinearEps(0.2, -0.3, 0.05)
    x0 = torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    before = x0.clone()

    def round_trip_error(steps, iterations):
        x_T = ddim_encode(eps_model, schedule, x0, steps=steps, fixed_point_iterations=iterations)
        decoded = sample_ddim(eps_model, schedule, x0.shape, steps=steps, eta=0.0, x_T=x_T)
        return (decoded - x0).abs().max().item(), x_T

    # plain inversion (ε at the previous point) is first-order accurate: 5x the steps, ~5x smaller error
    coarse, _ = round_trip_error(100, 0)
    fine, _ = round_trip_error(500, 0)
    assert fine < 0.05 and 3.5 < coarse / fine < 7, (coarse, fine)
    # fixed-point refinement inverts each DDIM step exactly (to float32 precision)
    error, x_T = round_trip_error(50, 5)
    assert error < 1e-4, error
    torch.testing.assert_close(x0, before, rtol=0, atol=0)  # inputs are never mutated
    assert not torch.allclose(x_T, x0, atol=0.1)  # it did travel to noise and back


def test_samplers_are_seeded_and_do_not_mutate_inputs():
    schedule = linear_schedule(20)
    eps_model = LinearEps()
    x_T = torch.randn(4, 1, 2, 2)
    x_T_before = x_T.clone()
    for sampler, kwargs in ((sample_ancestral, {}), (sample_ddim, {"steps": 5, "eta": 1.0})):
        first = sampler(eps_model, schedule, (4, 1, 2, 2), generator=torch.Generator().manual_seed(3), **kwargs)
        second = sampler(eps_model, schedule, (4, 1, 2, 2), generator=torch.Generator().manual_seed(3), **kwargs)
        torch.testing.assert_close(first, second, rtol=0, atol=0)
        third = sampler(eps_model, schedule, (4, 1, 2, 2), generator=torch.Generator().manual_seed(4), **kwargs)
        assert not torch.allclose(first, third)
        sampler(eps_model, schedule, (4, 1, 2, 2), x_T=x_T, generator=torch.Generator().manual_seed(3), **kwargs)
        torch.testing.assert_close(x_T, x_T_before, rtol=0, atol=0)
        assert not first.requires_grad


def test_ddim_timesteps():
    schedule = linear_schedule(1000)
    assert ddim_timesteps(schedule, 5) == [1, 251, 500, 750, 1000]
    assert ddim_timesteps(schedule, 1000) == list(range(1, 1001))
    assert ddim_timesteps(schedule, [3, 7]) == [3, 7]


def test_bad_arguments_raise():
    schedule = linear_schedule(10)
    with pytest.raises(ValueError, match="eta must be a float in \\[0, 1\\], got 1.5"):
        sample_ddim(LinearEps(), schedule, (2, 2), eta=1.5)
    with pytest.raises(ValueError, match="steps must be at most T=10, got 11"):
        sample_ddim(LinearEps(), schedule, (2, 2), steps=11)
    with pytest.raises(ValueError, match="strictly increasing sequence of steps in 1..10"):
        sample_ddim(LinearEps(), schedule, (2, 2), steps=[5, 3])
    with pytest.raises(ValueError, match="strictly increasing sequence of steps in 1..10"):
        ddim_encode(LinearEps(), schedule, torch.zeros(2, 2), steps=[0, 3])
    with pytest.raises(ValueError, match="variance='large' is not known"):
        sample_ancestral(LinearEps(), schedule, (2, 2), variance="large")
    with pytest.raises(ValueError, match="shape must be a sequence of positive ints"):
        sample_ancestral(LinearEps(), schedule, (2, 0))
    with pytest.raises(TypeError, match="schedule must be a NoiseSchedule"):
        sample_ancestral(LinearEps(), None, (2, 2))


@pytest.mark.cuda
def test_samplers_run_on_cuda():
    schedule = linear_schedule(10)
    eps_model = LinearEps().cuda()
    generator = torch.Generator(device="cuda").manual_seed(0)
    assert sample_ancestral(eps_model, schedule, (3, 2), generator=generator).device.type == "cuda"
    assert sample_ddim(eps_model, schedule, (3, 2), steps=5, generator=generator).device.type == "cuda"


def test_clip_x0_keeps_predictions_in_the_data_range():
    schedule = linear_schedule(50)
    eps_model = LinearEps(0.0, 0.0, 3.0)  # a bad network: its x̂_0 leave [-1, 1] by far
    kwargs = {"generator": torch.Generator().manual_seed(0)}
    assert sample_ddim(eps_model, schedule, (64, 2), steps=10, **kwargs).abs().max() > 5
    clipped = sample_ddim(eps_model, schedule, (64, 2), steps=10, clip_x0=True, generator=torch.Generator().manual_seed(0))
    assert clipped.abs().max() <= 1.0
    ancestral = sample_ancestral(eps_model, schedule, (64, 2), clip_x0=True, generator=torch.Generator().manual_seed(0))
    assert ancestral.abs().max() <= 1.0


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_the_callback_sees_every_network_call_with_its_predicted_x0(sampler):
    from ppl_dgm.diffusion import linear_schedule, sample_ancestral, sample_ddim

    schedule, seen, calls = linear_schedule(20), [], []

    def eps_model(x, t):
        calls.append(t)
        return torch.tanh(x) * (0.5 + t[:, None])

    kwargs = dict(generator=torch.Generator().manual_seed(0), callback=lambda call, x, denoised: seen.append((call, x, denoised)))
    if sampler == "ancestral":
        sample_ancestral(eps_model, schedule, (4, 3), **kwargs)
    else:
        sample_ddim(eps_model, schedule, (4, 3), steps=5, **kwargs)
    assert [call for call, _, _ in seen] == list(range(len(calls)))
    call, x, denoised = seen[-1]  # the last call is at step 1: x̂_0 = (x − √(1 − ᾱ_1) ε)/√ᾱ_1
    alpha_bar = float(schedule.alpha_bar[0])
    expected = (x - (1 - alpha_bar) ** 0.5 * torch.tanh(x) * (0.5 + 1 / 20)) / alpha_bar**0.5
    torch.testing.assert_close(denoised, expected)
    with pytest.raises(TypeError, match="callback must be callable"):
        sample_ddim(eps_model, schedule, (4, 3), steps=5, callback="print")
