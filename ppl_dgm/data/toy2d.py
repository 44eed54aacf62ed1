"""Two-dimensional toy densities: samplers and, where one exists, the exact log-density.

The FFJORD shapes follow Grathwohl et al. 2019 (`lib/toy_data.py` of rtqichen/ffjord) so that
results compare with the literature; "ring8" and "grid25" are the mode-coverage benchmarks of
the GAN literature (e.g. Srivastava et al. 2017, VEEGAN). All randomness comes from `generator`.
"""

from __future__ import annotations

import functools
import math
import numbers

import torch
from torch import Tensor
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

__all__ = ["TOY2D_NAMES", "toy2d", "toy2d_log_prob", "toy2d_modes"]

TOY2D_NAMES = (
    "8gaussians",
    "checkerboard",
    "moons",
    "circles",
    "swissroll",
    "pinwheel",
    "2spirals",
    "ring8",
    "grid25",
    "gaussian",
)
_CLOSED_FORM_NAMES = ("gaussian", "ring8", "grid25", "8gaussians", "checkerboard")
_MIXTURE_NAMES = ("8gaussians", "ring8", "grid25")

# Grathwohl et al. 2019 (FFJORD) toy data: 8gaussians scale and the literal divisor 1.414.
_EIGHT_GAUSSIANS_SCALE = 4.0
_EIGHT_GAUSSIANS_DIVISOR = 1.414
_CHECKERBOARD_LOG_AREA = math.log(32.0)  # 8 squares of side 2


def _check_name(name: object, accepted: tuple[str, ...], what: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, one of {accepted}; got {name!r} of type {type(name).__name__}")
    if name not in accepted:
        raise ValueError(f"name={name!r} is not {what}; expected one of {accepted}")


def _mode_centers(name: str, dtype: torch.dtype, device: torch.device | str) -> tuple[Tensor, float]:
    """Centers (K, 2) and isotropic std of the Gaussian mixtures 8gaussians, ring8, grid25."""
    if name == "8gaussians":
        # FFJORD: centers scale * (±1, 0), (0, ±1), (±1/√2, ±1/√2); point = (center + 0.5 z) / 1.414
        diagonal = 1.0 / math.sqrt(2.0)
        directions = torch.tensor(
            [[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0],
             [diagonal, diagonal], [diagonal, -diagonal], [-diagonal, diagonal], [-diagonal, -diagonal]],
            dtype=torch.float64,
        )
        centers = directions * (_EIGHT_GAUSSIANS_SCALE / _EIGHT_GAUSSIANS_DIVISOR)
        std = 0.5 / _EIGHT_GAUSSIANS_DIVISOR
    elif name == "ring8":
        angles = 2.0 * math.pi * torch.arange(8, dtype=torch.float64) / 8.0
        centers = 2.0 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
        std = 0.02
    else:  # grid25
        coordinates = torch.arange(-4.0, 5.0, 2.0, dtype=torch.float64)
        grid_x, grid_y = torch.meshgrid(coordinates, coordinates, indexing="ij")
        centers = torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1)
        std = 0.05
    return centers.to(dtype=dtype, device=device), std


def toy2d_modes(name: str) -> tuple[Tensor, float]:
    """Mode centers float32 (K, 2) and the isotropic std of each mode, for "8gaussians", "ring8", "grid25"."""
    _check_name(name, _MIXTURE_NAMES, "a Gaussian mixture with known modes")
    return _mode_centers(name, torch.float32, "cpu")


# ---------------------------------------------------------------------------- samplers
# Each takes (n, generator, device) and returns float32 (n, 2).


def _sample_isotropic_mixture(name, n, generator, device):
    centers, std = _mode_centers(name, torch.float32, device)
    component = torch.randint(len(centers), (n,), generator=generator, device=device)
    return centers[component] + std * torch.randn(n, 2, generator=generator, device=device)


def _sample_checkerboard(n, generator, device):
    # FFJORD: x1 ~ U[-2, 2); x2 = U[0, 1) - 2 Bernoulli + (floor(x1) mod 2); output 2 (x1, x2)
    x1 = 4.0 * torch.rand(n, generator=generator, device=device) - 2.0
    lower_or_upper = torch.randint(2, (n,), generator=generator, device=device).to(torch.float32)
    x2 = torch.rand(n, generator=generator, device=device) - 2.0 * lower_or_upper
    x2 = x2 + torch.remainder(torch.floor(x1), 2.0)
    return 2.0 * torch.stack([x1, x2], dim=1)


def _outer_then_inner(n):
    """sklearn's make_moons/make_circles split: n // 2 outer points, the rest inner; bool (n,)."""
    is_outer = torch.zeros(n, dtype=torch.bool)
    is_outer[: n // 2] = True
    return is_outer


def _sample_moons(n, generator, device):
    # sklearn make_moons(noise=0.1), FFJORD then maps x -> 2 x + (-1, -0.2).
    # Angles are uniform on [0, π) instead of sklearn's linspace, so every call is i.i.d.
    is_outer = _outer_then_inner(n).to(device)[:, None]
    angle = math.pi * torch.rand(n, generator=generator, device=device)
    outer = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    inner = torch.stack([1.0 - torch.cos(angle), 0.5 - torch.sin(angle)], dim=1)
    points = torch.where(is_outer, outer, inner) + 0.1 * torch.randn(n, 2, generator=generator, device=device)
    points = points[torch.randperm(n, generator=generator, device=device)]
    return 2.0 * points + torch.tensor([-1.0, -0.2], device=device)


def _sample_circles(n, generator, device):
    # sklearn make_circles(factor=0.5, noise=0.08), FFJORD then scales by 3.
    # Angles are uniform on [0, 2π) instead of sklearn's linspace, so every call is i.i.d.
    radius = torch.where(_outer_then_inner(n), 1.0, 0.5).to(device)[:, None]
    angle = 2.0 * math.pi * torch.rand(n, generator=generator, device=device)
    points = radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    points = points + 0.08 * torch.randn(n, 2, generator=generator, device=device)
    points = points[torch.randperm(n, generator=generator, device=device)]
    return 3.0 * points


def _sample_swissroll(n, generator, device):
    # sklearn make_swiss_roll(noise=1.0): t = 1.5π (1 + 2U), (x, z) = t (cos t, sin t) + N(0, I);
    # FFJORD keeps (x, z) and divides by 5.
    t = 1.5 * math.pi * (1.0 + 2.0 * torch.rand(n, generator=generator, device=device))
    points = t[:, None] * torch.stack([torch.cos(t), torch.sin(t)], dim=1)
    points = points + torch.randn(n, 2, generator=generator, device=device)
    return points / 5.0


def _sample_pinwheel(n, generator, device):
    # FFJORD pinwheel: 5 arms, radial std 0.3, tangential std 0.1, rate 0.25.
    # The arm of each point is drawn uniformly (FFJORD uses n // 5 per arm), so any n works.
    num_arms, radial_std, tangential_std, rate = 5, 0.3, 0.1, 0.25
    arm = torch.randint(num_arms, (n,), generator=generator, device=device)
    features = torch.randn(n, 2, generator=generator, device=device)
    features = features * torch.tensor([radial_std, tangential_std], device=device)
    features[:, 0] += 1.0
    angle = 2.0 * math.pi * arm / num_arms + rate * torch.exp(features[:, 0])
    cos, sin = torch.cos(angle), torch.sin(angle)
    # row vector times [[cos, -sin], [sin, cos]], as FFJORD's einsum("ti,tij->tj")
    rotated = torch.stack(
        [features[:, 0] * cos + features[:, 1] * sin, -features[:, 0] * sin + features[:, 1] * cos], dim=1
    )
    return 2.0 * rotated


def _sample_two_spirals(n, generator, device):
    # FFJORD 2spirals: m = sqrt(U) 540 (2π / 360); d1 = (-cos(m) m + 0.5 U', sin(m) m + 0.5 U'');
    # half the points d1, the other half -d1; then / 3 + 0.1 N(0, I). Points are shuffled.
    m = torch.sqrt(torch.rand(n, generator=generator, device=device)) * 540.0 * (2.0 * math.pi / 360.0)
    d1x = -torch.cos(m) * m + 0.5 * torch.rand(n, generator=generator, device=device)
    d1y = torch.sin(m) * m + 0.5 * torch.rand(n, generator=generator, device=device)
    sign = torch.where(_outer_then_inner(n), -1.0, 1.0).to(device)[:, None]
    points = sign * torch.stack([d1x, d1y], dim=1)
    points = points[torch.randperm(n, generator=generator, device=device)]
    return points / 3.0 + 0.1 * torch.randn(n, 2, generator=generator, device=device)


def _sample_gaussian(n, generator, device):
    return torch.randn(n, 2, generator=generator, device=device)


_SAMPLERS = {
    "8gaussians": functools.partial(_sample_isotropic_mixture, "8gaussians"),
    "checkerboard": _sample_checkerboard,
    "moons": _sample_moons,
    "circles": _sample_circles,
    "swissroll": _sample_swissroll,
    "pinwheel": _sample_pinwheel,
    "2spirals": _sample_two_spirals,
    "ring8": functools.partial(_sample_isotropic_mixture, "ring8"),
    "grid25": functools.partial(_sample_isotropic_mixture, "grid25"),
    "gaussian": _sample_gaussian,
}


def toy2d(name: str, n: int, generator: torch.Generator | None = None) -> Tensor:
    """Draw n i.i.d. points, float32 (n, 2), from the toy density `name` (one of TOY2D_NAMES).

    Uses only torch random functions with `generator` (None: torch's global generator); the
    points live on the generator's device.
    """
    _check_name(name, TOY2D_NAMES, "a known toy density")
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"n must be a positive int; got n={n!r} of type {type(n).__name__}")
    if n <= 0:
        raise ValueError(f"n must be a positive int; got n={n!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None; got {type(generator).__name__}")
    n = int(n)
    device = generator.device if generator is not None else torch.device("cpu")
    return _SAMPLERS[name](n, generator, device).to(torch.float32)


# ----------------------------------------------------------------------- log-densities


def _checkerboard_log_prob(x: Tensor) -> Tensor:
    """-ln 32 on the union of the 8 closed squares of side 2 in [-4, 4]², -inf elsewhere; (n,)."""
    # A half-scale cell (a, b) = floor(x / 2) with a, b in {-2, ..., 1} is occupied iff a + b is
    # even (FFJORD construction). Closed squares: a point on an edge belongs to both neighbours,
    # so samples rounded onto an upper edge in float32 keep a finite density.
    half = x / 2.0
    inside = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for column in (torch.floor(half[:, 0]), torch.ceil(half[:, 0]) - 1.0):
        for row in (torch.floor(half[:, 1]), torch.ceil(half[:, 1]) - 1.0):
            in_range = (column >= -2) & (column <= 1) & (row >= -2) & (row <= 1)
            inside |= in_range & (torch.remainder(column + row, 2.0) == 0)
    log_density = torch.full((x.shape[0],), -_CHECKERBOARD_LOG_AREA, dtype=x.dtype, device=x.device)
    return torch.where(inside, log_density, torch.full_like(log_density, -math.inf))


def toy2d_log_prob(name: str, x: Tensor) -> Tensor:
    """Exact log-density in nats, shape (n,), of points x (n, 2), computed in x's dtype.

    Closed forms exist for "gaussian", "ring8", "grid25", "8gaussians" and "checkerboard".
    """
    if isinstance(name, str) and name in TOY2D_NAMES and name not in _CLOSED_FORM_NAMES:
        raise ValueError(
            f"name={name!r} has no closed-form density; expected one of {_CLOSED_FORM_NAMES}"
        )
    _check_name(name, _CLOSED_FORM_NAMES, "a toy density with a closed form")
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (n, 2); got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != 2 or not x.is_floating_point():
        raise ValueError(f"x must be a floating tensor of shape (n, 2); got shape {tuple(x.shape)}, dtype {x.dtype}")
    if name == "checkerboard":
        return _checkerboard_log_prob(x)
    if name == "gaussian":
        zero = torch.zeros(2, dtype=x.dtype, device=x.device)
        return Independent(Normal(zero, torch.ones_like(zero)), 1).log_prob(x)
    centers, std = _mode_centers(name, x.dtype, x.device)
    mixture = MixtureSameFamily(
        Categorical(logits=torch.zeros(len(centers), dtype=x.dtype, device=x.device)),
        Independent(Normal(centers, torch.full_like(centers, std)), 1),
    )
    return mixture.log_prob(x)
