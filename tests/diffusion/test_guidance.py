import pytest
import torch

from ppl_dgm.diffusion import drop_labels, guided_eps, linear_schedule, sample_ancestral, sample_ddim
from ppl_dgm.nn import TimeConditionedMLP

from .conftest import LabelShiftEps


def test_guided_eps_is_eq6_in_one_batched_call():
    net = LabelShiftEps()
    x, t, y = torch.randn(3, 2), torch.full((3,), 0.5), torch.tensor([0, 4, 9])
    w = 2.5
    guided = guided_eps(net, y, w)(x, t)
    # Ho & Salimans 2022, eq. 6: (1 + w) ε(x, t, y) − w ε(x, t, ∅)
    expected = (1 + w) * (x * 0.5 + (y + 1).float().view(-1, 1)) - w * (x * 0.5)
    torch.testing.assert_close(guided, expected)
    assert net.batch_sizes == [6]
    torch.testing.assert_close(guided_eps(net, y, 0.0)(x, t), x * 0.5 + (y + 1).float().view(-1, 1))
    torch.testing.assert_close(guided_eps(net, None)(x, t), x * 0.5)


def test_drop_labels_replaces_a_fraction_p_by_the_null_label():
    y = torch.arange(10).repeat(1000)
    dropped = drop_labels(y, 0.1, generator=torch.Generator().manual_seed(0))
    fraction = (dropped == -1).float().mean().item()
    assert abs(fraction - 0.1) < 4 * (0.1 * 0.9 / y.numel()) ** 0.5
    kept = dropped != -1
    assert torch.equal(dropped[kept], y[kept])
    assert torch.equal(y, torch.arange(10).repeat(1000))  # not mutated
    assert torch.equal(drop_labels(y, 0.0), y) and (drop_labels(y, 1.0) == -1).all()


def test_both_samplers_take_labels_and_guidance_with_a_class_conditional_network():
    schedule = linear_schedule(10)
    net = TimeConditionedMLP(2, hidden=(16,), time_embedding_dim=8, num_classes=3)
    y = torch.tensor([0, 1, 2, 2])
    before = y.clone()
    plain = sample_ancestral(net, schedule, (4, 2), y=y, generator=torch.Generator().manual_seed(0))
    guided = sample_ancestral(net, schedule, (4, 2), y=y, guidance_scale=3.0, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(plain, guided)
    ddim = sample_ddim(net, schedule, (4, 2), steps=5, y=y, guidance_scale=3.0, generator=torch.Generator().manual_seed(0))
    assert ddim.shape == (4, 2) and torch.isfinite(ddim).all()
    assert torch.equal(y, before)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="p_uncond must be a probability in \\[0, 1\\], got 1.5"):
        drop_labels(torch.zeros(3, dtype=torch.long), 1.5)
    with pytest.raises(ValueError, match="guidance_scale must be a float >= 0"):
        guided_eps(LabelShiftEps(), torch.zeros(2, dtype=torch.long), -1.0)
    with pytest.raises(ValueError, match="guidance_scale=2.0 needs class labels y"):
        sample_ddim(LabelShiftEps(), linear_schedule(10), (2, 2), steps=2, guidance_scale=2.0)
