"""DDPM as a Pyro Markov hierarchical VAE (Ho et al. 2020, eq. 5) and the simple ε-loss (Alg. 1).

``model`` is the reverse chain p(x_T) ∏ p_θ(x_{t−1}|x_t) with the discretized decoder p(x_0|x_1);
``guide`` is the fixed forward process q written as q(x_T|x_0) ∏ q(x_{t−1}|x_t, x_0), so that
``TraceMeanField_ELBO`` turns every latent site into the analytic Gaussian KL of eq. 5. Data x_0
are 8-bit images scaled to [−1, 1] (:func:`to_model_space`).
"""
from __future__ import annotations

import math
import time
from typing import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.nn import PyroModule
from torch import Tensor, nn

from ppl_dgm._checks import check_positive_int, check_same_shape
from ppl_dgm.diffusion.schedules import NoiseSchedule
from ppl_dgm.nn.functional import expand_like
from ppl_dgm.vae.likelihoods import DiscretizedGaussian

__all__ = ["DDPM", "ddpm_bits_per_dim", "elbo_terms", "simple_loss", "to_model_space", "to_image_space", "VARIANCES", "ESTIMATORS"]

VARIANCES = ("beta", "beta_tilde")
ESTIMATORS = ("full", "sampled_t")
EpsModel = Callable[..., Tensor]


def to_model_space(images: Tensor) -> Tensor:
    """Images in [0, 1] → their 8-bit levels k/255 scaled to [−1, 1] (2k/255 − 1), the DDPM data space."""
    return torch.round(images * 255.0) * (2.0 / 255.0) - 1.0


def to_image_space(x: Tensor) -> Tensor:
    """[−1, 1] → [0, 1], clamped (for grids)."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def simple_loss(eps_model: EpsModel, schedule: NoiseSchedule, x0: Tensor, y: Tensor | None = None) -> Tensor:
    """L_simple = E_{t, ε} ‖ε − ε_θ(√ᾱ_t x_0 + √(1 − ᾱ_t) ε, t/T)‖², mean over pixels (Ho et al. 2020, Alg. 1, eq. 14).

    t ~ U{1..T} and ε ~ N(0, I) use torch's global RNG (seeded and checkpointed by the training loop).
    """
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule (e.g. linear_schedule()), got {type(schedule).__name__}")
    if not isinstance(x0, Tensor) or not x0.is_floating_point() or x0.ndim < 1:
        raise TypeError(f"x0 must be a floating tensor (B, ...), got {x0.dtype if isinstance(x0, Tensor) else type(x0).__name__}")
    batch_size, num_steps = x0.shape[0], schedule.num_steps
    t = torch.randint(1, num_steps + 1, (batch_size,), device=x0.device)
    noise = torch.randn_like(x0)
    alpha_bar = expand_like(schedule.tables(x0.device, x0.dtype)["alpha_bar"][t - 1], x0)
    xt = alpha_bar.sqrt() * x0 + (1.0 - alpha_bar).sqrt() * noise  # Ho et al. 2020, eq. 4
    time = t.to(x0.dtype) / num_steps
    prediction = eps_model(xt, time) if y is None else eps_model(xt, time, y)
    check_same_shape("eps_model's output", prediction, "x0", x0)  # a (B, 1) output would broadcast silently
    return (noise - prediction).pow(2).mean()  # Ho et al. 2020, eq. 14


class DDPM(PyroModule):
    """Reverse chain p_θ with ε-network ``eps_model(x, t, y=None)``; σ_t² = β_t or β̃_t (Ho et al. 2020, sec. 3.2).

    ``estimator="full"``: all T KL sites (evaluation). ``"sampled_t"``: one uniformly drawn step per
    example, its term scaled by T, plus the constant L_T — an unbiased estimate of the same ELBO.
    As in Ho et al.'s code, the decoder scale σ_1² is β̃_2 (β̃_1 = 0) for either variance.
    """

    def __init__(self, eps_model: nn.Module, schedule: NoiseSchedule, *, variance: str = "beta", estimator: str = "full"):
        super().__init__()
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a NoiseSchedule (e.g. linear_schedule()), got {type(schedule).__name__}")
        if variance not in VARIANCES:
            raise ValueError(f"variance={variance!r} is not known; expected one of {VARIANCES}")
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator={estimator!r} is not known; expected one of {ESTIMATORS}")
        self.eps_model = eps_model
        self.schedule = schedule
        self.variance = variance
        self.estimator = estimator
        reverse_variance = schedule.betas.clone() if variance == "beta" else schedule.posterior_variance.clone()
        reverse_variance[0] = schedule.posterior_variance[1] if schedule.num_steps > 1 else schedule.betas[0]
        self.reverse_variance = reverse_variance  # float64 (T,), σ_t² with σ_1² the decoder's

    # ---- the pieces of eq. 5, for per-example steps t (B,) ------------------------------------------
    def _table(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        """Schedule table ``name`` (or "reverse_variance") at steps t (B,), broadcast against ``like``."""
        tables = self.schedule.tables(like.device, like.dtype)
        if name == "reverse_variance":  # depends on the variance choice; cached with the schedule's tables
            name = f"reverse_variance_{self.variance}"
            if name not in tables:
                tables[name] = self.reverse_variance.to(device=like.device, dtype=like.dtype)
        return expand_like(tables[name][t - 1], like)

    def _eps(self, xt: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        time = t.to(xt.dtype) / self.schedule.num_steps  # the network contract: step t as t / T
        return self.eps_model(xt, time) if y is None else self.eps_model(xt, time, y)

    def reverse_mean(self, xt: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """μ_θ(x_t, t) = (x_t − β_t/√(1 − ᾱ_t) ε_θ) / √α_t (Ho et al. 2020, eq. 11); t (B,) int64."""
        betas = self._table("betas", t, xt)
        alpha_bar = self._table("alpha_bar", t, xt)
        return (xt - betas / (1.0 - alpha_bar).sqrt() * eps) / (1.0 - betas).sqrt()

    def _reverse_scale(self, t: Tensor, like: Tensor) -> Tensor:
        return self._table("reverse_variance", t, like).sqrt().expand_as(like)

    def _q_xt(self, x0: Tensor, t: Tensor) -> dist.TorchDistribution:
        alpha_bar = self._table("alpha_bar", t, x0)
        # Ho et al. 2020, eq. 4: q(x_t|x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I)
        return dist.Normal(alpha_bar.sqrt() * x0, (1.0 - alpha_bar).sqrt().expand_as(x0)).to_event(x0.ndim - 1)

    def _posterior(self, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        # Ho et al. 2020, eqs. 6–7: q(x_{t−1}|x_t, x_0) = N(μ̃_t, β̃_t I)
        mean = self._table("posterior_mean_coef_x0", t, x0) * x0 + self._table("posterior_mean_coef_xt", t, xt) * xt
        return mean, self._table("posterior_variance", t, x0).sqrt().expand_as(x0)

    def _prior(self, x0: Tensor) -> dist.TorchDistribution:
        return dist.Normal(torch.zeros_like(x0), torch.ones_like(x0)).to_event(x0.ndim - 1)  # p(x_T) = N(0, I)

    def _decoder(self, x1: Tensor, t: Tensor, y: Tensor | None) -> dist.TorchDistribution:
        # Ho et al. 2020, eq. 13: p_θ(x_0|x_1) = discretized N(μ_θ(x_1, 1), σ_1²)
        loc = self.reverse_mean(x1, t, self._eps(x1, t, y))
        return DiscretizedGaussian(loc, self._reverse_scale(t, x1)).to_event(x1.ndim - 1)

    def _steps(self, x0: Tensor, t: int) -> Tensor:
        return torch.full((x0.shape[0],), t, device=x0.device, dtype=torch.long)

    # ---- the full chain: T latent sites (evaluation) ---------------------------------------------
    def full_model(self, x0: Tensor, y: Tensor | None = None) -> Tensor:
        """p(x_T) ∏_{t=T}^{2} p_θ(x_{t−1}|x_t) · p_θ(x_0|x_1), x_0 observed; sites "x_T".."x_1", "x_0"."""
        num_steps = self.schedule.num_steps
        with pyro.plate("data", x0.shape[0]):
            xt = pyro.sample(f"x_{num_steps}", self._prior(x0))
            for step in range(num_steps, 1, -1):
                t = self._steps(x0, step)
                loc = self.reverse_mean(xt, t, self._eps(xt, t, y))
                xt = pyro.sample(f"x_{step - 1}", dist.Normal(loc, self._reverse_scale(t, x0)).to_event(x0.ndim - 1))
            return pyro.sample("x_0", self._decoder(xt, self._steps(x0, 1), y), obs=x0)

    def full_guide(self, x0: Tensor, y: Tensor | None = None) -> Tensor:
        """q(x_T|x_0) ∏_{t=T}^{2} q(x_{t−1}|x_t, x_0): the forward process, no parameters."""
        num_steps = self.schedule.num_steps
        with pyro.plate("data", x0.shape[0]):
            xt = pyro.sample(f"x_{num_steps}", self._q_xt(x0, self._steps(x0, num_steps)))
            for step in range(num_steps, 1, -1):
                mean, scale = self._posterior(x0, xt, self._steps(x0, step))
                xt = pyro.sample(f"x_{step - 1}", dist.Normal(mean, scale).to_event(x0.ndim - 1))
            return xt

    # ---- one step per example, scaled by T (training) ------------------------------------------------
    def _sampled_step(self, x0: Tensor) -> Tensor:
        # t ~ U{1..T} through u ~ U(0, 1), a site of model and guide alike (KL 0), so both see the same t
        u = pyro.sample("u", dist.Uniform(torch.zeros(x0.shape[0], device=x0.device, dtype=x0.dtype), 1.0))
        return (u * self.schedule.num_steps).floor().long().clamp(max=self.schedule.num_steps - 1) + 1

    def sampled_model(self, x0: Tensor, y: Tensor | None = None) -> Tensor:
        """−L_T − T·L_{t−1} for t ~ U{1..T} per example (L_0 = −log p_θ(x_0|x_1) when t = 1)."""
        num_steps, event_dim = self.schedule.num_steps, x0.ndim - 1
        with pyro.plate("data", x0.shape[0]):
            t = self._sampled_step(x0)
            pyro.sample("x_T", self._prior(x0))
            xt = pyro.sample("x_t", self._q_xt(x0, t))  # auxiliary: the model's factor is q itself (KL 0)
            eps = self._eps(xt, t, y)
            loc = self.reverse_mean(xt, t, eps)
            is_decoder = t == 1
            with poutine.scale(scale=float(num_steps)):
                with poutine.mask(mask=~is_decoder):
                    scale = torch.where(expand_like(is_decoder, x0).expand_as(x0), torch.ones_like(x0), self._reverse_scale(t, x0))
                    pyro.sample("x_t_minus_1", dist.Normal(loc, scale).to_event(event_dim))
                with poutine.mask(mask=is_decoder):
                    return pyro.sample("x_0", DiscretizedGaussian(loc, self._reverse_scale(t, x0)).to_event(event_dim), obs=x0)

    def sampled_guide(self, x0: Tensor, y: Tensor | None = None) -> None:
        """q(x_T|x_0), x_t ~ q(x_t|x_0) and x_{t−1} ~ q(x_{t−1}|x_t, x_0) for the drawn t."""
        num_steps, event_dim = self.schedule.num_steps, x0.ndim - 1
        with pyro.plate("data", x0.shape[0]):
            t = self._sampled_step(x0)
            pyro.sample("x_T", self._q_xt(x0, self._steps(x0, num_steps)))
            xt = pyro.sample("x_t", self._q_xt(x0, t))
            is_decoder = t == 1
            mean, scale = self._posterior(x0, xt, t)
            with poutine.scale(scale=float(num_steps)), poutine.mask(mask=~is_decoder):
                scale = torch.where(expand_like(is_decoder, x0).expand_as(x0), torch.ones_like(x0), scale)  # β̃_1 = 0: masked out
                pyro.sample("x_t_minus_1", dist.Normal(mean, scale).to_event(event_dim))

    def model(self, x0: Tensor, y: Tensor | None = None) -> Tensor:
        return self.full_model(x0, y) if self.estimator == "full" else self.sampled_model(x0, y)

    def guide(self, x0: Tensor, y: Tensor | None = None) -> None:
        return self.full_guide(x0, y) if self.estimator == "full" else self.sampled_guide(x0, y)

    def simple_loss(self, x0: Tensor, y: Tensor | None = None) -> Tensor:
        """L_simple of Ho et al. 2020 (Alg. 1) for data x0 in [−1, 1]."""
        return simple_loss(self.eps_model, self.schedule, x0, y)

    @torch.no_grad()
    def sample(self, n: int, image_shape: tuple[int, ...], *, generator: torch.Generator | None = None, progress: bool = False, y: Tensor | None = None) -> Tensor:
        """n ancestral samples (Ho et al. 2020, Alg. 2) with this model's σ_t², in [−1, 1]."""
        from ppl_dgm.diffusion.samplers import sample_ancestral

        return sample_ancestral(self.eps_model, self.schedule, (n, *image_shape), variance=self.variance, generator=generator, progress=progress, y=y)



@torch.no_grad()
def elbo_terms(ddpm: DDPM, x0: Tensor, y: Tensor | None = None) -> Tensor:
    """Per-example terms of Ho et al. 2020, eq. 5, in nats, (B, T + 1): column 0 is L_0 = −log p_θ(x_0|x_1),
    column s (1 ≤ s < T) is L_s = KL(q(x_s|x_{s+1}, x_0) ‖ p_θ(x_s|x_{s+1})), column T is L_T.

    Read off the Pyro traces of ``full_guide`` and ``full_model`` replayed on it: the same analytic KLs
    ``TraceMeanField_ELBO`` sums (one draw of the forward chain), kept per example and per step.
    """
    guide_trace = poutine.trace(ddpm.full_guide).get_trace(x0, y)
    model_trace = poutine.trace(poutine.replay(ddpm.full_model, trace=guide_trace)).get_trace(x0, y)
    num_steps = ddpm.schedule.num_steps
    terms = x0.new_zeros(x0.shape[0], num_steps + 1, dtype=torch.float64)
    terms[:, 0] = -model_trace.nodes["x_0"]["fn"].log_prob(x0).double()
    for step in range(1, num_steps + 1):
        name = f"x_{step}"
        terms[:, step] = torch.distributions.kl_divergence(guide_trace.nodes[name]["fn"], model_trace.nodes[name]["fn"]).double()
    return terms


def ddpm_bits_per_dim(ddpm: DDPM, images: Tensor, *, y: Tensor | None = None, batch_size: int = 16, progress: bool = False) -> dict[str, float]:
    """Bits/dim of 8-bit ``images`` (N, C, H, W) in [0, 1] from the full ELBO: −ELBO / (D ln 2).

    The discretized decoder makes the ELBO a bound on the discrete probability of the 8-bit image
    (Ho et al. 2020, sec. 3.3), so no dequantization term is added. Also the standard error over images.
    """
    from tqdm.auto import tqdm

    check_positive_int("batch_size", batch_size)
    if images.ndim < 2 or images.shape[0] < 1:
        raise ValueError(f"images must be (N, C, H, W) with N >= 1, got shape {tuple(images.shape)}")
    parameter = next(ddpm.parameters())
    started = time.perf_counter()
    totals = []
    was_training = ddpm.training
    ddpm.eval()
    try:
        for begin in tqdm(range(0, images.shape[0], batch_size), desc="full ELBO", disable=not progress, leave=False):
            x0 = to_model_space(images[begin : begin + batch_size].to(device=parameter.device, dtype=parameter.dtype))
            labels = None if y is None else y[begin : begin + batch_size].to(parameter.device)
            totals.append(elbo_terms(ddpm, x0, labels).sum(1))
    finally:
        ddpm.train(was_training)
    nll = torch.cat(totals).cpu()
    num_dims = images[0].numel()
    scale = num_dims * math.log(2.0)
    standard_error = float(nll.std() / math.sqrt(nll.numel())) if nll.numel() > 1 else float("nan")
    return {
        "bits_per_dim": float(nll.mean()) / scale,
        "bits_per_dim_standard_error": standard_error / scale,
        "nll_nats": float(nll.mean()),
        "num_images": int(nll.numel()),
        "seconds": time.perf_counter() - started,
    }
