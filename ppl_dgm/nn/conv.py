"""Convolutional encoder/decoder pairs for (C, 8, 8), (C, 28, 28) and (C, 32, 32) images.

Each stride-2 stage halves the side and doubles the width, DCGAN-style (Radford et al. 2016):
8 -> 4 -> 2, 28 -> 14 -> 7, 32 -> 16 -> 8 -> 4; the decoder mirrors the encoder exactly.
"""

from torch import Tensor, nn

from ppl_dgm._checks import check_positive_int, check_positive_int_sequence

__all__ = ["ConvEncoder", "ConvDecoder", "ConvFeatureEncoder", "ConvFeatureDecoder"]

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


def _encoder_stages(image_channels: int, widths: list[int]) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(image_channels, widths[0], 3, padding=1), nn.SiLU()]
    for width_in, width_out in zip(widths[:-1], widths[1:]):
        # kernel 4, stride 2, padding 1 maps a side s to s / 2 exactly for even s.
        layers += [nn.Conv2d(width_in, width_out, 4, stride=2, padding=1), nn.SiLU()]
    return layers


def _decoder_stages(widths: list[int], image_channels: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for width_in, width_out in zip(widths[:-1], widths[1:]):
        # kernel 4, stride 2, padding 1 maps a side s to 2 s exactly.
        layers += [nn.ConvTranspose2d(width_in, width_out, 4, stride=2, padding=1), nn.SiLU()]
    layers.append(nn.Conv2d(widths[-1], image_channels, 3, padding=1))
    return layers


class ConvEncoder(nn.Module):
    """Image (B, C, H, W) -> (B, out_features): 3x3 stem, 4x4 stride-2 convs with SiLU, flatten, Linear."""

    def __init__(self, image_shape: tuple[int, int, int], out_features: int, channels: int = 32):
        super().__init__()
        self.image_shape = _check_image_shape(image_shape)
        self.out_features = check_positive_int("out_features", out_features)
        channels = check_positive_int("channels", channels)
        image_channels, side, _ = self.image_shape
        widths = _stage_widths(channels, side)
        final_side = side // 2 ** (len(widths) - 1)
        layers = _encoder_stages(image_channels, widths)
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
        self.layers = nn.Sequential(*layers, *_decoder_stages(widths, image_channels))

    def forward(self, z: Tensor) -> Tensor:
        return self.layers(z)


class ConvFeatureEncoder(nn.Module):
    """Image (B, C, H, W) -> feature map (B, out_channels, s, s) at the smallest side s (2, 7 or 4).

    The trunk of :class:`ConvEncoder` with a 1x1 conv instead of flatten + Linear: spatial latents,
    e.g. for VQ-VAE (van den Oord et al. 2017).
    """

    def __init__(self, image_shape: tuple[int, int, int], out_channels: int, channels: int = 32):
        super().__init__()
        self.image_shape = _check_image_shape(image_shape)
        out_channels = check_positive_int("out_channels", out_channels)
        image_channels, side, _ = self.image_shape
        widths = _stage_widths(check_positive_int("channels", channels), side)
        final_side = side // 2 ** (len(widths) - 1)
        self.feature_shape = (out_channels, final_side, final_side)
        self.layers = nn.Sequential(*_encoder_stages(image_channels, widths), nn.Conv2d(widths[-1], out_channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class ConvFeatureDecoder(nn.Module):
    """Feature map (B, in_channels, s, s) -> (B, C, H, W), the mirror of :class:`ConvFeatureEncoder`."""

    def __init__(self, in_channels: int, image_shape: tuple[int, int, int], channels: int = 32):
        super().__init__()
        in_channels = check_positive_int("in_channels", in_channels)
        self.image_shape = _check_image_shape(image_shape)
        image_channels, side, _ = self.image_shape
        widths = _stage_widths(check_positive_int("channels", channels), side)[::-1]
        stem = [nn.Conv2d(in_channels, widths[0], 3, padding=1), nn.SiLU()]
        self.layers = nn.Sequential(*stem, *_decoder_stages(widths, image_channels))

    def forward(self, features: Tensor) -> Tensor:
        return self.layers(features)
