"""Factor analysis and probabilistic PCA as Pyro programs, with exact marginal likelihood and exact EM.

z ~ N(0, I_K), x | z ~ N(W z + μ, Ψ): Ψ diagonal for FA (Ghahramani & Hinton 1996; Bishop PRML §12.2.4),
Ψ = σ² I for PPCA (Tipping & Bishop 1999; Bishop PRML §12.2).
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam
from torch.distributions import constraints

from ppl_dgm._checks import check_positive_int
from ppl_dgm.lvm._inputs import check_data
from ppl_dgm.lvm.em import run_em

__all__ = ["FactorAnalysis", "PPCA", "LinearGaussianGuide"]


class FactorAnalysis(PyroModule):
    """Linear-Gaussian latent-variable model, x ∈ R^D, z ∈ R^K (K < D); ``guide`` is the exact posterior p(z|x).

    ``min_noise_variance`` floors Ψ in the M-step (constant features would otherwise drive it to 0).
    """

    def __init__(self, data_dim: int, latent_dim: int, min_noise_variance: float = 1e-6):
        super().__init__()
        self.data_dim = check_positive_int("data_dim", data_dim)
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        if latent_dim >= data_dim:
            raise ValueError(f"latent_dim must be smaller than data_dim={data_dim}, got latent_dim={latent_dim}")
        if not (isinstance(min_noise_variance, (int, float)) and min_noise_variance > 0):
            raise ValueError(f"min_noise_variance must be a positive float, got {min_noise_variance!r}")
        self.min_noise_variance = float(min_noise_variance)
        self.loc = PyroParam(torch.zeros(data_dim))
        self.weight = PyroParam(0.1 * torch.randn(data_dim, latent_dim))
        self.noise_variance = PyroParam(self._noise_init(), constraint=constraints.positive)

    def _noise_init(self) -> torch.Tensor:
        return torch.ones(self.data_dim)

    @property
    def psi(self) -> torch.Tensor:
        """The diagonal of Ψ, (D,)."""
        return self.noise_variance.expand(self.data_dim)

    def _noise_from_residual(self, residual_diagonal: torch.Tensor) -> torch.Tensor:
        # Ψ_new = diag(S − W_new E[z] …), Bishop PRML eq. 12.70
        return residual_diagonal.clamp_min(self.min_noise_variance)

    # ----- densities ---------------------------------------------------------------------------
    def marginal(self) -> dist.LowRankMultivariateNormal:
        """p(x) = N(μ, W Wᵀ + Ψ) (Bishop PRML eq. 12.65; eq. 12.35 for PPCA)."""
        return dist.LowRankMultivariateNormal(self.loc, self.weight, self.psi)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x_n) in nats, (N,)."""
        x = check_data(x, self.data_dim)
        return self.marginal().log_prob(x.to(self.loc.dtype))

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor) -> float:
        """Mean exact log-likelihood per point, nats (scikit-learn's ``score``)."""
        return float(self.log_prob(x).mean())

    def posterior(self, x: torch.Tensor) -> dist.MultivariateNormal:
        """p(z_n | x_n) = N(G Wᵀ Ψ⁻¹ (x_n − μ), G), G = (I + Wᵀ Ψ⁻¹ W)⁻¹ (Bishop PRML eqs. 12.66–12.67), batch (N,)."""
        weight, psi = self.weight, self.psi
        precision = torch.eye(self.latent_dim, dtype=weight.dtype, device=weight.device) + weight.T @ (weight / psi.unsqueeze(-1))
        covariance = torch.cholesky_inverse(torch.linalg.cholesky(precision))
        mean = ((x - self.loc) / psi) @ weight @ covariance
        return dist.MultivariateNormal(mean, covariance_matrix=covariance)

    # ----- Pyro program ------------------------------------------------------------------------
    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """z_n ~ N(0, I), x_n | z_n ~ N(W z_n + μ, Ψ), in plate "data"."""
        zeros = torch.zeros(x.shape[0], self.latent_dim, dtype=x.dtype, device=x.device)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(zeros, 1.0).to_event(1))
            return pyro.sample("x", dist.Normal(self.loc + z @ self.weight.T, self.psi.sqrt()).to_event(1), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The exact posterior p(z|x): with it the ELBO equals log p(x) (Bishop PRML eq. 9.70 with KL = 0)."""
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", self.posterior(x))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws x ~ p(x), (n, D)."""
        check_positive_int("n", n)
        like = dict(device=self.loc.device, dtype=self.loc.dtype)
        z = torch.randn(n, self.latent_dim, generator=generator, **like)
        return self.loc + z @ self.weight.T + self.psi.sqrt() * torch.randn(n, self.data_dim, generator=generator, **like)

    # ----- exact EM ----------------------------------------------------------------------------
    def _check_fit_data(self, x: torch.Tensor) -> torch.Tensor:
        return check_data(x, self.data_dim, min_rows=2, min_rows_reason=" to estimate a covariance")

    @torch.no_grad()
    def _set(self, loc: torch.Tensor, weight: torch.Tensor, noise_variance: torch.Tensor) -> None:
        like = self.loc
        self.loc, self.weight, self.noise_variance = loc.to(like), weight.to(like), noise_variance.to(like)

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """μ = mean, W from the top-K principal directions, Ψ from the unexplained variance."""
        x = self._check_fit_data(x).to(torch.float64)
        centred = x - x.mean(0)
        eigenvalues, eigenvectors = torch.linalg.eigh(centred.T @ centred / x.shape[0])
        top_values, top_vectors = eigenvalues.flip(0)[: self.latent_dim], eigenvectors.flip(1)[:, : self.latent_dim]
        weight = top_vectors * top_values.sqrt()
        residual = (centred.var(0, unbiased=False) - (weight**2).sum(1)).clamp_min(1e-3 * centred.var(0, unbiased=False).mean())
        self._set(x.mean(0), weight, self._noise_from_residual(residual))

    @torch.no_grad()
    def fit_em(self, x: torch.Tensor, *, max_iter: int = 1000, tol: float = 1e-8, init: str = "pca",
               em_state: dict[str, torch.Tensor] | None = None) -> list[float]:
        """Exact EM in float64 (Ghahramani & Hinton 1996; Bishop PRML eqs. 12.66–12.70); μ is the sample mean.

        Returns the mean log-likelihood per point (nats) per iteration. ``init``: "pca", "current", or "state"
        with ``em_state``, the float64 iterate an earlier call left in ``self.em_state`` (exact continuation).
        """
        if init not in ("pca", "current", "state"):
            raise ValueError(f"init must be 'pca', 'current' or 'state', got {init!r}")
        if (init == "state") != (em_state is not None):
            raise ValueError("em_state is given with init='state' and only then")
        x = self._check_fit_data(x)
        if init == "pca":
            self.initialize(x)
        x = x.to(torch.float64)
        dtype, loc = self.loc.dtype, x.mean(0)  # μ_ML = x̄ (Bishop PRML eq. 12.1 context, §12.2.1)
        centred = x - loc
        covariance = centred.T @ centred / x.shape[0]  # S, Bishop PRML eq. 12.3
        identity = torch.eye(self.latent_dim, dtype=torch.float64, device=x.device)
        state = {"weight": self.weight.double(), "psi": self.psi.double()}
        if em_state is not None:
            state = {name: em_state[name].to(x.device, torch.float64) for name in ("weight", "psi")}

        def e_step() -> tuple[float, tuple[torch.Tensor, torch.Tensor]]:
            weight, psi = state["weight"], state["psi"]
            value = float(dist.LowRankMultivariateNormal(loc, weight, psi).log_prob(x).mean())
            posterior_cov = torch.linalg.inv(identity + weight.T @ (weight / psi.unsqueeze(-1)))  # G, eq. 12.68
            gain = posterior_cov @ weight.T / psi  # E[z_n] = gain (x_n − x̄), eq. 12.66
            return value, (posterior_cov, gain)

        def m_step(statistics: tuple[torch.Tensor, torch.Tensor]) -> None:
            posterior_cov, gain = statistics
            second_moment = posterior_cov + gain @ covariance @ gain.T  # (1/N) Σ E[z zᵀ], eq. 12.67
            weight = torch.linalg.solve(second_moment, gain @ covariance).T  # W_new = S Bᵀ (G + B S Bᵀ)⁻¹, eq. 12.69
            residual = torch.diagonal(covariance - weight @ gain @ covariance)  # eq. 12.70 (12.57 averaged for PPCA)
            state.update(weight=weight, psi=self._noise_from_residual(residual).expand(self.data_dim))

        trace = run_em(e_step, m_step, lambda: e_step()[0], max_iter=max_iter, tol=tol)
        self._set(loc, state["weight"], state["psi"][: self.noise_variance.numel()].reshape(self.noise_variance.shape))
        self.to(dtype)
        self.em_state = {name: value.detach().clone() for name, value in state.items()}
        return trace


class PPCA(FactorAnalysis):
    """Probabilistic PCA: Ψ = σ² I (Tipping & Bishop 1999); also fits in closed form (:meth:`fit_closed_form`)."""

    def _noise_init(self) -> torch.Tensor:
        return torch.ones(())

    def _noise_from_residual(self, residual_diagonal: torch.Tensor) -> torch.Tensor:
        # σ²_new = (1/D) tr(S − W_new B S): Bishop PRML eq. 12.57 after substituting eq. 12.56
        return residual_diagonal.mean().clamp_min(self.min_noise_variance).reshape(())

    @torch.no_grad()
    def fit_closed_form(self, x: torch.Tensor) -> float:
        """Maximum likelihood by eigendecomposition of S; returns the mean log-likelihood per point (nats).

        W_ML = U_K (Λ_K − σ² I)^½, σ²_ML = mean of the D − K discarded eigenvalues
        (Tipping & Bishop 1999, eqs. 7–8; Bishop PRML eqs. 12.45–12.46, with R = I).
        """
        x = self._check_fit_data(x).to(torch.float64)
        loc = x.mean(0)
        eigenvalues, eigenvectors = torch.linalg.eigh((x - loc).T @ (x - loc) / x.shape[0])
        eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)  # descending
        noise_variance = eigenvalues[self.latent_dim :].mean().clamp_min(self.min_noise_variance)
        weight = eigenvectors[:, : self.latent_dim] * (eigenvalues[: self.latent_dim] - noise_variance).clamp_min(0).sqrt()
        dtype = self.loc.dtype
        self._set(loc, weight, noise_variance)
        self.to(dtype)
        return self.log_likelihood(x.to(dtype))


class LinearGaussianGuide(PyroModule):
    """Amortized q(z_n | x_n) = N(A x_n + b, L Lᵀ) with its own parameters; contains FA's exact posterior (eq. 12.66)."""

    def __init__(self, data_dim: int, latent_dim: int):
        super().__init__()
        self.data_dim = check_positive_int("data_dim", data_dim)
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        self.gain = PyroParam(torch.zeros(latent_dim, data_dim))
        self.offset = PyroParam(torch.zeros(latent_dim))
        self.scale_tril = PyroParam(torch.eye(latent_dim), constraint=constraints.lower_cholesky)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", dist.MultivariateNormal(x @ self.gain.T + self.offset, scale_tril=self.scale_tril))
