"""The Gaussian mixture as a Pyro program with an enumerated assignment, and its exact EM (Bishop PRML §9.2)."""
from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import config_enumerate
from pyro.nn import PyroModule, PyroParam
from torch.distributions import constraints

from ppl_dgm._checks import check_positive_int
from ppl_dgm.lvm._inputs import check_data
from ppl_dgm.lvm.em import run_em

__all__ = ["GaussianMixture"]

COVARIANCE_TYPES = ("full", "diag")


class GaussianMixture(PyroModule):
    """p(x) = Σ_k π_k N(x | μ_k, Σ_k) with Σ_k full or diagonal; the assignment is enumerated in ``model``.

    Train with ``TraceEnum_ELBO(max_plate_nesting=1)`` (the guide is empty: every latent is summed
    out, so the ELBO is the exact log-likelihood) or by exact EM with :meth:`fit_em`. ``reg_covar``
    is added to every covariance diagonal in the M-step, as in scikit-learn.
    """

    def __init__(self, num_components: int, data_dim: int, covariance_type: str = "full", reg_covar: float = 1e-6):
        super().__init__()
        self.num_components = check_positive_int("num_components", num_components)
        self.data_dim = check_positive_int("data_dim", data_dim)
        if covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type must be one of {COVARIANCE_TYPES}, got {covariance_type!r}")
        if isinstance(reg_covar, bool) or not isinstance(reg_covar, (int, float)) or not 0 <= reg_covar < math.inf:
            raise ValueError(f"reg_covar must be a finite non-negative float, got {reg_covar!r}")
        self.covariance_type, self.reg_covar = covariance_type, float(reg_covar)
        K, D = num_components, data_dim
        self.weights = PyroParam(torch.full((K,), 1.0 / K), constraint=constraints.simplex)
        self.locs = PyroParam(torch.randn(K, D))
        if covariance_type == "full":
            self.scale_tril = PyroParam(torch.eye(D).expand(K, D, D).clone(), constraint=constraints.lower_cholesky)
        else:
            self.scales = PyroParam(torch.ones(K, D), constraint=constraints.positive)

    # ----- densities ---------------------------------------------------------------------------
    def _component(self, index: torch.Tensor | slice = slice(None)) -> dist.TorchDistribution:
        if self.covariance_type == "full":
            return dist.MultivariateNormal(self.locs[index], scale_tril=self.scale_tril[index])
        return dist.Normal(self.locs[index], self.scales[index]).to_event(1)

    def mixture(self) -> torch.distributions.MixtureSameFamily:
        """The marginal p(x) as a ``torch.distributions.MixtureSameFamily`` (Bishop PRML eq. 9.7)."""
        return torch.distributions.MixtureSameFamily(torch.distributions.Categorical(probs=self.weights), self._component())

    @property
    def covariances(self) -> torch.Tensor:
        """Σ_k, (K, D, D) for "full" or the diagonals (K, D) for "diag"."""
        if self.covariance_type == "full":
            return self.scale_tril @ self.scale_tril.transpose(-1, -2)
        return self.scales**2

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x_n) in nats, (N,), for x (N, D)."""
        x = check_data(x, self.data_dim)
        return self.mixture().log_prob(x.to(self.locs.dtype))

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor) -> float:
        """Mean log-likelihood per point, nats (scikit-learn's ``score``)."""
        return float(self.log_prob(x).mean())

    # ----- Pyro program ------------------------------------------------------------------------
    def _model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            assignment = pyro.sample("assignment", dist.Categorical(self.weights))
            pyro.sample("x", self._component(assignment), obs=x)

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """z_n ~ Cat(π), x_n | z_n ~ N(μ_z, Σ_z); z_n is enumerated in parallel (``config_enumerate``)."""
        return config_enumerate(self._model, default="parallel")(x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """Empty: the parameters are point estimates and the assignment is summed out by ``TraceEnum_ELBO``."""

    @torch.no_grad()
    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """γ(z_nk) = p(z_n = k | x_n), (N, K) (Bishop PRML eq. 9.23)."""
        x = check_data(x, self.data_dim).to(self.locs.dtype)
        joint = self._component().log_prob(x.unsqueeze(-2)) + self.weights.log()
        return (joint - joint.logsumexp(-1, keepdim=True)).exp()

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws x ~ p(x), (n, D)."""
        check_positive_int("n", n)
        assignment = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.data_dim, generator=generator, device=self.locs.device, dtype=self.locs.dtype)
        if self.covariance_type == "full":
            noise = (self.scale_tril[assignment] @ noise.unsqueeze(-1)).squeeze(-1)
        else:
            noise = self.scales[assignment] * noise
        return self.locs[assignment] + noise

    # ----- parameters and exact EM -------------------------------------------------------------
    @torch.no_grad()
    def set_parameters(self, weights: torch.Tensor, locs: torch.Tensor, covariances: torch.Tensor) -> None:
        """Set π (K,), μ (K, D) and Σ (K, D, D) for "full" or its diagonals (K, D) for "diag"."""
        K, D = self.num_components, self.data_dim
        expected = (K, D, D) if self.covariance_type == "full" else (K, D)
        for name, value, shape in (("weights", weights, (K,)), ("locs", locs, (K, D)), ("covariances", covariances, expected)):
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
                raise ValueError(f"{name} must be a tensor of shape {shape}, got {getattr(value, 'shape', type(value).__name__)}")
        like = self.locs
        self.weights = (weights / weights.sum()).to(like)
        self.locs = locs.to(like)
        if self.covariance_type == "full":
            self.scale_tril = torch.linalg.cholesky(covariances.to(torch.float64)).to(like)
        else:
            self.scales = covariances.to(like).sqrt()

    def _check_fit_data(self, x: torch.Tensor) -> torch.Tensor:
        K = self.num_components
        return check_data(x, self.data_dim, min_rows=K, min_rows_reason=f" (one per component) for num_components={K}")

    @torch.no_grad()
    def initialize(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Means at K distinct random points of x, equal weights, Σ_k = diag(var x) + reg_covar."""
        x = self._check_fit_data(x).to(torch.float64)
        index = torch.randperm(x.shape[0], generator=generator)[: self.num_components].to(x.device)
        variance = x.var(0, unbiased=False) + self.reg_covar
        covariances = torch.diag(variance).expand(self.num_components, -1, -1) if self.covariance_type == "full" else variance.expand(self.num_components, -1)
        self.set_parameters(torch.full((self.num_components,), 1.0 / self.num_components, dtype=torch.float64, device=x.device), x[index], covariances)

    @torch.no_grad()
    def fit_em(self, x: torch.Tensor, *, max_iter: int = 500, tol: float = 1e-8, init: str = "random", generator: torch.Generator | None = None,
               em_state: dict[str, torch.Tensor] | None = None) -> list[float]:
        """Exact EM in float64 (Bishop PRML §9.2.2); returns the mean log-likelihood per point (nats) per iteration.

        ``init="random"`` calls :meth:`initialize`; ``"current"`` starts from the present parameters; ``"state"``
        from ``em_state``, the float64 iterate an earlier call left in ``self.em_state`` (so a run stopped after
        N iterations continues bit for bit like one that never stopped).
        """
        if init not in ("random", "current", "state"):
            raise ValueError(f"init must be 'random', 'current' or 'state', got {init!r}")
        if (init == "state") != (em_state is not None):
            raise ValueError("em_state is given with init='state' and only then")
        x = self._check_fit_data(x)
        if init == "random":
            self.initialize(x, generator)
        x = x.to(torch.float64)
        dtype, num_points = self.locs.dtype, x.shape[0]
        if em_state is not None:
            state = {name: em_state[name].to(x.device, torch.float64) for name in ("weights", "locs", "covariances")}
        else:
            state = {"weights": self.weights.double(), "locs": self.locs.double(), "covariances": self.covariances.double()}

        def components() -> torch.distributions.Distribution:
            if self.covariance_type == "full":
                return torch.distributions.MultivariateNormal(state["locs"], covariance_matrix=state["covariances"])
            return torch.distributions.Independent(torch.distributions.Normal(state["locs"], state["covariances"].sqrt()), 1)

        def e_step() -> tuple[float, torch.Tensor]:
            joint = components().log_prob(x.unsqueeze(-2)) + state["weights"].log()  # ln π_k N(x_n | μ_k, Σ_k)
            log_norm = joint.logsumexp(-1, keepdim=True)  # ln p(x_n), Bishop PRML eq. 9.28
            return float(log_norm.mean()), (joint - log_norm).exp()  # responsibilities, eq. 9.23

        def m_step(resp: torch.Tensor) -> None:
            counts = resp.sum(0) + 10 * torch.finfo(torch.float64).eps  # N_k, eq. 9.27 (sklearn's guard against empty components)
            locs = resp.T @ x / counts.unsqueeze(-1)  # eq. 9.24
            if self.covariance_type == "full":
                centred = x.unsqueeze(0) - locs.unsqueeze(1)  # (K, N, D)
                covariances = torch.einsum("nk,kni,knj->kij", resp, centred, centred) / counts[:, None, None]  # eq. 9.25
                covariances = covariances + self.reg_covar * torch.eye(self.data_dim, dtype=x.dtype, device=x.device)
            else:
                covariances = resp.T @ (x * x) / counts.unsqueeze(-1) - locs**2 + self.reg_covar  # diagonal of eq. 9.25
            state.update(weights=counts / counts.sum(), locs=locs, covariances=covariances)  # eq. 9.26

        trace = run_em(e_step, m_step, lambda: e_step()[0], max_iter=max_iter, tol=tol)
        self.set_parameters(state["weights"], state["locs"], state["covariances"])
        self.to(dtype)
        self.em_state = {name: value.detach().clone() for name, value in state.items()}
        return trace
