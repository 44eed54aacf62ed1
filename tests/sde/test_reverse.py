import pytest
import torch

from ppl_dgm.sde import VESDE, VPSDE, SubVPSDE, sample_pc, sample_reverse_sde
from .conftest import COVARIANCE, MEAN, GaussianScoreEps, moment_errors


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE()], ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("method,steps", [("euler", 400), ("srk", 100)])
def test_reverse_sde_reproduces_the_data_moments(sde, method, steps):
    model = GaussianScoreEps(sde, MEAN, COVARIANCE)
    x_T = model.marginal(sde.T).sample((10000,))
    samples = sample_reverse_sde(model, sde, x_T.shape, steps=steps, method=method, x_T=x_T, generator=torch.Generator().manual_seed(0))
    mean_z, cov_z = moment_errors(samples, model.marginal(1e-3))
    assert mean_z < 4.5 and cov_z < 4.5


def test_heun_reproduces_the_data_moments():
    sde = VPSDE()
    model = GaussianScoreEps(sde, MEAN, COVARIANCE)
    x_T = model.marginal(1.0).sample((10000,))
    samples = sample_reverse_sde(model, sde, x_T.shape, steps=100, method="heun", x_T=x_T, generator=torch.Generator().manual_seed(0))
    assert max(moment_errors(samples, model.marginal(1e-3))) < 4.5


def test_reverse_sde_counts_steps_is_seeded_and_leaves_inputs_alone():
    sde = VPSDE()
    model = GaussianScoreEps(sde, MEAN, COVARIANCE)
    x_T = torch.randn(5, 2, dtype=torch.float64)
    before = x_T.clone()
    first = sample_reverse_sde(model, sde, (5, 2), steps=7, x_T=x_T, generator=torch.Generator().manual_seed(3))
    assert model.calls == 6 + 1  # 6 Euler steps (torchsde's shape check is the first one's, cached) + the noise-free last step: no sliver step
    model.calls = 0
    sample_reverse_sde(model, sde, (5, 2), steps=7, method="srk", x_T=x_T, generator=torch.Generator().manual_seed(3))
    assert model.calls == 2 * 6 + 1  # SRA1: two drift evaluations per step (torchsde asks for three, one repeated)
    second = sample_reverse_sde(model, sde, (5, 2), steps=7, x_T=x_T, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, second) and torch.equal(x_T, before)
    other = sample_reverse_sde(model, sde, (5, 2), steps=7, x_T=x_T, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(first, other)


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE()], ids=lambda s: type(s).__name__)
def test_pc_sampler_reproduces_the_data_moments(sde):
    model = GaussianScoreEps(sde, MEAN, COVARIANCE)
    x_T = model.marginal(sde.T).sample((10000,))
    samples = sample_pc(model, sde, x_T.shape, steps=200, x_T=x_T, generator=torch.Generator().manual_seed(0))
    assert max(moment_errors(samples, model.marginal(1e-3))) < 4.5


def test_pc_is_seeded_and_counts_calls():
    sde = VESDE()
    model = GaussianScoreEps(sde, MEAN, COVARIANCE)
    a = sample_pc(model, sde, (4, 2), steps=5, corrector_steps=2, generator=torch.Generator().manual_seed(0))
    assert model.calls == 5 * 3
    b = sample_pc(model, sde, (4, 2), steps=5, corrector_steps=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_bad_arguments_raise_clear_errors():
    sde = VPSDE()
    model = GaussianScoreEps(sde, MEAN, COVARIANCE)
    with pytest.raises(ValueError, match="snr must be a positive float .*, got 0"):
        sample_pc(model, sde, (2, 2), snr=0)
    with pytest.raises(ValueError, match="snr must be a positive float .*, got -0.1"):
        sample_pc(model, sde, (2, 2), snr=-0.1)
    with pytest.raises(ValueError, match="method='milstein' is not known"):
        sample_reverse_sde(model, sde, (2, 2), method="milstein")
    with pytest.raises(ValueError, match="steps must be a positive int, got 0"):
        sample_reverse_sde(model, sde, (2, 2), steps=0)
    with pytest.raises(ValueError, match=r"eps must be a float in \(0, T=1.0\), got 1.0"):
        sample_pc(model, sde, (2, 2), eps=1.0)
    with pytest.raises(ValueError, match=r"shape must be a sequence of positive ints"):
        sample_reverse_sde(model, sde, (2, -2))
    with pytest.raises(TypeError, match="sde must be an SDE"):
        sample_pc(model, "vp", (2, 2))
