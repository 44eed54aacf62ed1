"""Comparing models and posteriors on ``arviz.InferenceData``: PSIS-LOO / WAIC tables, the held-out log
predictive density, and the errors of an approximate posterior (an SVI guide) against a reference (NUTS).

ArviZ computes every criterion (``az.loo``, ``az.waic``, ``az.compare``, ``az.summary``); this module
only lines the numbers up in one table.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from ppl_dgm.analysis.arviz import import_arviz, pointwise_log_likelihood

__all__ = ["posterior_draws", "heldout_log_predictive_density", "compare_models", "posterior_errors"]


def posterior_draws(inference_data, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """The ``posterior`` group as flat torch draws (chain·draw, ...)."""
    posterior = inference_data.posterior
    return {name: torch.as_tensor(np.asarray(posterior[name].values), dtype=dtype).flatten(0, 1) for name in posterior.data_vars}


def heldout_log_predictive_density(inference_data, model: Callable, x: torch.Tensor) -> torch.Tensor:
    """log (1/S) Σ_s p(x̃_n | θ_s) per new point x̃_n, (N,) nats: the log pointwise predictive density of held-out
    data under the posterior draws θ_s (Gelman, Hwang & Vehtari 2014, eq. 3, on new data); its sum is what
    PSIS-LOO's elpd estimates for the training points. ``model(x)`` must have one observed site, and the
    ``posterior`` group every latent site that is not local to the data (no ``var_names`` selection)."""
    draws = {name: value.to(x) for name, value in posterior_draws(inference_data).items()}
    log_likelihood = pointwise_log_likelihood(model, (x,), draws)
    if len(log_likelihood) != 1:
        raise ValueError(f"the model must have one observed site, got {sorted(log_likelihood)}")
    (values,) = log_likelihood.values()  # (S, N)
    return values.logsumexp(0) - math.log(values.shape[0])


def compare_models(inference_data: Mapping[str, object], heldout: Mapping[str, float] | None = None):
    """A ``pandas.DataFrame`` with one row per model, best PSIS-LOO first.

    Columns: ArviZ's ``az.compare(..., ic="loo")`` (rank, elpd_loo, p_loo, elpd_diff, weight, se, dse, warning),
    ``elpd_waic`` and ``p_waic`` (``az.waic``), the largest Pareto k and the number of points above ArviZ's
    threshold ``good_k`` (Vehtari, Gelman & Gabry 2017; Vehtari et al. 2024), and with ``heldout`` (model →
    summed held-out log predictive density, nats) that value and its rank.
    """
    az = import_arviz()
    if len(inference_data) < 2:
        raise ValueError(f"compare_models needs at least two models, got {sorted(inference_data)}")
    if heldout is not None and set(heldout) != set(inference_data):
        raise ValueError(f"heldout must name the same models as inference_data: {sorted(heldout)} vs {sorted(inference_data)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ warns about large Pareto k; the table reports them
        table = az.compare(dict(inference_data), ic="loo")
        for name, data in inference_data.items():
            waic = az.waic(data)
            loo = az.loo(data, pointwise=True)
            pareto_k = np.asarray(loo.pareto_k)
            table.loc[name, "elpd_waic"], table.loc[name, "p_waic"] = float(waic.elpd_waic), float(waic.p_waic)
            table.loc[name, "pareto_k_max"] = float(pareto_k.max())
            table.loc[name, "pareto_k_bad"] = int((pareto_k > float(loo.good_k)).sum())
    if heldout is not None:
        table["heldout_lppd"] = [float(heldout[name]) for name in table.index]
        table["heldout_rank"] = table["heldout_lppd"].rank(ascending=False, method="min").astype(int) - 1
    return table


def posterior_errors(reference, approximations: Mapping[str, object], var_names: Sequence[str] | None = None):
    """How far each approximate posterior is from ``reference``, in the reference's posterior sds (a ``pandas.DataFrame``).

    Over every scalar parameter i (means and sds from ``az.summary``): ``mean_error`` = RMS of
    (mean_q,i − mean_i) / sd_i, ``mean_error_max`` its largest absolute term, ``sd_error`` = RMS of
    log(sd_q,i / sd_i), ``sd_ratio`` = the geometric mean of sd_q,i / sd_i (below 1: the approximation is
    too narrow, as mean-field VI tends to be; Blei et al. 2017, §5.3). The reference's own Monte-Carlo errors
    set the floors below which the errors are noise: ``reference_mcse`` = RMS of its MCSE of the mean in its sds
    (for ``mean_error``), ``reference_mcse_sd`` = RMS of its MCSE of the sd relative to the sd (for ``sd_error``).
    """
    import pandas as pd

    az = import_arviz()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        truth = az.summary(reference, var_names=var_names, kind="all", round_to="none")
        rows = {}
        for name, data in approximations.items():
            stats = az.summary(data, var_names=var_names, kind="stats", round_to="none")
            if set(stats.index) != set(truth.index):
                raise ValueError(f"{name} has parameters {sorted(stats.index)}; the reference has {sorted(truth.index)}")
            stats = stats.loc[truth.index]
            standardized = (stats["mean"] - truth["mean"]) / truth["sd"]
            log_ratio = np.log(stats["sd"] / truth["sd"])
            rows[name] = {
                "mean_error": float(np.sqrt((standardized**2).mean())),
                "mean_error_max": float(standardized.abs().max()),
                "sd_error": float(np.sqrt((log_ratio**2).mean())),
                "sd_ratio": float(np.exp(log_ratio.mean())),
            }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table["reference_mcse"] = float(np.sqrt(((truth["mcse_mean"] / truth["sd"]) ** 2).mean()))
    table["reference_mcse_sd"] = float(np.sqrt(((truth["mcse_sd"] / truth["sd"]) ** 2).mean()))
    return table
