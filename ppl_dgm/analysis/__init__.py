"""Bayesian analysis: MCMC runs and SVI guides as ArviZ ``InferenceData`` (ArviZ is imported lazily)."""
from ppl_dgm.analysis.arviz import diagnostics, to_inference_data

__all__ = ["to_inference_data", "diagnostics"]
