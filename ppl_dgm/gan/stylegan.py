"""A small style-based generator (Karras et al. 2019) for 28x28 / 32x32 images, and the residual discriminator it is
trained against in StyleGAN2 (Karras et al. 2020).

Mapping network f: z -> w, a learned constant input, per resolution [upsample, conv3x3] -> noise -> AdaIN
-> conv3x3 -> noise -> AdaIN, a 1x1 output conv; style mixing regularization and the truncation trick.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ppl_dgm._checks import check_positive_int
from ppl_dgm.gan.nets import _LOWEST_SIDE, MinibatchStd, _check_side
from ppl_dgm.nn.blocks import AdaptiveInstanceNorm, EqualizedConv2d, EqualizedLinear, NoiseInjection

__all__ = ["MappingNetwork", "ResidualDiscriminator", "StyleGenerator"]


class MappingNetwork(nn.Module):
    """z (B, latent_dim) -> w (B, style_dim): pixel-normalized z, then ``num_layers`` Linear-LeakyReLU(0.2) (Karras et al. 2019, sec. 2).

    The layers have the equalized learning rate with He's gain √2 and learn 100x slower than the rest (``lr_multiplier``
    0.01, Karras et al. 2019, App. C). With PyTorch's default init instead, each layer shrinks the variance about
    six-fold, so after 4 layers w barely depends on z (std 0.02 across z) and every sample starts as the same image.
    """

    def __init__(self, latent_dim: int, style_dim: int, num_layers: int = 4, lr_multiplier: float = 0.01):
        super().__init__()
        check_positive_int("num_layers", num_layers)
        layers: list[nn.Module] = []
        width = check_positive_int("latent_dim", latent_dim)
        for _ in range(num_layers):
            layers += [EqualizedLinear(width, style_dim, gain=2**0.5, lr_multiplier=lr_multiplier), nn.LeakyReLU(0.2)]
            width = style_dim
        self.layers = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        z = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)  # pixel norm (Karras et al. 2018, eq. 2)
        return self.layers(z)


class _StyleLayer(nn.Module):
    """conv3x3 -> noise -> LeakyReLU(0.2) -> AdaIN(style)."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int):
        super().__init__()
        self.conv = EqualizedConv2d(in_channels, out_channels, 3, padding=1, gain=2**0.5)
        self.noise = NoiseInjection(out_channels)
        self.norm = AdaptiveInstanceNorm(out_channels, style_dim)

    def forward(self, x: Tensor, style: Tensor, noise: Tensor | None = None) -> Tensor:
        return self.norm(F.leaky_relu(self.noise(self.conv(x), noise), 0.2), style)


class StyleGenerator(nn.Module):
    """z (B, latent_dim) -> images (B, C, H, W) in about [−1, 1]; one style per layer (2 per resolution).

    In training mode, with probability ``mixing_probability`` a sample takes its styles from a second z
    after a random crossover layer (style mixing regularization, Karras et al. 2019, sec. 3.1). ``tanh`` bounds the
    output to (−1, 1) like DCGAN's generator (Radford et al. 2016, sec. 3); StyleGAN's toRGB is linear.
    """

    def __init__(self, latent_dim: int = 64, image_shape: tuple[int, int, int] = (1, 28, 28), channels: int = 64,
                 style_dim: int | None = None, mapping_layers: int = 4, mixing_probability: float = 0.9, tanh: bool = False):
        super().__init__()
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        self.image_shape = _check_side(image_shape)
        image_channels, side, _ = self.image_shape
        channels = check_positive_int("channels", channels)
        self.style_dim = check_positive_int("style_dim", style_dim or latent_dim)
        if not 0.0 <= mixing_probability <= 1.0:
            raise ValueError(f"mixing_probability must lie in [0, 1], got {mixing_probability!r}")
        self.mixing_probability = float(mixing_probability)
        self.mapping = MappingNetwork(self.latent_dim, self.style_dim, mapping_layers)
        self.sides = [7, 14, 28] if side == 28 else [4, 8, 16, 32]
        self.constant = nn.Parameter(torch.ones(1, channels, self.sides[0], self.sides[0]))  # learned constant input
        self.layers = nn.ModuleList()
        self.first_noise = NoiseInjection(channels)
        self.first_norm = AdaptiveInstanceNorm(channels, self.style_dim)
        self.layers.append(_StyleLayer(channels, channels, self.style_dim))  # the second layer of the first block
        for _ in self.sides[1:]:
            self.layers += [_StyleLayer(channels, channels, self.style_dim), _StyleLayer(channels, channels, self.style_dim)]
        self.to_image = EqualizedConv2d(channels, image_channels, 1)
        self.tanh = bool(tanh)
        self.register_buffer("mean_style", torch.zeros(self.style_dim))  # w̄ for the truncation trick

    @property
    def num_styles(self) -> int:
        return 1 + len(self.layers)

    def styles(self, z: Tensor, z_mix: Tensor | None = None, crossover: Tensor | int | None = None) -> Tensor:
        """Per-layer styles (B, num_styles, style_dim): w(z) before layer ``crossover`` (per sample or int), w(z_mix) after."""
        w = self.mapping(z)
        styles = w[:, None].expand(-1, self.num_styles, -1)
        if z_mix is None:
            return styles
        crossover = torch.as_tensor(crossover, device=z.device).expand(z.shape[0])
        layer = torch.arange(self.num_styles, device=z.device)
        mixed = layer[None, :] >= crossover[:, None]  # (B, num_styles)
        return torch.where(mixed[..., None], self.mapping(z_mix)[:, None].expand_as(styles), styles)

    def make_noise(self, batch_size: int, generator: torch.Generator | None = None) -> list[Tensor]:
        """Per-layer noise maps (batch_size, 1, s, s) for :meth:`synthesize`: layer k works at side ``sides[k // 2]``.
        Fixed noise makes the image a function of the styles alone (style-mixing and truncation figures)."""
        device = self.constant.device
        return [torch.randn(batch_size, 1, self.sides[k // 2], self.sides[k // 2], generator=generator, device=device)
                for k in range(self.num_styles)]

    def synthesize(self, styles: Tensor, noise: list[Tensor | None] | None = None) -> Tensor:
        """The synthesis network g on per-layer styles (B, num_styles, style_dim); ``noise`` per layer or None."""
        noise = noise or [None] * self.num_styles
        x = self.constant.expand(styles.shape[0], -1, -1, -1)
        x = self.first_norm(self.first_noise(x, noise[0]), styles[:, 0])
        for index, layer in enumerate(self.layers, start=1):
            if index % 2 == 0:  # the first layer at each new resolution upsamples (bilinear, Karras et al. 2019)
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = layer(x, styles[:, index], noise[index])
        image = self.to_image(x)
        return torch.tanh(image) if self.tanh else image

    def forward(self, z: Tensor, truncation: float = 1.0) -> Tensor:
        batch_size = z.shape[0]
        if self.training and self.mixing_probability > 0:
            z_mix = torch.randn_like(z)
            crossover = torch.randint(1, self.num_styles, (batch_size,), device=z.device)
            keep = torch.rand(batch_size, device=z.device) >= self.mixing_probability
            crossover = torch.where(keep, torch.full_like(crossover, self.num_styles), crossover)
            styles = self.styles(z, z_mix, crossover)
        else:
            styles = self.styles(z)
        if self.training:
            with torch.no_grad():  # running mean of w = f(z) for truncation (the first layer's style is always w(z))
                self.mean_style.lerp_(styles[:, 0].mean(0), 0.005)
        return self.synthesize(self.truncate(styles, truncation))

    def truncate(self, styles: Tensor, truncation: float) -> Tensor:
        """w' = w̄ + ψ (w − w̄) with w̄ the running mean of w (the truncation trick, Karras et al. 2019, sec. 2 / App. B);
        ψ = 1 leaves the styles as they are, ψ = 0 gives w̄ for every sample."""
        if isinstance(truncation, bool) or not isinstance(truncation, (int, float)) or not math.isfinite(truncation):
            raise ValueError(f"truncation must be a finite float (ψ, usually in [0, 1]), got {truncation!r}")
        if truncation == 1.0:
            return styles
        return self.mean_style + truncation * (styles - self.mean_style)


class _ResidualDownBlock(nn.Module):
    """[conv3x3 -> LReLU -> conv3x3 -> LReLU -> 2x2 mean pool] + [2x2 mean pool -> conv1x1], summed and divided by √2
    (the residual discriminator block of Karras et al. 2020, Fig. 7c; mean pooling as in Karras et al. 2018, sec. A.1)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = EqualizedConv2d(in_channels, in_channels, 3, padding=1, gain=2**0.5)
        self.conv2 = EqualizedConv2d(in_channels, out_channels, 3, padding=1, gain=2**0.5)
        self.skip = EqualizedConv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        main = F.avg_pool2d(F.leaky_relu(self.conv2(F.leaky_relu(self.conv1(x), 0.2)), 0.2), 2)
        return (main + self.skip(F.avg_pool2d(x, 2))) / 2**0.5


class ResidualDiscriminator(nn.Module):
    """Images (B, C, H, W) -> scores (B,): the StyleGAN2 residual discriminator (Karras et al. 2020, Fig. 7c), sized
    for 28x28 / 32x32 images, with the equalized learning rate in every layer.

    fromRGB (1x1 conv, LReLU) to ``channels // 2`` maps -> residual blocks halving the side down to 7 (28x28) or 4
    (32x32) and doubling the width at each -> minibatch std (``minibatch_std``, Karras et al. 2018, sec. 3) -> conv3x3 ->
    fully connected -> fully connected to one score.
    """

    def __init__(self, image_shape: tuple[int, int, int] = (1, 28, 28), channels: int = 64, minibatch_std: bool = True):
        super().__init__()
        self.image_shape = _check_side(image_shape)
        image_channels, side, _ = self.image_shape
        channels = check_positive_int("channels", channels)
        lowest = _LOWEST_SIDE[side]
        stages = {28: 2, 32: 3}[side]
        widths = [max(channels // 2, 1) * 2**i for i in range(stages + 1)]  # 28x28, channels 64: 32 -> 64 -> 128
        self.from_rgb = EqualizedConv2d(image_channels, widths[0], 1, gain=2**0.5)
        self.blocks = nn.Sequential(*(_ResidualDownBlock(a, b) for a, b in zip(widths[:-1], widths[1:])))
        self.minibatch_std = MinibatchStd() if minibatch_std else nn.Identity()
        self.conv = EqualizedConv2d(widths[-1] + int(minibatch_std), widths[-1], 3, padding=1, gain=2**0.5)
        self.fc = EqualizedLinear(widths[-1] * lowest**2, widths[-1], gain=2**0.5)
        self.out = EqualizedLinear(widths[-1], 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, self.image_shape))}), got shape {tuple(x.shape)}")
        h = self.blocks(F.leaky_relu(self.from_rgb(x), 0.2))
        h = F.leaky_relu(self.conv(self.minibatch_std(h)), 0.2)
        return self.out(F.leaky_relu(self.fc(h.flatten(1)), 0.2)).squeeze(1)
