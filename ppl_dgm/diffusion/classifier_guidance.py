"""Classifier guidance (Dhariwal & Nichol 2021): a noise-aware classifier p_φ(y | x_t, t) and its gradient in ε.

The classifier is trained by cross-entropy on x_t ~ q(x_t | x_0) at the ε-network's times (t = i/T); sampling adds
s·∇ log p_φ(y | x_t) to the score, i.e. ε̂ = ε − s·σ_t·∇_{x_t} log p_φ(y | x_t, t), σ_t = √(1 − ᾱ_t) (ibid., Alg. 2 and
eq. 14). :func:`classifier_guided_eps` returns a callable with the ε-network contract, so every sampler takes it.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ppl_dgm._checks import check_positive_int, check_positive_int_sequence
from ppl_dgm.diffusion.schedules import NoiseSchedule
from ppl_dgm.nn.blocks import Downsample, ResidualBlock
from ppl_dgm.nn.embeddings import SinusoidalTimeEmbedding
from ppl_dgm.nn.functional import expand_like, per_sample_time

__all__ = ["NoisyClassifier", "noisy_classifier_loss", "noisy_accuracy", "marginal_std", "classifier_guided_eps",
           "ClassifierGuidedEps", "check_classifier_scale"]


class NoisyClassifier(nn.Module):
    """p_φ(y | x_t, t): x_t (B, C, H, W), t (B,) in (0, 1] (DDPM step i is i/T) -> logits (B, num_classes).

    The downsampling half of the DDPM U-Net (residual blocks fed the time embedding, a stride-2 conv between levels),
    then GroupNorm–SiLU, a global mean pool and a linear head (Dhariwal & Nichol 2021, sec. 4: the U-Net's encoder with
    a pooled head; they pool by attention at 8x8). Default on 1x28x28: 239,114 parameters (channels=16: 60,426).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, channels: int = 32, channel_mults: Sequence[int] = (1, 2, 2),
                 num_res_blocks: int = 1, dropout: float = 0.0, groups: int = 8):
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.num_classes = check_positive_int("num_classes", num_classes)
        channels = check_positive_int("channels", channels)
        channel_mults = check_positive_int_sequence("channel_mults", channel_mults)
        num_res_blocks = check_positive_int("num_res_blocks", num_res_blocks)
        groups = check_positive_int("groups", groups)
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
        bad = [channels * mult for mult in (1, *channel_mults) if (channels * mult) % groups]
        if bad:
            raise ValueError(f"groups must divide channels and every level width channels * mult, not {bad[0]} "
                             f"(channels={channels}, channel_mults={channel_mults}), got groups={groups}")
        self.time_embedding = SinusoidalTimeEmbedding(channels)  # Ho et al. 2020, App. B: the U-Net's t-embedding
        embedding_dim = self.time_embedding.out_features
        self.input_conv = nn.Conv2d(self.in_channels, channels, 3, padding=1)
        self.blocks = nn.ModuleList()
        width = channels
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                self.blocks.append(ResidualBlock(width, channels * mult, embedding_dim, dropout, groups))
                width = channels * mult
            if level < len(channel_mults) - 1:
                self.blocks.append(Downsample(width))
        self.output_norm = nn.GroupNorm(groups, width)
        self.head = nn.Linear(width, self.num_classes)

    def forward(self, x: Tensor, t: float | Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (B, {self.in_channels}, H, W), got shape {tuple(x.shape)}")
        embedding = self.time_embedding(per_sample_time(t, x))
        hidden = self.input_conv(x)
        for block in self.blocks:
            hidden = block(hidden, embedding) if isinstance(block, ResidualBlock) else block(hidden)
        return self.head(F.silu(self.output_norm(hidden)).mean(dim=(2, 3)))


def _noisy(schedule: NoiseSchedule, x0: Tensor, steps: Tensor, generator: torch.Generator | None) -> Tensor:
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return schedule.q_sample(x0, steps, noise)  # Ho et al. 2020, eq. 4


def noisy_classifier_loss(classifier: nn.Module, schedule: NoiseSchedule, x0: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy −log p_φ(y | x_t, t) in nats, x_t ~ q(x_t | x_0), t = i/T with i ~ U{1..T} (Dhariwal & Nichol
    2021, sec. 4: the classifier is trained on the forward process). x0 (B, ...) in [−1, 1]; draws from torch's global RNG."""
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
    steps = torch.randint(1, schedule.num_steps + 1, (x0.shape[0],), device=x0.device)
    return F.cross_entropy(classifier(_noisy(schedule, x0, steps, None), steps.to(x0.dtype) / schedule.num_steps), y)


@torch.no_grad()
def noisy_accuracy(classifier: nn.Module, schedule: NoiseSchedule, x0: Tensor, y: Tensor, step: int | None, *,
                   generator: torch.Generator | None = None, batch_size: int = 500) -> tuple[float, float]:
    """(accuracy, mean cross-entropy in nats) of ``classifier`` on x_t ~ q(x_t | x_0) at DDPM step ``step`` (1..T), or at
    a uniform step per example when ``step`` is None (the training distribution); noise from ``generator``."""
    correct, nats = 0, 0.0
    for begin in range(0, x0.shape[0], batch_size):
        images, labels = x0[begin:begin + batch_size], y[begin:begin + batch_size]
        if step is None:
            steps = torch.randint(1, schedule.num_steps + 1, (images.shape[0],), generator=generator, device=images.device)
        else:
            steps = torch.full((images.shape[0],), int(schedule.check_step(step)), device=images.device)
        logits = classifier(_noisy(schedule, images, steps, generator), steps.to(images.dtype) / schedule.num_steps)
        correct += int((logits.argmax(1) == labels).sum())
        nats += float(F.cross_entropy(logits.double(), labels, reduction="sum"))
    return correct / x0.shape[0], nats / x0.shape[0]


def marginal_std(noise) -> Callable[[Tensor], Tensor]:
    """t (B,) -> σ_t (B,) float64, the std of q(x_t | x_0), read from the same place the samplers read it: √(1 − ᾱ_i) of a
    DDPM ``NoiseSchedule`` at its step i = round(tT) (``NoiseLevels``), an ``SDE``'s marginal std at continuous t."""
    from ppl_dgm.sde.sdes import SDE

    if isinstance(noise, SDE):
        return lambda t: noise._mean_coefficient_std(t.double())[1]  # Song et al. 2021, eq. 29 (VP), 33 (sub-VP), σ(t) (VE)
    from ppl_dgm.diffusion.solvers import _noise_levels

    levels = _noise_levels(noise)  # a NoiseSchedule, a VPSDE or NoiseLevels; TypeError naming anything else
    return lambda t: levels.sigma(t.detach().double().cpu())  # σ_t = √(1 − ᾱ_t)


def check_classifier_scale(classifier_scale: object) -> float:
    if isinstance(classifier_scale, bool) or not isinstance(classifier_scale, numbers.Real) \
            or not math.isfinite(classifier_scale) or not classifier_scale >= 0.0:
        raise ValueError(f"classifier_scale must be a finite float >= 0 (s of Dhariwal & Nichol 2021), got {classifier_scale!r}")
    return float(classifier_scale)


class ClassifierGuidedEps(nn.Module):
    """ε̂(x, t, y=None) = ε(x, t[, y]) − s·σ_t·∇_x log p_φ(labels | x, t); built by :func:`classifier_guided_eps`."""

    def __init__(self, eps_model: Callable[..., Tensor], classifier: Callable[[Tensor, Tensor], Tensor], labels: Tensor,
                 scale: float, std: Callable[[Tensor], Tensor], network: nn.Module | None = None):
        super().__init__()
        if not isinstance(eps_model, nn.Module):
            self.network = network  # registered first: the samplers take device and dtype from the ε-network's parameters
        self.eps_model, self.classifier = eps_model, classifier
        self.labels, self.scale, self.std = labels, scale, std

    def forward(self, x: Tensor, t: float | Tensor, y: Tensor | None = None) -> Tensor:
        eps = self.eps_model(x, t) if y is None else self.eps_model(x, t, y)
        if self.scale == 0.0:
            return eps
        if x.shape[0] != self.labels.shape[0]:
            raise ValueError(f"x has {x.shape[0]} examples but the classifier's labels y have {self.labels.shape[0]}; "
                             "compose classifier-free guidance outside (sample_by_name does)")
        time = per_sample_time(t, x).detach()
        with torch.enable_grad():  # the samplers run under no_grad
            x_in = x.detach().requires_grad_(True)
            log_probs = F.log_softmax(self.classifier(x_in, time), dim=-1)
            chosen = log_probs.gather(1, self.labels.to(x.device)[:, None]).sum()  # Σ_b log p_φ(y_b | x_b, t_b)
            gradient, = torch.autograd.grad(chosen, x_in)
        sigma = expand_like(self.std(time).to(device=x.device, dtype=x.dtype), x)
        return eps - self.scale * sigma * gradient  # Dhariwal & Nichol 2021, Alg. 2: ε̂ = ε − s√(1 − ᾱ_t)∇ log p_φ(y | x_t)


def classifier_guided_eps(eps_model: Callable[..., Tensor], classifier: Callable[[Tensor, Tensor], Tensor], y: Tensor,
                          scale: float, noise, *, network: nn.Module | None = None) -> ClassifierGuidedEps:
    """The ε-network contract ``(x, t, y=None)`` guided toward classes ``y`` (B,): ε̂ = ε(x, t) − s·σ_t·∇_x log p_φ(y | x, t)
    (Dhariwal & Nichol 2021, Alg. 2, eq. 14), the ε of p_t(x) p_φ(y | x)^s; with s = 1 and the exact p(y | x_t) it is the
    exact class-conditional ε.

    ``classifier(x, t) -> logits (B, K)`` (e.g. :class:`NoisyClassifier`); ``noise`` says where σ_t comes from
    (:func:`marginal_std`): the run's ``NoiseSchedule`` for the discrete samplers (t = i/T), the ``VPSDE`` the network
    is read as for the SDE samplers (continuous t). ``y`` given at call time goes to ``eps_model`` (a class-conditional
    network), not to the classifier. The gradient is taken under ``torch.enable_grad()`` on a detached copy of x. When
    ``eps_model`` is a function (a classifier-free guided ε), ``network`` is the module behind it, whose parameters give
    the samplers their device and dtype.
    """
    if not callable(eps_model):
        raise TypeError(f"eps_model must be callable eps_model(x, t, y=None), got {type(eps_model).__name__}")
    if not callable(classifier):
        raise TypeError(f"classifier must be callable classifier(x_t, t) -> logits (B, num_classes), got {type(classifier).__name__}")
    if not isinstance(y, Tensor) or y.ndim != 1 or y.dtype != torch.long:
        raise TypeError(f"y must be an int64 tensor of class labels (B,) for the classifier, got "
                        f"{f'a {y.dtype} tensor of shape {tuple(y.shape)}' if isinstance(y, Tensor) else type(y).__name__}")
    num_classes = getattr(classifier, "num_classes", None)
    if y.numel() and (int(y.min()) < 0 or (num_classes is not None and int(y.max()) >= num_classes)):
        raise ValueError(f"y must hold classes in [0, {'K' if num_classes is None else num_classes}) of the classifier, got "
                         f"values in [{int(y.min())}, {int(y.max())}]")
    return ClassifierGuidedEps(eps_model, classifier, y, check_classifier_scale(scale), marginal_std(noise), network)
