"""Mode coverage of 2-D mixture toys (ring8, grid25): modes covered and fraction of high-quality samples.

A sample is high quality when within 3 σ of its nearest mode (Srivastava et al. 2017, VEEGAN,
sec. 5.1); a mode counts as covered when at least ``min_count`` high-quality samples fall on it
(PacGAN, Lin et al. 2018, use 20 of 2,500 samples on grid25).
"""
from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

__all__ = ["mode_coverage"]


def mode_coverage(samples: Tensor, centers: Tensor | str, std: float | None = None, *, num_stds: float = 3.0,
                  min_count: int = 20) -> dict[str, float]:
    """``modes_covered`` (int), ``num_modes``, ``high_quality_fraction`` in [0, 1] of samples (N, 2).

    ``centers`` (K, 2) with isotropic mode ``std``, or a toy name ("ring8", "grid25", "8gaussians").
    """
    if isinstance(centers, str):
        from ppl_dgm.data import toy2d_modes

        centers, toy_std = toy2d_modes(centers)
        std = toy_std if std is None else std
    if std is None or isinstance(std, bool) or not isinstance(std, numbers.Real) or not std > 0:
        raise ValueError(f"std must be a float > 0, got {std!r}")
    if samples.ndim != 2 or samples.shape[1] != centers.shape[1] or samples.shape[0] == 0:
        raise ValueError(f"samples must have shape (N, {centers.shape[1]}) with N >= 1, got {tuple(samples.shape)}")
    if isinstance(num_stds, bool) or not isinstance(num_stds, numbers.Real) or not 0 < num_stds < math.inf:
        raise ValueError(f"num_stds must be a finite float > 0, got {num_stds!r}")
    if isinstance(min_count, bool) or not isinstance(min_count, numbers.Integral) or min_count < 1:
        raise ValueError(f"min_count must be an int >= 1, got {min_count!r}")
    samples = samples.detach().to(torch.float64)
    centers = centers.to(device=samples.device, dtype=torch.float64)
    distances = torch.cdist(samples, centers)  # (N, K)
    nearest_distance, nearest_mode = distances.min(dim=1)
    high_quality = nearest_distance <= num_stds * std
    counts = torch.bincount(nearest_mode[high_quality], minlength=centers.shape[0])
    return {
        "modes_covered": int((counts >= min_count).sum()),
        "num_modes": int(centers.shape[0]),
        "high_quality_fraction": float(high_quality.double().mean()),
    }
