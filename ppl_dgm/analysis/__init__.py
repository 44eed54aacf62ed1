"""Bayesian analysis: MCMC runs and SVI guides as ArviZ ``InferenceData``; model and posterior comparison (ArviZ is imported lazily)."""
from ppl_dgm.analysis.arviz import diagnostics, pointwise_log_likelihood, to_inference_data
from ppl_dgm.analysis.comparison import compare_models, heldout_log_predictive_density, posterior_draws, posterior_errors

__all__ = [
    "to_inference_data",
    "pointwise_log_likelihood",
    "diagnostics",
    "compare_models",
    "heldout_log_predictive_density",
    "posterior_draws",
    "posterior_errors",
]
