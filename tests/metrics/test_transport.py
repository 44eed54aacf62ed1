import numpy as np
import pytest
import torch
from scipy import stats

from ppl_dgm.gan import earth_movers_distance
from ppl_dgm.metrics import discretize_piecewise_uniform, earth_movers_distance_lp

# The lecture notes' example: μ = ¼·1[1,2] + ¼·1[3,4] + ½·1[9,10] against μ' = ½·1[5,7], W = 3.
MU = [(0.25, 1.0, 2.0), (0.25, 3.0, 4.0), (0.5, 9.0, 10.0)]
MU_PRIME = [(0.5, 5.0, 7.0)]


def _lecture_example(cells_per_unit):
    x, a = discretize_piecewise_uniform(MU, cells_per_unit)
    y, b = discretize_piecewise_uniform(MU_PRIME, cells_per_unit)
    return x, a, y, b, (x[:, None] - y[None, :]).abs()


@pytest.mark.parametrize("cells_per_unit", [7, 20])
def test_lecture_notes_example_is_three(cells_per_unit):
    x, a, y, b, cost = _lecture_example(cells_per_unit)
    assert a.sum().item() == pytest.approx(1.0) and b.sum().item() == pytest.approx(1.0)
    emd, plan = earth_movers_distance_lp(a, b, cost)
    assert emd == pytest.approx(3.0, abs=1e-3)
    # independent 1-D reference on the same discretization: ∫ |F − G| dx
    assert stats.wasserstein_distance(x.numpy(), y.numpy(), a.numpy(), b.numpy()) == pytest.approx(emd, abs=1e-9)
    assert float((plan * cost).sum()) == pytest.approx(emd, abs=1e-9)


def test_plan_marginals_are_the_weights():
    x, a, y, b, cost = _lecture_example(10)
    _, plan = earth_movers_distance_lp(a, b, cost)
    assert plan.shape == (30, 20) and plan.dtype == torch.float64 and (plan >= 0).all()
    torch.testing.assert_close(plan.sum(1), a, atol=1e-12, rtol=0)
    torch.testing.assert_close(plan.sum(0), b, atol=1e-12, rtol=0)


def test_unnormalized_masses_random_problem_matches_scipy():
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=9), rng.normal(1.0, 2.0, size=6)
    a, b = 3.0 * rng.dirichlet(np.ones(9)), 3.0 * rng.dirichlet(np.ones(6))  # total mass 3, not 1
    emd, plan = earth_movers_distance_lp(a, b, np.abs(u[:, None] - v[None, :]))
    # scipy normalizes the weights: W of the measures of mass 3 is 3 W of the probabilities
    assert emd == pytest.approx(3.0 * stats.wasserstein_distance(u, v, a, b), abs=1e-9)
    np.testing.assert_allclose(plan.sum(1).numpy(), a, atol=1e-12)


def test_two_point_masses():
    # δ_0 against δ_5 under |x − y|, and two masses a = (0.3, 0.7) at 0, 1 against one at 4: 0.3·4 + 0.7·3 = 3.3
    emd, plan = earth_movers_distance_lp(torch.tensor([1.0]), torch.tensor([1.0]), torch.tensor([[5.0]]))
    assert emd == pytest.approx(5.0) and plan.tolist() == [[1.0]]
    emd, plan = earth_movers_distance_lp([0.3, 0.7], [1.0], [[4.0], [3.0]])
    assert emd == pytest.approx(3.3)
    torch.testing.assert_close(plan, torch.tensor([[0.3], [0.7]], dtype=torch.float64))
    # squared-distance cost on the line: the plan is the monotone one, crossing costs more
    emd, plan = earth_movers_distance_lp([0.5, 0.5], [0.5, 0.5], [[0.0, 4.0], [1.0, 1.0]])
    assert emd == pytest.approx(0.5) and plan.diagonal().tolist() == pytest.approx([0.5, 0.5])


def test_gan_earth_movers_distance_is_the_same_program():
    x, a, y, b, cost = _lecture_example(5)
    assert earth_movers_distance(a, b, cost) == pytest.approx(earth_movers_distance_lp(a, b, cost)[0], abs=1e-12)
    with pytest.raises(ValueError, match=r"^p must be non-negative"):
        earth_movers_distance(-a, b, cost)


@pytest.mark.parametrize(
    "a, b, cost, message",
    [
        ([-0.5, 1.5], [1.0], [[1.0], [2.0]], r"^a must be non-negative, got minimum -0\.5$"),
        ([1.0], [1.5, -0.5], [[1.0, 2.0]], r"^b must be non-negative, got minimum -0\.5$"),
        ([0.5, 0.5], [0.7], [[1.0], [2.0]], r"^a and b must have the same total mass, got sums 1 and 0\.7$"),
        ([0.5, 0.5], [1.0], [[1.0, 2.0]], r"^cost must have shape \(2, 1\) = \(a\.numel\(\), b\.numel\(\)\), got \(1, 2\)$"),
        ([[0.5, 0.5]], [1.0], [[1.0]], r"^a must be a non-empty vector of weights \(n,\), got shape \(1, 2\)$"),
        ([], [1.0], [[1.0]], r"^a must be a non-empty vector"),
        ([0.0, 0.0], [0.0], [[1.0], [2.0]], r"^a must have a positive total mass, got sum 0$"),
        ([1.0], [1.0], [[float("nan")]], r"^cost must be finite$"),
    ],
)
def test_bad_inputs_name_the_argument(a, b, cost, message):
    with pytest.raises(ValueError, match=message):
        earth_movers_distance_lp(a, b, cost)


@pytest.mark.parametrize(
    "pieces, cells_per_unit, error, message",
    [
        ([(0.5, 2.0, 1.0)], 10, ValueError, r"^pieces must have density >= 0 and low < high"),
        ([(-0.5, 1.0, 2.0)], 10, ValueError, r"^pieces must have density >= 0 and low < high"),
        ([(0.5, 1.0)], 10, ValueError, r"^pieces must be \(density, low, high\) triples"),
        ([], 10, ValueError, r"^pieces must be a non-empty sequence"),
        (MU, 0, ValueError, r"^cells_per_unit must be a positive int, got 0$"),
    ],
)
def test_discretize_bad_inputs(pieces, cells_per_unit, error, message):
    with pytest.raises(error, match=message):
        discretize_piecewise_uniform(pieces, cells_per_unit)


def test_discretize_cells_and_masses():
    points, weights = discretize_piecewise_uniform([(0.25, 1.0, 2.0), (0.5, 5.0, 7.0)], 4)
    torch.testing.assert_close(points, torch.tensor([1.125, 1.375, 1.625, 1.875, 5.125, 5.375, 5.625, 5.875,
                                                     6.125, 6.375, 6.625, 6.875], dtype=torch.float64))
    torch.testing.assert_close(weights, torch.tensor([0.0625] * 4 + [0.125] * 8, dtype=torch.float64))
