import math

import pyro
import pytest
import torch
from torch.distributions import Normal

from ppl_dgm.vae.likelihoods import (
    LIKELIHOOD_NAMES,
    DiscretizedGaussian,
    DiscretizedGaussianLikelihood,
    make_likelihood,
)

LEVELS = torch.arange(256, dtype=torch.float64) * 2 / 255 - 1  # the 256 bin centres on [-1, 1]


def direct_probabilities(loc, scale):
    """Ho et al. 2020, eq. 13 by hand: Φ differences over bin edges x ± 1/255, edge bins to ±∞."""
    normal = Normal(torch.tensor(loc, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64))
    upper = torch.where(LEVELS > 0.999, torch.tensor(math.inf, dtype=torch.float64), LEVELS + 1 / 255)
    lower = torch.where(LEVELS < -0.999, torch.tensor(-math.inf, dtype=torch.float64), LEVELS - 1 / 255)
    return normal.cdf(upper) - normal.cdf(lower)


@pytest.mark.parametrize("loc, scale", [(0.0, 0.1), (0.37, 0.02), (-0.9, 0.5), (0.999, 3.0), (-1.2, 0.004)])
def test_probabilities_sum_to_one_and_equal_cdf_differences(loc, scale):
    distribution = DiscretizedGaussian(torch.full((256,), loc, dtype=torch.float64), torch.full((256,), scale, dtype=torch.float64))
    probabilities = distribution.log_prob(LEVELS).exp()
    torch.testing.assert_close(probabilities.sum(), torch.tensor(1.0, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(probabilities, direct_probabilities(loc, scale), rtol=1e-9, atol=1e-14)


def test_log_prob_is_finite_and_accurate_for_extreme_loc_and_scale():
    # A bin 30 standard deviations away: Φ differences underflow to 0 in a direct computation.
    loc = torch.tensor([0.9, -0.9, 0.0, 0.5, 0.0, 50.0], dtype=torch.float32)
    scale = torch.tensor([1e-3, 1e-3, 1e-4, 1e-2, 1e3, 0.1], dtype=torch.float32)
    value = torch.tensor([-1.0, 1.0, 2 / 255 - 1, -0.2, 0.0, 1.0])
    log_prob = DiscretizedGaussian(loc, scale).log_prob(value)
    assert torch.isfinite(log_prob).all(), log_prob
    # far in the lower tail of a middle bin: log Φ difference ≈ log φ(z) − log z at z = |x − μ| / σ ...
    z = (0.5 - (-0.2 + 1 / 255)) / 0.01
    assert log_prob[3].item() == pytest.approx(-0.5 * z**2 - math.log(z * math.sqrt(2 * math.pi)), rel=1e-3)
    # a huge scale spreads mass evenly: each middle bin has probability ≈ (2/255) φ(0) / σ
    assert log_prob[4].item() == pytest.approx(math.log(2 / 255 / (1e3 * math.sqrt(2 * math.pi))), rel=1e-3)
    # a loc far above the top edge puts all mass in the top bin
    assert log_prob[5].item() == pytest.approx(0.0, abs=1e-6)
    gradient = torch.autograd.grad(DiscretizedGaussian(loc.requires_grad_(), scale).log_prob(value).sum(), loc)[0]
    assert torch.isfinite(gradient).all()


def test_sample_returns_bin_centres_with_the_right_frequencies():
    torch.manual_seed(0)
    distribution = DiscretizedGaussian(torch.tensor(0.1), torch.tensor(0.01))
    draws = distribution.sample((20000,))
    levels = torch.round((draws.double() + 1) * 255 / 2)
    torch.testing.assert_close(draws.double(), levels * 2 / 255 - 1, rtol=0, atol=1e-6)
    counts = torch.bincount(levels.long(), minlength=256).double() / draws.numel()
    expected = direct_probabilities(0.1, 0.01)
    assert (counts - expected).abs().max() < 4 * (expected * (1 - expected) / draws.numel()).sqrt().max()


def test_likelihood_module_on_unit_range_images_and_registration():
    assert "discretized_gaussian" in LIKELIHOOD_NAMES
    likelihood = make_likelihood("discretized_gaussian", (1, 2, 2))
    assert isinstance(likelihood, DiscretizedGaussianLikelihood)
    x = torch.tensor([0.0, 1.0, 128 / 255, 17 / 255]).view(1, 1, 2, 2)
    output = torch.tensor([0.1, 0.9, 0.5, 0.05]).view(1, 1, 2, 2)
    log_prob = likelihood(output).log_prob(x)
    assert log_prob.shape == (1,)
    # the same pixels mapped to [-1, 1] with loc and scale doubled give the same probabilities
    reference = DiscretizedGaussian(2 * output.double() - 1, 2 * torch.full_like(output.double(), 0.1)).log_prob(2 * x.double() - 1).sum()
    torch.testing.assert_close(log_prob.double().squeeze(), reference, rtol=1e-5, atol=1e-5)
    assert list(dict(likelihood.named_parameters())) == ["raw_scale"]


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="low must be below high"):
        DiscretizedGaussian(torch.zeros(2), torch.ones(2), low=1.0, high=-1.0)
    pyro.enable_validation(True)
    with pytest.raises(ValueError):
        DiscretizedGaussian(torch.zeros(2), -torch.ones(2), validate_args=True)
    with pytest.raises(ValueError):
        DiscretizedGaussian(torch.zeros(2), torch.ones(2), validate_args=True).log_prob(torch.tensor([0.0, 1.5]))
