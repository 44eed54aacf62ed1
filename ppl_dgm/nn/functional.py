"""Tensor helpers shared by the networks: broadcasting time over a batch and over image dims."""

import torch
from torch import Tensor

__all__ = ["expand_like", "per_sample_time"]


def expand_like(t: Tensor, x: Tensor) -> Tensor:
    """Append singleton dims to `t` so it broadcasts against `x` (B, ...): (B,) -> (B, 1, ..., 1).

    The one helper for broadcasting per-sample time over image dims; also (B, C) -> (B, C, 1, 1).
    """
    if t.ndim > x.ndim:
        raise ValueError(f"t must have at most x.ndim={x.ndim} dims, got t of shape {tuple(t.shape)}")
    return t.reshape(*t.shape, *([1] * (x.ndim - t.ndim)))


def per_sample_time(t: float | Tensor, x: Tensor) -> Tensor:
    """Return `t` as a float (B,) tensor on x's device, B = x.shape[0]; a float or 0-dim tensor is repeated.

    `t` is the network-contract time in (0, 1]; a DDPM step i is passed as i / T.
    """
    batch_size = x.shape[0]
    if not isinstance(t, Tensor):
        # At least float32: half precision cannot tell t = 0.999 from t = 1.0.
        time_dtype = torch.promote_types(x.dtype, torch.float32)
        return torch.full((batch_size,), float(t), device=x.device, dtype=time_dtype)
    if not t.is_floating_point():
        raise TypeError(
            f"t must be a float time in (0, 1] (DDPM step i as i / T), got a tensor of dtype {t.dtype}"
        )
    if t.ndim == 0:
        return t.to(x.device).expand(batch_size)
    if t.shape != (batch_size,):
        raise ValueError(
            f"t must be a float, a 0-dim tensor or of shape ({batch_size},) to match x, "
            f"got shape {tuple(t.shape)}"
        )
    return t.to(x.device)
