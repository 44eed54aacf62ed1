"""Evaluation metrics: likelihood conventions (bits/dim, dequantization)."""
from ppl_dgm.metrics.likelihood import bits_per_dim, dequantize

__all__ = ["bits_per_dim", "dequantize"]
