"""Multilayer perceptrons: a plain MLP and a time-conditioned ε-network for low-dimensional data."""

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ppl_dgm._checks import check_positive_int, check_positive_int_sequence
from ppl_dgm.nn.embeddings import ClassEmbedding, SinusoidalTimeEmbedding
from ppl_dgm.nn.functional import per_sample_time

__all__ = ["MLP", "FourierFeatures", "TimeConditionedMLP"]


def _check_activation(name: str, value: object) -> None:
    if not (isinstance(value, type) and issubclass(value, nn.Module)):
        raise TypeError(f"{name} must be an nn.Module class such as nn.SiLU, got {value!r}")


class MLP(nn.Module):
    """x (B, in_features) or (B, ...) flattening to in_features -> (B, out_features)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (256, 256),
        activation: type[nn.Module] = nn.SiLU,
        output_activation: type[nn.Module] | None = None,
    ):
        super().__init__()
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
        hidden = check_positive_int_sequence("hidden", hidden, allow_empty=True)
        _check_activation("activation", activation)
        if output_activation is not None:
            _check_activation("output_activation", output_activation)
        widths = (self.in_features, *hidden)
        layers: list[nn.Module] = []
        for width_in, width_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(width_in, width_out), activation()]
        layers.append(nn.Linear(widths[-1], self.out_features))
        if output_activation is not None:
            layers.append(output_activation())
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x.flatten(1) if x.ndim > 2 else x)


class FourierFeatures(nn.Module):
    """x (B, dim) -> (B, dim + 2 · num_features): x followed by [cos 2πBx | sin 2πBx] with a fixed B (num_features, dim),
    B_ij ~ N(0, scale²) drawn once from the global RNG at construction (Tancik et al. 2020, sec. 6.1, "Gaussian RFF").

    Frequencies of ``scale`` cycles per unit let an MLP fit functions that change over a length 1 / scale, such as a
    score near a density's edge; B is a buffer, saved with the weights and never trained.
    """

    def __init__(self, dim: int, num_features: int, scale: float = 1.0):
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        self.num_features = check_positive_int("num_features", num_features)
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive finite number (cycles per unit of x), got {scale!r}")
        self.scale = float(scale)
        self.out_features = self.dim + 2 * self.num_features
        self.register_buffer("frequencies", self.scale * torch.randn(self.num_features, self.dim))

    def forward(self, x: Tensor) -> Tensor:
        angles = 2.0 * math.pi * x @ self.frequencies.to(x.dtype).T  # Tancik et al. 2020, eq. 6 (a_j = 1)
        return torch.cat([x, torch.cos(angles), torch.sin(angles)], dim=-1)


class TimeConditionedMLP(nn.Module):
    """ε-network for low-dimensional data: (x (B, dim), t (B,) in (0, 1], y (B,) or None) -> (B, dim).

    ``out_features`` (default ``dim``) sets the output width, e.g. 1 for a noise-conditional energy. Every
    hidden layer adds a projection of the time (+ class) embedding before its SiLU, as the DDPM U-Net's
    residual blocks do (Ho et al. 2020, App. B). ``fourier_features > 0`` feeds x through :class:`FourierFeatures` of
    that many random frequencies with standard deviation ``fourier_scale`` first (sharp densities such as the
    checkerboard; docs/design.md, "Score SDEs").
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (256, 256, 256),
        time_embedding_dim: int = 64,
        num_classes: int | None = None,
        out_features: int | None = None,
        fourier_features: int = 0,
        fourier_scale: float = 1.0,
    ):
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        if isinstance(fourier_features, bool) or not isinstance(fourier_features, int) or fourier_features < 0:
            raise ValueError(f"fourier_features must be an int >= 0 (0: x as it is), got {fourier_features!r}")
        self.input_features = FourierFeatures(self.dim, fourier_features, fourier_scale) if fourier_features else nn.Identity()
        self.out_features = self.dim if out_features is None else check_positive_int("out_features", out_features)
        hidden = check_positive_int_sequence("hidden", hidden)
        time_embedding_dim = check_positive_int("time_embedding_dim", time_embedding_dim)
        self.time_embedding = SinusoidalTimeEmbedding(time_embedding_dim)
        condition_dim = self.time_embedding.out_features
        self.class_embedding = None if num_classes is None else ClassEmbedding(num_classes, condition_dim)
        self.num_classes = None if self.class_embedding is None else self.class_embedding.num_classes
        widths = (self.dim + 2 * fourier_features, *hidden)
        self.hidden_layers = nn.ModuleList(
            nn.Linear(width_in, width_out) for width_in, width_out in zip(widths[:-1], widths[1:])
        )
        self.condition_projections = nn.ModuleList(nn.Linear(condition_dim, width) for width in hidden)
        self.activation = nn.SiLU()
        self.output_layer = nn.Linear(hidden[-1], self.out_features)

    def forward(self, x: Tensor, t: float | Tensor, y: Tensor | None = None) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got shape {tuple(x.shape)}")
        condition = self.time_embedding(per_sample_time(t, x))
        if self.class_embedding is not None:
            condition = condition + self.class_embedding(y, batch_size=x.shape[0])
        elif y is not None:
            raise ValueError("y was given but this TimeConditionedMLP has num_classes=None; pass num_classes")
        condition = self.activation(condition)
        hidden = self.input_features(x)
        for layer, projection in zip(self.hidden_layers, self.condition_projections):
            hidden = self.activation(layer(hidden) + projection(condition))
        return self.output_layer(hidden)
