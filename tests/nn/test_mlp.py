import math

import pytest
import torch
from torch import nn

from ppl_dgm.nn.mlp import MLP, TimeConditionedMLP


def test_mlp_shapes_and_flattening():
    mlp = MLP(12, 5, hidden=(8, 8))
    assert mlp(torch.randn(4, 12)).shape == (4, 5)
    assert mlp(torch.randn(4, 3, 2, 2)).shape == (4, 5)
    assert MLP(3, 2, hidden=())(torch.randn(4, 3)).shape == (4, 2)


def test_mlp_output_activation():
    probabilities = MLP(3, 2, hidden=(4,), output_activation=nn.Sigmoid)(torch.randn(50, 3) * 10)
    assert ((probabilities > 0) & (probabilities < 1)).all()


def test_mlp_errors():
    with pytest.raises(ValueError, match=r"in_features must be a positive int, got 0"):
        MLP(0, 2)
    with pytest.raises(ValueError, match=r"hidden must be a sequence of positive ints, got \(8, -1\)"):
        MLP(3, 2, hidden=(8, -1))
    with pytest.raises(TypeError, match=r"activation must be an nn.Module class such as nn.SiLU"):
        MLP(3, 2, activation=torch.relu)


def test_time_conditioned_mlp_shapes_and_time_dependence():
    network = TimeConditionedMLP(2, hidden=(16, 16), time_embedding_dim=8)
    x = torch.randn(6, 2)
    early, late = network(x, torch.full((6,), 0.1)), network(x, 0.9)
    assert early.shape == x.shape
    assert not torch.allclose(early, late)
    torch.testing.assert_close(network(x, 0.1), early)


def test_time_conditioned_mlp_class_conditioning():
    network = TimeConditionedMLP(2, hidden=(16,), time_embedding_dim=8, num_classes=3)
    x, t = torch.randn(4, 2), torch.rand(4)
    unconditional = network(x, t)
    torch.testing.assert_close(network(x, t, torch.full((4,), -1)), unconditional)
    assert not torch.allclose(network(x, t, torch.tensor([0, 1, 2, 0])), unconditional)


def test_time_conditioned_mlp_errors():
    network = TimeConditionedMLP(2, hidden=(16,), time_embedding_dim=8)
    with pytest.raises(ValueError, match=r"y was given but this TimeConditionedMLP has num_classes=None"):
        network(torch.randn(3, 2), 0.5, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 2\), got shape \(3, 4\)"):
        network(torch.randn(3, 4), 0.5)


def test_fourier_features_are_x_then_cos_and_sin_of_fixed_gaussian_frequencies():
    from ppl_dgm.nn import FourierFeatures

    torch.manual_seed(0)
    features = FourierFeatures(2, 64, scale=3.0)
    x = torch.randn(5, 2)
    angles = 2 * math.pi * x @ features.frequencies.T  # Tancik et al. 2020, eq. 6
    assert torch.allclose(features(x), torch.cat([x, angles.cos(), angles.sin()], dim=1), atol=1e-6)
    assert features.out_features == 130 and "frequencies" in features.state_dict()
    assert not any(p is features.frequencies for p in features.parameters())  # a buffer: never trained
    assert 2.5 < features.frequencies.std() < 3.5
    for bad in (0.0, -1.0, float("nan"), True):
        with pytest.raises(ValueError, match="scale must be a positive finite number"):
            FourierFeatures(2, 4, scale=bad)


def test_time_conditioned_mlp_with_fourier_features_and_without_keeps_its_old_parameters():
    plain = TimeConditionedMLP(2, hidden=(16,), time_embedding_dim=8)
    with_features = TimeConditionedMLP(2, hidden=(16,), time_embedding_dim=8, fourier_features=4)
    assert set(plain.state_dict()) < set(with_features.state_dict())  # checkpoints of plain nets still load
    assert with_features.hidden_layers[0].in_features == 2 + 8
    assert with_features(torch.randn(3, 2), torch.rand(3)).shape == (3, 2)
    with pytest.raises(ValueError, match="fourier_features must be an int >= 0"):
        TimeConditionedMLP(2, fourier_features=-1)
