"""The procedurally generated sprite dataset: deterministic, each factor moves the image the way it says."""
import pytest
import torch

from ppl_dgm.data import load_dataset
from ppl_dgm.data.shapes import FACTOR_SIZES, render_shapes, shapes_dataset


def one(shape=0, scale=5, orientation=0, x=8, y=8):
    return render_shapes(torch.tensor([[shape, scale, orientation, x, y]]))[0, 0]


def test_dataset_is_seeded_binary_and_uniform_over_factors():
    a, b = shapes_dataset("test", size=500), shapes_dataset("test", size=500)
    assert torch.equal(a.tensors[0], b.tensors[0]) and torch.equal(a.tensors[1], b.tensors[1])
    assert not torch.equal(shapes_dataset("train", size=500).tensors[1], a.tensors[1])  # independent splits
    images, factors = shapes_dataset("train", size=3000).tensors
    assert images.shape == (3000, 1, 32, 32) and set(images.unique().tolist()) == {0.0, 1.0}
    for k, size in enumerate(FACTOR_SIZES):
        counts = torch.bincount(factors[:, k], minlength=size).float()
        assert counts.min() > 0.6 * 3000 / size  # every value occurs, roughly uniformly
    assert (images.flatten(1).sum(1) > 0).all()  # no empty canvas
    x, y = load_dataset("shapes", "test").tensors
    assert x.shape == (4000, 1, 32, 32) and torch.equal(y, shapes_dataset("test").tensors[1][:, 0])


def test_factors_act_as_named():
    # scale grows the area (averaged over positions, as rasterization snaps to pixels); the square's area is
    # (2·half)² pixels up to rasterization
    areas = [float(sum(one(scale=s, x=x, y=x).sum() for x in range(16))) / 16 for s in range(6)]
    assert all(b > a for a, b in zip(areas, areas[1:])), areas
    assert areas[-1] == pytest.approx((2 * 32 * 0.2) ** 2, rel=0.1)
    # x and y move the centroid right and down, by equal steps
    def centroid(image):
        rows, cols = image.nonzero(as_tuple=True)
        return float(cols.float().mean()), float(rows.float().mean())
    xs = [centroid(one(x=i))[0] for i in (0, 5, 10, 15)]
    ys = [centroid(one(y=i))[1] for i in (0, 5, 10, 15)]
    assert all(b > a for a, b in zip(xs, xs[1:])) and all(b > a for a, b in zip(ys, ys[1:]))
    # shapes differ at equal size and place; a rotated square is not the unrotated one
    assert not torch.equal(one(shape=0), one(shape=1)) and not torch.equal(one(shape=1), one(shape=2))
    assert not torch.equal(one(orientation=0), one(orientation=5))


def test_bad_factors():
    with pytest.raises(ValueError, match=r"factor indices must lie in \[0, size\)"):
        render_shapes(torch.tensor([[3, 0, 0, 0, 0]]))
    with pytest.raises(ValueError, match=r"factors must be an integer tensor \(N, 5\)"):
        render_shapes(torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="split='val' is not known"):
        shapes_dataset("val")
