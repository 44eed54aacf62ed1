"""Evaluation metrics: likelihood conventions (bits/dim, dequantization, IWAE), mode coverage, Fréchet distance, KID,
Inception FID and the earth mover's distance as a linear program."""
from ppl_dgm.metrics.frechet import (
    feature_classifier,
    frechet_distance,
    frechet_distance_of_features,
    frechet_distance_of_samples,
    inception_fid,
    kernel_distance,
    sample_quality,
)
from ppl_dgm.metrics.likelihood import bits_per_dim, dequantize, iwae_log_likelihood, log_importance_weights
from ppl_dgm.metrics.modes import mode_coverage
from ppl_dgm.metrics.transport import discretize_piecewise_uniform, earth_movers_distance_lp

__all__ = [
    "bits_per_dim",
    "dequantize",
    "discretize_piecewise_uniform",
    "earth_movers_distance_lp",
    "feature_classifier",
    "frechet_distance",
    "frechet_distance_of_features",
    "frechet_distance_of_samples",
    "inception_fid",
    "iwae_log_likelihood",
    "kernel_distance",
    "log_importance_weights",
    "mode_coverage",
    "sample_quality",
]
