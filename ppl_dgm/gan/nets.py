"""GAN networks for 28x28 / 32x32 images: DCGAN (optionally class-conditional), pix2pix, CycleGAN.

Images live in [−1, 1] (tanh outputs). Discriminators return raw scores (logits or critic values).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ppl_dgm._checks import check_image_shape, check_positive_int

__all__ = ["DCGANGenerator", "DCGANDiscriminator", "MinibatchStd", "Pix2PixGenerator", "PatchDiscriminator", "ResnetGenerator"]

_LOWEST_SIDE = {28: 7, 32: 4}  # two / three stride-2 stages


def _check_side(image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    shape = check_image_shape(image_shape)
    if shape[1] != shape[2] or shape[1] not in _LOWEST_SIDE:
        raise ValueError(f"image_shape must be (C, 28, 28) or (C, 32, 32), got {shape!r}")
    return shape


def _one_hot(y: Tensor | None, num_classes: int | None, like: Tensor) -> Tensor | None:
    if num_classes is None:
        return None
    if y is None:
        raise ValueError("this network is class-conditional: y (B,) of labels is required, got None")
    return F.one_hot(y.long(), num_classes).to(like.dtype)


class DCGANGenerator(nn.Module):
    """z (B, latent_dim)[, y (B,)] -> images (B, C, H, W) in [−1, 1] (Radford et al. 2016, sec. 3).

    Fractionally-strided convs, batchnorm and ReLU in every layer but the tanh output; with
    ``num_classes`` the one-hot label is concatenated to z (Mirza & Osindero 2014, sec. 3.2).
    """

    def __init__(self, latent_dim: int, image_shape: tuple[int, int, int] = (1, 28, 28), channels: int = 64,
                 num_classes: int | None = None):
        super().__init__()
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        self.image_shape = _check_side(image_shape)
        channels = check_positive_int("channels", channels)
        self.num_classes = None if num_classes is None else check_positive_int("num_classes", num_classes)
        image_channels, side, _ = self.image_shape
        lowest = _LOWEST_SIDE[side]
        stages = {28: 2, 32: 3}[side]
        widths = [channels * 2 ** (stages - 1 - i) for i in range(stages)]  # e.g. 128, 64
        in_features = self.latent_dim + (self.num_classes or 0)
        layers: list[nn.Module] = [
            nn.Unflatten(1, (in_features, 1, 1)),
            nn.ConvTranspose2d(in_features, widths[0], lowest, bias=False),  # 1x1 -> lowest x lowest
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        ]
        for width_in, width_out in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(width_in, width_out, 4, 2, 1, bias=False), nn.BatchNorm2d(width_out), nn.ReLU()]
        layers += [nn.ConvTranspose2d(widths[-1], image_channels, 4, 2, 1), nn.Tanh()]
        self.layers = nn.Sequential(*layers)
        for module in self.modules():  # N(0, 0.02) init (Radford et al. 2016, sec. 4)
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(module.weight, 0.0, 0.02)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        label = _one_hot(y, self.num_classes, z)
        return self.layers(z if label is None else torch.cat([z, label], dim=1))


class MinibatchStd(nn.Module):
    """x (B, C, H, W) -> (B, C + 1, H, W): appends the mean over features of the per-feature std over the batch
    (Karras et al. 2018, sec. 3), so the discriminator can see a collapsed batch."""

    def forward(self, x: Tensor) -> Tensor:
        std = (x.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
        return torch.cat([x, std.expand(x.shape[0], 1, *x.shape[2:])], dim=1)


class DCGANDiscriminator(nn.Module):
    """Images (B, C, H, W)[, y (B,)] -> scores (B,) (Radford et al. 2016, sec. 3).

    Strided convs with LeakyReLU 0.2, batchnorm except on the input layer; ``batch_norm=False`` for
    a WGAN-GP critic (Gulrajani et al. 2017, sec. 4). With ``num_classes`` the one-hot label is
    appended as constant feature maps (Mirza & Osindero 2014); ``minibatch_std`` appends the minibatch
    standard deviation as one more feature map before the last conv (Karras et al. 2018, sec. 3).
    """

    def __init__(self, image_shape: tuple[int, int, int] = (1, 28, 28), channels: int = 64,
                 num_classes: int | None = None, batch_norm: bool = True, minibatch_std: bool = False):
        super().__init__()
        self.image_shape = _check_side(image_shape)
        channels = check_positive_int("channels", channels)
        self.num_classes = None if num_classes is None else check_positive_int("num_classes", num_classes)
        image_channels, side, _ = self.image_shape
        stages = {28: 2, 32: 3}[side]
        widths = [channels * 2**i for i in range(stages)]
        layers: list[nn.Module] = [nn.Conv2d(image_channels + (self.num_classes or 0), widths[0], 4, 2, 1), nn.LeakyReLU(0.2)]
        for width_in, width_out in zip(widths[:-1], widths[1:]):
            norm = nn.BatchNorm2d(width_out) if batch_norm else nn.Identity()
            layers += [nn.Conv2d(width_in, width_out, 4, 2, 1, bias=not batch_norm), norm, nn.LeakyReLU(0.2)]
        if minibatch_std:
            layers.append(MinibatchStd())
        layers += [nn.Conv2d(widths[-1] + int(minibatch_std), 1, _LOWEST_SIDE[side]), nn.Flatten(0)]  # lowest x lowest -> 1x1
        self.layers = nn.Sequential(*layers)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        label = _one_hot(y, self.num_classes, x)
        if label is not None:
            x = torch.cat([x, label[:, :, None, None].expand(-1, -1, *x.shape[2:])], dim=1)
        return self.layers(x)


class Pix2PixGenerator(nn.Module):
    """Source image (B, C_in, H, W) -> target (B, C_out, H, W) in [−1, 1]: U-Net with skips (Isola et al. 2017, App. 6.1.1).

    Encoder Ck = conv 4x4 s2, batchnorm, LeakyReLU 0.2; decoder CDk = conv-transpose, batchnorm,
    dropout 0.5 (the noise z of pix2pix), ReLU; skips concatenate encoder layer i to decoder n − i.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, channels: int = 64, depth: int = 2, dropout: float = 0.5):
        super().__init__()
        in_channels, out_channels = check_positive_int("in_channels", in_channels), check_positive_int("out_channels", out_channels)
        channels, depth = check_positive_int("channels", channels), check_positive_int("depth", depth)
        widths = [channels * 2**i for i in range(depth)]
        self.down = nn.ModuleList()
        width_in = in_channels
        for i, width in enumerate(widths):
            norm = nn.Identity() if i == 0 else nn.BatchNorm2d(width)  # no batchnorm on C64 (App. 6.1.1)
            self.down.append(nn.Sequential(nn.Conv2d(width_in, width, 4, 2, 1), norm, nn.LeakyReLU(0.2)))
            width_in = width
        self.bottleneck = nn.Sequential(nn.Conv2d(widths[-1], widths[-1], 3, 1, 1), nn.BatchNorm2d(widths[-1]), nn.ReLU())
        self.up = nn.ModuleList()
        for i in reversed(range(depth)):
            width_out = widths[i - 1] if i > 0 else widths[0]
            drop = nn.Dropout(dropout) if i == depth - 1 else nn.Identity()
            layers = [nn.ConvTranspose2d(2 * widths[i], width_out, 4, 2, 1), nn.BatchNorm2d(width_out), drop, nn.ReLU()]
            self.up.append(nn.Sequential(*layers))
        self.output = nn.Sequential(nn.Conv2d(widths[0], out_channels, 3, 1, 1), nn.Tanh())

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for layer in self.down:
            x = layer(x)
            skips.append(x)
        x = self.bottleneck(x)
        for layer in self.up:
            x = layer(torch.cat([x, skips.pop()], dim=1))
        return self.output(x)


class PatchDiscriminator(nn.Module):
    """Image (B, C, H, W) -> patch scores (B, h, w): a PatchGAN classifying each N x N patch (Isola et al. 2017, sec. 2.2).

    Conv 4x4 s2 LeakyReLU, ``num_layers`` more convs with normalization, then a 1-channel 4x4 s1 conv;
    ``num_layers=1`` on 28x28 gives 12x12 scores with a 16x16-pixel receptive field.
    """

    def __init__(self, in_channels: int, channels: int = 64, num_layers: int = 1, norm: str = "batch"):
        super().__init__()
        in_channels, channels = check_positive_int("in_channels", in_channels), check_positive_int("channels", channels)
        num_layers = check_positive_int("num_layers", num_layers)
        if norm not in ("batch", "instance"):
            raise ValueError(f"norm must be 'batch' or 'instance', got {norm!r}")
        norm_layer = nn.BatchNorm2d if norm == "batch" else nn.InstanceNorm2d
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        width = channels
        for i in range(num_layers):
            stride = 2 if i < num_layers - 1 else 1
            layers += [nn.Conv2d(width, 2 * width, 4, stride, 1), norm_layer(2 * width), nn.LeakyReLU(0.2)]
            width *= 2
        layers += [nn.Conv2d(width, 1, 4, 1, 1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x).squeeze(1)


class _ResnetBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels), nn.ReLU(),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.layers(x)


class ResnetGenerator(nn.Module):
    """Image (B, C_in, H, W) -> (B, C_out, H, W) in [−1, 1]: c7s1-k, d2k, R2k x n, u k, c7s1-C (Zhu et al. 2017, App. 7.2).

    Instance normalization and reflection padding as in CycleGAN (after Johnson et al. 2016).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, channels: int = 32, num_blocks: int = 3):
        super().__init__()
        in_channels, out_channels = check_positive_int("in_channels", in_channels), check_positive_int("out_channels", out_channels)
        channels, num_blocks = check_positive_int("channels", channels), check_positive_int("num_blocks", num_blocks)
        self.layers = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(in_channels, channels, 7), nn.InstanceNorm2d(channels), nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, 2, 1), nn.InstanceNorm2d(2 * channels), nn.ReLU(),
            *[_ResnetBlock(2 * channels) for _ in range(num_blocks)],
            nn.ConvTranspose2d(2 * channels, channels, 3, 2, 1, output_padding=1), nn.InstanceNorm2d(channels), nn.ReLU(),
            nn.ReflectionPad2d(3), nn.Conv2d(channels, out_channels, 7), nn.Tanh(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
