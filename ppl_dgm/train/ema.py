"""Exponential moving average of model weights (torch's ``AveragedModel``), with the usual warm-up."""
from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

__all__ = ["make_ema", "ema_decay_at"]


def ema_decay_at(update: int, decay: float, warmup: bool = True) -> float:
    """Decay used at the ``update``-th average (1-based): min(decay, (1 + n)/(10 + n)) with warm-up.

    The warm-up is TensorFlow's ``ExponentialMovingAverage(num_updates=...)`` rule, which the score-SDE
    and DDPM reference code train with: early averages forget the random initialization quickly, and the
    decay reaches 0.999 after ~9,000 updates and 0.9999 after ~90,000.
    """
    return min(decay, (1.0 + update) / (10.0 + update)) if warmup else decay


def _ema_update(decay: float, warmup: bool):
    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        # AveragedModel copies the weights on its first update; this is update number num_averaged + 1
        weight = 1.0 - ema_decay_at(int(num_averaged) + 1, decay, warmup)
        if torch.is_floating_point(averaged[0]) or torch.is_complex(averaged[0]):
            torch._foreach_lerp_(averaged, current, weight)
        else:  # integer buffers (e.g. BatchNorm's num_batches_tracked)
            for tensor, value in zip(averaged, current, strict=True):
                tensor.copy_(tensor * (1.0 - weight) + value * weight)

    return update


def make_ema(module: nn.Module, decay: float = 0.9999, warmup: bool = True) -> AveragedModel:
    """EMA copy of ``module``: θ_ema ← d·θ_ema + (1 − d)·θ after each ``update_parameters``, d = :func:`ema_decay_at`.

    Buffers are averaged too (``use_buffers=True``), so the copy is usable for evaluation as is. Without
    the warm-up, a run of n ≪ 1/(1 − decay) steps keeps ≈ decay^n of its random initialization.
    """
    if not isinstance(decay, (int, float)) or isinstance(decay, bool) or not 0.0 < decay < 1.0:
        raise ValueError(f"decay must be a float in (0, 1), got {decay!r}")
    averaged = AveragedModel(module, multi_avg_fn=_ema_update(float(decay), bool(warmup)), use_buffers=True)
    return averaged.requires_grad_(False)  # updated by update_parameters only, never by an optimizer
