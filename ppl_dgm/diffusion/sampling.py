"""Every sampler of an ε-network by name: what ``Run.sample``, ``ppl-dgm sample`` and the FD scripts call.

One network, every sampler (docs/design.md, "Samplers"): a DDPM ε-network on a discrete schedule is sampled by
ancestral sampling, DDIM, the fast solvers, and, read as the VP SDE its linear schedule discretizes (Song et al.
2021, App. B), by the reverse SDE, predictor–corrector and the probability-flow ODE.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

__all__ = ["SAMPLER_NAMES", "SOLVER_NAMES", "SDE_SAMPLER_NAMES", "DEFAULT_STEPS", "sample_by_name"]

SOLVER_NAMES = ("dpmpp-2m", "dpmpp-2m-sde", "heun", "euler-ancestral")
SDE_SAMPLER_NAMES = ("reverse-sde", "pc", "ode")
SAMPLER_NAMES = ("ancestral", "ddim") + SOLVER_NAMES + SDE_SAMPLER_NAMES
# steps when none are given: DDIM and the solvers as diffusers' pipelines; the SDE samplers as frechet_table's rows
DEFAULT_STEPS = {"ddim": 50, "dpmpp-2m": 20, "dpmpp-2m-sde": 20, "heun": 18, "euler-ancestral": 50, "reverse-sde": 250, "pc": 100}


def sample_by_name(sampler: str, eps_model: Callable[..., Tensor], schedule, shape: Sequence[int], *,
                   steps: int | None = None, eta: float = 0.0, variance: str = "beta", sde=None,
                   generator: torch.Generator | None = None, device=None, x_T: Tensor | None = None, y: Tensor | None = None,
                   guidance_scale: float = 0.0, classifier=None, classifier_scale: float = 0.0, classifier_y: Tensor | None = None,
                   clip_x0: bool = False, progress: bool = False, callback=None) -> Tensor:
    """Samples (B, ...) in model space by ``sampler`` (one of :data:`SAMPLER_NAMES`) with the contract's keywords.

    ``schedule``: a DDPM ``NoiseSchedule``, or for the fast solvers also a continuous ``VPSDE`` (a score-SDE run).

    ``steps``: DDIM/solver/SDE steps (default :data:`DEFAULT_STEPS`); the ancestral sampler always takes T and the ODE
    is adaptive, so both refuse ``steps``. ``eta`` is DDIM's, ``variance`` the ancestral sampler's σ_t². The SDE samplers
    need ``sde``, the VP SDE the schedule discretizes; their samples are clipped to [−1, 1] with ``clip_x0``.

    ``classifier(x_t, t) -> logits`` and ``classifier_scale`` s add classifier guidance toward ``classifier_y`` (default
    ``y``; an unconditional network takes ``y=None`` and ``classifier_y``), on top of classifier-free guidance if any:
    ε̂ = ε̃ − s·σ_t·∇ log p_φ(y | x_t, t) (:func:`~ppl_dgm.diffusion.classifier_guidance.classifier_guided_eps`), σ_t from
    ``schedule``, or from ``sde`` for the SDE samplers.
    """
    from ppl_dgm.diffusion import samplers, solvers

    if sampler not in SAMPLER_NAMES:
        raise ValueError(f"sampler={sampler!r} is not known; expected one of {SAMPLER_NAMES}")
    if steps is not None and sampler in ("ancestral", "ode"):
        what = f"the ancestral sampler always takes the schedule's T={schedule.num_steps} steps" if sampler == "ancestral" \
            else "the probability-flow ODE chooses its own steps (adaptive dopri5)"
        raise ValueError(f"steps={steps}: {what}; use sampler='ddim' or a solver for fewer network calls")
    if eta and sampler != "ddim":
        raise ValueError(f"eta={eta!r} is an option of the ddim sampler, got sampler={sampler!r}")
    steps = DEFAULT_STEPS.get(sampler) if steps is None else steps
    if sampler in SDE_SAMPLER_NAMES and sde is None:
        raise ValueError(f"sampler={sampler!r} reads the network as an SDE: pass sde= (the VP SDE of a linear schedule)")
    if classifier is not None or classifier_scale != 0.0:
        eps_model, y, guidance_scale, device = _classifier_guided(eps_model, shape, y, guidance_scale, classifier, classifier_scale,
                                                                  classifier_y, sde if sampler in SDE_SAMPLER_NAMES else schedule, device)
    common = dict(generator=generator, device=device, x_T=x_T, y=y, guidance_scale=guidance_scale, progress=progress, callback=callback)
    if sampler == "ancestral":
        return samplers.sample_ancestral(eps_model, schedule, shape, variance=variance, clip_x0=clip_x0, **common)
    if sampler == "ddim":
        return samplers.sample_ddim(eps_model, schedule, shape, steps=steps, eta=eta, clip_x0=clip_x0, **common)
    if sampler in SOLVER_NAMES:
        solver = {"dpmpp-2m": solvers.sample_dpmpp_2m, "dpmpp-2m-sde": solvers.sample_dpmpp_2m_sde, "heun": solvers.sample_heun,
                  "euler-ancestral": solvers.sample_euler_ancestral}[sampler]
        return solver(eps_model, schedule, shape, steps=steps, clip_x0=clip_x0, **common)
    from ppl_dgm.sde import sample_ode, sample_pc, sample_reverse_sde

    if sampler == "reverse-sde":
        x = sample_reverse_sde(eps_model, sde, shape, steps=steps, **common)
    elif sampler == "pc":
        x = sample_pc(eps_model, sde, shape, steps=steps, **common)
    else:
        x = sample_ode(eps_model, sde, shape, **common)
    return x.clamp(-1.0, 1.0) if clip_x0 else x


def _classifier_guided(eps_model, shape, y, guidance_scale, classifier, classifier_scale, classifier_y, noise, device):
    """(ε̂, y, w, device) for the sampler: classifier guidance over the (classifier-free guided) ε, the labels consumed."""
    from ppl_dgm.diffusion.classifier_guidance import check_classifier_scale, classifier_guided_eps
    from ppl_dgm.diffusion.guidance import guided_eps
    from ppl_dgm.diffusion.samplers import _resolve_device

    classifier_scale = check_classifier_scale(classifier_scale)
    if classifier is None:
        raise ValueError(f"classifier_scale={classifier_scale!r} needs a classifier p_φ(y | x_t, t), got classifier=None")
    labels = y if classifier_y is None else classifier_y
    if labels is None:
        raise ValueError("classifier guidance needs the classes to guide toward: pass classifier_y (or y), got neither")
    if isinstance(labels, Tensor) and labels.ndim == 1 and labels.shape[0] != shape[0]:
        raise ValueError(f"classifier_y must hold one class per sample, {shape[0]} (shape={tuple(shape)}), got {labels.shape[0]}")
    device, network = _resolve_device(eps_model, device), eps_model if isinstance(eps_model, nn.Module) else None
    if guidance_scale:  # classifier-free guidance first, so the classifier sees B examples, not the 2B of eq. 6
        eps_model, y, guidance_scale = guided_eps(eps_model, None if y is None else y.to(device), guidance_scale), None, 0.0
    labels = labels.to(device) if isinstance(labels, Tensor) else labels
    guided = classifier_guided_eps(eps_model, classifier, labels, classifier_scale, noise, network=network)
    return guided, y, guidance_scale, device
