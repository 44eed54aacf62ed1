"""Deterministic autoencoders, plain and denoising (plain torch baselines for the VAE table)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ppl_dgm._checks import check_image_shape, check_positive_int

__all__ = ["Autoencoder", "mlp_autoencoder", "conv_autoencoder", "NOISE_TYPES", "RECONSTRUCTION_LOSSES"]

NOISE_TYPES = ("masking", "gaussian")
RECONSTRUCTION_LOSSES = ("bce", "mse")


class Autoencoder(nn.Module):
    """x → z = encoder(x̃) → decoder(z), trained to reconstruct the clean x.

    ``corruption`` > 0 makes it a denoising autoencoder (Vincent et al. 2008): x̃ zeroes each pixel
    with probability ``corruption`` (``noise="masking"``) or adds N(0, corruption²) noise
    (``noise="gaussian"``). ``loss="bce"`` treats decoder outputs as Bernoulli logits (error in
    nats per image, the VAE's reconstruction term without the KL), ``"mse"`` as pixel values.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, corruption: float = 0.0, noise: str = "masking", loss: str = "bce"):
        super().__init__()
        if noise not in NOISE_TYPES:
            raise ValueError(f"noise={noise!r} is not known; expected one of {NOISE_TYPES}")
        if loss not in RECONSTRUCTION_LOSSES:
            raise ValueError(f"loss={loss!r} is not known; expected one of {RECONSTRUCTION_LOSSES}")
        upper = 1.0 if noise == "masking" else float("inf")
        if not isinstance(corruption, (int, float)) or isinstance(corruption, bool) or not 0.0 <= corruption < upper:
            raise ValueError(f"corruption must be in [0, {upper}) for noise={noise!r}, got {corruption!r}")
        self.encoder, self.decoder = encoder, decoder
        self.corruption, self.noise, self.loss_type = float(corruption), noise, loss

    def corrupt(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The corrupted input x̃ (a new tensor; x is left as is)."""
        if self.corruption == 0.0:
            return x
        if self.noise == "masking":
            keep = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) >= self.corruption
            return x * keep
        return x + self.corruption * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstructed images: probabilities for ``bce``, values for ``mse``."""
        output = self.decoder(z)
        return torch.sigmoid(output) if self.loss_type == "bce" else output

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encoder(x))

    def reconstruction_error(self, x: torch.Tensor, corrupt: bool = True) -> torch.Tensor:
        """Per-image error of reconstructing the clean x, (B,): summed BCE (nats) or summed squared error."""
        output = self.decoder(self.encoder(self.corrupt(x) if corrupt else x))
        if self.loss_type == "bce":
            error = F.binary_cross_entropy_with_logits(output, x, reduction="none")
        else:
            error = F.mse_loss(output, x, reduction="none")
        return error.flatten(1).sum(1)

    def loss(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Mean training loss of a minibatch (corrupted inputs when ``corruption`` > 0)."""
        return self.reconstruction_error(batch[0]).mean()


def mlp_autoencoder(image_shape: Sequence[int], latent_dim: int = 50, hidden: Sequence[int] = (400,), **options) -> Autoencoder:
    """MLP autoencoder with the VAE's 784-400-50 shape; ``options`` go to :class:`Autoencoder`."""
    from ppl_dgm.nn import MLP

    image_shape = check_image_shape(image_shape)
    check_positive_int("latent_dim", latent_dim)
    num_pixels = image_shape[0] * image_shape[1] * image_shape[2]
    encoder = MLP(num_pixels, latent_dim, hidden=tuple(hidden))
    decoder = nn.Sequential(MLP(latent_dim, num_pixels, hidden=tuple(reversed(hidden))), nn.Unflatten(1, image_shape))
    return Autoencoder(encoder, decoder, **options)


def conv_autoencoder(image_shape: Sequence[int], latent_dim: int = 32, channels: int = 32, **options) -> Autoencoder:
    """Convolutional autoencoder for 8x8, 28x28 or 32x32 images."""
    from ppl_dgm.nn import ConvDecoder, ConvEncoder

    image_shape = check_image_shape(image_shape)
    check_positive_int("latent_dim", latent_dim)
    return Autoencoder(ConvEncoder(image_shape, latent_dim, channels=channels), ConvDecoder(latent_dim, image_shape, channels=channels), **options)
