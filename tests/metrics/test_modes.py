import pytest
import torch

from ppl_dgm.data import toy2d, toy2d_modes
from ppl_dgm.metrics.modes import mode_coverage


def test_true_samples_cover_every_mode_with_high_quality():
    for name, modes in (("ring8", 8), ("grid25", 25)):
        samples = toy2d(name, 2500, generator=torch.Generator().manual_seed(0))
        result = mode_coverage(samples, name)
        assert result["modes_covered"] == result["num_modes"] == modes
        # P(‖N(0, σ²I₂)‖ ≤ 3σ) = 1 − exp(−9/2) = 0.9889
        assert result["high_quality_fraction"] == pytest.approx(0.9889, abs=0.01)


def test_collapsed_and_off_mode_samples():
    centers, std = toy2d_modes("ring8")
    generator = torch.Generator().manual_seed(1)
    collapsed = centers[[0, 3]].repeat(1250, 1) + std * torch.randn(2500, 2, generator=generator)
    result = mode_coverage(collapsed, centers, std)
    assert result["modes_covered"] == 2 and result["high_quality_fraction"] > 0.97
    between = 0.5 * (centers[0] + centers[1])  # halfway between two modes: never high quality
    result = mode_coverage(between.expand(100, 2), "ring8")
    assert result == {"modes_covered": 0, "num_modes": 8, "high_quality_fraction": 0.0}
    few = centers.repeat_interleave(torch.tensor([19, 20, 0, 0, 0, 0, 0, 0]), dim=0)
    assert mode_coverage(few, "ring8")["modes_covered"] == 1  # 19 < min_count = 20
    assert mode_coverage(few, "ring8", min_count=1)["modes_covered"] == 2


def test_mode_coverage_rejects_bad_input():
    with pytest.raises(ValueError, match=r"samples must have shape \(N, 2\) with N >= 1, got \(4, 3\)"):
        mode_coverage(torch.zeros(4, 3), "ring8")
    with pytest.raises(ValueError, match="std must be a float > 0, got -1.0"):
        mode_coverage(torch.zeros(4, 2), torch.zeros(3, 2), -1.0)
    with pytest.raises(ValueError, match="min_count must be an int >= 1, got 0"):
        mode_coverage(torch.zeros(4, 2), "ring8", min_count=0)
