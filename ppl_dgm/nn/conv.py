"""Convolutional encoder/decoder pairs for (C, 8, 8), (C, 28, 28) and (C, 32, 32) images.

Each stride-2 stage halves the side and doubles the width, DCGAN-style (Radford et al. 2016):
8 -> 4 -> 2, 28 -> 14 -> 7, 32 -> 16 -> 8 -> 4; the decoder mirrors the encoder exactly.
"""

from torch import Tensor, nn

from ppl_dgm._checks import check_positive_int, check_positive_int_sequence

__all__ = ["ConvEncoder", "ConvDecoder"]

# Image side -> number of stride-2 stages (the smallest feature map is 2x2, 7x7 or 4x4).
_STRIDE2_STAGES = {8: 2, 28: 2, 32: 3}


def _check_image_shape(image_shape: object) -> tuple[int, int, int]:
    supported = ", ".join(f"(C, {side}, {side})" for side in _STRIDE2_STAGES)
    shape = check_positive_int_sequence("image_shape", image_shape)
    if len(shape) != 3:
        raise ValueError(f"image_shape must be (C, H, W), one of {supported}, got {shape!r}")
    _, height, width = shape
    if height != width or height not in _STRIDE2_STAGES:
        raise ValueError(f"image_shape must be one of {supported}, got {shape!r}")
    return shape


def _stage_widths(channels: int, side: int) -> list[int]:
    """Widths after the stem and after each stride-2 stage: channels, channels, 2 channels, 4 channels, ..."""
    return [channels] + [channels * 2**stage for stage in range(_STRIDE2_STAGES[side])]


class ConvEncoder(nn.Module):
    """Image (B, C, H, W) -> (B, out_features): 3x3 stem, 4x4 stride-2 convs with SiLU, flatten, Linear."""

    def __init__(self, image_shape: tuple[int, int, int], out_features: int, channels: int = 32):
        super().__init__()
        self.image_shape = _check_image_shape(image_shape)
        self.out_features = check_positive_int("out_features", out_features)
        channels = check_positive_int("channels", channels)
        image_channels, side, _ = self.image_shape
        widths = _stage_widths(channels, side)
        layers: list[nn.Module] = [nn.Conv2d(image_channels, widths[0], 3, padding=1), nn.SiLU()]
        for width_in, width_out in zip(widths[:-1], widths[1:]):
            # kernel 4, stride 2, padding 1 maps a side s to s / 2 exactly for even s.
            layers += [nn.Conv2d(width_in, width_out, 4, stride=2, padding=1), nn.SiLU()]
        final_side = side // 2 ** (len(widths) - 1)
        layers += [nn.Flatten(), nn.Linear(widths[-1] * final_side**2, self.out_features)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class ConvDecoder(nn.Module):
    """z (B, in_features) -> (B, C, H, W), unconstrained (logits or means).

    Linear, 4x4 stride-2 transposed convs with SiLU, 3x3 output conv.
    """

    def __init__(self, in_features: int, image_shape: tuple[int, int, int], channels: int = 32):
        super().__init__()
        self.in_features = check_positive_int("in_features", in_features)
        self.image_shape = _check_image_shape(image_shape)
        channels = check_positive_int("channels", channels)
        image_channels, side, _ = self.image_shape
        widths = _stage_widths(channels, side)[::-1]
        final_side = side // 2 ** (len(widths) - 1)
        layers: list[nn.Module] = [
            nn.Linear(self.in_features, widths[0] * final_side**2),
            nn.SiLU(),
            nn.Unflatten(1, (widths[0], final_side, final_side)),
        ]
        for width_in, width_out in zip(widths[:-1], widths[1:]):
            # kernel 4, stride 2, padding 1 maps a side s to 2 s exactly.
            layers += [nn.ConvTranspose2d(width_in, width_out, 4, stride=2, padding=1), nn.SiLU()]
        layers.append(nn.Conv2d(widths[-1], image_channels, 3, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.layers(z)
