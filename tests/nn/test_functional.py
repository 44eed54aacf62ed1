import pytest
import torch

from ppl_dgm.nn.functional import expand_like, per_sample_time


def test_expand_like_appends_singleton_dims():
    t = torch.tensor([1.0, 2.0, 3.0])
    x = torch.zeros(3, 2, 4, 5)
    expanded = expand_like(t, x)
    assert expanded.shape == (3, 1, 1, 1)
    torch.testing.assert_close((expanded * torch.ones_like(x))[:, 1, 3, 4], t)
    assert expand_like(t, torch.zeros(3, 7)).shape == (3, 1)
    assert expand_like(torch.zeros(3, 2), x).shape == (3, 2, 1, 1)


def test_expand_like_rejects_more_dims_than_x():
    with pytest.raises(ValueError, match=r"t must have at most x.ndim=1 dims"):
        expand_like(torch.zeros(3, 2), torch.zeros(3))


def test_per_sample_time_broadcasts_scalars_and_keeps_batches():
    x = torch.zeros(4, 2, dtype=torch.float64)
    from_float = per_sample_time(0.25, x)
    assert from_float.shape == (4,) and from_float.dtype == torch.float64
    torch.testing.assert_close(from_float, torch.full((4,), 0.25, dtype=torch.float64))
    torch.testing.assert_close(per_sample_time(torch.tensor(0.5), x), torch.full((4,), 0.5))
    t = torch.rand(4)
    assert per_sample_time(t, x) is t
    # Half-precision x still gets float32 time: half cannot tell 0.999 from 1.0.
    assert per_sample_time(0.999, x.half()).dtype == torch.float32


def test_per_sample_time_errors():
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match=r"t must be a float, a 0-dim tensor or of shape \(4,\).*got shape \(3,\)"):
        per_sample_time(torch.rand(3), x)
    with pytest.raises(TypeError, match=r"t must be a float time in \(0, 1\].*int64"):
        per_sample_time(torch.arange(4), x)
