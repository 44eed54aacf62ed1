"""Building blocks: residual, attention, down/upsampling of the DDPM U-Net (Ho et al. 2020, App. B), and the
style-based generator's AdaIN, noise injection and modulated convolution (Karras et al. 2019, 2020)."""

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ppl_dgm.nn.functional import expand_like

__all__ = [
    "ResidualBlock",
    "AttentionBlock",
    "Downsample",
    "Upsample",
    "adaptive_instance_norm",
    "AdaptiveInstanceNorm",
    "NoiseInjection",
    "ModulatedConv2d",
    "EqualizedLinear",
    "EqualizedConv2d",
]


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


def adaptive_instance_norm(x: Tensor, scale: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """AdaIN(x, y) = y_s (x − μ(x)) / σ(x) + y_b per sample and channel; x (B, C, H, W), scale/bias (B, C).

    Huang & Belongie 2017, eq. 8; Karras et al. 2019, eq. 1. μ, σ over H, W (σ biased, + eps).
    """
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = (x.var(dim=(2, 3), keepdim=True, unbiased=False) + eps).sqrt()
    return expand_like(scale, x) * (x - mean) / std + expand_like(bias, x)


class EqualizedLinear(nn.Module):
    """A linear layer with the equalized learning rate (Karras et al. 2018, sec. 4.1; 2019, App. C).

    The stored weight is N(0, 1) / lr_multiplier and is scaled at run time by c = gain / √fan_in · lr_multiplier (He's
    constant), the bias stored as bias_init / lr_multiplier and scaled by lr_multiplier. Every layer then learns at the
    same speed under Adam, and ``lr_multiplier`` = 0.01 slows one network by 100x (StyleGAN's mapping network).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, gain: float = 1.0,
                 lr_multiplier: float = 1.0, bias_init: float | Tensor = 0.0):
        super().__init__()
        if not lr_multiplier > 0:
            raise ValueError(f"lr_multiplier must be > 0, got {lr_multiplier!r}")
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.as_tensor(bias_init, dtype=torch.float32).expand(out_features) / lr_multiplier) if bias else None
        self.weight_scale = gain / in_features**0.5 * lr_multiplier
        self.lr_multiplier = lr_multiplier

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias * self.lr_multiplier
        return F.linear(x, self.weight * self.weight_scale, bias)


class EqualizedConv2d(nn.Module):
    """A conv layer with the equalized learning rate: N(0, 1) weights scaled at run time by gain / √(in · k²)
    (Karras et al. 2018, sec. 4.1), zero bias."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0, *, gain: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_scale = gain / (in_channels * kernel_size**2) ** 0.5
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.weight_scale, self.bias, padding=self.padding)


class AdaptiveInstanceNorm(nn.Module):
    """x (B, C, H, W), style w (B, style_dim) -> AdaIN with (y_s, y_b) = A(w), a learned affine map (Karras et al. 2019, sec. 2).

    A is an :class:`EqualizedLinear` (Karras et al. 2019, App. C) whose bias starts at y_s = 1, y_b = 0.
    """

    def __init__(self, channels: int, style_dim: int):
        super().__init__()
        self.affine = EqualizedLinear(style_dim, 2 * channels, bias_init=torch.cat([torch.ones(channels), torch.zeros(channels)]))

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        scale, bias = self.affine(style).chunk(2, dim=1)
        return adaptive_instance_norm(x, scale, bias)


class NoiseInjection(nn.Module):
    """x (B, C, H, W) + B_c · noise, noise (B, 1, H, W) ~ N(0, 1) shared by channels, learned B_c (Karras et al. 2019, Fig. 1b).

    ``noise`` may be given (e.g. fixed for reproducible samples); B_c starts at 0.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, noise: Tensor | None = None) -> Tensor:
        if noise is None:
            noise = torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype)
        return x + self.weight.view(1, -1, 1, 1) * noise


class ModulatedConv2d(nn.Module):
    """x (B, in, H, W), style w (B, style_dim) -> (B, out, H, W): modulation/demodulation (Karras et al. 2020, eqs. 1–3).

    w'_ijk = s_i w_ijk with s = A(w); demodulated w''_ijk = w'_ijk / √(Σ_ik w'_ijk² + ε); one grouped conv per batch.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int, demodulate: bool = True, eps: float = 1e-8):
        super().__init__()
        fan_in = in_channels * kernel_size**2
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size) / fan_in**0.5)
        self.affine = nn.Linear(style_dim, in_channels)
        nn.init.ones_(self.affine.bias)
        self.demodulate = demodulate
        self.eps = eps
        self.padding = kernel_size // 2

    def modulated_weight(self, style: Tensor) -> Tensor:
        """Per-sample weights (B, out, in, k, k)."""
        weight = self.weight[None] * self.affine(style)[:, None, :, None, None]  # Karras et al. 2020, eq. 1
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4), keepdim=True) + self.eps)  # eq. 3
        return weight

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        batch_size, in_channels, height, width = x.shape
        weight = self.modulated_weight(style).reshape(-1, in_channels, *self.weight.shape[2:])
        out = F.conv2d(x.reshape(1, batch_size * in_channels, height, width), weight, padding=self.padding, groups=batch_size)
        return out.reshape(batch_size, -1, *out.shape[2:])
