"""Full Bayes for factor analysis: priors on every parameter, z integrated out, sampled with NUTS.

W is lower-triangular with a positive diagonal, the usual identification of the factor model
(Geweke & Zhou 1996; Lopes & West 2004), so the posterior has one mode instead of a rotation orbit.
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule

from ppl_dgm._checks import check_positive_int
from ppl_dgm.lvm._inputs import check_data

__all__ = ["BayesianFactorAnalysis", "run_nuts"]


class BayesianFactorAnalysis(PyroModule):
    """μ ~ N(0, loc_scale²), W_ij ~ N(0, weight_scale²) (i > j), W_jj ~ HalfNormal(weight_scale), Ψ_d ~ InvGamma(a, b).

    ``model(x)`` observes x_n ~ N(μ, W Wᵀ + Ψ) (Bishop PRML eq. 12.65, the factors integrated out).
    """

    def __init__(self, data_dim: int, latent_dim: int, loc_scale: float = 10.0, weight_scale: float = 2.0,
                 noise_concentration: float = 2.0, noise_rate: float = 1.0):
        super().__init__()
        self.data_dim = check_positive_int("data_dim", data_dim)
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        if latent_dim >= data_dim:
            raise ValueError(f"latent_dim must be smaller than data_dim={data_dim}, got latent_dim={latent_dim}")
        for name, value in (("loc_scale", loc_scale), ("weight_scale", weight_scale), ("noise_concentration", noise_concentration), ("noise_rate", noise_rate)):
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{name} must be a positive float, got {value!r}")
        self.loc_scale, self.weight_scale = float(loc_scale), float(weight_scale)
        self.noise_concentration, self.noise_rate = float(noise_concentration), float(noise_rate)
        rows, cols = torch.tril_indices(data_dim, latent_dim, offset=-1)
        self.register_buffer("lower_rows", rows, persistent=False)
        self.register_buffer("lower_cols", cols, persistent=False)

    def assemble_weight(self, lower: torch.Tensor, diagonal: torch.Tensor) -> torch.Tensor:
        """W (..., D, K) from its strictly-lower entries (..., L) and positive diagonal (..., K)."""
        weight = lower.new_zeros(*lower.shape[:-1], self.data_dim, self.latent_dim)
        weight[..., self.lower_rows, self.lower_cols] = lower
        index = torch.arange(self.latent_dim, device=lower.device)
        weight[..., index, index] = diagonal
        return weight

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Priors on (μ, W, Ψ), then x_n ~ N(μ, W Wᵀ + Ψ) in plate "data"."""
        like = dict(dtype=x.dtype, device=x.device)
        D, K, L = self.data_dim, self.latent_dim, self.lower_rows.numel()
        loc = pyro.sample("loc", dist.Normal(torch.zeros(D, **like), self.loc_scale).to_event(1))
        lower = pyro.sample("weight_lower", dist.Normal(torch.zeros(L, **like), self.weight_scale).to_event(1))
        diagonal = pyro.sample("weight_diag", dist.HalfNormal(torch.full((K,), self.weight_scale, **like)).to_event(1))
        noise = pyro.sample("noise_variance", dist.InverseGamma(torch.full((D,), self.noise_concentration, **like), self.noise_rate).to_event(1))
        weight = self.assemble_weight(lower, diagonal)
        # Dense N(μ, W Wᵀ + Ψ): LowRankMultivariateNormal solves one tiny system per point (~10x slower under NUTS here)
        covariance = weight @ weight.transpose(-1, -2) + torch.diag_embed(noise)
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("x", dist.MultivariateNormal(loc, covariance_matrix=covariance), obs=x)


def run_nuts(model, *args, num_samples: int = 200, warmup_steps: int = 200, num_chains: int = 1, seed: int = 0,
             target_accept_prob: float = 0.8, progress: bool = False):
    """``pyro.infer.MCMC(NUTS(model))`` run on ``args``; chains run one after another (no subprocesses)."""
    from pyro.infer import MCMC, NUTS

    for name, value in (("num_samples", num_samples), ("warmup_steps", warmup_steps), ("num_chains", num_chains)):
        check_positive_int(name, value)
    if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 2:
        check_data(args[0])
    pyro.set_rng_seed(seed)
    # One MCMC object with num_chains > 1 forks processes on CPU; run chains in turn and merge them.
    runs = []
    for chain in range(num_chains):
        mcmc = MCMC(NUTS(model, target_accept_prob=target_accept_prob), num_samples=num_samples, warmup_steps=warmup_steps, disable_progbar=not progress)
        mcmc.run(*args)
        runs.append(mcmc)
    return runs[0] if num_chains == 1 else runs
