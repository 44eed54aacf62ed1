"""The discrete VAE: a grid of categorical latents trained by SVI through the Gumbel-softmax (Concrete) relaxation.

The first stage of DALL-E (Ramesh et al. 2021) on a small scale; discrete VAEs go back to Rolfe 2017. Each
cell of an (h, w) grid holds one of K categories; category k decodes through row k of a K×D codebook and a conv
decoder into Bernoulli pixel logits. The discrete model is

    p(c) = Π_cells Uniform{1..K},   p(x | c) = Bernoulli(decoder(codebook[c])),   q(c | x) = Π_cells Cat(encoder(x)).

Training replaces every categorical by its Concrete relaxation at temperature τ (Maddison et al. 2017; the
Gumbel-softmax of Jang et al. 2017): in the guide z ~ Concrete(τ, logits = encoder(x)), in the model the relaxed
uniform prior z ~ Concrete(τ, logits = 0) at the same τ — Maddison et al. relax prior and posterior alike, so that
the relaxed objective is the ELBO of a relaxed model (a proper bound, with log-densities on both sides) and tends to
the discrete one as τ → 0 — and the decoder sees the soft one-hot z, i.e. the convex combination z @ codebook. The sites
are the ExpConcrete y = log z (Maddison et al.'s log-space form: its density stays finite where z underflows); the
map y ↦ exp(y) is a bijection applied to prior and guide alike, so log p(z) − log q(z | x) and hence the relaxed
ELBO are those of Pyro's ``RelaxedOneHotCategorical`` pair (tests/vae/test_dvae.py checks this by hand).

In training mode ``model``/``guide`` are the relaxed pair; in eval mode the discrete pair, so validation losses,
``evaluate_elbo`` and ``iwae_log_likelihood`` bound the *discrete* model's log p(x) in nats.
"""
from __future__ import annotations

import math
from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.torch_distribution import TorchDistributionMixin
from pyro.nn import PyroModule
from torch import Tensor, nn
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical as _TorchExpRelaxedCategorical
from torch.nn import functional as F

from ppl_dgm._checks import check_image_shape, check_positive_float, check_positive_int
from ppl_dgm.vae.likelihoods import BernoulliLikelihood

__all__ = ["DiscreteVAE", "ExpRelaxedCategorical", "temperature_at"]


class ExpRelaxedCategorical(_TorchExpRelaxedCategorical, TorchDistributionMixin):
    """torch's ExpRelaxedCategorical as a Pyro distribution (Pyro 1.9 wraps only the exponentiated
    ``RelaxedOneHotCategorical``): log of a Concrete(τ, logits) draw, the ExpConcrete density of Maddison et al. 2017."""


def temperature_at(step: int, start: float, minimum: float, rate: float) -> float:
    """The annealed temperature after ``step`` optimizer steps: τ = max(τ_min, τ0 · exp(−r · step)).

    Jang et al. 2017 (their experiments: τ0 = 1, τ_min = 0.5, r ∈ {1e-5, 1e-4}); a function of the step alone, so a
    resumed run continues on the same schedule.
    """
    return max(minimum, start * math.exp(-rate * step))


class DiscreteVAE(PyroModule):
    """An (h, w) grid of K-way categorical latents with a Bernoulli conv decoder (module docstring).

    ``image_shape`` (C, 28, 28) gives a 7x7 grid, (C, 8, 8) a 2x2 grid (the strides of :mod:`ppl_dgm.nn.conv`).
    ``temperature`` is the relaxation's τ and ``kl_weight`` the β scaling the z sites of the training-mode pair; the
    training loop sets both every step (:func:`temperature_at`, :func:`ppl_dgm.vae.kl_control.kl_weight_at`). ``codes(x)`` (B, h, w) are the
    argmax of q(c | x); ``decode_codes(codes)`` the Bernoulli means in [0, 1]; ``log_likelihood(x, codes)`` is
    log p(x | c) in nats.
    """

    def __init__(self, image_shape: Sequence[int], num_codes: int = 64, code_dim: int = 32, channels: int = 32,
                 temperature: float = 1.0, kl_weight: float = 1.0):
        super().__init__()
        from ppl_dgm.nn import ConvFeatureDecoder, ConvFeatureEncoder

        self.image_shape = check_image_shape(image_shape)
        self.num_codes = check_positive_int("num_codes", num_codes)
        self.code_dim = check_positive_int("code_dim", code_dim)
        self.encoder = ConvFeatureEncoder(self.image_shape, self.num_codes, channels=channels)  # logits of q(c | x)
        self.grid = tuple(self.encoder.feature_shape[1:])
        self.codebook = nn.Embedding(self.num_codes, self.code_dim)  # a plain module: its weight stays out of the param store
        self.decoder = ConvFeatureDecoder(self.code_dim, self.image_shape, channels=channels)
        self.likelihood = BernoulliLikelihood()
        self.temperature = check_positive_float("temperature", temperature)
        self.kl_weight = check_positive_float("kl_weight", kl_weight)

    def set_temperature(self, temperature: float) -> None:
        self.temperature = check_positive_float("temperature", temperature)

    def set_kl_weight(self, kl_weight: float) -> None:
        self.kl_weight = check_positive_float("kl_weight", kl_weight)

    # ------------------------------------------------------------------ networks

    def posterior_logits(self, x: Tensor) -> Tensor:
        """Logits of q(c | x), (B, h, w, K)."""
        return self.encoder(x).permute(0, 2, 3, 1)

    def decode_logits(self, z: Tensor) -> Tensor:
        """Bernoulli logits (B, C, H, W) of a (relaxed) one-hot grid z (B, h, w, K): decoder(z @ codebook)."""
        return self.decoder((z @ self.codebook.weight).permute(0, 3, 1, 2))

    def _uniform_logits(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[0], *self.grid, self.num_codes)

    def _temperature(self, x: Tensor) -> Tensor:
        return torch.tensor(self.temperature, dtype=x.dtype, device=x.device)

    # ------------------------------------------------------------------ Pyro programs

    def relaxed_model(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """log z ~ ExpConcrete(τ, 0) per cell (the relaxed uniform prior), x ~ Bernoulli(decoder(z)); z's site scaled by β."""
        with pyro.plate("data", x.shape[0]):
            with poutine.scale(scale=self.kl_weight):
                log_z = pyro.sample("z", ExpRelaxedCategorical(self._temperature(x), logits=self._uniform_logits(x)).to_event(2))
            return pyro.sample("x", self.likelihood(self.decode_logits(log_z.exp())), obs=x)

    def relaxed_guide(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """log z ~ ExpConcrete(τ, encoder(x)) per cell (Maddison et al. 2017; reparameterized); scaled by β."""
        logits = self.posterior_logits(x)
        with pyro.plate("data", x.shape[0]), poutine.scale(scale=self.kl_weight):
            return pyro.sample("z", ExpRelaxedCategorical(self._temperature(x), logits=logits).to_event(2))

    def discrete_model(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """c ~ Uniform{1..K} per cell (one-hot), x ~ Bernoulli(decoder(codebook[c]))."""
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.OneHotCategorical(logits=self._uniform_logits(x)).to_event(2))
            return pyro.sample("x", self.likelihood(self.decode_logits(z)), obs=x)

    def discrete_guide(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """c ~ Cat(encoder(x)) per cell (one-hot)."""
        logits = self.posterior_logits(x)
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", dist.OneHotCategorical(logits=logits).to_event(2))

    def model(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The relaxed model in training mode, the discrete one in eval mode."""
        return self.relaxed_model(x) if self.training else self.discrete_model(x)

    def guide(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The relaxed guide in training mode, the discrete one in eval mode."""
        return self.relaxed_guide(x) if self.training else self.discrete_guide(x)

    # ------------------------------------------------------------------ codes

    @torch.no_grad()
    def codes(self, x: Tensor) -> Tensor:
        """The most probable code of each cell under q(c | x), int64 (B, h, w)."""
        return self.posterior_logits(x).argmax(-1)

    def _check_codes(self, codes: Tensor) -> Tensor:
        if codes.dim() != 3 or tuple(codes.shape[1:]) != self.grid:
            raise ValueError(f"codes must have shape (B, {self.grid[0]}, {self.grid[1]}), got {tuple(codes.shape)}")
        if codes.dtype.is_floating_point or (codes < 0).any() or (codes >= self.num_codes).any():
            raise ValueError(f"codes must be integers in [0, {self.num_codes}), got dtype {codes.dtype}")
        return codes.long()

    @torch.no_grad()
    def decode_codes(self, codes: Tensor) -> Tensor:
        """Bernoulli means in [0, 1], (B, C, H, W), of code grids (B, h, w)."""
        codes = self._check_codes(codes)
        return self.likelihood.mean(self.decode_logits(F.one_hot(codes, self.num_codes).to(self.codebook.weight.dtype)))

    def log_likelihood(self, x: Tensor, codes: Tensor) -> Tensor:
        """log p(x | c) of binary images x (B, C, H, W) given code grids (B, h, w), nats, shape (B,)."""
        one_hot = F.one_hot(self._check_codes(codes), self.num_codes).to(x.dtype)
        return self.likelihood(self.decode_logits(one_hot)).log_prob(x)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Decode the most probable codes of each input: E[x | c = argmax q(c | x)]."""
        return self.decode_codes(self.codes(x))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n images (Bernoulli means) decoded from codes drawn from the *uniform* prior the first stage trains with.

        They are not digits: every cell is independent. A code prior fit to the codes of the data
        (``ppl-dgm train code-prior --source-run``) is what generates digits.
        """
        n = check_positive_int("n", n)
        device = self.codebook.weight.device
        codes = torch.randint(self.num_codes, (n, *self.grid), generator=generator, device=device)
        return self.decode_codes(codes)
