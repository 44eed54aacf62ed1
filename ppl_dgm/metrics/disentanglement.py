"""Disentanglement: the mutual information gap (MIG, Chen et al. 2018, sec. 5).

For each ground-truth factor v_k, the mutual information I(z_j; v_k) with every latent dimension z_j (posterior means
discretized into ``bins`` equal-width bins, as in the authors' and disentanglement_lib's estimator), normalized by the
factor's entropy H(v_k); MIG is the mean over factors of the gap between the largest and second-largest normalized
MI: 1 when each factor is captured by one latent dimension alone, 0 when none is or two share it equally.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ppl_dgm._checks import check_positive_int

__all__ = ["mutual_information_gap", "discretize"]


def discretize(codes: Tensor, bins: int = 20) -> np.ndarray:
    """Each column of ``codes`` (N, D) into ``bins`` equal-width bins over its own range, as integer labels (N, D)."""
    bins = check_positive_int("bins", bins)
    values = codes.detach().double().cpu().numpy()
    labels = np.empty(values.shape, dtype=np.int64)
    for j in range(values.shape[1]):
        edges = np.histogram_bin_edges(values[:, j], bins=bins)
        labels[:, j] = np.digitize(values[:, j], edges[1:-1])
    return labels


def mutual_information_gap(codes: Tensor, factors: Tensor, bins: int = 20) -> dict[str, Any]:
    """MIG of latent codes (N, D) against discrete factors (N, K); also the (D, K) mutual information matrix (nats),
    the factor entropies and the per-factor gaps."""
    from sklearn.metrics import mutual_info_score

    if not isinstance(codes, Tensor) or codes.ndim != 2 or not isinstance(factors, Tensor) or factors.ndim != 2:
        raise ValueError("codes must be (N, D) and factors (N, K) tensors")
    if codes.shape[0] != factors.shape[0] or codes.shape[0] < 2:
        raise ValueError(f"codes and factors must have the same N >= 2 rows, got {codes.shape[0]} and {factors.shape[0]}")
    if codes.shape[1] < 2:
        raise ValueError(f"MIG needs at least 2 latent dimensions (a top-2 gap), got {codes.shape[1]}")
    if not torch.isfinite(codes).all():
        raise ValueError("codes hold NaN or inf")
    labels = discretize(codes, bins)
    truth = factors.detach().cpu().numpy()
    mi = np.array([[mutual_info_score(truth[:, k], labels[:, j]) for k in range(truth.shape[1])] for j in range(labels.shape[1])])
    entropy = np.array([mutual_info_score(truth[:, k], truth[:, k]) for k in range(truth.shape[1])])  # H(v) = I(v; v)
    if (entropy <= 0).any():
        raise ValueError("every factor must vary (a constant factor has zero entropy)")
    top = np.sort(mi, axis=0)[::-1]
    gaps = (top[0] - top[1]) / entropy
    return {"mig": float(gaps.mean()), "per_factor": gaps.tolist(), "mutual_information": mi.tolist(), "entropy": entropy.tolist()}
