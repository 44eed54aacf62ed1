"""Fast diffusion solvers over the ε-network contract: DPM-Solver++(2M) and its SDE variant (Lu et al. 2022b),
Heun on the Karras σ-schedule (Karras et al. 2022, Alg. 1) and Euler ancestral (k-diffusion).

Each runs on :class:`NoiseLevels`, the α_t, σ_t, λ_t = log(α_t/σ_t) of a VP diffusion as float64 functions of
the network time t, built from a discrete ``NoiseSchedule`` (a DDPM run: t = i/T, i integer) or a continuous
``VPSDE`` (a score-SDE run). Every grid ends at t = 0, where σ = 0 and the last step returns the data prediction.
Every solver takes (eps_model, noise, shape, *, steps, ...) with ``noise`` a NoiseSchedule, a VPSDE (t_min = 1e-3)
or a NoiseLevels, and calls ``callback(call, x, x̂_0)`` after every network call with the state the network saw
(the sampler contract: the callback counts network calls).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ppl_dgm._checks import check_positive_int, check_shape
from ppl_dgm.diffusion.guidance import guided_eps
from ppl_dgm.diffusion.samplers import _model_dtype, _resolve_device, _start
from ppl_dgm.diffusion.schedules import NoiseSchedule
from ppl_dgm.sde.sdes import VPSDE, SubVPSDE, check_time_range

__all__ = ["NoiseLevels", "sample_dpmpp_2m", "sample_dpmpp_2m_sde", "sample_heun", "sample_euler_ancestral"]

KARRAS_RHO = 7.0  # Karras et al. 2022, eq. 5 and sec. 3


class NoiseLevels:
    """x_t = α_t x_0 + σ_t ε with α_t² + σ_t² = 1: α_t, σ_t, λ_t = log(α_t/σ_t) as float64 functions of t ∈ [0, 1].

    ``num_steps`` is T for a discrete schedule (None for an SDE); ``t_min`` is the smallest time the network sees.
    t = 0 is the data (α = 1, σ = 0, λ = +∞). Build with :meth:`from_schedule` or :meth:`from_vpsde`.
    """

    def __init__(self, log_alpha: Callable[[Tensor], Tensor], time_of_half_log_snr: Callable[[Tensor], Tensor],
                 t_min: float, num_steps: int | None = None):
        self.log_alpha, self.time_of_half_log_snr = log_alpha, time_of_half_log_snr
        self.t_min, self.num_steps = t_min, num_steps

    @classmethod
    def from_schedule(cls, schedule: NoiseSchedule) -> "NoiseLevels":
        """A DDPM schedule: t = i/T (rounded to a step, ᾱ_0 = 1 at t = 0); λ → t snaps to the nearest step 1..T."""
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
        num_steps = schedule.num_steps
        log_alpha = torch.cat([torch.zeros(1, dtype=torch.float64), 0.5 * schedule.alpha_bar.log()])  # α_t = √ᾱ_t
        half_log_snr = 0.5 * (schedule.alpha_bar.log() - torch.log1p(-schedule.alpha_bar))  # λ at steps 1..T

        def time_of_half_log_snr(lam: Tensor) -> Tensor:
            nearest = (half_log_snr[None, :] - lam.double()[:, None]).abs().argmin(1)
            return (nearest + 1).double() / num_steps

        return cls(lambda t: log_alpha[torch.round(t.double() * num_steps).long()], time_of_half_log_snr,
                   1.0 / num_steps, num_steps)

    @classmethod
    def from_vpsde(cls, sde: VPSDE, eps: float = 1e-3) -> "NoiseLevels":
        """A continuous VPSDE on t ∈ [eps, 1] (log α_t of Song et al. 2021, eq. 29), its λ inverted in closed form."""
        if not isinstance(sde, VPSDE) or isinstance(sde, SubVPSDE):
            raise TypeError(f"sde must be a VPSDE, got {type(sde).__name__}")
        eps = check_time_range("eps", eps, sde.T)
        beta_min, beta_delta = sde.beta_min, sde.beta_max - sde.beta_min

        def time_of_half_log_snr(lam: Tensor) -> Tensor:
            # log α = −½ log(1 + e^{−2λ}) = −¼Δβ t² − ½β_min t, solved for t ≥ 0 (stable form, as DPM-Solver's code)
            twice_neg_log_alpha_delta = 2.0 * beta_delta * torch.logaddexp(-2.0 * lam.double(), torch.zeros(1, dtype=torch.float64))
            return twice_neg_log_alpha_delta / ((beta_min**2 + twice_neg_log_alpha_delta).sqrt() + beta_min) / beta_delta

        return cls(sde._log_mean_coefficient, time_of_half_log_snr, eps)

    def alpha(self, t: Tensor) -> Tensor:
        return self.log_alpha(t).exp()

    def sigma(self, t: Tensor) -> Tensor:
        return (-torch.expm1(2.0 * self.log_alpha(t))).sqrt()  # σ_t = √(1 − α_t²)

    def half_log_snr(self, t: Tensor) -> Tensor:
        """λ_t = log(α_t/σ_t) (Lu et al. 2022a, sec. 3.1); +∞ at t = 0."""
        log_alpha = self.log_alpha(t)
        return log_alpha - 0.5 * torch.log(-torch.expm1(2.0 * log_alpha))

    def time_grid(self, steps: int) -> Tensor:
        """``steps + 1`` decreasing float64 times ending at 0; the network sees the first ``steps``.

        Discrete: t_k = round(T(1 − k/steps))/T (diffusers' ``timestep_spacing="trailing"``). Continuous: uniform
        in λ from t = 1 to ``t_min`` (Lu et al. 2022a's "logSNR" grid).
        """
        if self.num_steps is not None:
            steps_i = torch.round(self.num_steps - torch.arange(steps, dtype=torch.float64) * (self.num_steps / steps))
            times = steps_i / self.num_steps
        else:
            ends = self.half_log_snr(torch.tensor([1.0, self.t_min], dtype=torch.float64))
            times = self.time_of_half_log_snr(torch.linspace(float(ends[0]), float(ends[1]), steps, dtype=torch.float64))
            times[-1] = self.t_min  # exact ends (the inverse is exact only up to rounding)
            times[0] = 1.0
        return torch.cat([times, torch.zeros(1, dtype=torch.float64)])

    def karras_time_grid(self, steps: int, rho: float = KARRAS_RHO) -> Tensor:
        """Times of σ̃_k = (σ̃_max^{1/ρ} + k/(steps−1)(σ̃_min^{1/ρ} − σ̃_max^{1/ρ}))^ρ, σ̃ = σ_t/α_t = e^{−λ} (Karras et al.
        2022, eq. 5) between t = 1 and ``t_min``, then 0; discrete schedules snap each to the nearest step."""
        sigma_max, sigma_min = (-self.half_log_snr(torch.tensor([1.0, self.t_min], dtype=torch.float64))).exp().tolist()
        ramp = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
        sigmas = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
        times = self.time_of_half_log_snr(-sigmas.log())
        times[0] = 1.0
        return torch.cat([times, torch.zeros(1, dtype=torch.float64)])

    def __repr__(self) -> str:
        kind = f"T={self.num_steps}" if self.num_steps is not None else f"continuous, t_min={self.t_min:g}"
        return f"NoiseLevels({kind})"


def _noise_levels(noise) -> NoiseLevels:
    if isinstance(noise, NoiseLevels):
        return noise
    if isinstance(noise, NoiseSchedule):
        return NoiseLevels.from_schedule(noise)
    if isinstance(noise, VPSDE) and not isinstance(noise, SubVPSDE):
        return NoiseLevels.from_vpsde(noise)
    raise TypeError(f"noise must be a NoiseSchedule, a VPSDE or NoiseLevels, got {type(noise).__name__}")


def _prepare(eps_model, noise, shape, steps, generator, device, x_T, y, guidance_scale, clip_x0, callback):
    """Checks every argument once; returns (levels, steps, x_T on the device, denoise(x, t, α_t, σ_t) -> x̂_0)."""
    if not callable(eps_model):
        raise TypeError(f"eps_model must be callable eps_model(x, t, y=None), got {type(eps_model).__name__}")
    levels = _noise_levels(noise)
    steps = check_positive_int("steps", steps)
    if levels.num_steps is not None and steps > levels.num_steps:
        raise ValueError(f"steps must be at most T={levels.num_steps}, got {steps}")
    shape = check_shape(shape)
    if isinstance(x_T, Tensor) and tuple(x_T.shape) != shape:
        raise ValueError(f"x_T must have shape {shape} (the shape argument), got {tuple(x_T.shape)}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable callback(step, x, denoised), got {type(callback).__name__}")
    device = _resolve_device(eps_model, device)
    eps_fn = guided_eps(eps_model, None if y is None else y.to(device), guidance_scale)
    x = _start(shape, x_T, generator, device, _model_dtype(eps_model))

    calls = 0

    def denoise(x: Tensor, t: float, alpha: float, sigma: float) -> Tensor:
        nonlocal calls
        time = torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype)  # contract: DDPM step i is t = i/T
        x0 = (x - sigma * eps_fn(x, time)) / alpha  # Ho et al. 2020, eq. 4 solved for x_0
        x0 = x0.clamp(-1.0, 1.0) if clip_x0 else x0
        if callback is not None:
            callback(calls, x, x0)
        calls += 1
        return x0

    return levels, steps, x, denoise


def _noise_like(x: Tensor, generator) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


@torch.no_grad()
def sample_dpmpp_2m(eps_model, noise, shape: Sequence[int], *, steps: int, generator: torch.Generator | None = None,
                    device=None, x_T: Tensor | None = None, y: Tensor | None = None, guidance_scale: float = 0.0,
                    clip_x0: bool = False, progress: bool = False, callback=None) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2) on ``noise.time_grid(steps)``: ``steps`` network calls, returns x_0.

    The first step is first order (DDIM); the last, to σ = 0, is first order too and returns the data prediction
    (diffusers' ``lower_order_final`` with ``final_sigmas_type="zero"``).
    """
    from tqdm.auto import tqdm

    levels, steps, x, denoise = _prepare(eps_model, noise, shape, steps, generator, device, x_T, y, guidance_scale, clip_x0, callback)
    t = levels.time_grid(steps)
    alpha, sigma, lam = levels.alpha(t), levels.sigma(t), levels.half_log_snr(t)
    h = lam[1:] - lam[:-1]  # h_i = λ_{t_i} − λ_{t_{i−1}}
    sigma_ratio = (sigma[1:] / sigma[:-1]).tolist()
    phi = (-alpha[1:] * torch.expm1(-h)).tolist()  # −α_{t_i}(e^{−h_i} − 1)
    half_inverse_r = (0.5 * h[1:] / h[:-1]).tolist()  # 1/(2r_i), r_i = h_{i−1}/h_i
    t, alpha, sigma = t.tolist(), alpha.tolist(), sigma.tolist()
    old_denoised = None
    for k in tqdm(range(steps), desc="dpm++ 2m", disable=not progress, leave=False):
        denoised = denoise(x, t[k], alpha[k], sigma[k])
        if k == steps - 1:  # σ_{t_M} = 0: the first-order step is x = x_θ
            x = denoised
        elif old_denoised is None:  # Alg. 2, line 2: DPM-Solver++1 (= DDIM)
            x = sigma_ratio[k] * x + phi[k] * denoised
        else:  # Alg. 2, lines 5–6: D_i = (1 + 1/(2r_i)) x_θ(t_{i−1}) − 1/(2r_i) x_θ(t_{i−2})
            corrected = (1.0 + half_inverse_r[k - 1]) * denoised - half_inverse_r[k - 1] * old_denoised
            x = sigma_ratio[k] * x + phi[k] * corrected
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(eps_model, noise, shape: Sequence[int], *, steps: int, generator: torch.Generator | None = None,
                        device=None, x_T: Tensor | None = None, y: Tensor | None = None, guidance_scale: float = 0.0,
                        clip_x0: bool = False, progress: bool = False, callback=None) -> Tensor:
    """SDE-DPM-Solver++(2M), midpoint (Lu et al. 2022b; diffusers' ``"sde-dpmsolver++"``): ``steps`` network calls.

    Like :func:`sample_dpmpp_2m` with the data-prediction term weighted 1 − e^{−2h} and fresh noise
    σ_{t_i}√(1 − e^{−2h_i}) z from ``generator`` on every step but the last, which returns the data prediction.
    """
    from tqdm.auto import tqdm

    levels, steps, x, denoise = _prepare(eps_model, noise, shape, steps, generator, device, x_T, y, guidance_scale, clip_x0, callback)
    t = levels.time_grid(steps)
    alpha, sigma, lam = levels.alpha(t), levels.sigma(t), levels.half_log_snr(t)
    h = lam[1:] - lam[:-1]
    decay = (sigma[1:] / sigma[:-1] * torch.exp(-h)).tolist()  # σ_{t_i}/σ_{t_{i−1}} e^{−h_i}
    phi = (-alpha[1:] * torch.expm1(-2.0 * h)).tolist()  # α_{t_i}(1 − e^{−2h_i})
    noise_std = (sigma[1:] * (-torch.expm1(-2.0 * h)).sqrt()).tolist()  # σ_{t_i}√(1 − e^{−2h_i})
    half_inverse_r = (0.5 * h[1:] / h[:-1]).tolist()
    t, alpha, sigma = t.tolist(), alpha.tolist(), sigma.tolist()
    old_denoised = None
    for k in tqdm(range(steps), desc="dpm++ 2m sde", disable=not progress, leave=False):
        denoised = denoise(x, t[k], alpha[k], sigma[k])
        if k == steps - 1:  # σ = 0: no noise left to add, x = x_θ
            x = denoised
        else:
            x = decay[k] * x + phi[k] * denoised + noise_std[k] * _noise_like(x, generator)
            if old_denoised is not None:  # midpoint: + ½ α_{t_i}(1 − e^{−2h_i}) (x_θ(t_{i−1}) − x_θ(t_{i−2}))/r_i
                x = x + phi[k] * half_inverse_r[k - 1] * (denoised - old_denoised)
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_heun(eps_model, noise, shape: Sequence[int], *, steps: int, generator: torch.Generator | None = None,
                device=None, x_T: Tensor | None = None, y: Tensor | None = None, guidance_scale: float = 0.0,
                clip_x0: bool = False, progress: bool = False, callback=None) -> Tensor:
    """Heun's method on the probability-flow ODE dx̃/dσ̃ = (x̃ − D(x̃; σ̃))/σ̃ in x̃ = x/α_t, σ̃ = σ_t/α_t (Karras et al.
    2022, Alg. 1, S_churn = 0), on ``noise.karras_time_grid(steps)`` (ρ = 7); the last step, to σ̃ = 0, is Euler.

    2·steps − 1 network calls. ``callback`` sees each of them.
    """
    from tqdm.auto import tqdm

    levels, steps, x, denoise = _prepare(eps_model, noise, shape, steps, generator, device, x_T, y, guidance_scale, clip_x0, callback)
    t = levels.karras_time_grid(steps)
    alpha, sigma = levels.alpha(t), levels.sigma(t)
    sigma_tilde = (sigma / alpha).tolist()
    t, alpha, sigma = t.tolist(), alpha.tolist(), sigma.tolist()
    x = x / alpha[0]  # x̃ = x/α_t, the EDM variable with s(t) = α_t, σ(t) = σ̃ (Karras et al. 2022, eq. 4)
    for k in tqdm(range(steps), desc="heun", disable=not progress, leave=False):
        denoised = denoise(alpha[k] * x, t[k], alpha[k], sigma[k])
        slope = (x - denoised) / sigma_tilde[k]  # Alg. 1, line 4: d_i = (x_i − D(x_i; σ_i))/σ_i
        x_next = x + (sigma_tilde[k + 1] - sigma_tilde[k]) * slope  # line 5 (Euler)
        if k < steps - 1:  # lines 6–8: σ_{i+1} ≠ 0, apply the 2nd-order correction
            denoised_next = denoise(alpha[k + 1] * x_next, t[k + 1], alpha[k + 1], sigma[k + 1])
            slope_next = (x_next - denoised_next) / sigma_tilde[k + 1]
            x_next = x + (sigma_tilde[k + 1] - sigma_tilde[k]) * 0.5 * (slope + slope_next)
        x = x_next
    return x  # σ̃ = 0: α = 1, x̃ = x


@torch.no_grad()
def sample_euler_ancestral(eps_model, noise, shape: Sequence[int], *, steps: int, generator: torch.Generator | None = None,
                           device=None, x_T: Tensor | None = None, y: Tensor | None = None, guidance_scale: float = 0.0,
                           clip_x0: bool = False, progress: bool = False, callback=None) -> Tensor:
    """Euler ancestral with η = 1 (k-diffusion's ``sample_euler_ancestral``; diffusers' EulerAncestralDiscreteScheduler)
    in x̃ = x/α_t, σ̃ = σ_t/α_t on ``noise.time_grid(steps)``: an Euler step to σ̃_down, then noise σ̃_up z.

    ``steps`` network calls; noise from ``generator`` on every step but the last. Returns x_0.
    """
    from tqdm.auto import tqdm

    levels, steps, x, denoise = _prepare(eps_model, noise, shape, steps, generator, device, x_T, y, guidance_scale, clip_x0, callback)
    t = levels.time_grid(steps)
    alpha, sigma = levels.alpha(t), levels.sigma(t)
    sigma_tilde = sigma / alpha
    sigma_from, sigma_to = sigma_tilde[:-1], sigma_tilde[1:]
    # the DDPM posterior step in σ̃ (Ho et al. 2020, eq. 7): σ̃_up² = σ̃_to²(σ̃_from² − σ̃_to²)/σ̃_from², σ̃_down² = σ̃_to² − σ̃_up²
    sigma_up = (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2).sqrt()
    sigma_down = (sigma_to**2 - sigma_up**2).sqrt()
    step_size = (sigma_down - sigma_from).tolist()
    sigma_up, sigma_from = sigma_up.tolist(), sigma_from.tolist()
    t, alpha, sigma = t.tolist(), alpha.tolist(), sigma.tolist()
    x = x / alpha[0]
    for k in tqdm(range(steps), desc="euler ancestral", disable=not progress, leave=False):
        denoised = denoise(alpha[k] * x, t[k], alpha[k], sigma[k])
        x = x + step_size[k] * (x - denoised) / sigma_from[k]  # Euler step of dx̃/dσ̃ to σ̃_down
        if k < steps - 1:
            x = x + sigma_up[k] * _noise_like(x, generator)
    return x
