"""Building blocks of the DDPM U-Net (Ho et al. 2020, App. B): residual, attention, down/upsampling."""

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ppl_dgm.nn.functional import expand_like

__all__ = ["ResidualBlock", "AttentionBlock", "Downsample", "Upsample"]


class ResidualBlock(nn.Module):
    """x (B, in_channels, H, W), embedding (B, embedding_dim) -> (B, out_channels, H, W).

    GroupNorm-SiLU-conv3x3, + projected embedding, GroupNorm-SiLU-dropout-conv3x3, plus a 1x1 skip
    when the width changes (Ho et al. 2020, App. B, after Wide ResNets, Zagoruyko & Komodakis 2016).
    """

    def __init__(
        self, in_channels: int, out_channels: int, embedding_dim: int, dropout: float = 0.0, groups: int = 8
    ):
        super().__init__()
        self.norm_in = nn.GroupNorm(groups, in_channels)
        self.conv_in = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.embedding_projection = nn.Linear(embedding_dim, out_channels)
        self.norm_out = nn.GroupNorm(groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv_out = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        hidden = self.conv_in(F.silu(self.norm_in(x)))
        hidden = hidden + expand_like(self.embedding_projection(F.silu(embedding)), hidden)
        hidden = self.conv_out(self.dropout(F.silu(self.norm_out(hidden))))
        return self.skip(x) + hidden


class AttentionBlock(nn.Module):
    """Residual self-attention over the H*W positions of x (B, channels, H, W) -> same shape.

    GroupNorm, 1x1 qkv projection, scaled dot-product attention (Vaswani et al. 2017), 1x1 output
    projection; Ho et al. 2020 use one head, Nichol & Dhariwal 2021 several.
    """

    def __init__(self, channels: int, num_heads: int = 1, groups: int = 8):
        super().__init__()
        if channels % num_heads != 0:
            raise ValueError(f"num_heads must divide channels={channels}, got num_heads={num_heads}")
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.projection = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        batch_size, channels, height, width = x.shape
        head_dim = channels // self.num_heads
        qkv = self.qkv(self.norm(x)).reshape(batch_size, 3, self.num_heads, head_dim, height * width)
        # (B, heads, positions, head_dim) each
        query, key, value = qkv.transpose(-1, -2).unbind(dim=1)
        attended = F.scaled_dot_product_attention(query, key, value)
        attended = attended.transpose(-1, -2).reshape(batch_size, channels, height, width)
        return x + self.projection(attended)


class Downsample(nn.Module):
    """Stride-2 3x3 conv (Ho et al. 2020): side s -> ceil(s / 2), e.g. 28 -> 14 -> 7, 32 -> 16 -> 8."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour resize of x (B, C, h, w) to `size` = (H, W), then 3x3 conv (Ho et al. 2020).

    The U-Net passes the matching skip's (H, W), so an odd side comes back exactly (7 -> 4 -> 7).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, size: torch.Size | tuple[int, int]) -> Tensor:
        return self.conv(F.interpolate(x, size=tuple(size), mode="nearest"))
