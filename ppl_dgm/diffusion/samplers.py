"""Samplers over the ε-network contract: ancestral (Ho et al. 2020, Alg. 2) and DDIM (Song, Meng & Ermon 2021).

Each is a ``@torch.no_grad()`` function of (eps_model, schedule, shape); randomness only through
``generator``; coefficients are indexed from tables cast once to the device (no host round trips).
"""
from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ppl_dgm._checks import check_positive_int, check_shape
from ppl_dgm.diffusion.guidance import guided_eps
from ppl_dgm.diffusion.schedules import NoiseSchedule

__all__ = ["sample_ancestral", "sample_ddim", "ddim_encode", "ddim_timesteps"]


def _resolve_device(eps_model, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    parameter = next(eps_model.parameters(), None) if isinstance(eps_model, nn.Module) else None
    return parameter.device if parameter is not None else torch.device("cpu")


def _model_dtype(eps_model) -> torch.dtype:
    parameter = next(eps_model.parameters(), None) if isinstance(eps_model, nn.Module) else None
    return parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.get_default_dtype()


def _check_schedule(schedule) -> NoiseSchedule:
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
    return schedule


def _start(shape, x_T, generator, device, dtype) -> Tensor:
    if x_T is not None:
        if not isinstance(x_T, Tensor) or not x_T.is_floating_point() or x_T.ndim < 1:
            raise TypeError(f"x_T must be a floating tensor (B, ...) or None, got {x_T.dtype if isinstance(x_T, Tensor) else type(x_T).__name__}")
        return x_T.to(device=device, dtype=dtype).clone()
    return torch.randn(check_shape(shape), generator=generator, device=device, dtype=dtype)


def _times(step: int, num_steps: int, x: Tensor) -> Tensor:
    return torch.full((x.shape[0],), step / num_steps, device=x.device, dtype=x.dtype)  # contract: t = i / T


@torch.no_grad()
def sample_ancestral(
    eps_model,
    schedule: NoiseSchedule,
    shape: Sequence[int],
    *,
    variance: str = "beta",
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
    y: Tensor | None = None,
    guidance_scale: float = 0.0,
    x_T: Tensor | None = None,
    clip_x0: bool = False,
    callback=None,
) -> Tensor:
    """x_T ~ N(0, I), then x_{t−1} = (x_t − β_t/√(1−ᾱ_t) ε)/√α_t + σ_t z for t = T..1, z = 0 at t = 1 (Ho et al. 2020, Alg. 2).

    σ_t² = β_t (``variance="beta"``) or β̃_t (``"beta_tilde"``). ``clip_x0`` clips the predicted x_0 to
    [−1, 1] and uses the posterior mean μ̃_t(x_t, x̂_0) instead (Ho et al.'s code). ``callback(call, x_t, x̂_0)``
    sees every network call (T of them). Returns (B, ...).
    """
    from tqdm.auto import tqdm

    schedule = _check_schedule(schedule)
    _check_callback(callback)
    if variance not in ("beta", "beta_tilde"):
        raise ValueError(f"variance={variance!r} is not known; expected 'beta' or 'beta_tilde'")
    device = _resolve_device(eps_model, device)
    x = _start(shape, x_T, generator, device, _model_dtype(eps_model))
    eps_fn = guided_eps(eps_model, None if y is None else y.to(device), guidance_scale)
    tables = schedule.tables(device, x.dtype)
    # every per-step coefficient as a (T,) table made once: the loop only indexes them (no per-step scalar ops)
    sigmas = (tables["betas"] if variance == "beta" else tables["posterior_variance"]).sqrt()
    eps_coefficients = tables["betas"] / (1.0 - tables["alpha_bar"]).sqrt()  # β_t / √(1 − ᾱ_t)
    sqrt_alphas = tables["alphas"].sqrt()
    sqrt_alpha_bar, sqrt_one_minus_alpha_bar = tables["alpha_bar"].sqrt(), (1.0 - tables["alpha_bar"]).sqrt()
    for step in tqdm(range(schedule.num_steps, 0, -1), desc="ancestral", disable=not progress, leave=False):
        i = step - 1
        eps = eps_fn(x, _times(step, schedule.num_steps, x))
        if callback is not None or clip_x0:
            x0 = (x - sqrt_one_minus_alpha_bar[i] * eps) / sqrt_alpha_bar[i]  # Ho et al. 2020, eq. 4 solved for x_0
            x0 = x0.clamp(-1.0, 1.0) if clip_x0 else x0
            if callback is not None:
                callback(schedule.num_steps - step, x, x0)
        if clip_x0:
            x = tables["posterior_mean_coef_x0"][i] * x0 + tables["posterior_mean_coef_xt"][i] * x  # eq. 7
        else:  # Ho et al. 2020, Alg. 2, line 4 (the mean is eq. 11)
            x = (x - eps_coefficients[i] * eps) / sqrt_alphas[i]
        if step > 1:
            x = x + sigmas[i] * torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
    return x


def ddim_timesteps(schedule: NoiseSchedule, steps: int | Sequence[int]) -> list[int]:
    """The increasing sub-sequence τ of 1..T: ``steps`` evenly spaced steps from 1 to T (rounded), or an explicit one."""
    num_steps = _check_schedule(schedule).num_steps
    if isinstance(steps, numbers.Integral) and not isinstance(steps, bool):
        steps = check_positive_int("steps", steps)
        if steps > num_steps:
            raise ValueError(f"steps must be at most T={num_steps}, got {steps}")
        if steps == 1:
            return [num_steps]
        return sorted({round(1 + k * (num_steps - 1) / (steps - 1)) for k in range(steps)})
    sequence = [int(s) for s in steps] if isinstance(steps, (Sequence, Tensor)) and not isinstance(steps, str) else None
    if not sequence or any(b <= a for a, b in zip(sequence, sequence[1:])) or sequence[0] < 1 or sequence[-1] > num_steps:
        raise ValueError(f"steps must be an int or a strictly increasing sequence of steps in 1..{num_steps}, got {steps!r}")
    return sequence


def _check_callback(callback) -> None:
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable callback(step, x, denoised), got {type(callback).__name__}")


def _check_eta(eta: float) -> float:
    if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be a float in [0, 1], got {eta!r}")
    return float(eta)


@torch.no_grad()
def sample_ddim(
    eps_model,
    schedule: NoiseSchedule,
    shape: Sequence[int],
    *,
    steps: int | Sequence[int] = 50,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
    x_T: Tensor | None = None,
    y: Tensor | None = None,
    guidance_scale: float = 0.0,
    clip_x0: bool = False,
    callback=None,
) -> Tensor:
    """DDIM over the sub-sequence τ (Song, Meng & Ermon 2021, eq. 12; σ from eq. 16 scaled by η).

    η = 0 is deterministic (the probability-flow map), η = 1 is DDPM-like. ``clip_x0`` clips the
    predicted x_0 to [−1, 1] (diffusers' ``clip_sample``); ε is then recomputed from it. ``callback(call, x_t, x̂_0)``
    sees every network call (one per step). Ends at x_0.
    """
    from tqdm.auto import tqdm

    schedule = _check_schedule(schedule)
    _check_callback(callback)
    eta = _check_eta(eta)
    timesteps = ddim_timesteps(schedule, steps)
    device = _resolve_device(eps_model, device)
    x = _start(shape, x_T, generator, device, _model_dtype(eps_model))
    eps_fn = guided_eps(eps_model, None if y is None else y.to(device), guidance_scale)
    alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), schedule.alpha_bar]).to(device=device, dtype=x.dtype)  # ᾱ_0 = 1
    pairs = list(zip(reversed(timesteps), reversed([0] + timesteps[:-1])))  # (τ_i, τ_{i−1}), i = S..1
    # the coefficients of every step as (S,) tables made once: the loop only indexes them
    a_t, a_prev = alpha_bar[[step for step, _ in pairs]], alpha_bar[[prev for _, prev in pairs]]
    sigmas = eta * ((1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev)).sqrt()  # ibid., eq. 16
    sqrt_a_t, sqrt_one_minus_a_t, sqrt_a_prev = a_t.sqrt(), (1.0 - a_t).sqrt(), a_prev.sqrt()
    directions = (1.0 - a_prev - sigmas**2).clamp(min=0).sqrt()  # ibid., eq. 12: √(1 − ᾱ_{t−1} − σ_t²)
    for k, (step, prev) in enumerate(tqdm(pairs, desc="ddim", disable=not progress, leave=False)):
        eps = eps_fn(x, _times(step, schedule.num_steps, x))
        x0 = (x - sqrt_one_minus_a_t[k] * eps) / sqrt_a_t[k]  # "predicted x_0", Song et al. 2021, eq. 12
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
            eps = (x - sqrt_a_t[k] * x0) / sqrt_one_minus_a_t[k]
        if callback is not None:
            callback(k, x, x0)
        x = sqrt_a_prev[k] * x0 + directions[k] * eps  # ibid., eq. 12
        if eta > 0 and prev > 0:
            x = x + sigmas[k] * torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
    return x


@torch.no_grad()
def ddim_encode(
    eps_model,
    schedule: NoiseSchedule,
    x0: Tensor,
    steps: int | Sequence[int] = 50,
    *,
    y: Tensor | None = None,
    fixed_point_iterations: int = 0,
    progress: bool = False,
) -> Tensor:
    """x_0 → x_T by running η = 0 DDIM backwards (Song et al. 2021, sec. 4.3), inverse of :func:`sample_ddim`.

    Step τ_{i−1} → τ_i uses ε(x_{τ_{i−1}}, τ_i); ``fixed_point_iterations`` > 0 refines x_{τ_i} until the
    DDIM step from it returns x_{τ_{i−1}}, making decode(encode(x_0)) exact up to convergence.
    """
    from tqdm.auto import tqdm

    schedule = _check_schedule(schedule)
    timesteps = ddim_timesteps(schedule, steps)
    if not isinstance(x0, Tensor) or not x0.is_floating_point() or x0.ndim < 1:
        raise TypeError(f"x0 must be a floating tensor (B, ...), got {x0.dtype if isinstance(x0, Tensor) else type(x0).__name__}")
    if isinstance(fixed_point_iterations, bool) or not isinstance(fixed_point_iterations, int) or fixed_point_iterations < 0:
        raise ValueError(f"fixed_point_iterations must be an int >= 0, got {fixed_point_iterations!r}")
    eps_fn = guided_eps(eps_model, y)
    x = x0.clone()
    alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), schedule.alpha_bar]).to(device=x.device, dtype=x.dtype)
    previous = [0] + timesteps[:-1]
    for step, prev in tqdm(list(zip(timesteps, previous)), desc="ddim encode", disable=not progress, leave=False):
        a_t, a_prev = alpha_bar[step], alpha_bar[prev]
        time = _times(step, schedule.num_steps, x)
        eps = eps_fn(x, time)
        # Song et al. 2021, eq. 12 with η = 0, solved for x_{τ_i}: x_t = √ᾱ_t x̂_0 + √(1 − ᾱ_t) ε
        x_next = a_t.sqrt() * (x - (1.0 - a_prev).sqrt() * eps) / a_prev.sqrt() + (1.0 - a_t).sqrt() * eps
        for _ in range(fixed_point_iterations):
            eps = eps_fn(x_next, time)
            x_next = a_t.sqrt() * (x - (1.0 - a_prev).sqrt() * eps) / a_prev.sqrt() + (1.0 - a_t).sqrt() * eps
        x = x_next
    return x
