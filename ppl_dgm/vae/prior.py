"""An autoregressive prior over a grid of discrete codes: p(c) = Π_i p(c_i | c_<i) in raster order.

The second stage of a VQ-VAE (van den Oord et al. 2017 fit a PixelCNN over the codes; Ramesh et al. 2021 a
transformer over [text tokens, image codes]): a small causal (GPT-style) transformer trained by maximum likelihood
on the codes of the training images. With ``num_classes`` the sequence starts with a class token, so p(c | y)
generates images of a chosen class ("text-to-image" in miniature); without, it starts with a start token.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ppl_dgm._checks import check_positive_int

__all__ = ["CodePrior"]


class CodePrior(nn.Module):
    """Causal transformer over the raster-ordered codes of an (h, w) grid with ``num_codes`` values.

    Token 0 of the input is the start token (or the class token ``y``); position i predicts code i from the
    start token and codes 0..i−1 through a causal attention mask. ``log_prob(codes, y)`` is log p(c | y) in nats
    per grid (a sum over the h·w positions).
    """

    def __init__(self, num_codes: int, grid: Sequence[int], num_classes: int | None = None, dim: int = 128, depth: int = 4,
                 heads: int = 4, dropout: float = 0.1):
        super().__init__()
        self.num_codes = check_positive_int("num_codes", num_codes)
        if len(tuple(grid)) != 2:
            raise ValueError(f"grid must be (height, width), got {grid!r}")
        self.grid = tuple(check_positive_int("grid", side) for side in grid)
        self.num_classes = None if num_classes is None else check_positive_int("num_classes", num_classes)
        dim, depth, heads = (check_positive_int(name, value) for name, value in (("dim", dim), ("depth", depth), ("heads", heads)))
        if dim % heads:
            raise ValueError(f"dim={dim} must be a multiple of heads={heads}")
        self.length = self.grid[0] * self.grid[1]
        self.code_embedding = nn.Embedding(num_codes, dim)
        self.start_embedding = nn.Embedding(num_classes or 1, dim)  # the class tokens, or one start token
        self.position = nn.Parameter(torch.zeros(self.length, dim))
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout, activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_codes)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(self.length), persistent=False)

    def _start(self, batch: int, y: Tensor | None, device: torch.device) -> Tensor:
        if self.num_classes is None:
            if y is not None:
                raise ValueError("y was given but this prior is unconditional (num_classes=None)")
            return torch.zeros(batch, dtype=torch.long, device=device)
        if y is None:
            raise ValueError(f"this prior is class-conditional (num_classes={self.num_classes}); pass y")
        y = torch.as_tensor(y, device=device).long().expand(batch) if torch.as_tensor(y).ndim == 0 else y.to(device).long()
        if y.shape != (batch,) or (y < 0).any() or (y >= self.num_classes).any():
            raise ValueError(f"y must be {batch} labels in [0, {self.num_classes}), got shape {tuple(y.shape)}")
        return y

    def logits(self, codes: Tensor, y: Tensor | None = None) -> Tensor:
        """Next-code logits (B, L, num_codes) for the flattened codes (B, L′ ≤ L): position i sees codes < i."""
        batch, length = codes.shape
        start = self.start_embedding(self._start(batch, y, codes.device))[:, None]
        tokens = torch.cat([start, self.code_embedding(codes[:, : self.length - 1])], 1)[:, :length]
        hidden = self.transformer(tokens + self.position[:length], mask=self.mask[:length, :length], is_causal=True)
        return self.head(self.norm(hidden))

    def _check_codes(self, codes: Tensor) -> Tensor:
        if codes.shape[1:] != self.grid:
            raise ValueError(f"codes must have shape (B, {self.grid[0]}, {self.grid[1]}), got {tuple(codes.shape)}")
        if codes.dtype.is_floating_point or (codes < 0).any() or (codes >= self.num_codes).any():
            raise ValueError(f"codes must be integers in [0, {self.num_codes}); got dtype {codes.dtype}, "
                             f"range [{int(codes.min())}, {int(codes.max())}]")
        return codes.flatten(1).long()

    def log_prob(self, codes: Tensor, y: Tensor | None = None) -> Tensor:
        """log p(c | y) = Σ_i log p(c_i | c_<i, y), nats per grid, shape (B,)."""
        flat = self._check_codes(codes)
        log_probs = self.logits(flat, y).log_softmax(-1)
        return log_probs.gather(-1, flat[..., None]).squeeze(-1).sum(-1)

    def loss(self, batch: tuple[Tensor, ...]) -> Tensor:
        """Mean negative log-likelihood in nats per code of a batch (codes,) or (codes, y)."""
        codes, y = batch[0], (batch[1] if self.num_classes is not None and len(batch) > 1 else None)
        return -self.log_prob(codes, y).mean() / self.length

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | int | None = None, *, generator: torch.Generator | None = None, temperature: float = 1.0,
               progress: bool = False) -> Tensor:
        """n code grids (n, h, w) by ancestral sampling, one position at a time (logits divided by ``temperature``)."""
        n = check_positive_int("n", n)
        if not (isinstance(temperature, (int, float)) and not isinstance(temperature, bool) and temperature > 0):
            raise ValueError(f"temperature must be a float > 0, got {temperature!r}")
        device = self.head.weight.device
        start = self._start(n, y, device)
        codes = torch.zeros(n, 0, dtype=torch.long, device=device)
        for i in tqdm(range(self.length), desc="code prior", disable=not progress, leave=False):
            logits = self.logits(torch.cat([codes, codes.new_zeros(n, 1)], 1), start if self.num_classes else None)[:, i]
            probs = (logits / temperature).softmax(-1)
            codes = torch.cat([codes, torch.multinomial(probs, 1, generator=generator)], 1)
        return codes.view(n, *self.grid)
