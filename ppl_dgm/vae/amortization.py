"""The VAE's inference gaps (Cremer, Li & Duvenaud 2018, "Inference Suboptimality in Variational Autoencoders").

For one digit x, with the networks fixed (Cremer et al. 2018, Table 1):

    log p(x) − L[q_φ] = (log p(x) − L[q*]) + (L[q*] − L[q_φ])
    inference gap       approximation gap    amortization gap

q_φ(z|x) is the encoder's Gaussian; q*(z|x) is the best Gaussian of the same (diagonal) family for that one x, found
here by SVI on a free (loc, scale) per example (:func:`optimize_local_posteriors`); log p(x) is estimated by the IWAE
bound with many samples (Burda et al. 2016). :func:`nuts_posterior` samples z | x by NUTS, so both Gaussians can be
compared with the true posterior itself rather than through bounds.
"""
from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Iterator

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppl_dgm._checks import check_positive_float, check_positive_int, check_seed
from ppl_dgm.vae.hvae import HVAE
from ppl_dgm.vae.likelihoods import BernoulliLikelihood
from ppl_dgm.vae.vae import VAE

__all__ = [
    "LocalGaussianGuide",
    "optimize_local_posteriors",
    "AmortizationGap",
    "amortization_gap",
    "NUTSPosterior",
    "nuts_posterior",
    "gaussian_posterior_errors",
]


class LocalGaussianGuide(nn.Module):
    """q(z_n) = N(loc_n, diag(scale_n²)): one free diagonal Gaussian per example, loc and scale (N, latent_dim).

    ``guide(x, index=None)`` samples site "z" in plate "data" over the rows of x. Row j uses example ``index[j]``;
    without ``index`` the rows must be the N examples repeated particle-major (row r·N + n is example n), as in
    Trace_ELBO over repeated data. :func:`ppl_dgm.metrics.likelihood.iwae_log_likelihood` passes its ``y`` as
    ``index``: give it ``y=torch.arange(N)``. The scale is stored as its log, so it stays positive.
    """

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        if not isinstance(loc, torch.Tensor) or loc.dim() != 2:
            raise ValueError(f"loc must be a tensor (N, latent_dim), got {getattr(loc, 'shape', loc)!r}")
        if not isinstance(scale, torch.Tensor) or scale.shape != loc.shape:
            raise ValueError(f"scale must be a tensor shaped like loc {tuple(loc.shape)}, got {getattr(scale, 'shape', scale)!r}")
        if not bool(torch.isfinite(loc).all()) or not bool((scale > 0).all() & torch.isfinite(scale).all()):
            raise ValueError("loc must be finite and scale finite and positive")
        self.loc = nn.Parameter(loc.detach().clone())
        self.log_scale = nn.Parameter(scale.detach().log())

    @classmethod
    def from_encoder(cls, vae: VAE, x: torch.Tensor) -> "LocalGaussianGuide":
        """Start every example at the encoder's q_φ(z|x): the fit starts from the encoder's ELBO."""
        with torch.no_grad():
            loc, scale = vae.encoder(x)
        return cls(loc, scale)

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def guide(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        num_examples = self.loc.shape[0]
        if index is not None:
            loc, scale = self.loc[index], self.scale[index]
        elif x.shape[0] % num_examples == 0:
            repeats = x.shape[0] // num_examples
            loc, scale = self.loc.repeat(repeats, 1), self.scale.repeat(repeats, 1)
        else:
            raise ValueError(f"x has {x.shape[0]} rows, not a multiple of the guide's {num_examples} examples; pass index "
                             "(the example of each row), e.g. iwae_log_likelihood(..., y=torch.arange(N))")
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    forward = guide


@contextmanager
def _frozen(vae: nn.Module) -> Iterator[None]:
    """The networks in eval mode without gradients inside the block; flags and mode restored afterwards."""
    flags = [parameter.requires_grad for parameter in vae.parameters()]
    was_training = vae.training
    vae.requires_grad_(False).eval()
    try:
        yield
    finally:
        for parameter, flag in zip(vae.parameters(), flags):
            parameter.requires_grad_(flag)
        vae.train(was_training)


def _check_vae(vae: object) -> VAE:
    if isinstance(vae, HVAE):
        raise TypeError("vae is an HVAE, whose posterior has two latent layers (z1, z2) with q(z2|z1) depending on z1; "
                        "the amortization gap is implemented for the single-layer VAE only")
    if not isinstance(vae, VAE):
        raise TypeError(f"vae must be a ppl_dgm.vae.VAE (one Gaussian latent z), got {type(vae).__name__}")
    if vae.full_covariance:
        raise ValueError("vae has a full-covariance encoder; q* here is a diagonal Gaussian, so the amortization gap would "
                         "mix amortization with a smaller family: use a diagonal-posterior VAE")
    if vae.beta != 1.0:
        raise ValueError(f"vae has beta={vae.beta}; the gaps bound log p(x), which needs the KL term at weight one (beta=1)")
    return vae


def _image_shape(vae: VAE) -> tuple[int, ...]:
    """The likelihood's event shape: what one image of this VAE looks like."""
    parameter = next(vae.parameters())
    with torch.no_grad():
        zeros = torch.zeros(1, vae.latent_dim, device=parameter.device, dtype=parameter.dtype)
        return tuple(vae.likelihood(vae.decoder(zeros)).event_shape)


def _check_images(vae: VAE, x: object, name: str = "x") -> torch.Tensor:
    """x as (N, *image_shape) on the VAE's device."""
    parameter = next(vae.parameters())
    image_shape = _image_shape(vae)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of images (N, {', '.join(map(str, image_shape))}), got {type(x).__name__}")
    if x.dim() != len(image_shape) + 1 or tuple(x.shape[1:]) != image_shape or x.shape[0] < 1:
        raise ValueError(f"{name} must have shape (N, {', '.join(map(str, image_shape))}) with N >= 1 for this VAE, "
                         f"got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite")
    if isinstance(vae.likelihood, BernoulliLikelihood) and not bool(((x == 0) | (x == 1)).all()):
        raise ValueError(f"{name} must be binary (0/1) for a Bernoulli decoder")
    return x.to(device=parameter.device, dtype=parameter.dtype)


def optimize_local_posteriors(
    vae: VAE,
    x: torch.Tensor,
    *,
    steps: int = 1000,
    lr: float = 0.01,
    num_particles: int = 10,
    loss: Any = None,
    guide: LocalGaussianGuide | None = None,
    progress: bool = False,
) -> LocalGaussianGuide:
    """q*(z|x_n) for each row of x: SVI on a :class:`LocalGaussianGuide` with the VAE's networks fixed.

    Each step is Pyro's differentiable −ELBO (``loss``, default ``Trace_ELBO()``) over ``num_particles`` copies of x
    (particle-major), stepped by ``torch.optim.Adam`` whose rate is cosine-decayed from ``lr`` to ``lr``/100 so the
    last iterate settles. The examples' objectives are independent and Adam is elementwise, so one batched run is
    N separate optimizations. ``guide`` continues from a given guide; the default starts at the encoder's q_φ.
    """
    from pyro.infer import ELBO, Trace_ELBO
    from tqdm.auto import tqdm

    from ppl_dgm.train.svi import differentiable_loss

    vae = _check_vae(vae)
    x = _check_images(vae, x)
    steps = check_positive_int("steps", steps)
    lr = check_positive_float("lr", lr)
    num_particles = check_positive_int("num_particles", num_particles)
    loss = Trace_ELBO() if loss is None else loss
    if not isinstance(loss, ELBO):
        raise TypeError(f"loss must be a pyro.infer ELBO instance (e.g. Trace_ELBO()), got {loss!r}")
    if guide is None:
        guide = LocalGaussianGuide.from_encoder(vae, x)
    elif not isinstance(guide, LocalGaussianGuide) or guide.loc.shape != (x.shape[0], vae.latent_dim):
        raise ValueError(f"guide must be a LocalGaussianGuide over {x.shape[0]} examples of {vae.latent_dim} dims")
    repeated = x.repeat(num_particles, *([1] * (x.dim() - 1)))
    optimizer = torch.optim.Adam(guide.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=lr / 100)
    bar = tqdm(range(steps), desc="local q*", disable=not progress, leave=False)
    with _frozen(vae):
        for step in bar:
            # Pyro's validation as the caller set it on the first step only, as fit_svi does
            with nullcontext() if step == 0 else pyro.validation_enabled(False):
                negative_elbo = differentiable_loss(loss, vae.model, guide.guide, repeated) / num_particles
            optimizer.zero_grad(set_to_none=True)
            negative_elbo.backward()
            optimizer.step()
            schedule.step()
            if progress and step % 50 == 0:
                bar.set_postfix(elbo=f"{-negative_elbo.item() / x.shape[0]:.2f}")
    return guide


@dataclass
class AmortizationGap:
    """Per-example figures in nats, each (N,) float64 (the gaps of Cremer et al. 2018, Table 1).

    ``log_likelihood``: log p̂(x), the IWAE bound (k draws) of ``log_likelihood_proposal``, the proposal ("optimized"
    q* or "encoder" q_φ) whose bound is higher on average over the examples; both are lower bounds on log p(x), so the
    approximation gap it gives is an underestimate by the bound's own gap; ``log_likelihood_mc_se`` is its Monte-Carlo
    error by the delta method, sd(w)/(√k · mean(w)). ``elbo_optimized`` L[q*] and ``elbo_encoder`` L[q_φ] are means of
    the same k log-weights, with Monte-Carlo standard errors ``*_mc_se`` (per example, over the k draws).
    """

    log_likelihood: torch.Tensor
    log_likelihood_mc_se: torch.Tensor
    log_likelihood_proposal: str
    iwae_encoder: torch.Tensor
    iwae_optimized: torch.Tensor
    elbo_encoder: torch.Tensor
    elbo_encoder_mc_se: torch.Tensor
    elbo_optimized: torch.Tensor
    elbo_optimized_mc_se: torch.Tensor
    k: int
    guide: LocalGaussianGuide

    @property
    def approximation_gap(self) -> torch.Tensor:
        """log p(x) − L[q*]: what the best Gaussian of the family misses (Cremer et al. 2018, Table 1)."""
        return self.log_likelihood - self.elbo_optimized

    @property
    def amortization_gap(self) -> torch.Tensor:
        """L[q*] − L[q_φ]: what sharing one encoder over all x costs (Cremer et al. 2018, Table 1)."""
        return self.elbo_optimized - self.elbo_encoder

    @property
    def inference_gap(self) -> torch.Tensor:
        """log p(x) − L[q_φ] = approximation gap + amortization gap."""
        return self.log_likelihood - self.elbo_encoder

    def summary(self) -> dict[str, Any]:
        """Mean and standard error over the examples (``*_se``, their spread, not the Monte-Carlo error) of every figure,
        nats; plus k, N and the proposal of log p̂."""
        figures = {
            "log_likelihood": self.log_likelihood,
            "iwae_encoder": self.iwae_encoder,
            "iwae_optimized": self.iwae_optimized,
            "elbo_optimized": self.elbo_optimized,
            "elbo_encoder": self.elbo_encoder,
            "approximation_gap": self.approximation_gap,
            "amortization_gap": self.amortization_gap,
            "inference_gap": self.inference_gap,
        }
        n = self.log_likelihood.shape[0]
        result: dict[str, Any] = {"num_examples": n, "k": self.k, "log_likelihood_proposal": self.log_likelihood_proposal}
        for name, values in figures.items():
            result[name] = values.mean().item()
            result[f"{name}_se"] = (values.std() / math.sqrt(n)).item() if n > 1 else float("nan")
        return result


def amortization_gap(
    vae: VAE,
    x: torch.Tensor,
    *,
    k: int = 5000,
    steps: int = 1000,
    lr: float = 0.01,
    num_particles: int = 10,
    max_rows: int = 20000,
    seed: int | None = 0,
    progress: bool = False,
) -> AmortizationGap:
    """log p̂(x), L[q*], L[q_φ] and the gaps for each row of x (nats; Cremer et al. 2018, Table 1).

    q* comes from :func:`optimize_local_posteriors` (``steps``, ``lr``, ``num_particles``); each proposal then draws k
    samples per example, whose log-weights give its ELBO (their mean) and its IWAE bound (their log-mean-exp,
    Burda et al. 2016, eq. 8). ``seed`` seeds Pyro's (global) RNGs first; None leaves them alone.
    """
    from ppl_dgm.metrics.likelihood import log_importance_weights

    vae = _check_vae(vae)
    x = _check_images(vae, x)
    k = check_positive_int("k", k)
    if seed is not None:
        pyro.set_rng_seed(check_seed(seed))
    guide = optimize_local_posteriors(vae, x, steps=steps, lr=lr, num_particles=num_particles, progress=progress)
    index = torch.arange(x.shape[0], device=x.device)
    with _frozen(vae), torch.no_grad():
        encoder_weights = log_importance_weights(vae.model, vae.guide, x, k, max_rows=max_rows)
        optimized_weights = log_importance_weights(vae.model, guide.guide, x, k, max_rows=max_rows, y=index)
    iwae_encoder = torch.logsumexp(encoder_weights, 0) - math.log(k)
    iwae_optimized = torch.logsumexp(optimized_weights, 0) - math.log(k)
    optimized_is_tighter = bool(iwae_optimized.mean() >= iwae_encoder.mean())

    def standard_error(values: torch.Tensor) -> torch.Tensor:
        return values.std(0) / math.sqrt(k) if k > 1 else torch.full_like(values[0], float("nan"))

    tighter = optimized_weights if optimized_is_tighter else encoder_weights
    normalized = torch.exp(tighter - tighter.max(0).values)  # w / max w: sd(w)/mean(w) is scale free
    return AmortizationGap(
        log_likelihood=iwae_optimized if optimized_is_tighter else iwae_encoder,
        log_likelihood_mc_se=standard_error(normalized) / normalized.mean(0),
        log_likelihood_proposal="optimized" if optimized_is_tighter else "encoder",
        iwae_encoder=iwae_encoder,
        iwae_optimized=iwae_optimized,
        elbo_encoder=encoder_weights.mean(0),
        elbo_encoder_mc_se=standard_error(encoder_weights),
        elbo_optimized=optimized_weights.mean(0),
        elbo_optimized_mc_se=standard_error(optimized_weights),
        k=k,
        guide=guide,
    )


@dataclass
class NUTSPosterior:
    """Draws of z | x by NUTS: ``samples`` (chains, draws, latent_dim); per dimension the split r̂ and the ESS (pooled
    over chains, Pyro's ``pyro.ops.stats``); ``divergences`` counted over all chains after warm-up."""

    samples: torch.Tensor
    r_hat: torch.Tensor
    ess: torch.Tensor
    divergences: int

    @property
    def mean(self) -> torch.Tensor:
        return self.samples.flatten(0, 1).mean(0)

    @property
    def std(self) -> torch.Tensor:
        return self.samples.flatten(0, 1).std(0)


def nuts_posterior(
    vae: VAE,
    x_one: torch.Tensor,
    *,
    num_samples: int = 500,
    warmup_steps: int = 500,
    num_chains: int = 2,
    seed: int = 0,
    jit_compile: bool = False,
    progress: bool = False,
) -> NUTSPosterior:
    """NUTS (Hoffman & Gelman 2014) on p(z | x) ∝ p(z) p(x | z) for one image x_one (C, H, W) or (1, C, H, W), the
    networks fixed; every chain starts at the encoder's mean. Chains run one after another
    (:func:`ppl_dgm.lvm.bayesian.run_nuts`)."""
    from pyro.ops.stats import effective_sample_size, split_gelman_rubin

    from ppl_dgm.lvm.bayesian import run_nuts

    vae = _check_vae(vae)
    if isinstance(x_one, torch.Tensor) and x_one.dim() == len(_image_shape(vae)):
        x_one = x_one.unsqueeze(0)
    x = _check_images(vae, x_one, "x_one")
    if x.shape[0] != 1:
        raise ValueError(f"x_one must be one image, got {x.shape[0]} (shape {tuple(x_one.shape)})")
    check_positive_int("num_samples", num_samples)
    if num_samples < 4:
        raise ValueError(f"num_samples must be at least 4 for the split r̂, got {num_samples}")
    with torch.no_grad():
        start = vae.encoder(x)[0]
    with _frozen(vae):
        runs = run_nuts(vae.model, x, num_samples=num_samples, warmup_steps=warmup_steps, num_chains=num_chains,
                        seed=seed, init_values={"z": start}, jit_compile=jit_compile, progress=progress)
    runs = runs if isinstance(runs, list) else [runs]
    samples = torch.stack([run.get_samples()["z"].reshape(num_samples, vae.latent_dim) for run in runs]).detach()
    divergences = sum(len(chain) for run in runs for chain in run.diagnostics()["divergences"].values())
    return NUTSPosterior(samples=samples, r_hat=split_gelman_rubin(samples), ess=effective_sample_size(samples), divergences=divergences)


def gaussian_posterior_errors(reference: NUTSPosterior, loc: torch.Tensor, scale: torch.Tensor) -> dict[str, float]:
    """How far N(loc, diag(scale²)) (each (latent_dim,)) is from the NUTS posterior, in its posterior sds.

    The definitions of :func:`ppl_dgm.analysis.comparison.posterior_errors`: ``mean_error`` = RMS over dimensions of
    (loc_d − mean_d)/sd_d, ``mean_error_max`` its largest absolute term, ``sd_error`` = RMS of log(scale_d/sd_d),
    ``sd_ratio`` = their geometric mean (below 1: too narrow); ``reference_mcse`` = RMS of 1/√ESS_d, the Monte-Carlo
    error of NUTS's means in the same units, below which ``mean_error`` is noise.
    """
    mean, std = reference.mean.double(), reference.std.double()
    standardized = (loc.detach().double().reshape(-1) - mean) / std
    log_ratio = torch.log(scale.detach().double().reshape(-1) / std)
    return {
        "mean_error": standardized.square().mean().sqrt().item(),
        "mean_error_max": standardized.abs().max().item(),
        "sd_error": log_ratio.square().mean().sqrt().item(),
        "sd_ratio": log_ratio.mean().exp().item(),
        "reference_mcse": reference.ess.double().reciprocal().mean().sqrt().item(),
    }
