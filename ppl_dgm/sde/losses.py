"""Score-matching objectives: denoising (Vincent 2011) and, for low-dimensional data, explicit, implicit and sliced.

The denoising losses (the NCSN loss over a σ sequence and the continuous score-SDE loss) are per-example
sums over data dims, averaged over the batch (``reduction="mean"``) or returned per example (``"none"``).
``explicit_score_matching``, ``implicit_score_matching`` and ``sliced_score_matching`` take a score model
``score(x) -> (B, D)`` acting on each row of x ``(B, D)`` separately and return the batch mean, a scalar.
Randomness uses torch's global RNG unless a ``generator`` is given.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ppl_dgm._checks import check_choice, check_positive_int, check_same_shape
from ppl_dgm.nn.functional import expand_like
from ppl_dgm.sde.sdes import SDE, check_sde, check_time_range

__all__ = [
    "geometric_sigmas",
    "check_sigmas",
    "dsm_loss",
    "score_sde_loss",
    "explicit_score_matching",
    "implicit_score_matching",
    "sliced_score_matching",
]

_REDUCTIONS = ("mean", "none")
_PROJECTIONS = ("rademacher", "gaussian")


def _listed(values: Tensor) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in values.tolist()) + "]"


def check_sigmas(sigmas: Tensor | list[float], name: str = "sigmas") -> Tensor:
    """Return σ_1 > σ_2 > … > σ_L > 0 as a float64 tensor, or raise naming ``name``."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    if sigmas.ndim != 1 or sigmas.numel() < 1:
        raise ValueError(f"{name} must be a 1-D sequence of at least one noise level, got shape {tuple(sigmas.shape)}")
    if not bool((sigmas > 0).all()) or not bool(torch.isfinite(sigmas).all()):
        raise ValueError(f"{name} must be positive and finite, got {_listed(sigmas)}")
    if sigmas.numel() > 1 and not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise ValueError(f"{name} must be strictly decreasing (σ_1 > … > σ_L, Song & Ermon 2019), got {_listed(sigmas)}")
    return sigmas


def geometric_sigmas(sigma_max: float, sigma_min: float, num_scales: int) -> Tensor:
    """σ_i = σ_max (σ_min/σ_max)^{(i−1)/(L−1)}, i = 1..L, float64 decreasing (Song & Ermon 2019, sec. 4.2)."""
    if not isinstance(num_scales, int) or isinstance(num_scales, bool) or num_scales < 2:
        raise ValueError(f"num_scales must be an int >= 2, got {num_scales!r}")
    if not (isinstance(sigma_min, (int, float)) and isinstance(sigma_max, (int, float)) and 0 < sigma_min < sigma_max):
        raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}")
    exponents = torch.linspace(0.0, 1.0, num_scales, dtype=torch.float64)
    return sigma_max * (sigma_min / sigma_max) ** exponents


def _reduce(losses: Tensor, reduction: str) -> Tensor:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not known; expected one of {_REDUCTIONS}")
    return losses.mean() if reduction == "mean" else losses


def dsm_loss(score_model: Callable[[Tensor, Tensor], Tensor], x0: Tensor, sigmas: Tensor, *, reduction: str = "mean",
             generator: torch.Generator | None = None) -> Tensor:
    """NCSN loss (1/L)Σ_i λ(σ_i) ½E‖s_θ(x̃, σ_i) + (x̃ − x)/σ_i²‖², λ(σ) = σ², σ_i drawn per example (Song & Ermon 2019, eq. 5–6).

    ``score_model(x, sigma)`` takes σ as a (B,) tensor in x's dtype. Returns nats²-free units: a sum over dims.
    """
    sigmas = check_sigmas(sigmas)
    index = torch.randint(0, sigmas.numel(), (x0.shape[0],), device=x0.device, generator=generator)
    sigma = sigmas.to(device=x0.device, dtype=x0.dtype)[index]
    noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
    perturbed = x0 + expand_like(sigma, x0) * noise  # x̃ ~ N(x, σ² I) (Vincent 2011)
    score = score_model(perturbed, sigma)
    check_same_shape("score_model's output", score, "x0", x0)  # a (B, 1) output would broadcast silently
    # λ(σ)·‖s + (x̃ − x)/σ²‖² = ‖σ s + z‖² (Song & Ermon 2019, eq. 6 with λ = σ²)
    losses = 0.5 * (expand_like(sigma, x0) * score + noise).pow(2).reshape(x0.shape[0], -1).sum(1)
    return _reduce(losses, reduction)


def score_sde_loss(eps_model: Callable[..., Tensor], sde: SDE, x0: Tensor, y: Tensor | None = None, *,
                   eps: float = 1e-5, likelihood_weighting: bool = False, importance_sampling: bool = False,
                   reduction: str = "mean", generator: torch.Generator | None = None) -> Tensor:
    """E_t λ(t) ½E‖s_θ(x_t, t) − ∇log p_0t(x_t|x_0)‖², t ~ U(eps, T) (Song et al. 2021, eq. 7), s_θ = −ε_θ/σ(t).

    λ(t) = σ(t)² (the ε-prediction loss ½‖ε_θ − z‖²) or, with ``likelihood_weighting``, λ(t) = g(t)²
    (Song et al. 2021b, Thm. 1: the weighted loss bounds the NLL). ``importance_sampling`` (VP SDE, likelihood
    weighting) draws t ∝ g²/σ² instead and divides by that density (Song et al. 2021b, sec. 5): the same expectation
    with far less variance, since g²/σ² grows like 1/t near 0.
    """
    check_sde(sde)
    eps = check_time_range("eps", eps, sde.T)
    batch = x0.shape[0]
    if importance_sampling:
        if not likelihood_weighting:
            raise ValueError("importance_sampling=True needs likelihood_weighting=True (it samples t ∝ g²/σ²)")
        if getattr(sde, "likelihood_weight_time", None) is None:
            raise ValueError(f"importance_sampling is implemented for the VP SDE only, got {type(sde).__name__}")
        u = torch.rand(batch, device=x0.device, dtype=torch.float64, generator=generator)
        t, normalizer = sde.likelihood_weight_time(u, eps)
    else:
        t = eps + (sde.T - eps) * torch.rand(batch, device=x0.device, dtype=torch.float64, generator=generator)
    noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
    coefficient, std = sde._mean_coefficient_std(t)
    perturbed = expand_like(coefficient.to(x0.dtype), x0) * x0 + expand_like(std.to(x0.dtype), x0) * noise
    time = t.to(x0.dtype)
    prediction = eps_model(perturbed, time) if y is None else eps_model(perturbed, time, y)
    check_same_shape("eps_model's output", prediction, "x0", x0)
    if importance_sampling:  # ½ (g²/σ²) / (p(t) (T − eps)) ‖z − ε_θ‖² with p = (g²/σ²)/Z: the uniform-t estimator's mean
        losses = 0.5 * normalizer / (sde.T - eps) * (noise - prediction).pow(2).reshape(batch, -1).sum(1)
    elif likelihood_weighting:  # ½ g² ‖s_θ + z/σ‖² with s_θ = −ε_θ/σ
        weight = (sde._diffusion(t) / std) ** 2
        losses = 0.5 * weight.to(x0.dtype) * (noise - prediction).pow(2).reshape(batch, -1).sum(1)
    else:  # ½ σ² ‖s_θ + z/σ‖² = ½‖z − ε_θ‖²
        losses = 0.5 * (noise - prediction).pow(2).reshape(batch, -1).sum(1)
    return _reduce(losses, reduction)


def _check_points(x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (B, D), got {type(x).__name__}")
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"x must have shape (B, D) with B, D >= 1, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor (scores are differentiated in x), got {x.dtype}")
    return x


def _score_with_graph(score: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """A leaf copy of x that requires grad, and s_θ(x) on it (checked to be (B, D)); call under enable_grad."""
    point = x.detach().requires_grad_(True)
    value = score(point)
    check_same_shape("score's output", value, "x", x)  # a (B, 1) output would broadcast silently
    return point, value


def explicit_score_matching(score: Callable[[Tensor], Tensor], x: Tensor,
                            true_score: Tensor | Callable[[Tensor], Tensor]) -> Tensor:
    """J_SM = ½ E‖s_θ(x) − ∇log p(x)‖² (Hyvärinen 2005, eq. 2), a scalar; needs the data score ∇log p.

    ``true_score`` is ∇log p at x, a ``(B, D)`` tensor or a function ``true_score(x) -> (B, D)``.
    """
    x = _check_points(x)
    target = true_score(x) if callable(true_score) else true_score
    check_same_shape("true_score", target, "x", x)
    value = score(x)
    check_same_shape("score's output", value, "x", x)
    return 0.5 * (value - target).pow(2).sum(1).mean()  # Hyvärinen 2005, eq. 2


def implicit_score_matching(score: Callable[[Tensor], Tensor], x: Tensor, *, reduction: str = "mean") -> Tensor:
    """J_ISM = E[tr ∇_x s_θ(x) + ½‖s_θ(x)‖²] = J_SM − ½E‖∇log p‖² (Hyvärinen 2005, Thm. 1, eq. 4), a scalar
    (``reduction="none"``: the per-example terms, (B,)).

    The trace is exact: one backward pass per data dimension (meant for low D); the result keeps its
    graph (``create_graph=True``), so it can be minimized over the model's parameters.
    """
    x = _check_points(x)
    check_choice("reduction", reduction, _REDUCTIONS)
    with torch.enable_grad():
        point, value = _score_with_graph(score, x)
        trace = torch.zeros(x.shape[0], device=x.device, dtype=value.dtype)
        for i in range(x.shape[1]):  # ∂s_i/∂x_i for every row at once: rows do not interact
            (column,) = torch.autograd.grad(value[:, i].sum(), point, create_graph=True)
            trace = trace + column[:, i]
        return _reduce(trace + 0.5 * value.pow(2).sum(1), reduction)  # Hyvärinen 2005, eq. 4


def sliced_score_matching(score: Callable[[Tensor], Tensor], x: Tensor, *, num_projections: int = 1,
                          projection: str = "rademacher", generator: torch.Generator | None = None,
                          variance_reduction: bool = True, reduction: str = "mean") -> Tensor:
    """Sliced score matching, E_v E_x[vᵀ∇_x s_θ(x) v + ½(vᵀs_θ(x))²] (Song et al. 2019, eq. 7), a scalar
    (``reduction="none"``: the per-example terms averaged over the projections, (B,)).

    With ``variance_reduction`` (SSM-VR, their eq. 8) ½(vᵀs)² is replaced by its mean over v, ½‖s‖².
    ``num_projections`` vectors v per example, Rademacher ±1 or standard normal (E[vvᵀ] = I, so
    E_v[vᵀJv] = tr J and both forms equal ``implicit_score_matching`` in expectation); one
    Hessian-vector backward pass per projection; the result keeps its graph (``create_graph=True``).
    """
    x = _check_points(x)
    num_projections = check_positive_int("num_projections", num_projections)
    check_choice("projection", projection, _PROJECTIONS)
    check_choice("reduction", reduction, _REDUCTIONS)
    if not isinstance(variance_reduction, bool):
        raise TypeError(f"variance_reduction must be a bool, got {variance_reduction!r}")
    shape = (num_projections, *x.shape)
    if projection == "rademacher":
        vectors = torch.randint(0, 2, shape, device=x.device, generator=generator).to(x.dtype) * 2 - 1
    else:
        vectors = torch.randn(shape, device=x.device, dtype=x.dtype, generator=generator)
    with torch.enable_grad():
        point, value = _score_with_graph(score, x)
        losses = torch.zeros(x.shape[0], device=x.device, dtype=value.dtype)
        for v in vectors:
            projected = (value * v).sum(1)  # vᵀs_θ(x), (B,)
            (vector_jacobian,) = torch.autograd.grad(projected.sum(), point, create_graph=True)  # vᵀ∇_x s_θ per row
            second = 0.5 * value.pow(2).sum(1) if variance_reduction else 0.5 * projected.pow(2)
            losses = losses + (vector_jacobian * v).sum(1) + second  # Song et al. 2019, eq. 7 (eq. 8 with VR)
        return losses.mean() / num_projections if reduction == "mean" else losses / num_projections

