"""Full Bayes for the Gaussian mixture: NUTS over (π, μ, σ) with the assignments summed out by enumeration.

The assignment z_n is marked for parallel enumeration, so ``pyro.infer.NUTS`` sees the marginal
p(x_n | θ) = Σ_k π_k N(x_n | μ_k, diag σ_k²) (Bishop PRML eq. 9.7), and ``pyro.infer.infer_discrete``
draws z_n ~ p(z_n | x_n, θ) afterwards for each posterior draw of θ (Obermeyer et al. 2019).

Label switching. Prior and likelihood are unchanged when the components are permuted, so the posterior
has K! symmetric modes and each chain settles in one of them. :meth:`BayesianGaussianMixture.relabel`
sorts the components of every draw by one coordinate of μ; for an exchangeable posterior the sorted
draws follow the posterior under the ordering constraint μ_{1,c} < … < μ_{K,c} (Stephens 2000; Jasra,
Holmes & Stephens 2005, §4), so chains that chose different labellings agree after it.
"""
from __future__ import annotations

import numbers

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule

from ppl_dgm._checks import check_positive_float, check_positive_int

__all__ = ["BayesianGaussianMixture"]


class BayesianGaussianMixture(PyroModule):
    """π ~ Dirichlet(α 1_K), μ_k ~ N(0, loc_scale² I), σ_kd ~ HalfNormal(scale_scale); x_n | z_n ~ N(μ_z, diag σ_z²).

    ``order_by`` is the coordinate of μ by which :meth:`relabel` sorts the components; pick one in which the
    components are well apart (with overlapping values the ordered posterior is still correct but lumpy).
    """

    def __init__(self, num_components: int, data_dim: int, concentration: float = 1.0, loc_scale: float = 10.0,
                 scale_scale: float = 2.0, order_by: int = 0):
        super().__init__()
        self.num_components = check_positive_int("num_components", num_components)
        self.data_dim = check_positive_int("data_dim", data_dim)
        self.concentration = check_positive_float("concentration", concentration)
        self.loc_scale = check_positive_float("loc_scale", loc_scale)
        self.scale_scale = check_positive_float("scale_scale", scale_scale)
        if isinstance(order_by, bool) or not isinstance(order_by, numbers.Integral) or not 0 <= order_by < data_dim:
            raise ValueError(f"order_by must be a coordinate index in [0, {data_dim}) for data_dim={data_dim}, got {order_by!r}")
        self.order_by = int(order_by)

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Priors on (π, μ, σ), then z_n ~ Cat(π) (enumerated) and x_n ~ N(μ_z, diag σ_z²) in plate "data"."""
        like = dict(dtype=x.dtype, device=x.device)
        K, D = self.num_components, self.data_dim
        weights = pyro.sample("weights", dist.Dirichlet(torch.full((K,), self.concentration, **like)))
        with pyro.plate("components", K):
            locs = pyro.sample("locs", dist.Normal(torch.zeros(D, **like), self.loc_scale).to_event(1))
            scales = pyro.sample("scales", dist.HalfNormal(torch.full((D,), self.scale_scale, **like)).to_event(1))
        with pyro.plate("data", x.shape[0]):
            assignment = pyro.sample("assignment", dist.Categorical(weights), infer={"enumerate": "parallel"})
            return pyro.sample("x", dist.Normal(locs[assignment], scales[assignment]).to_event(1), obs=x)

    def relabel(self, draws: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The draws with every draw's components sorted by μ[:, order_by]; leading (sample) dims are kept.

        ``draws`` holds ``weights`` (..., K), ``locs`` and ``scales`` (..., K, D); other entries pass unchanged.
        """
        missing = sorted({"weights", "locs", "scales"} - set(draws))
        if missing:
            raise ValueError(f"draws must hold 'weights', 'locs' and 'scales'; missing {missing}")
        order = torch.as_tensor(draws["locs"])[..., self.order_by].argsort(-1)  # (..., K)
        relabelled = dict(draws)
        relabelled["weights"] = torch.as_tensor(draws["weights"]).gather(-1, order)
        for name in ("locs", "scales"):
            value = torch.as_tensor(draws[name])
            relabelled[name] = value.gather(-2, order.unsqueeze(-1).expand_as(value))
        return relabelled

    @torch.no_grad()
    def em_initial_values(self, x: torch.Tensor, seed: int = 0, restarts: int = 5, reg_covar: float = 1e-3) -> dict[str, torch.Tensor]:
        """Starting values for a chain (``run_nuts(init_values=...)``): the best of ``restarts`` exact-EM fits of the diagonal mixture.

        The posterior has modes beyond the K! relabellings (one component split over two clusters, two merged);
        NUTS does not cross between them, so chains start at an EM optimum (Bishop PRML §9.2.2; the highest
        likelihood of random starts ``seed·restarts + r``, as scikit-learn's ``n_init``), sorted as :meth:`relabel` sorts.
        """
        import warnings

        from ppl_dgm.lvm.gmm import GaussianMixture

        check_positive_int("restarts", restarts)
        best, best_value = None, -float("inf")
        for restart in range(restarts):
            em = GaussianMixture(self.num_components, self.data_dim, "diag", reg_covar=reg_covar).to(x.dtype)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a start that has not converged in 500 iterations only loses the comparison
                value = em.fit_em(x, tol=1e-6, max_iter=500, generator=torch.Generator().manual_seed(seed * restarts + restart))[-1]
            if value > best_value:
                best, best_value = em, value
        return self.relabel({"weights": best.weights.detach(), "locs": best.locs.detach(), "scales": best.scales.detach()})

    @torch.no_grad()
    def sample_assignments(self, draws: dict[str, torch.Tensor], x: torch.Tensor, temperature: int = 1) -> torch.Tensor:
        """z_n for each draw of θ, (S, N) int64, by ``infer_discrete``: z ~ p(z | x, θ) at temperature 1, the MAP at 0.

        ``draws`` holds ``weights``, ``locs``, ``scales`` with any leading sample dims (flattened to S).
        """
        from pyro import poutine
        from pyro.infer import infer_discrete

        from ppl_dgm.lvm._inputs import check_data

        x = check_data(x, self.data_dim)
        if temperature not in (0, 1):
            raise ValueError(f"temperature must be 0 (MAP) or 1 (posterior draw), got {temperature!r}")
        sample_dims = torch.as_tensor(draws["weights"]).dim() - 1
        flat = {name: torch.as_tensor(draws[name]).flatten(0, sample_dims - 1) if sample_dims else torch.as_tensor(draws[name]).unsqueeze(0)
                for name in ("weights", "locs", "scales")}
        assignments = []
        for index in range(flat["weights"].shape[0]):
            conditioned = poutine.condition(self.model, data={name: value[index].to(x) for name, value in flat.items()})
            # first_available_dim = -2: the one plate ("data") uses dim −1, enumeration the dims to its left
            trace = poutine.trace(infer_discrete(conditioned, first_available_dim=-2, temperature=temperature)).get_trace(x)
            assignments.append(trace.nodes["assignment"]["value"])
        return torch.stack(assignments)
