"""A small DDPM U-Net ε-network (Ho et al. 2020, App. B), class-conditional as in Nichol & Dhariwal 2021."""

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ppl_dgm._checks import check_positive_int, check_positive_int_sequence
from ppl_dgm.nn.blocks import AttentionBlock, Downsample, ResidualBlock, Upsample
from ppl_dgm.nn.embeddings import ClassEmbedding, SinusoidalTimeEmbedding
from ppl_dgm.nn.functional import per_sample_time

__all__ = ["UNet"]


def _level_sides(side: int, num_levels: int) -> list[int]:
    """Spatial side at each level; a stride-2, padding-1, 3x3 conv maps a side s to ceil(s / 2)."""
    sides = [side]
    for _ in range(num_levels - 1):
        sides.append((sides[-1] + 1) // 2)
    return sides


class _Level(nn.Module):
    """Residual blocks at one resolution, each followed by attention or identity, then optional resampling."""

    def __init__(self, blocks: list[nn.Module], attentions: list[nn.Module], resample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attentions = nn.ModuleList(attentions)
        self.resample = resample


class UNet(nn.Module):
    """ε-network (x (B, C, H, W), t (B,) in (0, 1], y (B,) or None) -> (B, out_channels or C, H, W).

    `channel_mults` sets the width of each resolution level, with a stride-2 downsample between levels;
    self-attention runs at the spatial sides in `attention_resolutions` (placed for `image_size`) and
    in the middle. Default config on 1x28x28: 6,469,889 parameters (channels=32: 1,623,169).
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: int = 64,
        channel_mults: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (7,),
        dropout: float = 0.0,
        num_classes: int | None = None,
        out_channels: int | None = None,
        groups: int = 8,
        *,
        image_size: int = 28,
    ):
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        channels = check_positive_int("channels", channels)
        channel_mults = check_positive_int_sequence("channel_mults", channel_mults)
        num_res_blocks = check_positive_int("num_res_blocks", num_res_blocks)
        attention_resolutions = check_positive_int_sequence(
            "attention_resolutions", attention_resolutions, allow_empty=True
        )
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
        self.num_classes = None if num_classes is None else check_positive_int("num_classes", num_classes)
        if out_channels is None:
            self.out_channels = self.in_channels
        else:
            self.out_channels = check_positive_int("out_channels", out_channels)
        groups = check_positive_int("groups", groups)
        for width in sorted({channels, *(channels * mult for mult in channel_mults)}):
            if width % groups != 0:
                raise ValueError(
                    f"groups must divide channels and every level width channels * mult, not {width} "
                    f"(channels={channels}, channel_mults={channel_mults}), got groups={groups}"
                )
        self.image_size = check_positive_int("image_size", image_size)
        self.attention_resolutions = attention_resolutions
        self.level_sides = _level_sides(self.image_size, len(channel_mults))
        missing = [side for side in attention_resolutions if side not in self.level_sides]
        if missing:
            raise ValueError(
                f"attention_resolutions must be sides of the levels of a {self.image_size}x{self.image_size} "
                f"input, {tuple(self.level_sides)}, got {attention_resolutions} ({missing} match no level); "
                f"pass image_size for other inputs"
            )
        self.attention_levels = {
            level for level, side in enumerate(self.level_sides) if side in attention_resolutions
        }

        # Ho et al. 2020, App. B: sinusoidal time embedding -> MLP of width 4 * channels, fed to every block.
        self.time_embedding = SinusoidalTimeEmbedding(channels)
        embedding_dim = self.time_embedding.out_features
        # Nichol & Dhariwal 2021: the class embedding is added to the time embedding; the extra null
        # row is the unconditional label of classifier-free guidance (Ho & Salimans 2022).
        self.class_embedding = None
        if self.num_classes is not None:
            self.class_embedding = ClassEmbedding(self.num_classes, embedding_dim)

        def residual_block(width_in: int, width_out: int) -> ResidualBlock:
            return ResidualBlock(width_in, width_out, embedding_dim, dropout, groups)

        def attention_or_identity(width: int, level: int) -> nn.Module:
            return AttentionBlock(width, groups=groups) if level in self.attention_levels else nn.Identity()

        self.input_conv = nn.Conv2d(self.in_channels, channels, 3, padding=1)
        skip_widths = [channels]
        width = channels
        self.down_levels = nn.ModuleList()
        for level, mult in enumerate(channel_mults):
            blocks, attentions = [], []
            for _ in range(num_res_blocks):
                blocks.append(residual_block(width, channels * mult))
                width = channels * mult
                attentions.append(attention_or_identity(width, level))
                skip_widths.append(width)
            is_last = level == len(channel_mults) - 1
            if not is_last:
                skip_widths.append(width)
            self.down_levels.append(_Level(blocks, attentions, None if is_last else Downsample(width)))

        self.middle_in = residual_block(width, width)
        self.middle_attention = AttentionBlock(width, groups=groups)
        self.middle_out = residual_block(width, width)

        self.up_levels = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            blocks, attentions = [], []
            # One block more than on the way down: it takes the skip of the downsample (or input conv).
            for _ in range(num_res_blocks + 1):
                blocks.append(residual_block(width + skip_widths.pop(), channels * mult))
                width = channels * mult
                attentions.append(attention_or_identity(width, level))
            self.up_levels.append(_Level(blocks, attentions, Upsample(width) if level > 0 else None))

        self.output_norm = nn.GroupNorm(groups, width)
        self.output_conv = nn.Conv2d(width, self.out_channels, 3, padding=1)
        # Zero-initialized last layer, so the network starts as ε̂ = 0 (Nichol & Dhariwal 2021,
        # "zero_module"; Ho et al. 2020's code scales its last init by 1e-10).
        nn.init.zeros_(self.output_conv.weight)
        nn.init.zeros_(self.output_conv.bias)

    def _check_inputs(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (B, {self.in_channels}, H, W), got shape {tuple(x.shape)}")
        height, width = x.shape[-2:]
        num_levels = len(self.level_sides)
        heights, widths = _level_sides(height, num_levels), _level_sides(width, num_levels)
        levels = {
            level
            for level, (side, other) in enumerate(zip(heights, widths))
            if side == other and side in self.attention_resolutions
        }
        if levels != self.attention_levels:
            raise ValueError(
                f"x has spatial size {(height, width)}, but attention_resolutions="
                f"{self.attention_resolutions} were placed for image_size={self.image_size}; "
                f"build the UNet with image_size={height}"
            )

    def forward(self, x: Tensor, t: float | Tensor, y: Tensor | None = None) -> Tensor:
        self._check_inputs(x)
        embedding = self.time_embedding(per_sample_time(t, x))
        if self.class_embedding is not None:
            embedding = embedding + self.class_embedding(y, batch_size=x.shape[0])
        elif y is not None:
            raise ValueError("y was given but this UNet has num_classes=None; build it with num_classes")

        hidden = self.input_conv(x)
        skips = [hidden]
        for level in self.down_levels:
            for block, attention in zip(level.blocks, level.attentions):
                hidden = attention(block(hidden, embedding))
                skips.append(hidden)
            if level.resample is not None:
                hidden = level.resample(hidden)
                skips.append(hidden)

        hidden = self.middle_out(self.middle_attention(self.middle_in(hidden, embedding)), embedding)

        for level in self.up_levels:
            for block, attention in zip(level.blocks, level.attentions):
                hidden = attention(block(torch.cat([hidden, skips.pop()], dim=1), embedding))
            if level.resample is not None:
                hidden = level.resample(hidden, skips[-1].shape[-2:])
        return self.output_conv(F.silu(self.output_norm(hidden)))
