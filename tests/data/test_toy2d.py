import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from sklearn.datasets import make_circles, make_moons, make_swiss_roll

from ppl_dgm.data import TOY2D_NAMES, toy2d, toy2d_log_prob, toy2d_modes

CLOSED_FORM_NAMES = ("gaussian", "ring8", "grid25", "8gaussians", "checkerboard")


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def assert_means_agree(a, b, num_standard_errors=5.0):
    """Column means of a (n, d) and b (m, d) agree within the two-sample standard error."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    standard_error = torch.sqrt(a.var(0) / len(a) + b.var(0) / len(b))
    assert torch.all((a.mean(0) - b.mean(0)).abs() < num_standard_errors * standard_error), (a.mean(0), b.mean(0))


def first_and_second_moments(x):
    """Per-point features (x1, x2, x1², x1 x2, x2²) whose means are the first two moments; (n, 5)."""
    x = torch.as_tensor(x, dtype=torch.float64)
    return torch.stack([x[:, 0], x[:, 1], x[:, 0] ** 2, x[:, 0] * x[:, 1], x[:, 1] ** 2], dim=1)


# --------------------------------------------------------------------------- samplers


@pytest.mark.parametrize("name", TOY2D_NAMES)
@pytest.mark.parametrize("n", [1, 7, 1001])
def test_every_name_returns_n_finite_float32_points(name, n):
    points = toy2d(name, n, seeded())
    assert points.shape == (n, 2)
    assert points.dtype == torch.float32
    assert torch.isfinite(points).all()


@pytest.mark.parametrize("name", TOY2D_NAMES)
def test_same_seed_same_points_and_global_rng_untouched(name):
    torch.manual_seed(123)
    global_state = torch.get_rng_state()
    first = toy2d(name, 301, seeded(5))
    assert torch.equal(torch.get_rng_state(), global_state)
    assert torch.equal(first, toy2d(name, 301, seeded(5)))
    assert not torch.equal(first, toy2d(name, 301, seeded(6)))


def test_generator_none_uses_global_rng():
    torch.manual_seed(0)
    first = toy2d("moons", 50)
    torch.manual_seed(0)
    assert torch.equal(first, toy2d("moons", 50))


@pytest.mark.parametrize("name", ["gaussian", "ring8", "grid25", "8gaussians"])
def test_mixture_moments_match_closed_form(name):
    # Var of a mixture = E[c c^T] + std² I; ring8: E[c c^T] = R²/2 I; grid25: Var{-4,..,4} = 8;
    # 8gaussians: unit directions spread evenly, E[d d^T] = I / 2, scale 4 / 1.414.
    closed_form_variance = {
        "gaussian": 1.0,
        "ring8": 2.0**2 / 2 + 0.02**2,
        "grid25": 8.0 + 0.05**2,
        "8gaussians": (4.0**2 / 2 + 0.5**2) / 1.414**2,
    }[name]
    features = first_and_second_moments(toy2d(name, 40_000, seeded(1)))
    expected = torch.tensor([0.0, 0.0, closed_form_variance, 0.0, closed_form_variance], dtype=torch.float64)
    standard_error = features.std(0) / math.sqrt(len(features))
    assert torch.all((features.mean(0) - expected).abs() < 4 * standard_error), (features.mean(0), expected)


def test_checkerboard_is_uniform_on_eight_squares():
    points = toy2d("checkerboard", 64_000, seeded(2)).double()
    assert points.min() >= -4.0 and points.max() <= 4.0
    # Cells of side 2: column a, row b in {0..3}; FFJORD's pattern occupies a + b even.
    cell = torch.floor((points + 4.0) / 2.0).clamp(max=3).long()
    counts = torch.bincount(cell[:, 0] * 4 + cell[:, 1], minlength=16).reshape(4, 4)
    occupied = counts > 0
    expected_pattern = torch.tensor([[(a + b) % 2 == 0 for b in range(4)] for a in range(4)])
    assert torch.equal(occupied, expected_pattern)
    fractions = counts[occupied].double() / len(points)
    binomial_standard_error = math.sqrt(1 / 8 * 7 / 8 / len(points))
    assert torch.all((fractions - 1 / 8).abs() < 4 * binomial_standard_error)
    # Uniform within the squares: position inside its cell ~ U[0, 2)², mean 1, variance 1/3.
    within = torch.remainder(points + 4.0, 2.0)
    assert torch.allclose(within.mean(0), torch.ones(2, dtype=torch.float64), atol=4 * math.sqrt(1 / 3 / len(points)))
    assert torch.allclose(within.var(0), torch.full((2,), 1 / 3, dtype=torch.float64), atol=0.01)


@pytest.mark.parametrize(
    "name, sklearn_reference",
    [
        ("moons", lambda n, rng: make_moons(n, noise=0.1, random_state=rng)[0] * 2 + np.array([-1, -0.2])),
        ("circles", lambda n, rng: make_circles(n, factor=0.5, noise=0.08, random_state=rng)[0] * 3),
        ("swissroll", lambda n, rng: make_swiss_roll(n, noise=1.0, random_state=rng)[0][:, [0, 2]] / 5),
    ],
)
def test_sklearn_shapes_match_sklearn_moments(name, sklearn_reference):
    n = 20_000
    ours = first_and_second_moments(toy2d(name, n, seeded(3)))
    reference = first_and_second_moments(sklearn_reference(n, np.random.RandomState(0)))
    assert_means_agree(ours, reference)


def ffjord_pinwheel_numpy(n, rng):
    """FFJORD's pinwheel recipe in numpy (n // 5 per arm, einsum rotation): the reference."""
    radial_std, tangential_std, num_classes, rate = 0.3, 0.1, 5, 0.25
    rads = np.linspace(0, 2 * np.pi, num_classes, endpoint=False)
    features = rng.randn(n, 2) * np.array([radial_std, tangential_std])
    features[:, 0] += 1.0
    labels = np.repeat(np.arange(num_classes), n // num_classes)
    angles = rads[labels] + rate * np.exp(features[:, 0])
    rotations = np.stack([np.cos(angles), -np.sin(angles), np.sin(angles), np.cos(angles)]).T.reshape(-1, 2, 2)
    return 2 * np.einsum("ti,tij->tj", features, rotations)


def ffjord_two_spirals_numpy(n, rng):
    """FFJORD's 2spirals recipe in numpy: the reference."""
    m = np.sqrt(rng.rand(n // 2, 1)) * 540 * (2 * np.pi) / 360
    d1x = -np.cos(m) * m + rng.rand(n // 2, 1) * 0.5
    d1y = np.sin(m) * m + rng.rand(n // 2, 1) * 0.5
    spirals = np.vstack((np.hstack((d1x, d1y)), np.hstack((-d1x, -d1y)))) / 3
    return spirals + 0.1 * rng.randn(*spirals.shape)


@pytest.mark.parametrize(
    "name, reference", [("pinwheel", ffjord_pinwheel_numpy), ("2spirals", ffjord_two_spirals_numpy)]
)
def test_ffjord_shapes_match_reference_recipe_moments(name, reference):
    n = 20_000
    ours = toy2d(name, n, seeded(4))
    theirs = reference(n, np.random.RandomState(0))
    assert_means_agree(first_and_second_moments(ours), first_and_second_moments(theirs))
    # Harmonics of the polar angle see the arms' orientation: a mirrored pinwheel fails here.
    assert_means_agree(angle_harmonics(ours), angle_harmonics(theirs))


def angle_harmonics(x):
    """(cos kφ, sin kφ) for k = 2, 3, 5 of the polar angle φ of points x (n, 2); (n, 6)."""
    x = torch.as_tensor(x, dtype=torch.float64)
    angle = torch.atan2(x[:, 1], x[:, 0])
    return torch.stack([f(k * angle) for k in (2, 3, 5) for f in (torch.cos, torch.sin)], dim=1)


# ------------------------------------------------------------------------ log-density


@pytest.mark.parametrize(
    "name, half_width, step",
    # Midpoint rule; for Gaussians with step <= std / 2 its error is far below 1e-6.
    [("gaussian", 9.0, 0.05), ("ring8", 2.2, 0.01), ("grid25", 4.5, 0.025), ("8gaussians", 5.0, 0.05),
     ("checkerboard", 4.5, 0.05)],
)
def test_log_prob_integrates_to_one(name, half_width, step):
    midpoints = torch.arange(-half_width + step / 2, half_width, step, dtype=torch.float64)
    grid_x, grid_y = torch.meshgrid(midpoints, midpoints, indexing="ij")
    grid = torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1)
    integral = sum(toy2d_log_prob(name, chunk).exp().sum() for chunk in grid.split(50_000)) * step**2
    assert abs(integral.item() - 1.0) < 1e-3


def test_checkerboard_log_prob_of_samples_is_minus_log_32():
    points = toy2d("checkerboard", 100_001, seeded(7))
    log_density = toy2d_log_prob("checkerboard", points)
    assert torch.all(log_density == -math.log(32.0))
    assert (-log_density).mean().item() == pytest.approx(math.log(32.0), abs=1e-6)
    outside = torch.tensor([[1.0, 3.0], [-1.0, 1.0], [4.0, 1.0], [4.5, 0.0], [0.0, -4.01]])  # unoccupied or outside
    assert torch.all(toy2d_log_prob("checkerboard", outside) == -math.inf)
    on_edges = torch.tensor([[4.0, 3.0], [2.0, 2.0], [-4.0, -4.0], [3.0, 4.0]])  # closed squares
    assert torch.all(toy2d_log_prob("checkerboard", on_edges) == -math.log(32.0))


def test_gaussian_entropy_by_monte_carlo():
    negative_log_density = -toy2d_log_prob("gaussian", toy2d("gaussian", 100_000, seeded(8)).double())
    standard_error = negative_log_density.std() / math.sqrt(len(negative_log_density))
    assert abs(negative_log_density.mean().item() - math.log(2 * math.pi * math.e)) < 3 * standard_error


def reference_centers_and_std(name):
    """Mode centers float64 (K, 2) and std from the definitions, written independently of the library."""
    if name == "ring8":
        angles = 2 * np.pi * np.arange(8) / 8
        return 2 * np.stack([np.cos(angles), np.sin(angles)], 1), 0.02
    if name == "grid25":
        return np.array([(a, b) for a in range(-4, 5, 2) for b in range(-4, 5, 2)], dtype=np.float64), 0.05
    s = 1 / np.sqrt(2)  # FFJORD 8gaussians: (scale * direction + 0.5 z) / 1.414
    directions = np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)])
    return 4 * directions / 1.414, 0.5 / 1.414


@pytest.mark.parametrize("name", ["ring8", "grid25", "8gaussians"])
def test_mixture_log_prob_matches_equal_weight_gaussian_mixture(name):
    centers, std = reference_centers_and_std(name)
    x = toy2d(name, 500, seeded(9)).double() + 0.01
    squared_distances = ((x.numpy()[:, None, :] - centers[None]) ** 2).sum(-1)
    log_components = -squared_distances / (2 * std**2) - np.log(2 * np.pi * std**2)
    reference = logsumexp(log_components, axis=1) - np.log(len(centers))
    assert np.allclose(toy2d_log_prob(name, x).numpy(), reference, rtol=1e-12, atol=1e-12)
    modes, mode_std = toy2d_modes(name)
    assert np.allclose(modes.numpy(), centers, atol=1e-6) and mode_std == pytest.approx(std, rel=1e-12)


@pytest.mark.parametrize("name", CLOSED_FORM_NAMES)
def test_log_prob_keeps_dtype(name):
    x = toy2d(name, 5, seeded())
    assert toy2d_log_prob(name, x).dtype == torch.float32
    assert toy2d_log_prob(name, x.double()).dtype == torch.float64
    assert toy2d_log_prob(name, x).shape == (5,)


def test_modes():
    centers, std = toy2d_modes("ring8")
    assert centers.shape == (8, 2) and std == 0.02
    assert torch.allclose(centers.norm(dim=1), torch.full((8,), 2.0))
    assert torch.allclose(torch.atan2(centers[:, 1], centers[:, 0]).remainder(2 * math.pi).sort().values,
                          torch.arange(8) * (2 * math.pi / 8), atol=1e-6)
    centers, std = toy2d_modes("grid25")
    assert centers.shape == (25, 2) and std == 0.05
    expected = {(a, b) for a in (-4.0, -2.0, 0.0, 2.0, 4.0) for b in (-4.0, -2.0, 0.0, 2.0, 4.0)}
    assert {tuple(point) for point in centers.tolist()} == expected
    centers, std = toy2d_modes("8gaussians")
    assert torch.allclose(centers.norm(dim=1), torch.full((8,), 4 / 1.414)) and std == pytest.approx(0.5 / 1.414)


# ----------------------------------------------------------------------------- errors


def test_toy2d_errors():
    with pytest.raises(ValueError, match=r"name='banana'.*'8gaussians'.*'2spirals'.*'gaussian'"):
        toy2d("banana", 10)
    with pytest.raises(ValueError, match=r"n must be a positive int; got n=0"):
        toy2d("moons", 0)
    with pytest.raises(ValueError, match=r"n=-3"):
        toy2d("moons", -3)
    with pytest.raises(TypeError, match=r"n must be a positive int; got n=2.0 of type float"):
        toy2d("moons", 2.0)
    with pytest.raises(TypeError, match=r"n=True of type bool"):
        toy2d("moons", True)
    with pytest.raises(TypeError, match=r"generator must be a torch.Generator or None; got int"):
        toy2d("moons", 3, generator=0)


def test_log_prob_and_modes_errors():
    with pytest.raises(ValueError, match=r"name='moons' has no closed-form density.*'gaussian'.*'checkerboard'"):
        toy2d_log_prob("moons", torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"name='banana'.*'ring8'"):
        toy2d_log_prob("banana", torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"x must be a floating tensor of shape \(n, 2\); got shape \(3, 3\)"):
        toy2d_log_prob("gaussian", torch.zeros(3, 3))
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor"):
        toy2d_log_prob("gaussian", [[0.0, 0.0]])
    with pytest.raises(ValueError, match=r"name='moons'.*'8gaussians', 'ring8', 'grid25'"):
        toy2d_modes("moons")
