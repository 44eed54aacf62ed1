"""Convert Pyro MCMC runs and SVI guides to ``arviz.InferenceData`` with every group; r_hat and ESS through ArviZ.

ArviZ is imported inside the functions (``import ppl_dgm`` stays lean), with its 0.x FutureWarning
about the coming 1.0 refactor silenced locally.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ppl_dgm._checks import check_positive_int

__all__ = ["to_inference_data", "pointwise_log_likelihood", "diagnostics", "import_arviz"]


def import_arviz():
    """``import arviz`` without its import-time FutureWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    return arviz


def _numpy(value: torch.Tensor) -> np.ndarray:
    return value.detach().cpu().numpy()


def _model_sites(model: Callable, args: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """The sample sites of one plain run of ``model(*args)`` (no enumeration), the RNG left untouched."""
    from pyro import poutine

    with torch.no_grad(), torch.random.fork_rng():
        trace = poutine.trace(model).get_trace(*args)
    return {name: site for name, site in trace.nodes.items() if site["type"] == "sample"}


def _observed_sites(model: Callable, args: Sequence[Any]) -> dict[str, torch.Tensor]:
    """Observed data sites (``pyro.factor`` terms, which Pyro marks auxiliary, are not data)."""
    return {name: site["value"] for name, site in _model_sites(model, args).items()
            if site["is_observed"] and not site["infer"].get("is_auxiliary")}


def _flatten_draws(draws: dict[str, torch.Tensor], sample_dims: int) -> dict[str, torch.Tensor]:
    return {name: value.flatten(0, sample_dims - 1) for name, value in draws.items()}


def _posterior_predictive(model: Callable, args: Sequence[Any], draws: dict[str, torch.Tensor], observed: Sequence[str]) -> dict[str, torch.Tensor]:
    """x ~ p(x | θ_s) for each flat draw θ_s (S, ...) through ``pyro.infer.Predictive``."""
    from pyro import poutine
    from pyro.infer import Predictive

    # uncondition: observed sites are drawn from the model instead of fixed to the data
    num_samples = next(iter(draws.values())).shape[0]
    predictive = Predictive(poutine.uncondition(model), posterior_samples=draws, num_samples=num_samples,
                            return_sites=list(observed), parallel=False)
    with torch.no_grad():
        return predictive(*args)


def _guide_draws(model: Callable, guide: Callable, args: Sequence[Any], num_samples: int) -> dict[str, torch.Tensor]:
    """Draws of the model's latent sites from the guide, (S, ...); enumerated sites are left out (the guide has none).

    The guide is run vectorized (``Predictive(guide, parallel=True)``; autoguides support it), or one draw at a
    time if that fails. Latent sites the guide does not cover get no draws here.
    """
    from pyro.infer import Predictive

    with torch.no_grad():
        try:
            draws = Predictive(guide, num_samples=num_samples, parallel=True)(*args)
        except (RuntimeError, ValueError, IndexError, NotImplementedError):
            draws = Predictive(guide, num_samples=num_samples, parallel=False)(*args)
    sites = _model_sites(model, args)
    # Predictive pads every site to the plate nesting ((S, 1, K) for a global (K,) site): drop the padding
    return {name: value.reshape(num_samples, *sites[name]["value"].shape) for name, value in draws.items()
            if name in sites and not sites[name]["is_observed"] and not sites[name]["infer"].get("enumerate")}


def pointwise_log_likelihood(model: Callable, args: Sequence[Any], draws: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """log p(x_n | θ_s) in nats for each observed site, (S, *plate shape), for flat draws θ_s (S, ...) of latent sites.

    Each draw conditions ``model(*args)``; the observed site's ``log_prob`` is taken from the Pyro trace.
    Sites marked for enumeration are summed out exactly: the trace runs under ``poutine.enum`` and
    log p(x_n | θ) = logsumexp over the enumerated values of log p(z_n | θ) + log p(x_n | z_n, θ)
    (parallel enumeration, Obermeyer et al. 2019); that needs them local to the observed site's plates and
    one observed site. Latent sites without draws are drawn from the model.
    """
    from pyro import poutine

    sites = _model_sites(model, args)
    observed = [name for name, site in sites.items() if site["is_observed"] and not site["infer"].get("is_auxiliary")]
    enumerated = [name for name, site in sites.items() if site["infer"].get("enumerate") and not site["is_observed"]]
    if enumerated and len(observed) != 1:
        raise ValueError(f"enumerated sites {enumerated} are summed out for one observed site only; the model observes {observed}")
    plate_nesting = max((-frame.dim for site in sites.values() for frame in site["cond_indep_stack"] if frame.vectorized), default=0)
    num_draws = next(iter(draws.values())).shape[0]
    values: dict[str, list[torch.Tensor]] = {name: [] for name in observed}
    with torch.no_grad():
        for index in range(num_draws):
            conditioned = poutine.condition(model, data={name: value[index] for name, value in draws.items()})
            if enumerated:
                conditioned = poutine.enum(conditioned, first_available_dim=-1 - plate_nesting)
            trace = poutine.trace(conditioned).get_trace(*args)
            for name in observed:
                site = trace.nodes[name]
                log_prob = site["fn"].log_prob(site["value"])
                if enumerated:
                    for latent in enumerated:
                        log_prob = log_prob + trace.nodes[latent]["fn"].log_prob(trace.nodes[latent]["value"])
                    enum_dims = list(range(log_prob.dim() - plate_nesting))  # dims left of the plates hold the enumerated values
                    log_prob = log_prob.logsumexp(enum_dims) if enum_dims else log_prob
                values[name].append(log_prob.reshape(sites[name]["fn"].batch_shape))
    return {name: torch.stack(per_draw) for name, per_draw in values.items()}


def to_inference_data(
    source: Any,
    *args: Any,
    model: Callable | None = None,
    num_samples: int = 500,
    posterior_predictive: bool = True,
    log_likelihood: bool = True,
    var_names: Sequence[str] | None = None,
    relabel: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
):
    """An ``arviz.InferenceData`` from ``pyro.infer.MCMC`` run(s) or from an SVI guide.

    ``source``: an ``MCMC`` (its chains), a list of single-chain ``MCMC`` runs (stacked as chains),
    or a guide callable (``num_samples`` draws, one chain; needs ``model``). ``relabel`` maps the draws
    (chain, draw, ...) before anything else (e.g. ``BayesianGaussianMixture.relabel``). With ``model`` and
    the model's ``args`` the groups are: ``posterior``, ``observed_data``, ``posterior_predictive`` (one
    x ~ p(x | θ) per draw, ``pyro.infer.Predictive``) and ``log_likelihood`` (log p(x_n | θ) per draw and
    point, :func:`pointwise_log_likelihood`, what ``arviz.loo`` / ``arviz.waic`` read; θ is every latent site
    of the draw, so a guide over local latents z_n gives log p(x_n | z_n, θ)); MCMC adds
    ``sample_stats`` (divergences). ``var_names`` keeps some sites in ``posterior``; all of them are used
    for the predictive groups.
    """
    from pyro.infer import MCMC

    az = import_arviz()
    check_positive_int("num_samples", num_samples)
    runs = list(source) if isinstance(source, (list, tuple)) else [source]
    sample_stats = None
    if runs and all(isinstance(run, MCMC) for run in runs):
        per_run = [run.get_samples(group_by_chain=True) for run in runs]
        posterior = {name: torch.cat([samples[name] for samples in per_run]) for name in per_run[0]}  # (chain, draw, ...)
        divergent = []
        for run, samples in zip(runs, per_run):
            num_chains, num_draws = next(iter(samples.values())).shape[:2]
            flags = np.zeros((num_chains, num_draws), dtype=bool)
            for chain, indices in enumerate(run.diagnostics().get("divergences", {}).values()):
                flags[chain, [i for i in indices if 0 <= i < num_draws]] = True
            divergent.append(flags)
        sample_stats = {"diverging": np.concatenate(divergent)}
    elif callable(source) and not isinstance(source, (list, tuple)):
        if model is None:
            raise ValueError("to_inference_data(guide, ...) needs model=... to draw the guide's latent sites")
        posterior = {name: value.unsqueeze(0) for name, value in _guide_draws(model, source, args, num_samples).items()}
    else:
        raise TypeError(f"source must be a pyro.infer.MCMC, a list of MCMC runs or a guide callable, got {type(source).__name__}")
    if relabel is not None:
        posterior = relabel(posterior)
    if var_names is not None:
        missing = sorted(set(var_names) - set(posterior))
        if missing:
            raise ValueError(f"var_names {missing} are not latent sites; expected some of {sorted(posterior)}")

    groups: dict[str, Any] = {"posterior": {name: _numpy(posterior[name]) for name in (var_names or posterior)}}
    if sample_stats is not None:
        groups["sample_stats"] = sample_stats
    if model is not None and args:
        observed = _observed_sites(model, args)
        groups["observed_data"] = {name: _numpy(value) for name, value in observed.items()}
        num_chains, num_draws = next(iter(posterior.values())).shape[:2]
        flat = _flatten_draws(posterior, 2)

        def by_chain(values: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
            return {name: _numpy(value.reshape(num_chains, num_draws, *value.shape[1:])) for name, value in values.items()}

        if posterior_predictive and observed:
            groups["posterior_predictive"] = by_chain(_posterior_predictive(model, args, flat, list(observed)))
        if log_likelihood and observed:
            groups["log_likelihood"] = by_chain(pointwise_log_likelihood(model, args, flat))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return az.from_dict(**groups)


def diagnostics(inference_data, var_names: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Per variable the worst split r_hat (max over elements) and the smallest bulk and tail ESS (ArviZ)."""
    az = import_arviz()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        r_hat = az.rhat(inference_data, var_names=var_names)
        ess_bulk = az.ess(inference_data, var_names=var_names, method="bulk")
        ess_tail = az.ess(inference_data, var_names=var_names, method="tail")
    return {
        name: {"r_hat": float(r_hat[name].max()), "ess_bulk": float(ess_bulk[name].min()), "ess_tail": float(ess_tail[name].min())}
        for name in r_hat.data_vars
    }
