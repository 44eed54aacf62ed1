"""Training-time control of a VAE's KL term: a linear KL warm-up and free bits, as one Pyro ELBO.

Both change the *training* objective only; every held-out figure is the true ELBO / IWAE bound at β = 1 with no free
bits. :func:`kl_weight_at` is the warm-up schedule shared by every family that anneals its KL (VAE, HVAE, dVAE): the
loop's ``on_step`` hook sets the weight from the optimizer step, so a resumed run continues on the same schedule.
:class:`FreeBitsELBO` is the negative ELBO of a model/guide pair with every latent site's KL weighted by that β and,
with ``free_bits`` λ > 0, floored at λ nats per latent dimension (Kingma et al. 2016).
"""
from __future__ import annotations

import math

import torch
from pyro.infer import Trace_ELBO
from pyro.infer.trace_mean_field_elbo import _check_mean_field_requirement
from pyro.infer.util import is_validation_enabled, torch_item
from pyro.poutine.util import site_is_subsample
from pyro.util import warn_if_nan
from torch.distributions import Distribution, Independent, kl_divergence

__all__ = ["kl_weight_at", "FreeBitsELBO", "kl_per_dimension"]


def kl_weight_at(step: int, warmup_steps: int, final: float = 1.0) -> float:
    """The KL weight β of training step ``step`` (0-based): final · min(1, (step + 1) / warmup_steps); ``final``
    without warm-up.

    Linear KL annealing (Bowman et al. 2016; Sønderby et al. 2016, §2.3 "warm-up"): β rises from final/warmup_steps at
    the first step to ``final`` at step warmup_steps − 1, so the decoder learns to use the latents before the KL term
    pulls every posterior to the prior. A ``final`` β ≠ 1 trains a β-VAE objective (Higgins et al. 2017; DALL-E's dVAE
    uses β = 6.6, Ramesh et al. 2021). β scales the training objective only: every held-out figure is at β = 1.
    """
    return final if warmup_steps == 0 else final * min(1.0, (step + 1) / warmup_steps)


def kl_per_dimension(guide_fn: Distribution, model_fn: Distribution, value: torch.Tensor, analytic: bool) -> torch.Tensor:
    """KL(q ‖ p) of one latent site per example and per latent dimension, nats, shape (batch entries, dimensions).

    Where q and p are both ``Independent`` over the same event dimensions (diagonal Gaussians), the dimensions are
    those event dimensions, flattened; otherwise (a full-covariance Gaussian) the site is one dimension. ``analytic``:
    torch's ``kl_divergence`` where registered; else, and always without it, the one-sample Monte Carlo estimate
    log q(z) − log p(z) at the guide's draw ``value``.
    """
    rows = guide_fn.batch_shape.numel()
    q, p = guide_fn, model_fn
    if isinstance(q, Independent) and isinstance(p, Independent) and q.reinterpreted_batch_ndims == p.reinterpreted_batch_ndims:
        q, p = q.base_dist, p.base_dist
    if analytic:
        try:
            return kl_divergence(q, p).reshape(rows, -1)
        except NotImplementedError:
            pass
    return (q.log_prob(value) - p.log_prob(value)).reshape(rows, -1)


class FreeBitsELBO(Trace_ELBO):
    """−ELBO with a weight β on the KL terms and free bits λ per latent dimension (training objectives only).

    For each particle, with s the site's scale (N/B under :class:`~ppl_dgm.train.svi.DataPlateScale`, times a
    β-VAE's weight) and B its number of batch entries,

        loss = −Σ_observed s·Σ_b log p(x_b | z_b) + β Σ_latent s·B·Σ_j max(λ, (1/B) Σ_b KL_bj)

    (Kingma et al. 2016, App. C: the minibatch-mean KL of each group j is replaced by max(λ, ·), so a group that
    carries less than λ nats is not pushed further towards the prior; here a group is one latent dimension).
    KL_bj is analytic with ``analytic_kl=True`` (the guide must sample in the model's order: Pyro's mean-field
    condition, as for ``TraceMeanField_ELBO``) and the one-sample log q − log p otherwise (Trace_ELBO's estimator,
    valid for any reparameterized guide). With β = 1 and λ = 0 the loss equals ``TraceMeanField_ELBO`` resp.
    ``Trace_ELBO`` on the same draw. ``kl_weight`` is set by the training loop every step (:func:`kl_weight_at`).
    Every latent site must be reparameterized and its scale a number.
    """

    def __init__(self, free_bits: float = 0.0, kl_weight: float = 1.0, analytic_kl: bool = True, num_particles: int = 1):
        super().__init__(num_particles=num_particles)
        for name, value in (("free_bits", free_bits), ("kl_weight", kl_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ValueError(f"{name} must be a float >= 0 (nats per latent dimension for free_bits), got {value!r}")
        self.free_bits = float(free_bits)
        self.kl_weight = float(kl_weight)
        self.analytic_kl = bool(analytic_kl)

    def _get_trace(self, model, guide, args, kwargs):
        model_trace, guide_trace = super()._get_trace(model, guide, args, kwargs)
        if self.analytic_kl and is_validation_enabled():
            _check_mean_field_requirement(model_trace, guide_trace)
        return model_trace, guide_trace

    def _particle_loss(self, model_trace, guide_trace) -> torch.Tensor:
        reconstruction, kl = 0.0, 0.0
        for name, model_site in model_trace.nodes.items():
            if model_site["type"] != "sample" or site_is_subsample(model_site):
                continue
            if model_site["is_observed"]:
                reconstruction = reconstruction + model_site["log_prob_sum"]
                continue
            guide_site = guide_trace.nodes[name]
            if not guide_site["fn"].has_rsample:
                raise ValueError(f"FreeBitsELBO needs reparameterized latent sites; site {name!r} has no rsample")
            scale = guide_site["scale"]
            if torch.is_tensor(scale) and scale.numel() != 1:
                raise ValueError(f"FreeBitsELBO needs one scale per site; site {name!r} has a scale of shape {tuple(scale.shape)}")
            per_dimension = kl_per_dimension(guide_site["fn"], model_site["fn"], guide_site["value"], self.analytic_kl)
            mean_kl = per_dimension.mean(0)  # (1/B) Σ_b KL_bj per dimension j
            if self.free_bits > 0:
                mean_kl = mean_kl.clamp(min=self.free_bits)  # max(λ, ·): Kingma et al. 2016, App. C
            kl = kl + scale * per_dimension.shape[0] * mean_kl.sum()
        return -reconstruction + self.kl_weight * kl

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """The objective (a tensor) averaged over ``num_particles`` draws; its gradient is pathwise."""
        loss = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            loss = loss + self._particle_loss(model_trace, guide_trace) / self.num_particles
        warn_if_nan(loss, "loss")
        return loss

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return torch_item(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward(retain_graph=self.retain_graph)
        return torch_item(loss)
