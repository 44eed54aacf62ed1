"""Full Bayes for factor analysis: priors on every parameter, z integrated out, sampled with NUTS.

W is lower-triangular with a positive diagonal, the usual identification of the factor model
(Geweke & Zhou 1996; Lopes & West 2004), so the posterior has one mode instead of a rotation orbit.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule

from ppl_dgm._checks import check_positive_int
from ppl_dgm.lvm._inputs import check_data

__all__ = ["BayesianFactorAnalysis", "BayesianPPCA", "run_nuts", "fit_autoguide", "AUTOGUIDES"]

AUTOGUIDES = ("AutoNormal", "AutoLowRankMultivariateNormal", "AutoMultivariateNormal")


class BayesianFactorAnalysis(PyroModule):
    """μ ~ N(0, loc_scale²), W_ij ~ N(0, weight_scale²) (i > j), W_jj ~ HalfNormal(weight_scale), Ψ_d ~ InvGamma(a, b).

    ``model(x)`` observes x_n ~ N(μ, W Wᵀ + Ψ) (Bishop PRML eq. 12.65, the factors integrated out). The
    constraint identifies W only if its top K x K block is well conditioned: put K strongly loaded, mutually
    independent variables first (Lopes & West 2004's founders), or the posterior has weakly separated modes.
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

    @torch.no_grad()
    def em_initial_values(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Starting values for NUTS (``run_nuts(init_values=...)``): the maximum-likelihood fit by exact EM, in this model's form.

        EM's W is unique up to a rotation; W Q S, with W_{1:K}ᵀ = Q R (QR decomposition) and S = sign(diag R),
        has the same W Wᵀ and is lower-triangular with a non-negative diagonal (W_{1:K} Q S = Rᵀ S). Starting
        there keeps a chain out of the poor local modes a random start can fall into (a leading loading near 0).
        """
        x = check_data(x, self.data_dim, min_rows=2, min_rows_reason=" to estimate a covariance")
        reference = self._maximum_likelihood_model().to(x.dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a starting point need not be converged to the last digit
            reference.fit_em(x, tol=1e-6, max_iter=1000)
        weight = reference.weight.detach()
        q, r = torch.linalg.qr(weight[: self.latent_dim].T)
        signs = torch.where(torch.diagonal(r) < 0, -1.0, 1.0).to(weight)
        rotated = weight @ (q * signs)
        index = torch.arange(self.latent_dim)
        return {"loc": reference.loc.detach(), "weight_lower": rotated[self.lower_rows, self.lower_cols],
                "weight_diag": rotated[index, index].clamp_min(1e-3), "noise_variance": reference.noise_variance.detach()}

    def _maximum_likelihood_model(self):
        from ppl_dgm.lvm.factor_analysis import FactorAnalysis

        return FactorAnalysis(self.data_dim, self.latent_dim)

    def _sample_noise_variance(self, like: dict) -> torch.Tensor:
        """Ψ_d ~ InvGamma(a, b), d = 1..D: the diagonal of Ψ, (D,)."""
        concentration = torch.full((self.data_dim,), self.noise_concentration, **like)
        return pyro.sample("noise_variance", dist.InverseGamma(concentration, self.noise_rate).to_event(1))

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Priors on (μ, W, Ψ), then x_n ~ N(μ, W Wᵀ + Ψ) in plate "data"."""
        like = dict(dtype=x.dtype, device=x.device)
        D, K, L = self.data_dim, self.latent_dim, self.lower_rows.numel()
        loc = pyro.sample("loc", dist.Normal(torch.zeros(D, **like), self.loc_scale).to_event(1))
        lower = pyro.sample("weight_lower", dist.Normal(torch.zeros(L, **like), self.weight_scale).to_event(1))
        diagonal = pyro.sample("weight_diag", dist.HalfNormal(torch.full((K,), self.weight_scale, **like)).to_event(1))
        noise = self._sample_noise_variance(like)
        weight = self.assemble_weight(lower, diagonal)
        # Dense N(μ, W Wᵀ + Ψ): LowRankMultivariateNormal solves one tiny system per point (~10x slower under NUTS here)
        covariance = weight @ weight.transpose(-1, -2) + torch.diag_embed(noise)
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("x", dist.MultivariateNormal(loc, covariance_matrix=covariance), obs=x)


class BayesianPPCA(BayesianFactorAnalysis):
    """Probabilistic PCA with the same priors, Ψ = σ² I and σ² ~ InvGamma(a, b) (Tipping & Bishop 1999; Bishop PRML §12.2)."""

    def _maximum_likelihood_model(self):
        from ppl_dgm.lvm.factor_analysis import PPCA

        return PPCA(self.data_dim, self.latent_dim)

    def _sample_noise_variance(self, like: dict) -> torch.Tensor:
        """σ² ~ InvGamma(a, b), one site of shape (); returned as the diagonal of Ψ, (D,)."""
        variance = pyro.sample("noise_variance", dist.InverseGamma(torch.tensor(self.noise_concentration, **like), self.noise_rate))
        return variance.unsqueeze(-1).expand(*variance.shape, self.data_dim)


def run_nuts(model, *args, num_samples: int = 200, warmup_steps: int = 200, num_chains: int = 1, seed: int = 0,
             target_accept_prob: float = 0.8, init_values: dict | Sequence[dict] | None = None, jit_compile: bool = False,
             full_mass: bool = False, progress: bool = False):
    """``pyro.infer.MCMC(NUTS(model))`` run on ``args``; chains run one after another (no subprocesses).

    ``init_values``: starting values of latent sites (``init_to_value``), one dict for every chain or one per
    chain; other sites, and every site without it, start uniformly in (−2, 2) on the unconstrained scale (Pyro's default).
    ``jit_compile`` traces the potential energy with ``torch.jit`` (Pyro's option): a few seconds to compile, then
    about half the cost per gradient on small models. ``full_mass`` adapts a dense mass matrix in warm-up
    (Pyro's option): larger steps when the posterior is correlated, as factor loadings and noise variances are.
    """
    from pyro.infer import MCMC, NUTS
    from pyro.infer.autoguide.initialization import init_to_uniform, init_to_value

    for name, value in (("num_samples", num_samples), ("warmup_steps", warmup_steps), ("num_chains", num_chains)):
        check_positive_int(name, value)
    if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 2:
        check_data(args[0])
    pyro.set_rng_seed(seed)
    per_chain = [init_values] * num_chains if init_values is None or isinstance(init_values, dict) else list(init_values)
    if len(per_chain) != num_chains or not all(values is None or isinstance(values, dict) for values in per_chain):
        raise ValueError(f"init_values must be a dict or a sequence of num_chains={num_chains} dicts, got {init_values!r}")
    # One MCMC object with num_chains > 1 forks processes on CPU; run chains in turn and merge them.
    runs = []
    for chain in range(num_chains):
        strategy = init_to_uniform if per_chain[chain] is None else init_to_value(values=per_chain[chain])
        kernel = NUTS(model, target_accept_prob=target_accept_prob, init_strategy=strategy, jit_compile=jit_compile,
                      ignore_jit_warnings=jit_compile, full_mass=full_mass)
        mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps, disable_progbar=not progress)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "`torch.jit.trace` is deprecated", FutureWarning)  # Pyro's jit_compile path
            mcmc.run(*args)
        runs.append(mcmc)
    return runs[0] if num_chains == 1 else runs


def fit_autoguide(model, x: torch.Tensor, guide: str = "AutoMultivariateNormal", *, schedule=((0.02, 1500), (0.002, 1000)),
                  num_particles: int = 1, rank: int | None = None, init_values: dict | None = None, seed: int = 0, progress: bool = False):
    """A ``pyro.infer.autoguide`` guide named ``guide`` (one of ``AUTOGUIDES``) fitted to ``model(x)`` by full-batch SVI.

    ``schedule``: Adam phases ``(learning rate, steps)`` run one after the other through
    :func:`ppl_dgm.train.fit_svi` (the last, small rate lets the noisy iterate settle). ``rank`` is the
    low-rank guide's rank (Pyro's default round(√dim) when None). ``init_values`` sets the guide's initial location
    (``init_to_value``, e.g. ``model.em_initial_values(x)``; other sites start as Pyro's guide default does). Sites
    marked for enumeration are hidden from the guide and summed out by ``TraceEnum_ELBO``; otherwise
    ``Trace_ELBO``. Returns the fitted guide.
    """
    from functools import partial

    from pyro import poutine
    from pyro.infer import Trace_ELBO, TraceEnum_ELBO, autoguide
    from pyro.infer.autoguide.initialization import init_to_value

    from ppl_dgm.train.svi import fit_svi

    if guide not in AUTOGUIDES:
        raise ValueError(f"guide={guide!r} is not known; expected one of {AUTOGUIDES}")
    x = check_data(x)
    check_positive_int("num_particles", num_particles)
    if rank is not None and guide != "AutoLowRankMultivariateNormal":
        raise ValueError(f"rank is an argument of AutoLowRankMultivariateNormal only, got rank={rank!r} with guide={guide!r}")
    phases = list(schedule)
    if not phases or not all(isinstance(phase, (tuple, list)) and len(phase) == 2 and float(phase[0]) > 0 and isinstance(phase[1], int) and phase[1] >= 1
                             for phase in phases):
        raise ValueError(f"schedule must be a non-empty sequence of (positive learning rate, positive int steps), got {schedule!r}")
    pyro.set_rng_seed(seed)
    with torch.no_grad(), torch.random.fork_rng():
        prototype = poutine.trace(model).get_trace(x)
    sites = [(name, site) for name, site in prototype.nodes.items() if site["type"] == "sample"]
    enumerated = [name for name, site in sites if site["infer"].get("enumerate")]
    plate_nesting = max((-frame.dim for _, site in sites for frame in site["cond_indep_stack"] if frame.vectorized), default=0)
    guided_model = poutine.block(model, hide=enumerated) if enumerated else model
    kwargs = {} if rank is None else {"rank": check_positive_int("rank", rank)}
    if init_values is not None:
        if not isinstance(init_values, dict):
            raise ValueError(f"init_values must be a dict of site values, got {type(init_values).__name__}")
        kwargs["init_loc_fn"] = init_to_value(values=init_values)
    fitted = getattr(autoguide, guide)(guided_model, **kwargs)
    loss = TraceEnum_ELBO(max_plate_nesting=plate_nesting, num_particles=num_particles) if enumerated else Trace_ELBO(num_particles=num_particles)
    for lr, steps in phases:
        fit_svi(model, fitted, (x,), loss=loss, optim=partial(torch.optim.Adam, lr=float(lr)), epochs=steps, batch_size=x.shape[0],
                device=x.device, progress=progress, seed=seed)
    return fitted
