"""A procedurally generated sprite dataset with known factors of variation, in the spirit of dSprites (Matthey et al.
2017), rendered by the library from a seed (nothing is downloaded).

Each 32x32 binary image holds one white shape on black; its five independent factors are drawn uniformly:
shape (square, ellipse, triangle), scale (6 values, half-widths from 0.08 to 0.2 of the side), orientation (10 values in [0, π/2), a quarter
turn so no value repeats the square's image), and x and y position (16 values each). A pixel is on when its centre
falls inside the shape.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from ppl_dgm._checks import check_positive_int, check_seed

__all__ = ["FACTOR_NAMES", "FACTOR_SIZES", "render_shapes", "shapes_dataset", "SHAPES_SIDE"]

FACTOR_NAMES = ("shape", "scale", "orientation", "x", "y")
FACTOR_SIZES = (3, 6, 10, 16, 16)
SHAPES_SIDE = 32
_SPLIT_SIZES = {"train": 20000, "test": 4000}
_SPLIT_SEEDS = {"train": 0, "test": 1}  # independent draws for the two splits


def render_shapes(factors: Tensor, side: int = SHAPES_SIDE) -> Tensor:
    """Binary images (N, 1, side, side) of factor indices (N, 5) ordered as :data:`FACTOR_NAMES`."""
    if not isinstance(factors, Tensor) or factors.ndim != 2 or factors.shape[1] != len(FACTOR_NAMES) or factors.is_floating_point():
        raise ValueError(f"factors must be an integer tensor (N, {len(FACTOR_NAMES)}) ordered as {FACTOR_NAMES}")
    sizes = torch.tensor(FACTOR_SIZES)
    if (factors < 0).any() or (factors >= sizes).any():
        raise ValueError(f"factor indices must lie in [0, size) for sizes {FACTOR_SIZES}")
    side = check_positive_int("side", side)
    shape, scale, orientation, x, y = factors.T
    half = side * (0.08 + 0.12 * scale.double() / (FACTOR_SIZES[1] - 1))  # half-width: 0.08·side to 0.2·side
    angle = orientation.double() * (math.pi / 2) / FACTOR_SIZES[2]
    margin = side * 0.2
    centre_x = margin + x.double() * (side - 2 * margin) / (FACTOR_SIZES[3] - 1)
    centre_y = margin + y.double() * (side - 2 * margin) / (FACTOR_SIZES[4] - 1)
    coords = torch.arange(side, dtype=torch.float64) + 0.5  # pixel centres
    dx = coords.view(1, 1, side) - centre_x.view(-1, 1, 1)
    dy = coords.view(1, side, 1) - centre_y.view(-1, 1, 1)
    cos, sin = angle.cos().view(-1, 1, 1), angle.sin().view(-1, 1, 1)
    u = (cos * dx + sin * dy) / half.view(-1, 1, 1)  # the pixel in the shape's own frame, unit size
    v = (-sin * dx + cos * dy) / half.view(-1, 1, 1)
    square = (u.abs() <= 1) & (v.abs() <= 1)
    ellipse = u**2 + (v / 0.6) ** 2 <= 1
    triangle = (v <= 0.8) & (v >= 1.6 * u.abs() - 0.9)  # apex up, base at v = 0.8
    kind = shape.view(-1, 1, 1)
    inside = torch.where(kind == 0, square, torch.where(kind == 1, ellipse, triangle))
    return inside.unsqueeze(1).float()


def shapes_dataset(split: str = "train", size: int | None = None, seed: int = 0) -> TensorDataset:
    """(images (N, 1, 32, 32) in {0, 1}, factors (N, 5) int64): ``size`` draws (20,000 train / 4,000 test by default)
    of uniformly random factors, from a generator seeded by the split and ``seed``."""
    if split not in _SPLIT_SIZES:
        raise ValueError(f"split={split!r} is not known; expected one of {tuple(_SPLIT_SIZES)}")
    size = _SPLIT_SIZES[split] if size is None else check_positive_int("size", size)
    generator = torch.Generator().manual_seed(check_seed(seed) * 2 + _SPLIT_SEEDS[split])
    factors = torch.stack([torch.randint(n, (size,), generator=generator) for n in FACTOR_SIZES], 1)
    return TensorDataset(render_shapes(factors), factors)
