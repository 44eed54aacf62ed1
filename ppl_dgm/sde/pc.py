"""Predictor–corrector sampling (Song et al. 2021, Alg. 1–3): reverse-diffusion predictor, Langevin corrector."""
from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from ppl_dgm._checks import check_positive_int
from ppl_dgm.nn.functional import expand_like
from ppl_dgm.sde.reverse import model_device_dtype, start_noise
from ppl_dgm.sde.sdes import check_sde, SDE, VPSDE, check_time_range, score_fn

__all__ = ["sample_pc", "langevin_corrector_step", "check_snr"]


def check_snr(snr: object) -> float:
    """Return the signal-to-noise ratio r > 0 of the Langevin corrector, or raise naming ``snr``."""
    if isinstance(snr, bool) or not isinstance(snr, numbers.Real) or not math.isfinite(snr) or snr <= 0:
        raise ValueError(f"snr must be a positive float (Song et al. 2021 use 0.16), got {snr!r}")
    return float(snr)


def langevin_corrector_step(score: Tensor, x: Tensor, noise: Tensor, snr: float, alpha: Tensor | float = 1.0) -> tuple[Tensor, Tensor]:
    """One Langevin step x + ε s + √(2ε) z with ε = 2α(r‖z‖/‖s‖)² (Song et al. 2021, Alg. 4/5); returns (x, mean).

    The norms are batch means of per-example norms, as in Song et al.'s code: a per-example ‖s‖ near 0
    (x at a mode, low dimension) would make ε explode.
    """
    batch = x.shape[0]
    score_norm = score.reshape(batch, -1).norm(dim=1).mean()
    noise_norm = noise.reshape(batch, -1).norm(dim=1).mean()
    step_size = 2 * alpha * (snr * noise_norm / score_norm) ** 2
    step_size = expand_like(step_size, x) if isinstance(step_size, Tensor) and step_size.ndim == 1 else step_size
    mean = x + step_size * score
    return mean + (2 * step_size).sqrt() * noise, mean


@torch.no_grad()
def sample_pc(eps_model, sde: SDE, shape, *, steps: int = 1000, corrector_steps: int = 1, snr: float = 0.16, eps: float = 1e-3,
              generator: torch.Generator | None = None, device=None, x_T: Tensor | None = None, y: Tensor | None = None,
              guidance_scale: float = 0.0, denoise: bool = True, progress: bool = False, callback=None) -> Tensor:
    """PC sampling on t_i = T − iΔt, Δt = (T − eps)/steps: at each t_i, ``corrector_steps`` Langevin steps, then one
    reverse-diffusion step to t_i − Δt (the order of Song et al.'s code). ``denoise`` returns the last mean. ``y``/
    ``guidance_scale``: classifier-free guidance; ``callback(call, x, denoised)`` sees every network call. (B, ...)."""
    from tqdm.auto import tqdm

    check_sde(sde)
    check_positive_int("steps", steps)
    if isinstance(corrector_steps, bool) or not isinstance(corrector_steps, numbers.Integral) or corrector_steps < 0:
        raise ValueError(f"corrector_steps must be an int >= 0, got {corrector_steps!r}")
    snr = check_snr(snr)
    eps = check_time_range("eps", eps, sde.T)
    device, dtype = model_device_dtype(eps_model, device)
    x = start_noise(sde, shape, x_T, generator, device, dtype)
    score = score_fn(eps_model, sde, None if y is None else y.to(device), guidance_scale, callback)
    reverse = sde.reverse(score)
    step = (sde.T - eps) / steps
    times = sde.T - step * torch.arange(steps, dtype=torch.float64, device=device)
    is_vp = isinstance(sde, VPSDE)  # VP and sub-VP: α_i = 1 − β_i (Song et al. 2021, Alg. 3); VE: α_i = 1 (Alg. 2)
    if is_vp and float(sde._beta(torch.tensor(sde.T, dtype=torch.float64))) * step >= 1:  # α_i = 1 − β_i Δt must stay > 0
        fewest = math.floor(float(sde._beta(torch.tensor(sde.T, dtype=torch.float64))) * (sde.T - eps)) + 1
        raise ValueError(f"steps={steps} is too few for PC on this VP SDE: its corrector needs 1 − β(t)Δt > 0, "
                         f"i.e. steps >= {fewest}")
    mean = x
    for i in tqdm(range(steps), desc="pc", disable=not progress, leave=False):
        t = times[i].expand(x.shape[0])
        alpha = (1.0 - sde._beta(t) * step).to(dtype) if is_vp else 1.0
        for _ in range(corrector_steps):  # corrector: Langevin MCMC at t_i
            noise = torch.randn(x.shape, generator=generator, device=device, dtype=dtype)
            x, mean = langevin_corrector_step(score(x, t), x, noise, snr, alpha)
        drift, diffusion = reverse.discretize(x, t, step)  # predictor: x ← x − f̄ + Ḡ z (Song et al. 2021, eq. 47)
        mean = x - drift
        noise = torch.randn(x.shape, generator=generator, device=device, dtype=dtype)
        x = mean + expand_like(diffusion, x) * noise
    return mean if denoise else x
