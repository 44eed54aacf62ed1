import math
import subprocess
import sys

import pytest
import torch

from ppl_dgm.diffusion.schedules import linear_schedule
from ppl_dgm.sde import VESDE, VPSDE, SubVPSDE, score_fn

SDES = [VPSDE(), SubVPSDE(), VESDE(sigma_max=5.0)]


def simulate_forward(sde, x0, t_end, steps, generator):
    """Euler–Maruyama on the forward SDE (a test reference only), from t = 0 to t_end."""
    x, dt = x0.clone(), t_end / steps
    for i in range(steps):
        t = torch.full((x.shape[0],), i * dt, dtype=torch.float64)
        drift, diffusion = sde.sde(x, t)
        x = x + drift * dt + diffusion[:, None] * math.sqrt(dt) * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return x


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_marginal_prob_matches_simulated_forward_sde(sde):
    generator = torch.Generator().manual_seed(0)
    n = 20000
    x0 = torch.tensor([1.5, -0.5], dtype=torch.float64).repeat(n, 1)
    t_end = 0.5
    x = simulate_forward(sde, x0, t_end, 400, generator)
    mean, std = sde.marginal_prob(x0[:1], t_end)
    if isinstance(sde, VESDE):  # the SDE starts at σ(0) = σ_min, the paper's p_0t absorbs it: Var = σ(t)² − σ_min²
        std = (std**2 - sde.sigma_min**2).sqrt()
    assert torch.allclose(x.mean(0), mean[0], atol=5 * float(std) / math.sqrt(n) + 2e-3)
    assert torch.allclose(x.std(0), std.expand(2), rtol=0.03)


def test_closed_forms_of_drift_diffusion_and_prior():
    x = torch.tensor([[2.0, -1.0]], dtype=torch.float64)
    drift, diffusion = VPSDE().sde(x, 0.5)
    beta = 0.1 + 0.5 * 19.9
    assert torch.allclose(drift, -0.5 * beta * x) and math.isclose(float(diffusion), math.sqrt(beta))
    _, g_sub = SubVPSDE().sde(x, 0.5)
    assert math.isclose(float(g_sub) ** 2, beta * (1 - math.exp(-2 * (0.1 * 0.5 + 0.5 * 0.5**2 * 19.9))), rel_tol=1e-12)
    ve = VESDE()
    drift, diffusion = ve.sde(x, 0.3)
    sigma = 0.01 * 5000**0.3
    assert drift.abs().max() == 0 and math.isclose(float(diffusion), sigma * math.sqrt(2 * math.log(5000)), rel_tol=1e-12)
    z = torch.randn(5, 3, dtype=torch.float64)
    for sde, std in ((VPSDE(), 1.0), (ve, 50.0)):
        expected = torch.distributions.Normal(0.0, std).log_prob(z).sum(1)
        assert torch.allclose(sde.prior_logp(z), expected)
    draws = ve.prior_sampling((20000, 1), torch.Generator().manual_seed(0))
    assert abs(float(draws.std()) - 50.0) < 1.5


def test_vpsde_is_the_continuous_limit_of_ddpms_linear_schedule():
    schedule = linear_schedule(1000)
    steps = torch.tensor([1, 10, 100, 500, 1000])
    coefficient, std = VPSDE()._mean_coefficient_std(steps.double() / 1000)
    assert torch.allclose(coefficient, schedule.alpha_bar[steps - 1].sqrt(), atol=2e-3)
    assert torch.allclose(std, (1 - schedule.alpha_bar[steps - 1]).sqrt(), atol=2e-3)


def test_score_fn_divides_eps_by_the_marginal_std():
    sde = VPSDE()
    score = score_fn(lambda x, t: torch.ones_like(x), sde)
    t = torch.tensor([0.2, 0.9], dtype=torch.float64)
    _, std = sde.marginal_prob(torch.zeros(2, 3), t)
    assert torch.allclose(score(torch.zeros(2, 3), t), -1 / std[:, None].expand(2, 3))


def test_bad_arguments_raise_clear_errors():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"t must lie in \[0, T=1.0\], got values in \[-0.1, 0.5\]"):
        VPSDE().marginal_prob(x, torch.tensor([-0.1, 0.5]))
    with pytest.raises(ValueError, match=r"t must lie in \[0, T=1.0\]"):
        VESDE().sde(x, 1.5)
    with pytest.raises(ValueError, match=r"t must be a float or a float tensor of shape \(2,\)"):
        VPSDE().sde(x, torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="beta_max must exceed beta_min=0.1, got 0.05"):
        VPSDE(0.1, 0.05)
    with pytest.raises(ValueError, match="sigma_min must be a positive finite float, got -1"):
        VESDE(sigma_min=-1)
    with pytest.raises(ValueError, match=r"shape must be a sequence of positive ints \(B, ...\), got \(0, 2\)"):
        VPSDE().prior_sampling((0, 2))
    with pytest.raises(TypeError, match="sde must be an SDE"):
        score_fn(lambda x, t: x, "vp")


def test_import_ppl_dgm_sde_does_not_load_torchsde_or_torchdiffeq():
    code = "import sys, ppl_dgm.sde; print(sorted(m for m in ('torchsde', 'torchdiffeq', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
