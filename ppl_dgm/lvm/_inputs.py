"""Checks of the data handed to the classical latent-variable models (errors at the boundary)."""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["check_data"]


def check_data(x: object, data_dim: int | None = None, min_rows: int = 1, min_rows_reason: str = "", name: str = "x") -> torch.Tensor:
    """``x`` as a finite 2-D tensor (N, D): raise a ``TypeError``/``ValueError`` naming what is wrong."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, D), got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D (N, D), got shape {tuple(x.shape)}; flatten images with x.flatten(1)")
    if data_dim is not None and x.shape[1] != data_dim:
        raise ValueError(f"{name} has {x.shape[1]} features per row (shape {tuple(x.shape)}); the model expects data_dim={data_dim}")
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise ValueError(f"{name} contains {bad} NaN or infinite values; remove or impute them before fitting")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} has {x.shape[0]} rows; expected at least {min_rows}{min_rows_reason}")
    return x
