"""MIG (Chen et al. 2018) against cases whose value is known."""
import math

import numpy as np
import pytest
import torch

from ppl_dgm.metrics.disentanglement import mutual_information_gap


def factors(n=4000, sizes=(4, 5), seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(k, (n,), generator=generator) for k in sizes], 1)


def test_one_dimension_per_factor_gives_mig_one():
    v = factors()
    codes = torch.cat([v.double() + 0.01 * torch.rand(v.shape, dtype=torch.float64), torch.rand(len(v), 1, dtype=torch.float64)], 1)
    result = mutual_information_gap(codes, v)
    assert result["mig"] == pytest.approx(1.0, abs=0.02)
    # I(z_j; v_j) = H(v_j) ≈ log of the factor size for uniform factors
    assert result["entropy"][0] == pytest.approx(math.log(4), abs=0.01)
    assert result["mutual_information"][0][0] == pytest.approx(result["entropy"][0], abs=1e-9)


def test_a_factor_shared_by_two_dimensions_gives_gap_zero():
    v = factors()
    codes = torch.stack([v[:, 0].double(), v[:, 0].double() * 2 + 1, v[:, 1].double()], 1)
    result = mutual_information_gap(codes, v)
    assert result["per_factor"][0] == pytest.approx(0.0, abs=1e-9)  # two equal top-MI dimensions
    assert result["per_factor"][1] == pytest.approx(1.0, abs=2e-3)  # less the sampling MI with dims 0, 1
    assert result["mig"] == pytest.approx(0.5, abs=2e-3)


def test_independent_noise_codes_give_mig_near_zero():
    v = factors(n=20000)
    result = mutual_information_gap(torch.randn(20000, 4, generator=torch.Generator().manual_seed(1)), v)
    assert result["mig"] < 0.01


def test_mutual_information_matches_a_hand_computation():
    """A 2x2 table: I = Σ p(a, b) log p(a, b)/(p(a) p(b))."""
    v = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1], [1, 1], [0, 0]])
    codes = torch.tensor([[0.0, 0.0], [0.0, 5.0], [1.0, 0.0], [1.0, 5.0], [1.0, 5.0], [1.0, 0.0]])
    result = mutual_information_gap(codes, v, bins=2)
    joint = np.array([[2, 1], [0, 3]]) / 6  # factor 0 (rows) against code 0 (columns)
    pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    mask = joint > 0
    expected = float((joint[mask] * np.log(joint[mask] / (pa @ pb)[mask])).sum())
    assert result["mutual_information"][0][0] == pytest.approx(expected, abs=1e-12)


def test_bad_inputs():
    v = factors(n=10)
    with pytest.raises(ValueError, match="MIG needs at least 2 latent dimensions"):
        mutual_information_gap(torch.zeros(10, 1), v)
    with pytest.raises(ValueError, match="same N >= 2 rows, got 9 and 10"):
        mutual_information_gap(torch.zeros(9, 3), v)
    with pytest.raises(ValueError, match="codes hold NaN or inf"):
        mutual_information_gap(torch.full((10, 3), float("nan")), v)
    with pytest.raises(ValueError, match="every factor must vary"):
        mutual_information_gap(torch.rand(10, 3), torch.zeros(10, 2, dtype=torch.long))
