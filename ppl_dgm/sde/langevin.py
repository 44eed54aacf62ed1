"""Unadjusted Langevin dynamics and annealed Langevin dynamics (Song & Ermon 2019, eq. 4 and Alg. 1)."""
from __future__ import annotations

import math
import numbers
from typing import Callable

import torch
from torch import Tensor

from ppl_dgm._checks import check_positive_int, check_shape
from ppl_dgm.sde.losses import check_sigmas
from ppl_dgm.sde.reverse import model_device_dtype

__all__ = ["langevin_dynamics", "annealed_langevin"]


def _check_step_size(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"step_size must be a positive float, got {value!r}")
    return float(value)


@torch.no_grad()
def langevin_dynamics(score: Callable[[Tensor], Tensor], x_init: Tensor, *, step_size: float, steps: int,
                      generator: torch.Generator | None = None, progress: bool = False) -> Tensor:
    """x_{k+1} = x_k + (ε/2)∇log p(x_k) + √ε z_k, k < ``steps`` (Song & Ermon 2019, eq. 4); returns x like ``x_init``."""
    from tqdm.auto import tqdm

    step_size = _check_step_size(step_size)
    check_positive_int("steps", steps)
    x = x_init.clone()
    for _ in tqdm(range(steps), desc="langevin", disable=not progress, leave=False):
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = x + 0.5 * step_size * score(x) + math.sqrt(step_size) * noise
    return x


@torch.no_grad()
def annealed_langevin(score_model: Callable[[Tensor, Tensor], Tensor], sigmas: Tensor, shape, *, steps: int = 100,
                      step_size: float = 2e-5, generator: torch.Generator | None = None, device=None,
                      x_T: Tensor | None = None, denoise: bool = False, progress: bool = False, callback=None) -> Tensor:
    """Annealed Langevin dynamics (Song & Ermon 2019, Alg. 1): for σ_1 > … > σ_L, α_i = ε σ_i²/σ_L², then ``steps``
    (the paper's T) steps per level x ← x + (α_i/2) s_θ(x, σ_i) + √α_i z. ``score_model(x, sigma)`` takes σ (B,).
    The start ``x_T`` defaults to U[0, 1) as in the paper. ``denoise`` adds x + σ_L² s_θ(x, σ_L) (Song & Ermon 2020).
    ``callback(call, x, denoised)`` sees every network call with Tweedie's x̂ = x + σ² s_θ(x, σ)."""
    from tqdm.auto import tqdm

    sigmas = check_sigmas(sigmas)
    check_positive_int("steps", steps)
    step_size = _check_step_size(step_size)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable callback(step, x, denoised), got {type(callback).__name__}")
    device, dtype = model_device_dtype(score_model, device)
    dtype = x_T.dtype if x_T is not None and not isinstance(score_model, torch.nn.Module) else dtype
    if x_T is None:
        x = torch.rand(check_shape(shape), generator=generator, device=device, dtype=dtype)
    else:
        x = x_T.to(device=device, dtype=dtype).clone()
    alphas = (step_size * sigmas**2 / sigmas[-1] ** 2).tolist()  # α_i = ε σ_i²/σ_L² (Alg. 1, line 3)
    sigma_values = sigmas.to(device=device, dtype=dtype)
    calls = 0

    def score(x: Tensor, level: int) -> Tensor:
        nonlocal calls
        value = score_model(x, sigma_values[level].expand(x.shape[0]))
        if callback is not None:
            callback(calls, x, x + sigma_values[level] ** 2 * value)  # Tweedie's formula
        calls += 1
        return value

    for level in tqdm(range(sigmas.numel()), desc="annealed langevin", disable=not progress, leave=False):
        alpha = alphas[level]
        for _ in range(steps):  # Alg. 1, lines 4–7
            noise = torch.randn(x.shape, generator=generator, device=device, dtype=dtype)
            x = x + 0.5 * alpha * score(x, level) + math.sqrt(alpha) * noise
    if denoise:
        x = x + sigma_values[-1] ** 2 * score(x, sigmas.numel() - 1)  # Tweedie's formula (Song & Ermon 2020, App. B)
    return x
