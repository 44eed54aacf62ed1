"""Inverse problems with an unconditional ε-network, no retraining: inpainting by RePaint (Lugmayr et al. 2022) and by
sequential Monte Carlo (SMCDiff, Trippe et al. 2022: exact as the particles grow), and linear restoration
(super-resolution, denoising, inpainting) by DDRM (Kawar et al. 2022).

Both follow the sampler contract (docs/design.md, "Samplers"): ``@torch.no_grad()`` functions of the ε-network
``eps_model(x, t, y=None)`` with t = i/T, randomness only through ``generator``, ``callback(call, x, x̂_0)`` once per
network call, a Tensor returned. Images are in the network's space ([−1, 1] for the library's DDPMs).
"""
from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod

import torch
from torch import Tensor
from torch.nn import functional as F

from ppl_dgm._checks import check_positive_int
from ppl_dgm.diffusion.guidance import guided_eps
from ppl_dgm.diffusion.samplers import _check_callback, _check_schedule, _resolve_device, ddim_timesteps
from ppl_dgm.diffusion.schedules import NoiseSchedule

__all__ = ["inpaint", "inpaint_smc", "ddrm", "named_mask", "held_out_observations", "restore_run", "MASKS", "Inpainting", "Denoising", "SuperResolution",
           "LinearDegradation"]


def _check_image(name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor) or not value.is_floating_point() or value.ndim < 2:
        raise TypeError(f"{name} must be a floating tensor (B, ...), got {value.dtype if isinstance(value, Tensor) else type(value).__name__}")
    if not torch.isfinite(value).all():
        raise ValueError(f"{name} holds NaN or inf")
    return value


def _check_mask(mask: object, shape: torch.Size) -> Tensor:
    """A {0, 1} mask (1 = known pixel) broadcastable to ``shape``."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a tensor of 0s and 1s, got {type(mask).__name__}")
    try:
        broadcast = torch.broadcast_shapes(mask.shape, shape)
    except RuntimeError:
        broadcast = None
    if broadcast != shape:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to the images' shape {tuple(shape)}")
    if not ((mask == 0) | (mask == 1)).all():
        raise ValueError("mask must hold only 0 (unknown) and 1 (known)")
    return mask


def _respaced(schedule: NoiseSchedule, steps: int | None, device, dtype) -> tuple[list[int], Tensor]:
    """Timesteps τ_1 < … < τ_K (``steps`` of them, all T by default) and ᾱ with ᾱ_0 = 1 prepended, indexable by t."""
    taus = ddim_timesteps(schedule, schedule.num_steps if steps is None else steps)
    alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), schedule.alpha_bar.double()]).to(device=device, dtype=dtype)
    return taus, alpha_bar


def _posterior_mean(x0: Tensor, x_t: Tensor, a_t: Tensor, a_s: Tensor) -> Tensor:
    """μ̃(x_t, x_0) of q(x_s | x_t, x_0) between kept steps s < t, β' = 1 − ᾱ_t/ᾱ_s (Ho et al. 2020, eq. 7)."""
    beta = 1.0 - a_t / a_s
    return a_s.sqrt() * beta / (1.0 - a_t) * x0 + (1.0 - beta).sqrt() * (1.0 - a_s) / (1.0 - a_t) * x_t


@torch.no_grad()
def inpaint(eps_model, schedule: NoiseSchedule, x_known: Tensor, mask: Tensor, *, steps: int | None = None, resample: int = 1,
            variance: str = "beta_tilde", generator: torch.Generator | None = None, device: str | torch.device | None = None,
            y: Tensor | None = None, guidance_scale: float = 0.0, progress: bool = False, callback=None) -> Tensor:
    """RePaint (Lugmayr et al. 2022, Alg. 1): ancestral sampling in which the known pixels (``mask`` = 1) are replaced at
    every step by the forward-noised observation, x_{s}^known = √ᾱ_s x_0 + √(1 − ᾱ_s) ε, and each step is repeated
    ``resample`` times, re-noising x_s back to x_t in between (their jump length 1) so the unknown pixels harmonize
    with the known ones.

    ``steps`` respaces the T-step chain to that many timesteps (Nichol & Dhariwal 2021: β'_t = 1 − ᾱ_t/ᾱ_s between
    consecutive kept steps); the reverse variance is the posterior's β̃ (``"beta_tilde"``) or β' (``"beta"``).
    Network calls: ``steps × resample``. Returns the inpainted images; the known pixels equal ``x_known`` exactly.
    """
    from tqdm.auto import tqdm

    schedule = _check_schedule(schedule)
    _check_callback(callback)
    x_known = _check_image("x_known", x_known)
    resample = check_positive_int("resample", resample)
    if variance not in ("beta", "beta_tilde"):
        raise ValueError(f"variance={variance!r} is not known; expected 'beta' or 'beta_tilde'")
    device = _resolve_device(eps_model, device)
    dtype = x_known.dtype
    x_known = x_known.to(device=device)
    mask = _check_mask(mask, x_known.shape).to(device=device).bool()
    taus, alpha_bar = _respaced(schedule, steps, device, dtype)
    eps_fn = guided_eps(eps_model, None if y is None else y.to(device), guidance_scale)

    def noise() -> Tensor:
        return torch.randn(x_known.shape, generator=generator, device=device, dtype=dtype)

    x = noise()
    previous = [0] + taus[:-1]
    call = 0
    bar = tqdm(total=len(taus) * resample, desc="RePaint", disable=not progress, leave=False)
    for t, s in zip(reversed(taus), reversed(previous)):
        a_t, a_s = alpha_bar[t], alpha_bar[s]
        beta = 1.0 - a_t / a_s  # β' of the respaced chain
        posterior_variance = beta * (1.0 - a_s) / (1.0 - a_t)  # β̃ (Ho et al. 2020, eq. 7)
        sigma = (posterior_variance if variance == "beta_tilde" else beta).sqrt()
        for u in range(resample):
            eps = eps_fn(x, torch.full((x.shape[0],), t / schedule.num_steps, device=device, dtype=dtype))
            x0 = (x - (1.0 - a_t).sqrt() * eps) / a_t.sqrt()  # Ho et al. 2020, eq. 4 solved for x_0
            if callback is not None:
                callback(call, x, x0)
            call += 1
            # unknown pixels: x_s ~ N(μ̃(x_t, x̂_0), σ²) (Ho et al. 2020, eq. 7; Lugmayr et al. 2022, Alg. 1, line 7)
            mean = _posterior_mean(x0, x, a_t, a_s)
            unknown = mean + sigma * noise() if s > 0 else mean
            known = a_s.sqrt() * x_known + (1.0 - a_s).sqrt() * noise() if s > 0 else x_known  # Alg. 1, line 5
            x_s = torch.where(mask, known, unknown)  # line 8
            if u < resample - 1 and s > 0:  # line 10: back to t, x_t ~ N(√(1 − β') x_s, β' I)
                x = (1.0 - beta).sqrt() * x_s + beta.sqrt() * noise()
            else:
                x = x_s
            bar.update()
    bar.close()
    return x


@torch.no_grad()
def inpaint_smc(eps_model, schedule: NoiseSchedule, x_known: Tensor, mask: Tensor, *, num_particles: int = 16,
                steps: int | None = None, ess_threshold: float = 0.5, generator: torch.Generator | None = None,
                device: str | torch.device | None = None, y: Tensor | None = None, guidance_scale: float = 0.0,
                progress: bool = False, callback=None) -> Tensor:
    """SMCDiff (Trippe et al. 2022, Alg. 1): one sample of p_θ(x_unknown | x_known) per image, by ``num_particles``
    particles through the reverse chain, consistent as the particles grow.

    The known pixels get one forward-noised trajectory x^k_{1:T} ~ q(· | x^k_0), drawn backward (x^k_T, then
    q(x^k_s | x^k_t, x^k_0), the same joint law); under the forward process it carries no more information about the
    unknown pixels than x^k_0 does, so p(x^u_0 | x^k_{0:T}) = p(x^u_0 | x^k_0). Each particle's weight is the reverse
    kernel's density of the next known state, N(x^k_s; μ_θ(x_t)^k, β'_t I); particles are resampled (multinomial) when
    the effective sample size of an image falls below ``ess_threshold`` × particles, before the unknown pixels move
    (the kernel factorizes over pixels given x_t, so this is the fully adapted proposal). The last step adds no noise
    (Ho et al. 2020, Alg. 2) and its weights use β_1. One image is drawn from the final weights.

    ``steps`` respaces the chain as :func:`inpaint` does. Network calls: ``steps`` (each on images × particles; the
    callback sees the flattened particles). Returns the inpainted images; the known pixels equal ``x_known`` exactly.
    """
    from tqdm.auto import tqdm

    schedule = _check_schedule(schedule)
    _check_callback(callback)
    x_known = _check_image("x_known", x_known)
    particles = check_positive_int("num_particles", num_particles)
    if isinstance(ess_threshold, bool) or not isinstance(ess_threshold, numbers.Real) or not 0.0 <= ess_threshold <= 1.0:
        raise ValueError(f"ess_threshold must be a fraction in [0, 1] of the particles, got {ess_threshold!r}")
    device = _resolve_device(eps_model, device)
    dtype = x_known.dtype
    x_known = x_known.to(device=device)
    mask = _check_mask(mask, x_known.shape).to(device=device).bool()
    batch, image = x_known.shape[0], x_known.shape[1:]
    taus, alpha_bar = _respaced(schedule, steps, device, dtype)
    labels = None if y is None else y.to(device).repeat_interleave(particles)
    eps_fn = guided_eps(eps_model, labels, guidance_scale)

    def noise(*shape) -> Tensor:
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)

    expand = lambda v: v.unsqueeze(1).expand(batch, particles, *image)  # noqa: E731  (B, ...) -> (B, K, ...)
    known_mask = expand(mask.expand_as(x_known))
    a_T = alpha_bar[taus[-1]]
    known = a_T.sqrt() * x_known + (1.0 - a_T).sqrt() * noise(*x_known.shape)  # x^k_T ~ q(x_T | x_0) (Ho et al. 2020, eq. 4)
    x = torch.where(known_mask, expand(known), noise(batch, particles, *image))
    log_weights = torch.zeros(batch, particles, device=device, dtype=dtype)
    rows = torch.arange(batch, device=device).unsqueeze(1)
    previous = [0] + taus[:-1]
    bar = tqdm(total=len(taus), desc="SMCDiff", disable=not progress, leave=False)
    for call, (t, s) in enumerate(zip(reversed(taus), reversed(previous))):
        a_t, a_s = alpha_bar[t], alpha_bar[s]
        beta = 1.0 - a_t / a_s  # β' of the respaced chain
        flat = x.flatten(0, 1)
        eps = eps_fn(flat, torch.full((flat.shape[0],), t / schedule.num_steps, device=device, dtype=dtype))
        x0 = (flat - (1.0 - a_t).sqrt() * eps) / a_t.sqrt()  # Ho et al. 2020, eq. 4 solved for x_0
        if callback is not None:
            callback(call, flat, x0)
        bar.update()
        mean = _posterior_mean(x0, flat, a_t, a_s).view_as(x)  # of every particle
        if s > 0:  # the known pixels' next state, x^k_s ~ q(x_s | x_t, x_0) (Ho et al. 2020, eqs. 6–7)
            posterior_variance = beta * (1.0 - a_s) / (1.0 - a_t)
            known = _posterior_mean(x_known, known, a_t, a_s) + posterior_variance.sqrt() * noise(*x_known.shape)
        else:
            known = x_known
        # weight: the reverse kernel's density of the known pixels' next state (Trippe et al. 2022, Alg. 1)
        log_density = torch.distributions.Normal(mean, beta.sqrt()).log_prob(expand(known))
        log_weights = log_weights + torch.where(known_mask, log_density, torch.zeros_like(log_density)).flatten(2).sum(-1)
        normalized = torch.softmax(log_weights, dim=1)
        ess = 1.0 / (normalized**2).sum(1)
        redraw = (ess < ess_threshold * particles).unsqueeze(1)  # per image, no host round trip
        ancestors = torch.where(redraw, torch.multinomial(normalized, particles, replacement=True, generator=generator),
                                torch.arange(particles, device=device).expand(batch, particles))
        mean = mean[rows, ancestors]
        log_weights = torch.where(redraw, torch.zeros_like(log_weights), log_weights)
        unknown = mean + beta.sqrt() * noise(*mean.shape) if s > 0 else mean  # no noise at the last step (Alg. 2)
        x = torch.where(known_mask, expand(known), unknown)
    bar.close()
    pick = torch.multinomial(torch.softmax(log_weights, dim=1), 1, generator=generator).squeeze(1)
    return x[torch.arange(batch, device=device), pick]


class LinearDegradation(ABC):
    """y = H x + σ_y z through the SVD H = U Σ Vᵀ that DDRM works in (Kawar et al. 2022, sec. 3): ``to_spectral`` (Vᵀ),
    ``from_spectral`` (V), ``singular_values`` (s, in the spectral layout, 0 where H sees nothing), ``observe`` (H x)
    and ``observation_in_spectral`` (ȳ = Σ^† Uᵀ y, 0 where s = 0). V defaults to the identity (pixel space)."""

    def to_spectral(self, x: Tensor) -> Tensor:
        return x

    def from_spectral(self, x: Tensor) -> Tensor:
        return x

    @abstractmethod
    def singular_values(self, like: Tensor) -> Tensor:
        """s per spectral coordinate, shaped like ``like``."""

    @abstractmethod
    def observe(self, x: Tensor) -> Tensor:
        """H x."""

    @abstractmethod
    def observation_in_spectral(self, y: Tensor, like: Tensor) -> Tensor:
        """ȳ = Σ^† Uᵀ y in the spectral layout of ``like``."""


class Denoising(LinearDegradation):
    """H = I: every pixel observed, s = 1."""

    def singular_values(self, like: Tensor) -> Tensor:
        return torch.ones_like(like)

    def observe(self, x: Tensor) -> Tensor:
        return x

    def observation_in_spectral(self, y: Tensor, like: Tensor) -> Tensor:
        return y.to(like)


class Inpainting(LinearDegradation):
    """H keeps the pixels where ``mask`` = 1: V = I, s = mask; y is given at full size with anything at unknown pixels."""

    def __init__(self, mask: Tensor):
        self.mask = mask

    def singular_values(self, like: Tensor) -> Tensor:
        return _check_mask(self.mask, like.shape).to(like).expand_as(like)

    def observe(self, x: Tensor) -> Tensor:
        return x * self.mask.to(x)

    def observation_in_spectral(self, y: Tensor, like: Tensor) -> Tensor:
        return y.to(like) * self.mask.to(like)


class SuperResolution(LinearDegradation):
    """H = average pooling over ``factor`` x ``factor`` blocks (y has side H/factor). Per block H = (1/f²)·1ᵀ, so s = 1/f on
    the block mean direction v = 1/f and 0 on its orthogonal complement; V is the orthonormal Haar basis of each
    2x2 block for factor 2 (the other factors use the same construction by a QR of [1, I])."""

    def __init__(self, factor: int = 2):
        self.factor = check_positive_int("factor", factor)
        k = self.factor**2
        basis, _ = torch.linalg.qr(torch.cat([torch.ones(k, 1), torch.eye(k)[:, 1:]], 1).double())
        basis[:, 0] = basis[:, 0].abs()  # v₁ = 1/f (QR may flip its sign)
        self.basis = basis  # (f², f²) orthonormal columns, first = block mean direction

    def _blocks(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        f = self.factor
        if h % f or w % f:
            raise ValueError(f"image side {h}x{w} is not divisible by the super-resolution factor {f}")
        return x.view(b, c, h // f, f, w // f, f).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h // f, w // f, f * f)

    def _unblocks(self, blocks: Tensor) -> Tensor:
        b, c, hb, wb, _ = blocks.shape
        f = self.factor
        return blocks.view(b, c, hb, wb, f, f).permute(0, 1, 2, 4, 3, 5).reshape(b, c, hb * f, wb * f)

    def to_spectral(self, x: Tensor) -> Tensor:
        return self._unblocks(self._blocks(x) @ self.basis.to(x))

    def from_spectral(self, x: Tensor) -> Tensor:
        return self._unblocks(self._blocks(x) @ self.basis.to(x).T)

    def singular_values(self, like: Tensor) -> Tensor:
        values = torch.zeros(self.factor**2, dtype=like.dtype, device=like.device)
        values[0] = 1.0 / self.factor
        return self._unblocks(values.expand(*self._blocks(like).shape))

    def observe(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.factor)

    def observation_in_spectral(self, y: Tensor, like: Tensor) -> Tensor:
        b, c, h, w = like.shape
        if y.shape != (b, c, h // self.factor, w // self.factor):
            raise ValueError(f"y must be the {self.factor}x average-pooled images, shape {(b, c, h // self.factor, w // self.factor)}, "
                             f"got {tuple(y.shape)}")
        blocks = torch.zeros_like(self._blocks(like))
        blocks[..., 0] = y.to(like) * self.factor  # ȳ = y / s with U = 1 per block
        return self._unblocks(blocks)


@torch.no_grad()
def ddrm(eps_model, schedule: NoiseSchedule, degradation: LinearDegradation, y: Tensor, shape, *, noise_std: float = 0.0,
         steps: int = 20, eta: float = 0.85, eta_b: float = 1.0, generator: torch.Generator | None = None,
         device: str | torch.device | None = None, progress: bool = False, callback=None) -> Tensor:
    """Denoising Diffusion Restoration Models (Kawar et al. 2022, eqs. 7–8): samples of p(x | y) for y = H x + σ_y z, over
    ``steps`` DDIM-spaced timesteps of the unconditional network, in the spectral space of H.

    Written in the VE form x_t/√ᾱ_t = x_0 + σ_t ε, σ_t = √((1 − ᾱ_t)/ᾱ_t) (their App. B): coordinates H does not see
    (s_i = 0) follow DDIM with η; observed ones draw toward ȳ_i = (Σ^†Uᵀy)_i, with the cases σ_t < σ_y/s_i and
    σ_t ≥ σ_y/s_i of eq. 8. Defaults η = 0.85, η_b = 1 (sec. 4). Network calls: ``steps``.
    """
    from tqdm.auto import tqdm

    schedule = _check_schedule(schedule)
    _check_callback(callback)
    if not isinstance(degradation, LinearDegradation):
        raise TypeError(f"degradation must be a LinearDegradation (Denoising, Inpainting, SuperResolution), got {type(degradation).__name__}")
    y = _check_image("y", y)
    if isinstance(noise_std, bool) or not isinstance(noise_std, numbers.Real) or not (noise_std >= 0 and math.isfinite(noise_std)):
        raise ValueError(f"noise_std must be a float >= 0 (σ_y of the observation), got {noise_std!r}")
    for name, value in (("eta", eta), ("eta_b", eta_b)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    device = _resolve_device(eps_model, device)
    dtype = y.dtype
    like = torch.zeros(tuple(shape), device=device, dtype=dtype)
    singular = degradation.singular_values(like)
    y_bar = degradation.observation_in_spectral(y.to(device=device, dtype=dtype), like)
    seen = singular > 0
    # σ_y/s_i, +inf where H sees nothing
    threshold = torch.where(seen, noise_std / singular.clamp(min=1e-12), torch.full_like(singular, math.inf))
    taus = ddim_timesteps(schedule, steps)
    alpha_bar = schedule.alpha_bar.to(device=device, dtype=torch.float64)
    sigmas = [float(((1 - alpha_bar[t - 1]) / alpha_bar[t - 1]).sqrt()) for t in taus]  # VE noise levels, increasing

    def noise() -> Tensor:
        return torch.randn(like.shape, generator=generator, device=device, dtype=dtype)

    sigma_T = sigmas[-1]
    # start, eq. 7: unseen N(0, σ_T²); seen N(ȳ, σ_T² − σ_y²/s²) (σ_T exceeds σ_y/s for any sensible noise)
    x_bar = torch.where(seen, y_bar + (sigma_T**2 - threshold.where(seen, 0.0) ** 2).clamp(min=0).sqrt() * noise(), sigma_T * noise())
    bar = tqdm(total=len(taus), desc="DDRM", disable=not progress, leave=False)
    for k in range(len(taus) - 1, -1, -1):
        t, sigma_t = taus[k], sigmas[k]
        a_t = float(alpha_bar[t - 1])
        x_t = degradation.from_spectral(x_bar) * math.sqrt(a_t)  # back to the VP variable the network reads
        eps = eps_model(x_t, torch.full((like.shape[0],), t / schedule.num_steps, device=device, dtype=dtype))
        x0 = (x_t - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
        if callback is not None:
            callback(len(taus) - 1 - k, x_t, x0)
        bar.update()
        x0_bar = degradation.to_spectral(x0)
        sigma_s = sigmas[k - 1] if k > 0 else 0.0  # the next (smaller) level; 0 at the end
        z = noise()
        # eq. 8, s_i = 0: DDIM in the null space
        unseen = x0_bar + math.sqrt(1 - eta**2) * sigma_s * (x_bar - x0_bar) / sigma_t + eta * sigma_s * z
        # σ_s < σ_y/s_i: move toward ȳ with DDIM-like weights
        low = x0_bar + math.sqrt(1 - eta**2) * sigma_s * (y_bar - x0_bar) / threshold.clamp(min=1e-12) + eta * sigma_s * z
        # σ_s ≥ σ_y/s_i: ȳ blended with η_b, the rest of the variance fresh
        high = (1 - eta_b) * x0_bar + eta_b * y_bar + (sigma_s**2 - (threshold.where(seen, 0.0) * eta_b) ** 2).clamp(min=0).sqrt() * z
        x_bar = torch.where(~seen, unseen, torch.where(sigma_s < threshold, low, high))
    bar.close()
    return degradation.from_spectral(x_bar)


# ---------------------------------------------------------------- restoration of a DDPM run's held-out images

MASKS = ("lower-half", "upper-half", "left-half", "right-half", "center", "random-half")
RESTORATION_METHODS = {"inpaint": ("repaint", "smc", "ddrm"), "upsample": ("ddrm",)}


def named_mask(mask: str | Tensor, image_shape: tuple[int, ...]) -> Tensor:
    """A {0, 1} mask (1 = known) of ``image_shape`` (C, H, W): one of :data:`MASKS` (``random-half``: each pixel known
    with probability 1/2, the same pixels every call), a tensor, or a path to a ``.pt`` tensor (loaded with
    ``weights_only=True``) or an image file (``.png``/``.jpg``: pixels above half the range are known)."""
    import os
    from pathlib import Path

    channels, height, width = image_shape
    if isinstance(mask, (str, os.PathLike)) and str(mask) in MASKS:
        known = torch.ones(1, height, width)
        if mask == "lower-half":
            known[:, height // 2:] = 0
        elif mask == "upper-half":
            known[:, : height // 2] = 0
        elif mask == "left-half":
            known[..., : width // 2] = 0
        elif mask == "right-half":
            known[..., width // 2:] = 0
        elif mask == "center":
            known[:, height // 4: height - height // 4, width // 4: width - width // 4] = 0
        else:
            known = (torch.rand(1, height, width, generator=torch.Generator().manual_seed(0)) < 0.5).float()
        return known.expand(channels, height, width).clone()
    if isinstance(mask, (str, os.PathLike)):
        path = Path(mask)
        if not path.is_file():
            raise FileNotFoundError(f"mask {str(mask)!r} is neither one of {MASKS} nor a file")
        if path.suffix == ".pt":
            from ppl_dgm.train.checkpoint import safe_torch_load

            loaded = safe_torch_load(path, what="mask")
            if not isinstance(loaded, Tensor):
                raise TypeError(f"mask file {str(path)!r} must hold one tensor, got {type(loaded).__name__}")
            mask = loaded.float()
        else:
            import numpy as np
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(path) as picture:
                    mask = torch.from_numpy(np.asarray(picture.convert("L"), dtype=np.float32) > 127.5).float()
            except (UnidentifiedImageError, OSError) as error:
                raise ValueError(f"mask file {str(path)!r} is not a readable image ({error})") from None
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be one of {MASKS}, a tensor or a file path, got {type(mask).__name__}")
    given = tuple(mask.shape)
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim != 3 or mask.shape[1:] != (height, width) or mask.shape[0] not in (1, channels):
        fits = list(dict.fromkeys([(height, width), (1, height, width), tuple(image_shape)]))
        raise ValueError(f"mask of shape {given} does not fit the run's images of shape {tuple(image_shape)}; expected one of {fits}")
    return _check_mask(mask.float(), torch.Size((1, channels, height, width))).expand(channels, height, width).clone()


def held_out_observations(config, n: int, *, inpaint_mask: str | Tensor | None = None, upsample: int | None = None,
                          images: Tensor | None = None) -> dict[str, Tensor]:
    """The first ``n`` held-out test images of a DDPM run's dataset (or ``images`` in [0, 1]) and what the task observes
    of them: ``{"truth", "observed", "mask"}`` for ``inpaint_mask`` (see :func:`named_mask`; ``observed`` has the
    unknown pixels grey) or ``{"truth", "observed", "low"}`` for ``upsample`` = s (``low``: s×s average pooling,
    ``observed``: it at full size by nearest upsampling)."""
    from ppl_dgm.data import image_shape as dataset_image_shape
    from ppl_dgm.data import load_dataset

    if (inpaint_mask is None) == (upsample is None):
        raise ValueError("restoration needs exactly one task: inpaint_mask=MASK or upsample=FACTOR")
    shape = tuple(dataset_image_shape(config.dataset))
    n = check_positive_int("n", n)
    if images is None:
        images = load_dataset(config.dataset, "test", root=config.data_root).tensors[0]
    else:
        images = _check_image("images", images)
        if tuple(images.shape[1:]) != shape:
            raise ValueError(f"images must have the run's image shape {shape}, got {tuple(images.shape[1:])}")
    truth = images[:n]
    if inpaint_mask is not None:
        mask = named_mask(inpaint_mask, shape).to(truth.device)
        return {"truth": truth, "observed": truth * mask + (1 - mask) * 0.5, "mask": mask}
    factor = check_positive_int("upsample", upsample)
    if factor < 2 or shape[-1] % factor or shape[-2] % factor:
        raise ValueError(f"upsample must be a factor >= 2 that divides the image side {shape[-1]}, got {upsample!r}")
    low = F.avg_pool2d(truth, factor)
    return {"truth": truth, "observed": F.interpolate(low, scale_factor=factor, mode="nearest"), "low": low}


def restore_run(ema_net, config, n: int, *, inpaint_mask: str | Tensor | None = None, upsample: int | None = None,
                method: str | None = None, images: Tensor | None = None, steps: int | None = None, resample: int = 5,
                num_particles: int = 8, generator: torch.Generator | None = None, progress: bool = False,
                callback=None) -> Tensor:
    """The :func:`held_out_observations` of a DDPM run restored by its unconditional network, in [0, 1]: inpainting by
    ``method`` ``repaint`` (default; ``steps`` 100 × ``resample``), ``smc`` (``steps`` 100, ``num_particles`` per image)
    or ``ddrm`` (20 steps); s× super-resolution (``upsample``) by DDRM (20 steps)."""
    from ppl_dgm.diffusion.ddpm import to_image_space, to_model_space
    from ppl_dgm.diffusion.experiment import build_schedule

    task = "inpaint" if inpaint_mask is not None else "upsample"
    method = RESTORATION_METHODS[task][0] if method is None else method
    if method not in RESTORATION_METHODS[task]:
        raise ValueError(f"method={method!r} cannot {task}; expected one of {RESTORATION_METHODS[task]}")
    if config.class_conditional and getattr(config, "p_uncond", 0.0) == 0.0:
        raise ValueError("restoration uses the network unconditionally; this class-conditional run was trained without "
                         "label dropout (p_uncond = 0), so it has no unconditional ε")
    device = _resolve_device(ema_net, None)
    seen = held_out_observations(config, n, inpaint_mask=inpaint_mask, upsample=upsample,
                                 images=None if images is None else images.cpu())
    x = to_model_space(seen["truth"].to(device))
    schedule = build_schedule(config)
    common = dict(generator=generator, progress=progress, callback=callback)
    was_training = getattr(ema_net, "training", False)
    ema_net.eval()
    try:
        if task == "upsample":
            out = ddrm(ema_net, schedule, SuperResolution(upsample), F.avg_pool2d(x, upsample), x.shape, steps=steps or 20, **common)
        else:
            mask = seen["mask"].to(device)
            if method == "repaint":
                out = inpaint(ema_net, schedule, x, mask, steps=steps or 100, resample=resample, **common)
            elif method == "smc":
                out = inpaint_smc(ema_net, schedule, x, mask, steps=steps or 100, num_particles=num_particles, **common)
            else:
                out = ddrm(ema_net, schedule, Inpainting(mask), x * mask, x.shape, steps=steps or 20, **common)
    finally:
        ema_net.train(was_training)
    return to_image_space(out.clamp(-1.0, 1.0))
