"""Optimal transport between discrete distributions: the earth mover's distance as a linear program.

W(a, b) = min_γ Σ_ij γ_ij C_ij subject to γ ≥ 0, Σ_j γ_ij = a_i, Σ_i γ_ij = b_j (Arjovsky et al. 2017, eq. 1;
Peyré & Cuturi 2019, eq. 2.11), solved exactly by scipy's HiGHS. Importing this module does not import scipy.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

from ppl_dgm._checks import check_positive_int

__all__ = ["earth_movers_distance_lp", "discretize_piecewise_uniform"]

_MASS_TOLERANCE = 1e-9  # relative: total masses differing by more than this are not a transport problem


def _as_float64(name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        try:
            value = torch.as_tensor(value, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(f"{name} must be a tensor or array of numbers, got {type(value).__name__}") from error
    return value.detach().to(device="cpu", dtype=torch.float64)


def _check_weights(name: str, weights: Tensor) -> None:
    if weights.ndim != 1 or weights.numel() == 0:
        raise ValueError(f"{name} must be a non-empty vector of weights (n,), got shape {tuple(weights.shape)}")
    if not torch.isfinite(weights).all():
        raise ValueError(f"{name} must be finite, got {weights.tolist()[:8]}")
    if (weights < 0).any():
        raise ValueError(f"{name} must be non-negative, got minimum {float(weights.min()):.6g}")
    if float(weights.sum()) <= 0:
        raise ValueError(f"{name} must have a positive total mass, got sum {float(weights.sum()):.6g}")


def _solve(a: object, b: object, cost: object, names: tuple[str, str, str]) -> tuple[float, Tensor]:
    """Validate (naming the caller's arguments) and solve; shared with :func:`ppl_dgm.gan.earth_movers_distance`."""
    import numpy as np
    from scipy.optimize import linprog
    from scipy.sparse import csr_matrix, eye, kron, vstack

    a_name, b_name, cost_name = names
    a, b, cost = _as_float64(a_name, a), _as_float64(b_name, b), _as_float64(cost_name, cost)
    _check_weights(a_name, a)
    _check_weights(b_name, b)
    n, m = a.numel(), b.numel()
    if tuple(cost.shape) != (n, m):
        raise ValueError(f"{cost_name} must have shape ({n}, {m}) = ({a_name}.numel(), {b_name}.numel()), "
                         f"got {tuple(cost.shape)}")
    if not torch.isfinite(cost).all():
        raise ValueError(f"{cost_name} must be finite")
    a_total, b_total = float(a.sum()), float(b.sum())
    if not math.isclose(a_total, b_total, rel_tol=_MASS_TOLERANCE):
        raise ValueError(f"{a_name} and {b_name} must have the same total mass, got sums {a_total:.12g} and {b_total:.12g}")

    a_np, b_np, cost_np = a.numpy(), b.numpy(), cost.numpy()
    # Equality constraints on the row-major γ.ravel(): Σ_j γ_ij = a_i (rows), Σ_i γ_ij = b_j (columns).
    # One constraint is redundant (both sides sum to the total mass); HiGHS presolve removes it.
    rows = kron(eye(n), csr_matrix(np.ones((1, m))))
    columns = kron(csr_matrix(np.ones((1, n))), eye(m))
    result = linprog(cost_np.ravel(), A_eq=vstack([rows, columns]).tocsr(), b_eq=np.concatenate([a_np, b_np]),
                     bounds=(0, None), method="highs")
    if result.status != 0:  # pragma: no cover - a balanced transport problem is always feasible and bounded
        raise RuntimeError(f"linprog did not solve the transport problem: {result.message}")
    plan = torch.from_numpy(result.x.reshape(n, m)).clamp_min(0.0)
    return float(result.fun), plan


def earth_movers_distance_lp(a: Tensor, b: Tensor, cost: Tensor) -> tuple[float, Tensor]:
    """W(a, b) = min_γ Σ γ_ij C_ij over couplings of weights a (n,), b (m,) with ground cost ``cost`` (n, m).

    Returns the value (units of ``cost``) and the optimal plan γ, float64 (n, m) on the CPU, whose row sums are a
    and column sums b (Peyré & Cuturi 2019, eq. 2.11). a and b need equal, not unit, total mass; solved by HiGHS.
    """
    return _solve(a, b, cost, ("a", "b", "cost"))


def discretize_piecewise_uniform(pieces: Sequence[tuple[float, float, float]], cells_per_unit: int = 100
                                 ) -> tuple[Tensor, Tensor]:
    """Points and weights, float64 (n,), of the density Σ_k c_k · 1[low_k, high_k] on cells of width ≤ 1/cells_per_unit.

    ``pieces`` are (c, low, high) triples: ¼·1[1, 2] is (0.25, 1, 2), mass ¼. Each interval gets
    ⌈(high − low)·cells_per_unit⌉ equal cells, each a point at its midpoint carrying the cell's mass c·width.
    """
    cells_per_unit = check_positive_int("cells_per_unit", cells_per_unit)
    if isinstance(pieces, (str, bytes)) or not isinstance(pieces, Sequence) or not pieces:
        raise ValueError(f"pieces must be a non-empty sequence of (density, low, high) triples, got {pieces!r}")
    points, weights = [], []
    for piece in pieces:
        if (isinstance(piece, (str, bytes)) or not isinstance(piece, Sequence) or len(piece) != 3
                or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in piece)):
            raise ValueError(f"pieces must be (density, low, high) triples of finite numbers, got {piece!r}")
        density, low, high = (float(v) for v in piece)
        if density < 0 or not low < high:
            raise ValueError(f"pieces must have density >= 0 and low < high, got (density, low, high) = {piece!r}")
        num_cells = math.ceil((high - low) * cells_per_unit - 1e-9)
        edges = torch.linspace(low, high, num_cells + 1, dtype=torch.float64)
        points.append((edges[:-1] + edges[1:]) / 2)
        weights.append(torch.full((num_cells,), density * (high - low) / num_cells, dtype=torch.float64))
    return torch.cat(points), torch.cat(weights)
