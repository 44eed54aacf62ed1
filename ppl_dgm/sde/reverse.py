"""Reverse-time SDE sampling through torchsde (Song et al. 2021, eq. 6).

torchsde needs increasing times, so the reverse SDE runs in s = (T − t)/Δt ∈ [0, steps]: the drift is
negated and scaled by Δt, the diffusion by √Δt, and the grid 0, 1, …, steps with dt = 1 is exact in
floating point (a float grid accumulates a sliver step, LIBRARY_NOTES). The noise is additive
(g depends on t only), so Euler–Maruyama has strong order 1, and SRA1 ("srk") order 1.5.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ppl_dgm._checks import check_positive_int
from ppl_dgm.nn.functional import expand_like
from ppl_dgm.sde.sdes import check_sde, SDE, check_time_range, score_fn

__all__ = ["sample_reverse_sde", "GeneratorBrownian", "REVERSE_SDE_METHODS", "model_device_dtype", "start_noise"]

REVERSE_SDE_METHODS = ("euler", "srk", "heun")


def model_device_dtype(model, device=None) -> tuple[torch.device, torch.dtype]:
    """The device (``device`` or the model's) and floating dtype of a network's parameters (else CPU, float32)."""
    parameter = next(model.parameters(), None) if isinstance(model, nn.Module) else None
    if device is None:
        device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.get_default_dtype()
    return torch.device(device), dtype


def start_noise(sde: SDE, shape, x_T: Tensor | None, generator, device, dtype) -> Tensor:
    """A copy of ``x_T`` or a prior draw of ``shape`` on ``device``."""
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be an SDE (VPSDE, SubVPSDE, VESDE), got {type(sde).__name__}")
    if x_T is not None:
        if not isinstance(x_T, Tensor) or not x_T.is_floating_point() or x_T.ndim < 1:
            raise TypeError(f"x_T must be a floating tensor (B, ...) or None, got {x_T.dtype if isinstance(x_T, Tensor) else type(x_T).__name__}")
        return x_T.to(device=device, dtype=dtype).clone()
    return sde.prior_sampling(shape, generator, device=device, dtype=dtype)


class GeneratorBrownian:
    """A minimal torchsde Brownian motion: each query draws W(tb) − W(ta) ~ N(0, (tb − ta) I) from ``generator``.

    Valid for fixed-step solvers that query each step once (euler, heun, srk). With ``return_U`` it
    also returns the space-time Lévy area U = Δt(W/2 + H), H ~ N(0, Δt/12) (what SRA1 needs).
    """

    def __init__(self, shape, dtype, device, generator: torch.Generator | None = None, levy_area: bool = False):
        import torchsde

        self.shape, self.dtype, self.device, self.generator = tuple(shape), dtype, torch.device(device), generator
        self.levy_area_approximation = "space-time" if levy_area else "none"
        torchsde.BaseBrownian.register(type(self))

    def size(self):
        return self.shape

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        dt = float(tb - ta)
        increment = torch.randn(self.shape, generator=self.generator, device=self.device, dtype=self.dtype) * math.sqrt(dt)
        if not return_U:
            return increment
        space_time = torch.randn(self.shape, generator=self.generator, device=self.device, dtype=self.dtype) * math.sqrt(dt / 12)
        return increment, dt * (0.5 * increment + space_time)

    def __repr__(self) -> str:
        return f"GeneratorBrownian(shape={self.shape}, dtype={self.dtype}, device={self.device})"


class _ReverseInStepUnits:
    """The reverse SDE in s = (T − t)/Δt, flattened to (B, D) for torchsde: ds-drift −Δt·f̄, diffusion √Δt·g.

    Only ``f`` and ``g_prod`` are defined, so torchsde's contract check evaluates the network once.
    """

    noise_type = "additive"

    def __init__(self, reverse, shape, start: float, step: float, sde_type: str):
        self.reverse, self.shape, self.start, self.step, self.sde_type = reverse, shape, start, step, sde_type
        self._cached = None

    def _time(self, s, y: Tensor) -> Tensor:
        return torch.full((y.shape[0],), self.start - self.step * float(s), dtype=torch.float64, device=y.device)

    def f(self, s, y: Tensor) -> Tensor:
        # torchsde 0.2.6's SRA1 asks twice for f(t0, y0) each step: answer the repeat from a one-entry cache
        key = (float(s), y._version)
        if self._cached is not None and self._cached[0] is y and self._cached[1] == key:
            return self._cached[2]
        drift, _ = self.reverse._drift_diffusion(y.view(self.shape), self._time(s, y))
        drift = (-self.step) * drift.reshape(y.shape)  # dt = −Δt ds
        self._cached = (y, key, drift)
        return drift

    def g_prod(self, s, y: Tensor, v: Tensor) -> Tensor:
        diffusion = self.reverse.forward._diffusion(self._time(s, y)) * math.sqrt(self.step)
        return expand_like(diffusion.to(y.dtype), v) * v  # g(t)·I times the Brownian increment


@torch.no_grad()
def sample_reverse_sde(eps_model, sde: SDE, shape, *, steps: int = 1000, method: str = "euler", eps: float = 1e-3,
                       generator: torch.Generator | None = None, device=None, x_T: Tensor | None = None,
                       y: Tensor | None = None, guidance_scale: float = 0.0, denoise: bool = True, brownian=None,
                       progress: bool = False, callback=None) -> Tensor:
    """Integrate the reverse SDE from x_T ~ prior at t = T to t = eps in ``steps`` equal steps with torchsde.

    ``method``: "euler" (Euler–Maruyama), "srk" (SRA1, strong order 1.5 for additive noise) or "heun"
    (Stratonovich Heun, equal to Itô here since g does not depend on x). ``denoise`` returns the
    noise-free mean of a last Euler step (Song et al. 2021's code). ``y``/``guidance_scale``: classifier-free
    guidance; ``callback(call, x, denoised)`` sees every network call. Returns x (B, ...).
    """
    import torchsde

    check_sde(sde)
    check_positive_int("steps", steps)
    if method not in REVERSE_SDE_METHODS:
        raise ValueError(f"method={method!r} is not known; expected one of {REVERSE_SDE_METHODS}")
    eps = check_time_range("eps", eps, sde.T)
    device, dtype = model_device_dtype(eps_model, device)
    x = start_noise(sde, shape, x_T, generator, device, dtype)
    from tqdm.auto import tqdm

    bar = tqdm(total=steps, desc="reverse sde (network calls)", disable=not progress, leave=False)

    def observe(call: int, state: Tensor, denoised: Tensor) -> None:  # torchsde has no step hook: count network calls
        bar.update(1)
        if callback is not None:
            callback(call, state, denoised)

    reverse = sde.reverse(score_fn(eps_model, sde, None if y is None else y.to(device), guidance_scale, observe))
    step = (sde.T - eps) / steps
    integrate_steps = steps - 1 if denoise else steps
    flat = x.reshape(x.shape[0], -1)
    if integrate_steps > 0:
        system = _ReverseInStepUnits(reverse, x.shape, sde.T, step, "stratonovich" if method == "heun" else "ito")
        bm = brownian if brownian is not None else GeneratorBrownian(flat.shape, dtype, device, generator, levy_area=method == "srk")
        times = torch.arange(integrate_steps + 1, dtype=torch.float64)  # on the host: no device syncs in torchsde's loop
        flat = torchsde.sdeint(system, flat, times, bm=bm, method=method, dt=1.0)[-1]
    x = flat.reshape(x.shape)
    if denoise:  # last step from t = eps + Δt to eps without noise
        time = torch.full((x.shape[0],), eps + step, dtype=torch.float64, device=device)
        drift, _ = reverse._drift_diffusion(x, time)
        x = x - step * drift
    bar.close()
    return x
