"""VQ-VAE: a discrete latent grid through nearest-neighbour vector quantization (van den Oord et al. 2017)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ppl_dgm._checks import check_image_shape, check_positive_int

__all__ = ["VectorQuantizer", "VQVAE"]


class VectorQuantizer(nn.Module):
    """Maps each D-vector of a feature map (B, D, H, W) to its nearest codebook entry.

    Returns the straight-through quantized map z_e + sg[z_q − z_e] (gradients copied from z_q to
    z_e, eq. 3), the code indices (B, H, W), the codebook and commitment losses and the perplexity.
    With ``ema_decay`` the codebook follows exponential moving averages of its assigned encoder
    outputs (App. A.1) instead of the codebook loss. ``restart_dead_codes`` moves codes whose
    smoothed usage falls below ``dead_code_threshold`` onto random encoder outputs of the batch
    (Dhariwal et al. 2020, Jukebox §2.2).
    """

    def __init__(
        self,
        num_codes: int = 128,
        code_dim: int = 16,
        beta: float = 0.25,
        ema_decay: float | None = None,
        restart_dead_codes: bool = True,
        dead_code_threshold: float = 1e-2,
        epsilon: float = 1e-5,
    ):
        super().__init__()
        self.num_codes, self.code_dim = check_positive_int("num_codes", num_codes), check_positive_int("code_dim", code_dim)
        if not beta >= 0:
            raise ValueError(f"beta must be ≥ 0, got {beta!r}")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {ema_decay!r}")
        self.beta, self.ema_decay, self.epsilon = float(beta), ema_decay, epsilon
        self.restart_dead_codes, self.dead_code_threshold = restart_dead_codes, dead_code_threshold
        codebook = torch.empty(num_codes, code_dim).uniform_(-1.0 / num_codes, 1.0 / num_codes)
        if ema_decay is None:
            self.codebook = nn.Parameter(codebook)
        else:
            self.register_buffer("codebook", codebook)
            self.register_buffer("ema_sum", codebook.clone())
        # smoothed number of vectors assigned to each code per batch (N_i of App. A.1)
        self.register_buffer("ema_count", torch.ones(num_codes))

    def forward(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        batch, dim, height, width = z_e.shape
        if dim != self.code_dim:
            raise ValueError(f"z_e has {dim} channels, expected code_dim={self.code_dim}")
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, dim)
        indices = torch.cdist(flat, self.codebook).argmin(dim=1)  # nearest neighbour, eq. 1
        z_q = self.codebook[indices].view(batch, height, width, dim).permute(0, 3, 1, 2)
        one_hot = F.one_hot(indices, self.num_codes).type_as(flat)
        usage = one_hot.mean(0)
        if self.training:
            self._update(flat, one_hot)
        losses = {"commitment": self.beta * F.mse_loss(z_e, z_q.detach())}  # β‖z_e − sg[e]‖², eq. 3
        if self.ema_decay is None:
            losses["codebook"] = F.mse_loss(z_q, z_e.detach())  # ‖sg[z_e] − e‖², eq. 3
        losses["perplexity"] = torch.exp(-(usage * torch.log(usage + 1e-10)).sum())
        straight_through = z_e + (z_q - z_e).detach()
        return straight_through, indices.view(batch, height, width), losses

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, one_hot: torch.Tensor) -> None:
        counts = one_hot.sum(0)
        decay = self.ema_decay if self.ema_decay is not None else 0.99
        self.ema_count.mul_(decay).add_(counts, alpha=1 - decay)
        if self.ema_decay is not None:  # App. A.1, eqs. 6–8, with Laplace smoothing of the counts
            self.ema_sum.mul_(decay).add_(one_hot.T @ flat, alpha=1 - decay)
            total = self.ema_count.sum()
            smoothed = (self.ema_count + self.epsilon) / (total + self.num_codes * self.epsilon) * total
            self.codebook.copy_(self.ema_sum / smoothed[:, None])
        if self.restart_dead_codes:
            dead = self.ema_count < self.dead_code_threshold
            if dead.any():
                replacements = flat[torch.randint(flat.shape[0], (self.num_codes,), device=flat.device)]
                self.codebook.data[dead] = replacements[dead]
                self.ema_count[dead] = 1.0
                if self.ema_decay is not None:
                    self.ema_sum[dead] = replacements[dead]


class VQVAE(nn.Module):
    """Conv encoder → vector quantizer → conv decoder, trained on MSE + codebook + commitment losses.

    ``encode(x)`` gives the continuous z_e (B, D, s, s); ``decode(z)`` quantizes then decodes;
    ``reconstruct(x)`` does both; ``codes(x)`` gives the discrete latents (B, s, s) and ``decode_codes(codes)`` their
    images; ``num_codes`` is the codebook size.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        num_codes: int = 128,
        code_dim: int = 16,
        channels: int = 32,
        beta: float = 0.25,
        ema_decay: float | None = 0.99,
        restart_dead_codes: bool = True,
    ):
        super().__init__()
        from ppl_dgm.nn import ConvFeatureDecoder, ConvFeatureEncoder

        self.image_shape = check_image_shape(image_shape)
        self.encoder = ConvFeatureEncoder(self.image_shape, code_dim, channels=channels)
        self.quantizer = VectorQuantizer(num_codes, code_dim, beta, ema_decay, restart_dead_codes)
        self.decoder = ConvFeatureDecoder(code_dim, self.image_shape, channels=channels)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z_e: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(self.quantizer(z_e)[0]))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encoder(x))

    @property
    def num_codes(self) -> int:
        return self.quantizer.num_codes

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantizer(self.encoder(x))[1]

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] of code grids (B, s, s): codebook vectors through the decoder."""
        return torch.sigmoid(self.decoder(self.quantizer.codebook[codes].permute(0, 3, 1, 2)))

    def losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstruction MSE per pixel, codebook/commitment losses, perplexity and their ``total``."""
        quantized, _, losses = self.quantizer(self.encoder(x))
        losses["reconstruction"] = F.mse_loss(torch.sigmoid(self.decoder(quantized)), x)
        losses["total"] = losses["reconstruction"] + losses["commitment"] + losses.get("codebook", 0.0)
        return losses

    def loss(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.losses(batch[0])["total"]
