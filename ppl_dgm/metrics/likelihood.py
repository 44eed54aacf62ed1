"""Likelihood conventions: uniform dequantization of 8-bit images and bits per dimension."""
from __future__ import annotations

import math

import torch

__all__ = ["dequantize", "bits_per_dim"]


def dequantize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """8-bit images in [0, 1] (k/255) → (k + u) / 256 with u ~ U[0, 1) (Theis et al. 2016; Ho et al. 2020).

    A continuous density on the result, divided by 256^D, is a lower bound on the discrete
    probability of the 8-bit image, which is what bits/dim reports.
    """
    levels = torch.round(x * 255.0)
    noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (levels + noise) / 256.0


def bits_per_dim(nll_nats: float | torch.Tensor, num_dims: int, data_scale: float = 256.0) -> float | torch.Tensor:
    """Bits/dim of 8-bit data from an NLL in nats of data rescaled to [0, 1) by 1/``data_scale``.

    −log p(x_8bit) = −log p(x / 256) + D·log 256 (change of variables), then / (D·ln 2).
    """
    if num_dims < 1:
        raise ValueError(f"num_dims must be a positive int, got {num_dims!r}")
    return (nll_nats + num_dims * math.log(data_scale)) / (num_dims * math.log(2.0))


def _per_example_log_weights(model, guide, x: torch.Tensor, *args) -> torch.Tensor:
    """log p(x, z) − log q(z | x) per example (unscaled log-densities), one z ~ q per row of x."""
    from pyro import poutine
    from pyro.poutine.util import site_is_subsample

    guide_trace = poutine.trace(guide).get_trace(x, *args)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, *args)
    log_weight = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        trace.compute_log_prob()
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            if site["log_prob"].shape != (x.shape[0],):
                raise ValueError(
                    f"site {name!r} has log_prob shape {tuple(site['log_prob'].shape)}, expected ({x.shape[0]},): "
                    "importance weighting needs every sample site inside the per-example plate 'data'"
                )
            log_weight += sign * site["log_prob"].double()
    return log_weight


@torch.no_grad()
def log_importance_weights(model, guide, x: torch.Tensor, k: int, *, max_rows: int = 20000, y: torch.Tensor | None = None) -> torch.Tensor:
    """log w_i = log p(x, z_i) − log q(z_i | x), z_i ~ q(z|x), for k draws per example: float64, shape (k, N), nats.

    Their mean over i estimates the ELBO, their log-mean-exp is the IWAE bound (:func:`iwae_log_likelihood`).
    ``guide(x, y)`` sees x repeated particle-major (row r·n + i is example i of a chunk of n; n and the chunking
    depend on ``max_rows``, the most (example, particle) pairs one pass evaluates) and ``y`` (N,) repeated alike:
    labels, or the example indices a per-example guide needs to find its parameters.
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    columns = []
    examples_per_pass = max(1, max_rows // k)
    for begin in range(0, x.shape[0], examples_per_pass):
        chunk = x[begin : begin + examples_per_pass]
        n = chunk.shape[0]
        log_weights = []
        particles_per_pass = max(1, max_rows // n)
        for done in range(0, k, particles_per_pass):
            repeats = min(particles_per_pass, k - done)
            repeated = chunk.repeat(repeats, *([1] * (chunk.dim() - 1)))  # particle-major: row r·n + i is example i
            extra = () if y is None else (y[begin : begin + n].repeat(repeats),)
            log_weights.append(_per_example_log_weights(model, guide, repeated, *extra).view(repeats, n))
        columns.append(torch.cat(log_weights))
    return torch.cat(columns, dim=1)


@torch.no_grad()
def iwae_log_likelihood(model, guide, x: torch.Tensor, k: int, *, max_rows: int = 20000, y: torch.Tensor | None = None) -> torch.Tensor:
    """Importance-weighted bound log (1/k) Σ_i p(x, z_i)/q(z_i|x), z_i ~ q(z|x) (Burda et al. 2016, eq. 8), nats, shape (N,).

    Works for any model/guide whose sample sites are all per-example (inside plate "data"); it is ≤
    log p(x), equals the ELBO's expectation at k = 1 and increases to log p(x) as k grows.
    ``max_rows`` bounds how many (example, particle) pairs one pass evaluates; ``y`` as in
    :func:`log_importance_weights`.
    """
    log_weights = log_importance_weights(model, guide, x, k, max_rows=max_rows, y=y)
    return torch.logsumexp(log_weights, dim=0) - math.log(k)


__all__ += ["iwae_log_likelihood", "log_importance_weights"]
