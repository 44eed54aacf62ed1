"""GAN objectives as pure functions of discriminator outputs, and the closed forms behind them.

Every ``xxx_discriminator_loss(real, fake)`` / ``xxx_generator_loss(fake)`` takes raw discriminator
outputs (logits for the JS-type objectives, critic values otherwise), shape (B,) or (B, ...), and
returns a scalar mean to *minimize*. An :class:`Objective` bundles one pair with its paper's recipe.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ppl_dgm._checks import check_same_shape

__all__ = [
    "Objective",
    "OBJECTIVE_NAMES",
    "objective",
    "minimax",
    "non_saturating",
    "least_squares",
    "wasserstein",
    "wasserstein_gp",
    "hinge",
    "minimax_discriminator_loss",
    "minimax_generator_loss",
    "non_saturating_generator_loss",
    "least_squares_discriminator_loss",
    "least_squares_generator_loss",
    "wasserstein_discriminator_loss",
    "wasserstein_generator_loss",
    "hinge_discriminator_loss",
    "hinge_generator_loss",
    "gradient_penalty",
    "r1_penalty",
    "with_r1",
    "clip_weights",
    "apply_spectral_norm",
    "optimal_discriminator",
    "value_function",
    "generator_criterion",
    "earth_movers_distance",
]


def _check_nonnegative(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite float >= 0, got {value!r}")
    return float(value)


def _check_positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite float > 0, got {value!r}")
    return float(value)


# ---------------------------------------------------------------- Goodfellow et al. 2014


def minimax_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """−V(D, G) for D = σ(logits): −E log D(x) − E log(1 − D(G(z)))  (Goodfellow et al. 2014, eq. 1)."""
    check_same_shape("real_logits", real_logits, "fake_logits", fake_logits)
    # log σ(l) = −softplus(−l), log(1 − σ(l)) = −softplus(l): stable for any logit.
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def minimax_generator_loss(fake_logits: Tensor) -> Tensor:
    """E log(1 − D(G(z))), minimized by G (Goodfellow et al. 2014, eq. 1); saturates when D wins."""
    return -F.softplus(fake_logits).mean()


def non_saturating_generator_loss(fake_logits: Tensor) -> Tensor:
    """−E log D(G(z)): G maximizes log D instead (Goodfellow et al. 2014, sec. 3)."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


# ----------------------------------------------------------------------- Mao et al. 2017


def least_squares_discriminator_loss(real: Tensor, fake: Tensor, a: float = 0.0, b: float = 1.0) -> Tensor:
    """½ E (D(x) − b)² + ½ E (D(G(z)) − a)²  (Mao et al. 2017, eq. 2)."""
    check_same_shape("real", real, "fake", fake)
    return 0.5 * ((real - b) ** 2).mean() + 0.5 * ((fake - a) ** 2).mean()


def least_squares_generator_loss(fake: Tensor, c: float = 1.0) -> Tensor:
    """½ E (D(G(z)) − c)²  (Mao et al. 2017, eq. 2)."""
    return 0.5 * ((fake - c) ** 2).mean()


# ------------------------------------------------------ Arjovsky et al. 2017, hinge loss


def wasserstein_discriminator_loss(real: Tensor, fake: Tensor) -> Tensor:
    """Critic loss E f(G(z)) − E f(x), the negated Kantorovich–Rubinstein dual (Arjovsky et al. 2017, eq. 3)."""
    check_same_shape("real", real, "fake", fake)
    return fake.mean() - real.mean()


def wasserstein_generator_loss(fake: Tensor) -> Tensor:
    """−E f(G(z))  (Arjovsky et al. 2017, Alg. 1, line 10)."""
    return -fake.mean()


def hinge_discriminator_loss(real: Tensor, fake: Tensor) -> Tensor:
    """E max(0, 1 − D(x)) + E max(0, 1 + D(G(z)))  (Lim & Ye 2017; Miyato et al. 2018, eq. 16)."""
    check_same_shape("real", real, "fake", fake)
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def hinge_generator_loss(fake: Tensor) -> Tensor:
    """−E D(G(z))  (Miyato et al. 2018, eq. 17)."""
    return -fake.mean()


def gradient_penalty(discriminator: Callable[..., Tensor], real: Tensor, fake: Tensor, *condition: Tensor,
                     generator: torch.Generator | None = None) -> Tensor:
    """E (‖∇_x̂ D(x̂)‖₂ − 1)², x̂ = ε x + (1 − ε) x̃, ε ~ U[0, 1] per example (Gulrajani et al. 2017, eq. 3)."""
    check_same_shape("real", real, "fake", fake)
    shape = (real.shape[0],) + (1,) * (real.ndim - 1)
    epsilon = torch.rand(shape, generator=generator, device=real.device, dtype=real.dtype)
    interpolates = (epsilon * real.detach() + (1 - epsilon) * fake.detach()).requires_grad_(True)
    outputs = discriminator(interpolates, *condition)
    (gradients,) = torch.autograd.grad(outputs.sum(), interpolates, create_graph=True)
    norms = gradients.flatten(1).norm(2, dim=1)
    return ((norms - 1.0) ** 2).mean()


def r1_penalty(discriminator: Callable[..., Tensor], real: Tensor, *condition: Tensor) -> Tensor:
    """E_{p_D} ‖∇_x D(x)‖₂² on real examples (Mescheder et al. 2018, eq. 9); D's loss adds γ/2 times it."""
    real = real.detach().requires_grad_(True)
    outputs = discriminator(real, *condition)
    (gradients,) = torch.autograd.grad(outputs.sum(), real, create_graph=True)
    return gradients.flatten(1).pow(2).sum(1).mean()


@torch.no_grad()
def clip_weights(module: nn.Module, clip: float) -> None:
    """Clamp every parameter of the critic to [−c, c] in place (Arjovsky et al. 2017, Alg. 1, line 7)."""
    for parameter in module.parameters():
        parameter.clamp_(-clip, clip)


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral normalization W / σ(W) of every Linear / Conv layer in place (Miyato et al. 2018, eq. 8)."""
    from torch.nn.utils.parametrizations import spectral_norm

    for child in list(module.modules()):
        if isinstance(child, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)):
            spectral_norm(child)
    return module


# ------------------------------------------------------------------------- objectives


@dataclass(frozen=True)
class Objective:
    """A discriminator/generator loss pair with its paper's recipe (optimizer, lr, betas, n_critic, batch size).

    ``weight_clip`` (WGAN) clamps the critic after each step; ``penalty_weight`` λ adds λ·gradient_penalty;
    ``r1_weight`` γ adds γ/2·r1_penalty on the real batch (:func:`with_r1`).
    """

    name: str
    discriminator_loss: Callable[[Tensor, Tensor], Tensor]
    generator_loss: Callable[[Tensor], Tensor]
    weight_clip: float | None = None
    penalty_weight: float | None = None
    r1_weight: float | None = None
    optimizer: str = "adam"
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    n_critic: int = 1
    batch_size: int = 64
    extra: dict = field(default_factory=dict)

    def make_optimizer(self, parameters: Iterable[nn.Parameter], lr: float | None = None) -> torch.optim.Optimizer:
        """The recipe's optimizer over ``parameters`` (``lr`` overrides the recipe's)."""
        lr = self.lr if lr is None else lr
        if self.optimizer == "rmsprop":
            return torch.optim.RMSprop(parameters, lr=lr)
        return torch.optim.Adam(parameters, lr=lr, betas=self.betas)


def with_r1(base: Objective, gamma: float) -> Objective:
    """``base`` with the R1 penalty γ/2·E‖∇D(x)‖² on real data added to D's loss (Mescheder et al. 2018, eq. 9), the
    regularizer of StyleGAN (Karras et al. 2019, sec. 4 / App. C); γ = 0 returns ``base`` unchanged."""
    if not isinstance(base, Objective):
        raise TypeError(f"base must be an Objective, got {base!r}")
    gamma = _check_nonnegative("gamma", gamma)
    return replace(base, r1_weight=gamma or None)


def minimax() -> Objective:
    """Goodfellow et al. 2014, eq. 1 (D and G play the same value); Adam 2e-4, β₁ 0.5 (Radford et al. 2016)."""
    return Objective("minimax", minimax_discriminator_loss, minimax_generator_loss)


def non_saturating() -> Objective:
    """Goodfellow et al. 2014, sec. 3: G maximizes log D(G(z)); Adam 2e-4, β₁ 0.5 (Radford et al. 2016)."""
    return Objective("non_saturating", minimax_discriminator_loss, non_saturating_generator_loss)


def least_squares(a: float = 0.0, b: float = 1.0, c: float = 1.0) -> Objective:
    """LSGAN with fake label a, real label b, generator target c (Mao et al. 2017, eq. 2; (0, 1, 1))."""
    for name, value in (("a", a), ("b", b), ("c", c)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite float, got {value!r}")
    if a == b:
        raise ValueError(f"a and b must differ (fake and real targets), got a={a!r}, b={b!r}")

    def discriminator_loss(real, fake):
        return least_squares_discriminator_loss(real, fake, a, b)

    def generator_loss(fake):
        return least_squares_generator_loss(fake, c)

    return Objective("least_squares", discriminator_loss, generator_loss, extra={"a": a, "b": b, "c": c})


def wasserstein(clip: float = 0.01) -> Objective:
    """WGAN with weight clipping: RMSProp 5e-5, c = 0.01, m = 64, n_critic = 5 (Arjovsky et al. 2017, Alg. 1)."""
    clip = _check_positive("clip", clip)
    return Objective("wasserstein", wasserstein_discriminator_loss, wasserstein_generator_loss, weight_clip=clip,
                     optimizer="rmsprop", lr=5e-5, n_critic=5, batch_size=64)


def wasserstein_gp(penalty_weight: float = 10.0) -> Objective:
    """WGAN-GP: λ = 10, Adam 1e-4, β = (0, 0.9), n_critic = 5 (Gulrajani et al. 2017, Alg. 1)."""
    penalty_weight = _check_nonnegative("penalty_weight", penalty_weight)
    return Objective("wasserstein_gp", wasserstein_discriminator_loss, wasserstein_generator_loss,
                     penalty_weight=penalty_weight, lr=1e-4, betas=(0.0, 0.9), n_critic=5, batch_size=64)


def hinge() -> Objective:
    """Hinge loss (Lim & Ye 2017), as used with spectral normalization (Miyato et al. 2018)."""
    return Objective("hinge", hinge_discriminator_loss, hinge_generator_loss)


_FACTORIES = {"minimax": minimax, "non_saturating": non_saturating, "least_squares": least_squares,
              "wasserstein": wasserstein, "wasserstein_gp": wasserstein_gp, "hinge": hinge}
OBJECTIVE_NAMES = tuple(_FACTORIES)


def objective(name: str, **kwargs) -> Objective:
    """The objective called ``name`` (one of :data:`OBJECTIVE_NAMES`) with its recipe."""
    if name not in _FACTORIES:
        raise ValueError(f"loss={name!r} is not a known GAN objective; expected one of {OBJECTIVE_NAMES}")
    return _FACTORIES[name](**kwargs)


# ---------------------------------------------------------------------- closed forms


def _check_grid(p: Tensor, q: Tensor, weights: Tensor | float, d: Tensor | None = None) -> None:
    """p, q (and d) of one shape, weights a number, a 0-dim tensor or of that shape: no silent broadcasting."""
    check_same_shape("p", p, "q", q)
    if d is not None:
        check_same_shape("d", d, "p", p)
    if isinstance(weights, Tensor):
        if weights.ndim and weights.shape != p.shape:
            raise ValueError(f"weights must be a number or a tensor of the shape of p, {tuple(p.shape)}, got {tuple(weights.shape)}")
    elif isinstance(weights, bool) or not isinstance(weights, numbers.Real):
        raise TypeError(f"weights must be a number or a tensor, got {type(weights).__name__}")


def optimal_discriminator(p: Tensor, q: Tensor) -> Tensor:
    """D*(x) = p_data(x) / (p_data(x) + p_g(x)) for densities p, q (Goodfellow et al. 2014, Prop. 1)."""
    check_same_shape("p", p, "q", q)
    return p / (p + q)


def value_function(d: Tensor, p: Tensor, q: Tensor, weights: Tensor | float = 1.0) -> Tensor:
    """V(D, G) = Σ w (p log D + q log(1 − D)) on a grid or support (Goodfellow et al. 2014, eq. 1), nats.

    ``weights`` are quadrature weights (dx) for densities, 1 for probability vectors; 0 log 0 = 0.
    """
    _check_grid(p, q, weights, d=d)
    return (weights * (torch.xlogy(p, d) + torch.xlogy(q, 1 - d))).sum()


def generator_criterion(p: Tensor, q: Tensor, weights: Tensor | float = 1.0) -> Tensor:
    """C(G) = V(D*, G) = −log 4 + 2·JSD(p ‖ q), in nats (Goodfellow et al. 2014, Thm. 1, eq. 6)."""
    _check_grid(p, q, weights)
    total = torch.where(p + q > 0, p + q, torch.ones_like(p))  # D* is arbitrary where both densities vanish
    # V(D*, G) with D* = p / (p + q) and 1 − D* = q / (p + q) formed directly (no 1 − D* underflow)
    return (weights * (torch.xlogy(p, p / total) + torch.xlogy(q, q / total))).sum()


def earth_movers_distance(p: Tensor, q: Tensor, cost: Tensor) -> float:
    """W(p, q) = min_γ Σ γ_ij C_ij over couplings of the probability vectors p (n,), q (m,) (Arjovsky et al. 2017, eq. 1).

    Solved exactly as a linear program; ``cost`` (n, m) is the ground distance. The plan too:
    :func:`ppl_dgm.metrics.transport.earth_movers_distance_lp`.
    """
    from ppl_dgm.metrics.transport import _solve

    return _solve(p, q, cost, ("p", "q", "cost"))[0]
