"""Forward SDEs dx = f(x, t) dt + g(t) dw on t ∈ [0, T] (Song et al. 2021, sec. 3.4): VP, sub-VP, VE.

Schedules are evaluated in float64 and cast to x's dtype. Public methods check their arguments;
the underscore methods are the unchecked math the samplers call once per step.
"""
from __future__ import annotations

import abc
import math
import numbers
from typing import Callable

import torch
from torch import Tensor

from ppl_dgm._checks import check_shape
from ppl_dgm.nn.functional import expand_like

__all__ = ["SDE", "VPSDE", "SubVPSDE", "VESDE", "ReverseSDE", "score_fn", "check_time_range", "check_sde"]

ScoreFn = Callable[[Tensor, Tensor], Tensor]


def _positive_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite float, got {value!r}")
    return float(value)


def check_sde(sde: object) -> "SDE":
    """Return ``sde`` if it is an :class:`SDE`, else raise a TypeError naming it."""
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be an SDE (VPSDE, SubVPSDE, VESDE), got {type(sde).__name__}")
    return sde


def check_time_range(name: str, value: object, high: float = 1.0) -> float:
    """Return ``value`` as a float in (0, ``high``) or raise naming ``name`` (e.g. the sampler's ``eps``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < value < high:
        raise ValueError(f"{name} must be a float in (0, T={high}), got {value!r}")
    return float(value)


class SDE(abc.ABC):
    """Base class: subclasses define ``_beta_like`` pieces through ``_drift_diffusion``, ``_mean_std``, ``prior_std``."""

    T = 1.0
    prior_std = 1.0

    # ------------------------------------------------------------------ unchecked math (subclasses)
    @abc.abstractmethod
    def _drift_diffusion(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """f(x, t) like x and g(t) of shape (B,) (float64)."""

    @abc.abstractmethod
    def _mean_coefficient_std(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(a(t), σ(t)) float64 (B,) with p_0t(x_t | x_0) = N(a(t) x_0, σ(t)² I)."""

    @abc.abstractmethod
    def _diffusion(self, t: Tensor) -> Tensor:
        """g(t), float64 (B,)."""

    # ------------------------------------------------------------------ checked public API
    def _check(self, x: Tensor, t: Tensor, allow_outside: bool = False) -> Tensor:
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 1:
            raise TypeError(f"x must be a floating tensor (B, ...), got {type(x).__name__} {getattr(x, 'dtype', '')}")
        if isinstance(t, numbers.Real) and not isinstance(t, bool):
            t = torch.full((x.shape[0],), float(t), dtype=torch.float64, device=x.device)
        if not isinstance(t, Tensor) or not t.is_floating_point() or t.shape != (x.shape[0],):
            raise ValueError(f"t must be a float or a float tensor of shape ({x.shape[0]},) matching x, got {t!r:.80}")
        if not allow_outside and not bool(((t >= 0) & (t <= self.T)).all()):  # written so that NaN fails too
            num_nan = int(torch.isnan(t).sum())
            if num_nan:
                raise ValueError(f"t must lie in [0, T={self.T}], got {num_nan} NaN value(s) of {t.numel()}")
            raise ValueError(f"t must lie in [0, T={self.T}], got values in [{float(t.min()):.6g}, {float(t.max()):.6g}]")
        return t

    def sde(self, x: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """Drift f(x, t) like x and diffusion g(t) of shape (B,) (Song et al. 2021, eq. 5)."""
        t = self._check(x, t)
        drift, diffusion = self._drift_diffusion(x, t)
        return drift, diffusion.to(x.dtype)

    def marginal_prob(self, x0: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """Mean (like x0) and std (B,) of the perturbation kernel p_0t(x_t | x_0) (Song et al. 2021, eq. 29/33)."""
        t = self._check(x0, t)
        coefficient, std = self._mean_coefficient_std(t)
        return expand_like(coefficient.to(x0.dtype), x0) * x0, std.to(x0.dtype)

    def prior_sampling(self, shape, generator: torch.Generator | None = None, *, device=None, dtype=torch.float32) -> Tensor:
        """x_T ~ N(0, prior_std² I) of ``shape`` (B, ...)."""
        shape = check_shape(shape)
        device = device if device is not None else (generator.device if generator is not None else "cpu")
        return torch.randn(shape, generator=generator, device=device, dtype=dtype) * self.prior_std

    def prior_logp(self, z: Tensor) -> Tensor:
        """log N(z; 0, prior_std² I) in nats per example, shape (B,), float64."""
        z = z.double().reshape(z.shape[0], -1)
        dims = z.shape[1]
        return -0.5 * dims * math.log(2 * math.pi * self.prior_std**2) - z.pow(2).sum(1) / (2 * self.prior_std**2)

    def discretize(self, x: Tensor, t: Tensor, dt: float) -> tuple[Tensor, Tensor]:
        """One forward step x_{i+1} = x_i + f_i + G_i z: Euler f_i = f Δt, G_i = g √Δt (Song et al. 2021, eq. 45)."""
        drift, diffusion = self._drift_diffusion(x, t)
        return drift * dt, (diffusion * math.sqrt(dt)).to(x.dtype)

    def reverse(self, score: ScoreFn, probability_flow: bool = False) -> "ReverseSDE":
        """The reverse-time SDE (Song et al. 2021, eq. 6) or its probability-flow ODE (eq. 13)."""
        return ReverseSDE(self, score, probability_flow)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class VPSDE(SDE):
    """dx = −½β(t)x dt + √β(t) dw, β(t) = β_min + t(β_max − β_min) (Song et al. 2021, eq. 11): DDPM as T→∞."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min = _positive_float("beta_min", beta_min)
        self.beta_max = _positive_float("beta_max", beta_max)
        if self.beta_max <= self.beta_min:
            raise ValueError(f"beta_max must exceed beta_min={beta_min}, got {beta_max!r}")

    def _beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t.double() * (self.beta_max - self.beta_min)

    def _log_mean_coefficient(self, t: Tensor) -> Tensor:
        t = t.double()  # log a(t) = −¼t²(β_max − β_min) − ½tβ_min (Song et al. 2021, eq. 29)
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def _diffusion(self, t: Tensor) -> Tensor:
        return self._beta(t).sqrt()

    def _drift_diffusion(self, x, t):
        beta = self._beta(t)
        return expand_like(-0.5 * beta.to(x.dtype), x) * x, beta.sqrt()  # Song et al. 2021, eq. 11

    def _mean_coefficient_std(self, t):
        log_coefficient = self._log_mean_coefficient(t)
        return log_coefficient.exp(), (-torch.expm1(2 * log_coefficient)).sqrt()  # eq. 29: σ² = 1 − e^{−∫β}

    def likelihood_weight_time(self, u: Tensor, eps: float) -> tuple[Tensor, float]:
        """Times t ∈ [eps, T] with density g(t)²/σ(t)² / Z from uniforms u ∈ [0, 1] by inversion, and Z.

        The importance sampling of Song, Durkan, Murray & Ermon 2021 (sec. 5) for the likelihood-weighted loss: with
        B(t) = ∫₀ᵗ β = β_min t + ½(β_max − β_min)t², g²/σ² = β/(1 − e^{−B}) has the antiderivative F = log(e^B − 1),
        so F(t) = F(eps) + u (F(T) − F(eps)), B = log(1 + e^F) and t solves the quadratic. Only the VP SDE (this class,
        not the sub-VP SDE) has this closed form.
        """
        spread = self.beta_max - self.beta_min

        def antiderivative(t: float) -> float:
            return math.log(math.expm1(self.beta_min * t + 0.5 * spread * t**2))

        low, high = antiderivative(eps), antiderivative(self.T)
        integral = torch.nn.functional.softplus(low + u.double() * (high - low))  # B(t)
        t = (torch.sqrt(self.beta_min**2 + 2 * spread * integral) - self.beta_min) / spread
        return t.clamp(eps, self.T), high - low

    def discretize(self, x, t, dt):
        # DDPM's chain with β_i = β(t)Δt: x_{i+1} = √(1 − β_i) x_i + √β_i z (Song et al. 2021, eq. 47 / Ho et al. eq. 2)
        beta = expand_like((self._beta(t) * dt).to(x.dtype), x)
        return (torch.sqrt(1.0 - beta) - 1.0) * x, (self._beta(t) * dt).sqrt().to(x.dtype)


class SubVPSDE(VPSDE):
    """dx = −½β(t)x dt + √(β(t)(1 − e^{−2∫β})) dw (Song et al. 2021, eq. 12); its variance stays below VP's."""

    def _diffusion(self, t):
        return (self._beta(t) * -torch.expm1(4 * self._log_mean_coefficient(t))).sqrt()  # 2∫β = −4 log a

    def _drift_diffusion(self, x, t):
        beta = self._beta(t)
        return expand_like(-0.5 * beta.to(x.dtype), x) * x, self._diffusion(t)  # Song et al. 2021, eq. 12

    def _mean_coefficient_std(self, t):
        log_coefficient = self._log_mean_coefficient(t)
        return log_coefficient.exp(), -torch.expm1(2 * log_coefficient)  # eq. 30: σ = 1 − e^{−∫β}

    discretize = SDE.discretize
    likelihood_weight_time = None  # the sub-VP SDE's g²/σ² has no closed-form antiderivative here


class VESDE(SDE):
    """dx = σ(t)√(2 log(σ_max/σ_min)) dw, σ(t) = σ_min(σ_max/σ_min)^t (Song et al. 2021, eq. 9): SMLD as T→∞."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        self.sigma_min = _positive_float("sigma_min", sigma_min)
        self.sigma_max = _positive_float("sigma_max", sigma_max)
        if self.sigma_max <= self.sigma_min:
            raise ValueError(f"sigma_max must exceed sigma_min={sigma_min}, got {sigma_max!r}")

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    def _sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t.double()

    def _diffusion(self, t):
        return self._sigma(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))  # eq. 9

    def _drift_diffusion(self, x, t):
        return torch.zeros_like(x), self._diffusion(t)

    def _mean_coefficient_std(self, t):
        return torch.ones_like(t, dtype=torch.float64), self._sigma(t)  # eq. 31 (σ_min² absorbed at t = 0, as in the paper)

    def discretize(self, x, t, dt):
        # SMLD's chain: x_{i+1} = x_i + √(σ_{i+1}² − σ_i²) z (Song et al. 2021, eq. 46)
        previous = self._sigma((t.double() - dt).clamp(min=0.0))
        return torch.zeros_like(x), (self._sigma(t) ** 2 - previous**2).sqrt().to(x.dtype)


class ReverseSDE:
    """dx = [f − g² ∇log p_t] dt + g dw̄ (Song et al. 2021, eq. 6); with ``probability_flow`` the ODE of eq. 13."""

    def __init__(self, forward: SDE, score: ScoreFn, probability_flow: bool = False):
        if not isinstance(forward, SDE):
            raise TypeError(f"forward must be an SDE, got {type(forward).__name__}")
        if not callable(score):
            raise TypeError(f"score must be callable score(x, t), got {type(score).__name__}")
        self.forward, self.score, self.probability_flow = forward, score, bool(probability_flow)
        self.T = forward.T

    def _drift_diffusion(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        drift, diffusion = self.forward._drift_diffusion(x, t)
        g_squared = expand_like(diffusion.to(x.dtype) ** 2, x)
        weight = 0.5 if self.probability_flow else 1.0
        drift = drift - weight * g_squared * self.score(x, t)  # eq. 6 / eq. 13
        return drift, torch.zeros_like(diffusion) if self.probability_flow else diffusion

    def sde(self, x: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """Reverse drift like x and diffusion (B,) at forward time t."""
        t = self.forward._check(x, t)
        drift, diffusion = self._drift_diffusion(x, t)
        return drift, diffusion.to(x.dtype)

    def discretize(self, x: Tensor, t: Tensor, dt: float) -> tuple[Tensor, Tensor]:
        """Reverse-diffusion step: f̄ = f_i − G_i² s, Ḡ = G_i (Song et al. 2021, eq. 47)."""
        drift, diffusion = self.forward.discretize(x, t, dt)
        weight = 0.5 if self.probability_flow else 1.0
        return drift - weight * expand_like(diffusion**2, x) * self.score(x, t), (
            torch.zeros_like(diffusion) if self.probability_flow else diffusion)


def score_fn(eps_model: Callable[..., Tensor], sde: SDE, y: Tensor | None = None, guidance_scale: float = 0.0,
             callback: Callable[[int, Tensor, Tensor], None] | None = None) -> ScoreFn:
    """score(x, t) = −ε(x, t)/σ(t) with σ the SDE's marginal std (Song et al. 2021, App. C; Ho et al. 2020, eq. 11).

    The network sees t cast to x's dtype; VPSDE(0.1, 20) at t = i/T is DDPM's step i (T = 1000). With labels ``y``
    and ``guidance_scale`` w, ε is the classifier-free guided ε̃ (Ho & Salimans 2022, eq. 6). ``callback(call, x,
    denoised)`` sees every network call with x̂_0 = (x − σ ε)/m(t), m the SDE's mean coefficient (the sampler contract).
    """
    from ppl_dgm.diffusion.guidance import guided_eps

    check_sde(sde)
    if not callable(eps_model):
        raise TypeError(f"eps_model must be callable eps_model(x, t, y=None), got {type(eps_model).__name__}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable callback(step, x, denoised), got {type(callback).__name__}")
    eps_fn = guided_eps(eps_model, y, guidance_scale)
    calls = [0]

    def score(x: Tensor, t: Tensor) -> Tensor:
        mean_coefficient, std = sde._mean_coefficient_std(t)
        eps = eps_fn(x, t.to(x.dtype))
        std = expand_like(std.to(x.dtype), x)
        if callback is not None:
            callback(calls[0], x, (x - std * eps) / expand_like(mean_coefficient.to(x.dtype), x))
            calls[0] += 1
        return -eps / std

    return score
