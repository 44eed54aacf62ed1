"""Convert Pyro MCMC runs and SVI guides to ``arviz.InferenceData``; r_hat and ESS through ArviZ.

ArviZ is imported inside the functions (``import ppl_dgm`` stays lean), with its 0.x FutureWarning
about the coming 1.0 refactor silenced locally.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ppl_dgm._checks import check_positive_int

__all__ = ["to_inference_data", "diagnostics", "import_arviz"]


def import_arviz():
    """``import arviz`` without its import-time FutureWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    return arviz


def _numpy(value: torch.Tensor) -> np.ndarray:
    return value.detach().cpu().numpy()


def _observed_sites(model: Callable, args: Sequence[Any]) -> dict[str, torch.Tensor]:
    from pyro import poutine

    with torch.no_grad(), torch.random.fork_rng():
        trace = poutine.trace(model).get_trace(*args)
    return {name: site["value"] for name, site in trace.nodes.items() if site["type"] == "sample" and site["is_observed"]}


def _posterior_predictive(model: Callable, args: Sequence[Any], draws: dict[str, torch.Tensor] | None, guide: Callable | None,
                          num_samples: int, observed: Sequence[str]) -> dict[str, torch.Tensor]:
    from pyro import poutine
    from pyro.infer import Predictive

    # uncondition: observed sites are drawn from the model instead of fixed to the data
    predictive = Predictive(poutine.uncondition(model), posterior_samples=draws, guide=guide, num_samples=num_samples,
                            return_sites=list(observed), parallel=False)
    with torch.no_grad():
        return predictive(*args)


def _guide_draws(model: Callable, guide: Callable, args: Sequence[Any], num_samples: int) -> dict[str, torch.Tensor]:
    from pyro.infer import Predictive

    with torch.no_grad():
        draws = Predictive(model, guide=guide, num_samples=num_samples, parallel=False)(*args)
    return {name: value for name, value in draws.items() if name not in _observed_sites(model, args)}


def to_inference_data(
    source: Any,
    *args: Any,
    model: Callable | None = None,
    num_samples: int = 500,
    posterior_predictive: bool = True,
    var_names: Sequence[str] | None = None,
):
    """An ``arviz.InferenceData`` from ``pyro.infer.MCMC`` run(s) or from an SVI guide.

    ``source``: an ``MCMC`` (its chains), a list of single-chain ``MCMC`` runs (stacked as chains),
    or a guide callable (``num_samples`` draws, one chain; needs ``model``). With ``model`` and the
    model's ``args``, observed sites get ``posterior_predictive`` draws and ``observed_data``.
    """
    from pyro.infer import MCMC

    az = import_arviz()
    check_positive_int("num_samples", num_samples)
    runs = list(source) if isinstance(source, (list, tuple)) else [source]
    sample_stats = None
    if all(isinstance(run, MCMC) for run in runs):
        per_run = [run.get_samples(group_by_chain=True) for run in runs]
        posterior = {name: torch.cat([samples[name] for samples in per_run]) for name in per_run[0]}  # (chain, draw, ...)
        divergent = []
        for run in runs:
            num_chains, num_draws = next(iter(run.get_samples(group_by_chain=True).values())).shape[:2]
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
    if var_names is not None:
        missing = sorted(set(var_names) - set(posterior))
        if missing:
            raise ValueError(f"var_names {missing} are not latent sites; expected some of {sorted(posterior)}")
        posterior = {name: posterior[name] for name in var_names}

    groups: dict[str, Any] = {"posterior": {name: _numpy(value) for name, value in posterior.items()}}
    if sample_stats is not None:
        groups["sample_stats"] = sample_stats
    if model is not None and args:
        observed = _observed_sites(model, args)
        groups["observed_data"] = {name: _numpy(value) for name, value in observed.items()}
        if posterior_predictive and observed:
            if all(isinstance(run, MCMC) for run in runs):
                num_chains, num_draws = next(iter(posterior.values())).shape[:2]
                flat = {name: value.reshape(num_chains * num_draws, *value.shape[2:]) for name, value in posterior.items()}
                draws = _posterior_predictive(model, args, flat, None, num_chains * num_draws, list(observed))
                groups["posterior_predictive"] = {n: _numpy(v.reshape(num_chains, num_draws, *v.shape[1:])) for n, v in draws.items()}
            else:
                draws = _posterior_predictive(model, args, None, source, num_samples, list(observed))
                groups["posterior_predictive"] = {n: _numpy(v.unsqueeze(0)) for n, v in draws.items()}
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
