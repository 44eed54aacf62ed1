"""Exponential moving average of model weights (torch's ``AveragedModel``)."""
from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["make_ema"]


def make_ema(module: nn.Module, decay: float = 0.9999) -> AveragedModel:
    """EMA copy of ``module``: θ_ema ← decay·θ_ema + (1 − decay)·θ after each ``update_parameters``.

    Buffers are averaged too (``use_buffers=True``), so the copy is usable for evaluation as is.
    """
    if not isinstance(decay, (int, float)) or isinstance(decay, bool) or not 0.0 < decay < 1.0:
        raise ValueError(f"decay must be a float in (0, 1), got {decay!r}")
    return AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
