"""Energy-based models trained by score matching: E_θ(x, σ), its score −∇_x E by autograd, Langevin sampling, and the
exact normalizing constant of a 2-D model by quadrature.

The energy is noise-conditional over σ_1 > … > σ_L, E_θ(x, σ) = f_θ(x, t(σ))/σ (one network, Song & Ermon 2019;
dividing by σ is Song & Ermon 2020's technique 3), so that annealed Langevin has a score at every level; the
model's density is the last level's, p_θ(x) = exp(−E_θ(x, σ_L))/Z on the box [−bound, bound]² (zero outside).
With L = 1 it is one energy E_θ(x) for one σ. On 2-D data Z is a midpoint sum on a grid (error O(h²)), so the
held-out NLL is exact up to that error. Every objective matches the score of the data perturbed by N(0, σ²I) at a
σ drawn per example, weighted by λ(σ) = σ² (Song & Ermon 2019, eq. 6): denoising (Vincent 2011), sliced (Song et
al. 2019, SSM-VR) or implicit (Hyvärinen 2005) score matching.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn

from ppl_dgm._checks import check_choice, check_positive_float, check_positive_int, check_shape
from ppl_dgm.nn import TimeConditionedMLP
from ppl_dgm.nn.functional import expand_like
from ppl_dgm.sde.losses import check_sigmas, dsm_loss, implicit_score_matching, sliced_score_matching
from ppl_dgm.sde.ncsn import noise_level_time
from ppl_dgm.sde.reverse import model_device_dtype

__all__ = ["EnergyModel", "OBJECTIVES", "energy_loss", "sample_langevin", "GridDensity", "grid_density", "log_partition",
           "quadrature_log_prob"]

OBJECTIVES = ("dsm", "sliced", "implicit")


class EnergyModel(nn.Module):
    """E_θ(x, σ) = f_θ(x, t(σ))/σ, a scalar per example: ``model(x, sigma=None) -> (B,)`` for x (B, dim), σ a scalar or
    (B,) (default σ_L, the level whose density p_θ ∝ exp(−E_θ(x, σ_L)) the model is); f_θ is a TimeConditionedMLP with
    one output and t(σ) the σ-index of :func:`~ppl_dgm.sde.ncsn.noise_level_time`. Smooth activations (SiLU), since
    the objectives differentiate the score once more."""

    def __init__(self, dim: int = 2, hidden: Sequence[int] = (128, 128, 128), sigmas: Tensor | Sequence[float] = (0.1,),
                 time_embedding_dim: int = 64):
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        self.network = TimeConditionedMLP(dim, hidden, time_embedding_dim, out_features=1)
        self.register_buffer("sigmas", check_sigmas(sigmas))

    def _sigma(self, sigma: Tensor | float | None, x: Tensor) -> Tensor:
        if sigma is None:
            sigma = self.sigmas[-1]
        sigma = torch.as_tensor(sigma, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        if sigma.shape != (x.shape[0],):
            raise ValueError(f"sigma must be None, a scalar or of shape ({x.shape[0]},), got {tuple(sigma.shape)}")
        return sigma

    def forward(self, x: Tensor, sigma: Tensor | float | None = None) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got {tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
        sigma = self._sigma(sigma, x)
        f = self.network(x, noise_level_time(sigma, self.sigmas).to(x.dtype)).squeeze(1)
        return f / sigma.to(x.dtype)  # Song & Ermon 2020, technique 3: s_θ = −∇f/σ

    def score(self, x: Tensor, sigma: Tensor | float | None = None) -> Tensor:
        """s_θ(x, σ) = −∇_x E_θ(x, σ), (B, dim), by autograd. Under grad mode the result keeps its graph
        (``create_graph``), so a loss of it trains θ; under ``torch.no_grad()`` (samplers) it is a plain tensor."""
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            point = x if x.requires_grad else x.detach().requires_grad_(True)  # keep the caller's leaf (sliced SM)
            (gradient,) = torch.autograd.grad(self(point, sigma).sum(), point, create_graph=create_graph)  # rows independent
        return -gradient


def _check_model(model: object) -> EnergyModel:
    if not isinstance(model, EnergyModel):
        raise TypeError(f"model must be an EnergyModel, got {type(model).__name__}")
    return model


def energy_loss(model: EnergyModel, x: Tensor, objective: str = "dsm", *, num_projections: int = 1,
                generator: torch.Generator | None = None) -> Tensor:
    """(1/L)Σ_i σ_i² J(s_θ(·, σ_i); p_{σ_i}) for x (B, dim), σ_i drawn per example (Song & Ermon 2019, eq. 6), a scalar.

    ``objective``: ``"dsm"``, J = ½E‖s_θ(x̃, σ) + (x̃ − x)/σ²‖² (Vincent 2011, eq. 5; :func:`dsm_loss`); ``"sliced"``,
    J = E[vᵀ∇s_θ(x̃) v + ½‖s_θ(x̃)‖²] at x̃ ~ N(x, σ²I) (Song et al. 2019, SSM-VR, eq. 8; they note in Song & Ermon 2019,
    §3.3, that it trains noise-conditional models too); ``"implicit"``, J = E[tr ∇s_θ(x̃) + ½‖s_θ(x̃)‖²] (Hyvärinen
    2005, eq. 4). All three equal the Fisher divergence to p_σ up to a constant."""
    model = _check_model(model)
    check_choice("objective", objective, OBJECTIVES)
    if objective == "dsm":
        return dsm_loss(model.score, x, model.sigmas, generator=generator)
    index = torch.randint(0, model.sigmas.numel(), (x.shape[0],), device=x.device, generator=generator)
    sigma = model.sigmas.to(device=x.device, dtype=x.dtype)[index]
    perturbed = x + expand_like(sigma, x) * torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    score = lambda points: model.score(points, sigma)  # noqa: E731 (row i at its own σ_i)
    if objective == "sliced":
        terms = sliced_score_matching(score, perturbed, num_projections=num_projections, generator=generator, reduction="none")
    else:
        terms = implicit_score_matching(score, perturbed, reduction="none")
    return (sigma**2 * terms).mean()  # λ(σ) = σ² (Song & Ermon 2019, eq. 6)


@torch.no_grad()
def sample_langevin(model: EnergyModel, shape, *, steps: int = 1000, step_size: float | None = None,
                    generator: torch.Generator | None = None, device=None, x_T: Tensor | None = None, progress: bool = False,
                    callback: Callable[[int, Tensor, Tensor], None] | None = None) -> Tensor:
    """Unadjusted Langevin dynamics on p_θ ∝ exp(−E_θ(x, σ_L)): ``steps`` times x ← x + (ε/2)s_θ(x, σ_L) + √ε z
    (Welling & Teh 2011, eq. 4 with the full-data gradient; Song & Ermon 2019, eq. 4), from ``x_T`` (copied) or U[0, 1)
    as annealed Langevin. ε defaults to 0.2 σ_L², the ε/σ_L² of Song & Ermon 2019's ε = 2e-5 at σ_L = 0.01.
    ``callback(call, x, denoised)`` sees every network call with Tweedie's x̂ = x + σ_L² s_θ(x, σ_L)."""
    from tqdm.auto import tqdm

    model = _check_model(model)
    steps = check_positive_int("steps", steps)
    sigma = model.sigmas[-1]
    step_size = 0.2 * float(sigma) ** 2 if step_size is None else check_positive_float("step_size", step_size)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable callback(step, x, denoised), got {type(callback).__name__}")
    device, dtype = model_device_dtype(model, device)
    if x_T is None:
        x = torch.rand(check_shape(shape), generator=generator, device=device, dtype=dtype)
    else:
        x = x_T.to(device=device, dtype=dtype).clone()
    variance = float(sigma) ** 2
    for call in tqdm(range(steps), desc="langevin", disable=not progress, leave=False):
        score = model.score(x)
        if callback is not None:
            callback(call, x, x + variance * score)  # Tweedie's formula at σ_L
        noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
        x = x + 0.5 * step_size * score + math.sqrt(step_size) * noise
    return x


# ------------------------------------------------------------------ the normalizing constant by quadrature (2-D)


class GridDensity(NamedTuple):
    """A normalized 2-D density on the midpoints of a ``points`` x ``points`` grid over [−bound, bound]²."""

    axis: Tensor  # (points,) midpoints along each coordinate
    log_density: Tensor  # (points, points) float64 nats; [i, j] is at (axis[j], axis[i]), as imshow(origin="lower") draws it
    log_partition: Tensor  # float64 scalar, log Z = log Σ h² exp(−E)
    cell_area: float  # h²


def _energy_function(energy: EnergyModel | Callable[[Tensor], Tensor]) -> tuple[Callable[[Tensor], Tensor], torch.device, torch.dtype]:
    if isinstance(energy, EnergyModel):
        if energy.dim != 2:
            raise ValueError(f"quadrature of Z runs on a 2-D grid: the model must have dim=2, got dim={energy.dim}")
        return energy, *model_device_dtype(energy)
    if not callable(energy):
        raise TypeError(f"energy must be an EnergyModel or a function energy(x (N, 2)) -> (N,), got {type(energy).__name__}")
    return energy, torch.device("cpu"), torch.float64


def _check_quadrature(bound: object, points: object) -> tuple[float, int]:
    if isinstance(bound, bool) or not isinstance(bound, numbers.Real) or not math.isfinite(bound) or bound <= 0:
        raise ValueError(f"bound must be a positive float (the box [−bound, bound]²), got {bound!r}")
    if isinstance(points, bool) or not isinstance(points, numbers.Integral) or points < 2:
        raise ValueError(f"points must be an int >= 2 (grid points per side), got {points!r}")
    return float(bound), int(points)


@torch.no_grad()
def _energies(function: Callable[[Tensor], Tensor], x: Tensor, chunk: int = 65536) -> Tensor:
    values = []
    for part in x.split(chunk):
        value = function(part)
        if not isinstance(value, Tensor) or value.shape != (part.shape[0],):
            raise ValueError(f"energy must return shape ({part.shape[0]},) for x of shape {tuple(part.shape)}, "
                             f"got {tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__}")
        values.append(value.double())
    return torch.cat(values)


def grid_density(energy: EnergyModel | Callable[[Tensor], Tensor], *, bound: float = 6.0, points: int = 512) -> GridDensity:
    """exp(−E(x))/Z on the midpoints of a grid over [−bound, bound]², with log Z = log Σ_ij h² exp(−E(c_ij)) by the
    midpoint rule (error O(h²) for smooth E), summed by logsumexp in float64. ``energy``: an EnergyModel (at σ_L) or a
    function of points (N, 2) -> (N,); the grid is made in the model's dtype (float64 for a function)."""
    function, device, dtype = _energy_function(energy)
    bound, points = _check_quadrature(bound, points)
    spacing = 2.0 * bound / points
    axis = -bound + spacing * (torch.arange(points, device=device, dtype=torch.float64) + 0.5)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2).to(dtype)
    negative_energy = -_energies(function, grid)
    log_z = torch.logsumexp(negative_energy, 0) + 2.0 * math.log(spacing)  # Σ h² e^{−E}
    return GridDensity(axis.to(dtype), (negative_energy - log_z).reshape(points, points), log_z, spacing**2)


def log_partition(energy: EnergyModel | Callable[[Tensor], Tensor], *, bound: float = 6.0, points: int = 512) -> Tensor:
    """log Z of exp(−E) over [−bound, bound]² by the midpoint rule on a ``points`` x ``points`` grid, float64 scalar."""
    return grid_density(energy, bound=bound, points=points).log_partition


def quadrature_log_prob(energy: EnergyModel | Callable[[Tensor], Tensor], x: Tensor, *, bound: float = 6.0, points: int = 512,
                        log_z: Tensor | None = None) -> Tensor:
    """log p(x) = −E(x) − log Z in nats, float64 (N,), for x (N, 2); −inf outside [−bound, bound]², where the model
    puts no mass. ``log_z`` skips the quadrature (from :func:`log_partition` with the same bound)."""
    function, device, dtype = _energy_function(energy)
    bound, points = _check_quadrature(bound, points)
    if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[1] != 2 or not x.is_floating_point():
        described = f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be 2-D points, a floating tensor of shape (N, 2), for the quadrature density; got {described}")
    log_z = log_partition(energy, bound=bound, points=points) if log_z is None else torch.as_tensor(log_z, dtype=torch.float64)
    log_prob = -_energies(function, x.to(device=device, dtype=dtype)) - log_z.to(device)
    inside = (x.abs() <= bound).all(1).to(device)
    return torch.where(inside, log_prob, torch.full_like(log_prob, -math.inf))
