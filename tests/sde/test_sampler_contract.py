"""The sampler contract on the SDE side: classifier-free guidance and a callback that sees every network call."""
import pytest
import torch

from ppl_dgm.sde import VPSDE, annealed_langevin, sample_ode, sample_pc, sample_reverse_sde

SAMPLERS = {
    "reverse-sde": lambda model, **kw: sample_reverse_sde(model, VPSDE(), (6, 3), steps=20, **kw),
    "pc": lambda model, **kw: sample_pc(model, VPSDE(), (6, 3), steps=20, **kw),
    "ode": lambda model, **kw: sample_ode(model, VPSDE(), (6, 3), **kw),
}


class LabelledEps(torch.nn.Module):
    """ε(x, t, y) = tanh(x)·(0.5 + t) + 0.3·(y + 1): a different ε per label, −1 the unconditional one."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))
        self.calls = 0

    def forward(self, x, t, y=None):
        self.calls += 1
        label = torch.full((x.shape[0],), -1.0) if y is None else y.to(x.dtype)
        return torch.tanh(x) * (0.5 + t[:, None]) + 0.3 * (label[:, None] + 1) + self.dummy


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_guidance_in_every_sde_sampler_is_the_guided_eps_of_ho_and_salimans(name):
    model, w, y = LabelledEps(), 2.0, torch.tensor([0, 1, 2, 3, 4, 5])

    def guided(x, t):  # (1 + w) ε(x, t, y) − w ε(x, t, ∅), Ho & Salimans 2022, eq. 6
        return (1 + w) * model(x, t, y) - w * model(x, t, torch.full_like(y, -1))

    guided_model = LabelledEps()
    guided_model.forward = guided
    ours = SAMPLERS[name](model, y=y, guidance_scale=w, generator=torch.Generator().manual_seed(0))
    reference = SAMPLERS[name](guided_model, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    unguided = SAMPLERS[name](model, y=y, generator=torch.Generator().manual_seed(0))
    assert (ours - unguided).abs().max() > 1e-2  # guidance changes the samples


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_the_callback_sees_every_network_call_with_its_denoised_estimate(name):
    model, seen = LabelledEps(), []
    SAMPLERS[name](model, generator=torch.Generator().manual_seed(0), callback=lambda call, x, denoised: seen.append((call, x, denoised)))
    assert [call for call, _, _ in seen] == list(range(model.calls)) and model.calls > 0
    assert all(x.shape == denoised.shape == (6, 3) for _, x, denoised in seen)


def test_the_denoised_estimate_is_tweedie_for_the_exact_gaussian_eps():
    """For data N(0, s²I) under the VP SDE, E[x_0 | x_t] = m s² x_t / (m² s² + σ²): the callback's x̂_0 must be it."""
    sde, variance = VPSDE(), 0.5

    def exact_eps(x, t):
        mean_coefficient, std = sde._mean_coefficient_std(t.double())
        m, s = mean_coefficient.to(x.dtype)[:, None], std.to(x.dtype)[:, None]
        return s * x / (m**2 * variance + s**2)  # ε = −σ ∇log p_t(x) = σ x / (m² s² + σ²)

    checked = []

    def check(call, x, denoised):
        checked.append(call)
        if call == 99:  # the last predictor step, t_99 = T − 99 (T − eps)/100 (early calls divide by a tiny m(t) in float32)
            t = torch.tensor([1.0 - 99 * (1.0 - 1e-3) / 100], dtype=torch.float64)
            m, s = sde._mean_coefficient_std(t)
            expected = (m * variance * x.double() / (m**2 * variance + s**2)).to(x.dtype)
            torch.testing.assert_close(denoised, expected, rtol=1e-5, atol=1e-6)

    sample_pc(exact_eps, sde, (4, 2), steps=100, corrector_steps=0, generator=torch.Generator().manual_seed(1), callback=check)
    assert checked == list(range(100))


def test_annealed_langevin_takes_the_contract_keywords():
    sigmas = torch.tensor([1.0, 0.5])
    x_T = torch.zeros(3, 2)
    calls = []
    out = annealed_langevin(lambda x, sigma: -x, sigmas, (3, 2), steps=3, x_T=x_T, generator=torch.Generator().manual_seed(0),
                            callback=lambda call, x, denoised: calls.append(call))
    assert isinstance(out, torch.Tensor) and calls == list(range(6))
    with pytest.raises(TypeError, match="callback must be callable"):
        annealed_langevin(lambda x, sigma: -x, sigmas, (3, 2), callback=3)


def test_pc_on_a_vp_sde_refuses_steps_that_make_its_corrector_step_negative():
    with pytest.raises(ValueError, match=r"steps=10 is too few for PC on this VP SDE: .* steps >= 20"):
        sample_pc(lambda x, t: torch.tanh(x), VPSDE(), (4, 2), steps=10)
    assert torch.isfinite(sample_pc(lambda x, t: torch.tanh(x), VPSDE(), (4, 2), steps=20)).all()
