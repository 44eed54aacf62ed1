"""Time and class embeddings: sinusoidal time features, their MLP, and class labels with a null row."""

import math

import torch
from torch import Tensor, nn

from ppl_dgm._checks import check_positive_int

__all__ = ["sinusoidal_embedding", "SinusoidalTimeEmbedding", "ClassEmbedding"]


def sinusoidal_embedding(
    t: Tensor, dim: int, max_period: float = 10000.0, scale: float = 1000.0
) -> Tensor:
    """Sinusoidal embedding (B, dim) of positions `scale * t`, t of shape (B,); layout [sin | cos | zero pad].

    Vaswani et al. 2017, sec. 3.5: frequency k is max_period ** (-k / (dim // 2)). With t = i / T and
    scale = 1000 it reproduces Ho et al. 2020's embedding of the integer step i (T = 1000).
    """
    if t.ndim != 1:
        raise ValueError(f"t must have shape (B,), got shape {tuple(t.shape)}")
    if dim < 2:
        raise ValueError(f"dim must be an int >= 2, got {dim!r}")
    output_dtype = t.dtype if t.is_floating_point() else torch.get_default_dtype()
    # Computed in float32 at least: half precision cannot resolve angles of order 1000.
    compute_dtype = torch.promote_types(output_dtype, torch.float32)
    half_dim = dim // 2
    exponents = torch.arange(half_dim, device=t.device, dtype=compute_dtype) / half_dim
    frequencies = torch.exp(-math.log(max_period) * exponents)
    angles = (scale * t.to(compute_dtype))[:, None] * frequencies[None, :]
    embedding = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2 == 1:
        embedding = nn.functional.pad(embedding, (0, 1))
    return embedding.to(output_dtype)


class SinusoidalTimeEmbedding(nn.Module):
    """Time t (B,) -> (B, hidden_dim): sinusoidal features then Linear-SiLU-Linear (Ho et al. 2020, App. B).

    `hidden_dim` defaults to 4 * dim, as in the DDPM U-Net.
    """

    def __init__(self, dim: int, hidden_dim: int | None = None):
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        if self.dim < 2:
            raise ValueError(f"dim must be an int >= 2, got {dim!r}")
        if hidden_dim is None:
            self.out_features = 4 * self.dim
        else:
            self.out_features = check_positive_int("hidden_dim", hidden_dim)
        self.mlp = nn.Sequential(
            nn.Linear(self.dim, self.out_features),
            nn.SiLU(),
            nn.Linear(self.out_features, self.out_features),
        )

    def forward(self, t: Tensor) -> Tensor:
        features = sinusoidal_embedding(t, self.dim)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class ClassEmbedding(nn.Module):
    """Labels y (B,) in [0, num_classes) or -1 -> (B, dim); -1 and y=None select the learned null row.

    The null row is the "unconditional" label of classifier-free guidance (Ho & Salimans 2022).
    """

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.dim = check_positive_int("dim", dim)
        self.embedding = nn.Embedding(self.num_classes + 1, self.dim)

    @property
    def null_label(self) -> int:
        """Row index of the null (unconditional) embedding."""
        return self.num_classes

    def forward(
        self, y: Tensor | None, batch_size: int | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        if y is None:
            if batch_size is None:
                raise ValueError("batch_size is needed when y is None (all-null labels), got None")
            device = self.embedding.weight.device if device is None else device
            labels = torch.full((batch_size,), self.null_label, device=device, dtype=torch.long)
            return self.embedding(labels)
        if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
            raise TypeError(f"y must be an integer tensor of class labels, got dtype {y.dtype}")
        if y.ndim != 1 or (batch_size is not None and y.shape[0] != batch_size):
            expected = "(B,)" if batch_size is None else f"({batch_size},)"
            raise ValueError(f"y must have shape {expected}, got shape {tuple(y.shape)}")
        if y.numel() > 0:
            # One cheap reduction; a bad label would otherwise be an opaque index error on the device.
            low, high = int(y.min()), int(y.max())
            if low < -1 or high >= self.num_classes:
                raise ValueError(
                    f"y must hold labels in [0, {self.num_classes}) or -1 (unconditional), "
                    f"got values in [{low}, {high}]"
                )
        labels = torch.where(y == -1, torch.full_like(y, self.null_label), y).long()
        return self.embedding(labels)
