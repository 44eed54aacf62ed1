"""Discrete DDPM noise schedules in float64: β_t, α_t, ᾱ_t and the Gaussian kernels of q (Ho et al. 2020).

Steps are 1-indexed, t ∈ {1, …, T}; every table is a float64 tensor of length T whose entry t − 1
belongs to step t. Networks see the step as the float time t / T (docs/design.md, network contract).
"""
from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from ppl_dgm._checks import check_positive_int
from ppl_dgm.nn.functional import expand_like

__all__ = ["NoiseSchedule", "linear_schedule", "cosine_schedule"]


def _check_beta(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must be a float in (0, 1), got {value!r}")
    return float(value)


class NoiseSchedule:
    """A variance schedule β_1..β_T (each in (0, 1)) and the derived float64 tables of Ho et al. 2020.

    ``alpha_bar[t − 1]`` is ᾱ_t; ``alpha_bar_prev[t − 1]`` is ᾱ_{t−1} with ᾱ_0 = 1.
    """

    def __init__(self, betas: Tensor):
        betas = torch.as_tensor(betas, dtype=torch.float64).detach().cpu().clone()
        if betas.ndim != 1 or betas.numel() < 1:
            raise ValueError(f"betas must be a 1-D tensor with T >= 1 entries, got shape {tuple(betas.shape)}")
        bad = ~((betas > 0) & (betas < 1))
        if bad.any():
            index = int(bad.nonzero()[0])
            raise ValueError(f"betas must lie in (0, 1), got betas[{index}] = {float(betas[index])!r} (step t={index + 1})")
        self.betas = betas
        self.num_steps = betas.numel()
        self.alphas = 1.0 - betas  # Ho et al. 2020, sec. 2: α_t = 1 − β_t
        self.alpha_bar = torch.cumprod(self.alphas, 0)  # Ho et al. 2020, eq. 4: ᾱ_t = ∏_{s≤t} α_s
        self.alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar[:-1]])
        # Ho et al. 2020, eq. 7: β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t   (β̃_1 = 0)
        self.posterior_variance = (1.0 - self.alpha_bar_prev) / (1.0 - self.alpha_bar) * betas
        # Ho et al. 2020, eq. 7: μ̃_t = √ᾱ_{t−1} β_t / (1 − ᾱ_t) · x_0 + √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · x_t
        self.posterior_mean_coef_x0 = self.alpha_bar_prev.sqrt() * betas / (1.0 - self.alpha_bar)
        self.posterior_mean_coef_xt = self.alphas.sqrt() * (1.0 - self.alpha_bar_prev) / (1.0 - self.alpha_bar)
        self._cache: dict[tuple, dict[str, Tensor]] = {}

    def __repr__(self) -> str:
        return f"NoiseSchedule(T={self.num_steps}, beta_1={float(self.betas[0]):.3g}, beta_T={float(self.betas[-1]):.3g})"

    def check_step(self, t: int | Tensor) -> Tensor:
        """``t`` as an int64 tensor, checked to lie in 1..T (raises ValueError naming t otherwise)."""
        if isinstance(t, Tensor):
            if t.is_floating_point() or t.dtype == torch.bool:
                raise TypeError(f"t must be an integer step in 1..{self.num_steps}, got a tensor of dtype {t.dtype}")
            steps = t.long()
        elif isinstance(t, numbers.Integral) and not isinstance(t, bool):
            steps = torch.tensor(int(t))
        else:
            raise TypeError(f"t must be an integer step in 1..{self.num_steps} (int or int tensor), got {t!r}")
        if steps.numel() and (int(steps.min()) < 1 or int(steps.max()) > self.num_steps):
            raise ValueError(
                f"t must lie in 1..T = 1..{self.num_steps}, got values in [{int(steps.min())}, {int(steps.max())}]"
            )
        return steps

    def tables(self, device: torch.device | str, dtype: torch.dtype) -> dict[str, Tensor]:
        """Every table cast to (device, dtype), cached: samplers index these without host round trips."""
        key = (str(torch.device(device)), dtype)
        if key not in self._cache:
            names = ("betas", "alphas", "alpha_bar", "alpha_bar_prev", "posterior_variance",
                     "posterior_mean_coef_x0", "posterior_mean_coef_xt")
            self._cache[key] = {name: getattr(self, name).to(device=device, dtype=dtype) for name in names}
        return self._cache[key]

    def _gather(self, name: str, t: int | Tensor, like: Tensor) -> Tensor:
        """Table ``name`` at step(s) t, broadcast against ``like`` (B, ...) in its dtype/device."""
        steps = self.check_step(t).to(like.device)
        values = self.tables(like.device, like.dtype)[name][steps - 1]
        return expand_like(values, like) if values.ndim else values

    def q_mean_std(self, x0: Tensor, t: int | Tensor) -> tuple[Tensor, Tensor]:
        """Mean and std of q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I) (Ho et al. 2020, eq. 4); t int or (B,)."""
        alpha_bar = self._gather("alpha_bar", t, x0)
        return alpha_bar.sqrt() * x0, (1.0 - alpha_bar).sqrt().expand_as(x0)

    def q_sample(self, x0: Tensor, t: int | Tensor, noise: Tensor) -> Tensor:
        """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (Ho et al. 2020, eq. 4 reparametrized)."""
        mean, std = self.q_mean_std(x0, t)
        return mean + std * noise

    def posterior_mean_variance(self, x0: Tensor, xt: Tensor, t: int | Tensor) -> tuple[Tensor, Tensor]:
        """Mean μ̃_t(x_t, x_0) and variance β̃_t of q(x_{t−1} | x_t, x_0) (Ho et al. 2020, eqs. 6–7)."""
        mean = self._gather("posterior_mean_coef_x0", t, x0) * x0 + self._gather("posterior_mean_coef_xt", t, xt) * xt
        return mean, self._gather("posterior_variance", t, x0).expand_as(x0)

    def predict_x0(self, xt: Tensor, t: int | Tensor, eps: Tensor) -> Tensor:
        """x̂_0 = (x_t − √(1 − ᾱ_t) ε) / √ᾱ_t (Ho et al. 2020, eq. 4 solved for x_0)."""
        alpha_bar = self._gather("alpha_bar", t, xt)
        return (xt - (1.0 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()


def linear_schedule(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
    """β_t linear from ``beta_start`` to ``beta_end`` over T steps (Ho et al. 2020, sec. 4: 1e-4 → 0.02, T = 1000)."""
    num_steps = check_positive_int("num_steps", num_steps)
    beta_start, beta_end = _check_beta("beta_start", beta_start), _check_beta("beta_end", beta_end)
    return NoiseSchedule(torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64))


def cosine_schedule(num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
    """ᾱ_t = f(t)/f(0), f(t) = cos²(π/2 · (t/T + s)/(1 + s)); β_t = min(1 − ᾱ_t/ᾱ_{t−1}, max_beta) (Nichol & Dhariwal 2021, eq. 17)."""
    num_steps = check_positive_int("num_steps", num_steps)
    if isinstance(s, bool) or not isinstance(s, numbers.Real) or not float(s) >= 0.0:
        raise ValueError(f"s must be a non-negative float offset, got {s!r}")
    max_beta = _check_beta("max_beta", max_beta)
    steps = torch.arange(num_steps + 1, dtype=torch.float64)
    f = torch.cos((steps / num_steps + s) / (1.0 + s) * math.pi / 2.0) ** 2  # Nichol & Dhariwal 2021, eq. 17
    alpha_bar = f / f[0]
    betas = (1.0 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)  # clipped at 0.999 (ibid., sec. 3.2)
    return NoiseSchedule(betas)
