import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from scipy.spatial.distance import jensenshannon
from torch import nn
from torch.nn import functional as F

from ppl_dgm.gan import losses
from ppl_dgm.gan.losses import (
    apply_spectral_norm,
    earth_movers_distance,
    generator_criterion,
    gradient_penalty,
    objective,
    optimal_discriminator,
    r1_penalty,
    value_function,
    with_r1,
)

LOG4 = math.log(4.0)


def logits_pair():
    generator = torch.Generator().manual_seed(0)
    return 3 * torch.randn(64, generator=generator, dtype=torch.float64), 3 * torch.randn(64, generator=generator, dtype=torch.float64)


def test_minimax_and_non_saturating_match_the_probability_forms():
    real, fake = logits_pair()
    d_real, d_fake = torch.sigmoid(real), torch.sigmoid(fake)
    # Goodfellow et al. 2014, eq. 1: V = E log D(x) + E log(1 − D(G(z)))
    value = d_real.log().mean() + (1 - d_fake).log().mean()
    torch.testing.assert_close(losses.minimax_discriminator_loss(real, fake), -value)
    torch.testing.assert_close(losses.minimax_generator_loss(fake), (1 - d_fake).log().mean())
    torch.testing.assert_close(losses.non_saturating_generator_loss(fake), -d_fake.log().mean())
    torch.testing.assert_close(losses.minimax_discriminator_loss(real, fake),
                               F.binary_cross_entropy(d_real, torch.ones_like(d_real)) + F.binary_cross_entropy(d_fake, torch.zeros_like(d_fake)))


def test_stable_for_extreme_logits():
    extreme = torch.tensor([-200.0, 200.0], requires_grad=True)
    for value in (losses.minimax_discriminator_loss(extreme, extreme), losses.minimax_generator_loss(extreme),
                  losses.non_saturating_generator_loss(extreme)):
        (gradient,) = torch.autograd.grad(value, extreme)
        assert torch.isfinite(value) and torch.isfinite(gradient).all()
    # the non-saturating loss keeps a gradient where D confidently rejects the fake; minimax does not
    rejected = torch.tensor([-20.0], requires_grad=True)
    (g_minimax,) = torch.autograd.grad(losses.minimax_generator_loss(rejected), rejected)
    (g_ns,) = torch.autograd.grad(losses.non_saturating_generator_loss(rejected), rejected)
    assert abs(float(g_minimax)) < 1e-8 and abs(float(g_ns) + 1.0) < 1e-6


def test_least_squares_wasserstein_hinge_closed_forms():
    real, fake = logits_pair()
    torch.testing.assert_close(losses.least_squares_discriminator_loss(real, fake), 0.5 * ((real - 1) ** 2).mean() + 0.5 * (fake**2).mean())
    torch.testing.assert_close(losses.least_squares_generator_loss(fake), 0.5 * ((fake - 1) ** 2).mean())
    ls = objective("least_squares", a=-1.0, b=1.0, c=0.0)  # Mao et al. 2017, eq. 8 variant
    torch.testing.assert_close(ls.discriminator_loss(real, fake), 0.5 * ((real - 1) ** 2).mean() + 0.5 * ((fake + 1) ** 2).mean())
    torch.testing.assert_close(ls.generator_loss(fake), 0.5 * (fake**2).mean())
    torch.testing.assert_close(losses.wasserstein_discriminator_loss(real, fake), fake.mean() - real.mean())
    torch.testing.assert_close(losses.hinge_discriminator_loss(real, fake), torch.clamp(1 - real, min=0).mean() + torch.clamp(1 + fake, min=0).mean())
    torch.testing.assert_close(losses.hinge_generator_loss(fake), -fake.mean())


def test_recipes_are_the_papers():
    wgan = objective("wasserstein")
    assert (wgan.weight_clip, wgan.optimizer, wgan.lr, wgan.n_critic, wgan.batch_size) == (0.01, "rmsprop", 5e-5, 5, 64)
    gp = objective("wasserstein_gp")
    assert (gp.penalty_weight, gp.lr, gp.betas, gp.n_critic) == (10.0, 1e-4, (0.0, 0.9), 5)
    assert isinstance(wgan.make_optimizer(nn.Linear(2, 1).parameters()), torch.optim.RMSprop)
    assert objective("least_squares").extra == {"a": 0.0, "b": 1.0, "c": 1.0}


def test_gradient_penalty_of_a_linear_critic():
    weight = torch.tensor([3.0, 4.0])  # ‖∇D‖ = 5 everywhere: penalty (5 − 1)² = 16
    critic = lambda x: x @ weight  # noqa: E731
    real, fake = torch.randn(8, 2), torch.randn(8, 2)
    torch.testing.assert_close(gradient_penalty(critic, real, fake), torch.tensor(16.0))
    unit = lambda x: x @ (weight / 5)  # noqa: E731
    assert float(gradient_penalty(unit, real, fake)) < 1e-10
    # differentiable in the critic's parameters (create_graph)
    layer = nn.Linear(2, 1)
    gradient_penalty(lambda x: layer(x).squeeze(1), real, fake).backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_r1_penalty_by_hand():
    real = torch.randn(8, 2, dtype=torch.float64)
    linear = lambda x: x @ torch.tensor([3.0, 4.0], dtype=torch.float64)  # noqa: E731  ∇D = w: R1 = ‖w‖² = 25
    torch.testing.assert_close(r1_penalty(linear, real), torch.tensor(25.0, dtype=torch.float64))
    quadratic = lambda x: x.pow(2).sum(1)  # noqa: E731  ∇D = 2x: R1 = 4 E‖x‖²
    torch.testing.assert_close(r1_penalty(quadratic, real), 4 * real.pow(2).sum(1).mean())
    shifted = lambda x, y: (x - y).pow(2).sum(1)  # noqa: E731  the condition reaches D
    torch.testing.assert_close(r1_penalty(shifted, real, real), torch.tensor(0.0, dtype=torch.float64))
    layer = nn.Linear(2, 1).double()
    r1_penalty(lambda x: layer(x).squeeze(1), real).backward()  # differentiable in D's parameters: d‖w‖²/dw = 2w
    torch.testing.assert_close(layer.weight.grad, 2 * layer.weight.detach())
    assert real.grad is None  # the real batch is not touched


def test_with_r1_sets_gamma_and_checks_it():
    base = objective("non_saturating")
    assert with_r1(base, 10.0).r1_weight == 10.0 and with_r1(base, 10.0).lr == base.lr
    assert with_r1(base, 0.0) == base
    with pytest.raises(ValueError, match=r"gamma must be a finite float >= 0, got -1.0"):
        with_r1(base, -1.0)
    with pytest.raises(TypeError, match="base must be an Objective"):
        with_r1("non_saturating", 1.0)


def test_weight_clipping_and_spectral_norm():
    torch.manual_seed(0)
    layer = nn.Linear(4, 4)
    with torch.no_grad():
        layer.weight.mul_(10)
    losses.clip_weights(layer, 0.01)
    assert layer.weight.abs().max() <= 0.01 and layer.bias.abs().max() <= 0.01
    network = apply_spectral_norm(nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 1)))
    for _ in range(30):  # power iteration runs in training mode
        network(torch.randn(3, 6))
    sigma = torch.linalg.matrix_norm(network[0].weight.detach(), ord=2)
    assert abs(float(sigma) - 1.0) < 1e-3


def test_optimal_discriminator_maximizes_the_value_function():
    p = torch.tensor([0.1, 0.4, 0.3, 0.2], dtype=torch.float64)
    q = torch.tensor([0.25, 0.25, 0.4, 0.1], dtype=torch.float64)
    d_star = optimal_discriminator(p, q)
    torch.testing.assert_close(d_star, p / (p + q))
    best = value_function(d_star, p, q)
    generator = torch.Generator().manual_seed(1)
    for _ in range(20):  # pointwise a log y + b log(1 − y) peaks at a / (a + b) (Goodfellow et al. 2014, Prop. 1)
        other = torch.rand(4, generator=generator, dtype=torch.float64)
        assert value_function(other, p, q) < best
    assert float(value_function(torch.full_like(p, 0.5), p, p)) == pytest.approx(-LOG4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_generator_criterion_is_minus_log4_plus_twice_jsd_discrete(seed):
    rng = np.random.default_rng(seed)
    p, q = rng.dirichlet(np.ones(6)), rng.dirichlet(np.ones(6))
    q[0] = 0.0  # disjoint supports where 0 log 0 = 0
    q /= q.sum()
    jsd = jensenshannon(p, q) ** 2  # scipy: the square root of the JS divergence, natural log
    criterion = generator_criterion(torch.from_numpy(p), torch.from_numpy(q))
    assert float(criterion) == pytest.approx(-LOG4 + 2 * jsd, abs=1e-12)
    assert float(generator_criterion(torch.from_numpy(p), torch.from_numpy(p))) == pytest.approx(-LOG4, abs=1e-12)
    disjoint = torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=torch.float64)
    assert float(generator_criterion(disjoint, disjoint.flip(0))) == pytest.approx(0.0, abs=1e-12)  # JSD = log 2


def test_generator_criterion_for_two_gaussians_by_quadrature():
    p_dist, q_dist = stats.norm(0.0, 1.0), stats.norm(1.5, 0.7)

    def jsd_integrand(x):  # JSD = ½ KL(p ‖ m) + ½ KL(q ‖ m), m = (p + q) / 2, computed independently
        p, q = p_dist.pdf(x), q_dist.pdf(x)
        m = 0.5 * (p + q)
        return 0.5 * p * np.log(p / m) + 0.5 * q * np.log(q / m)

    jsd, _ = integrate.quad(jsd_integrand, -12, 12, limit=200)
    x = torch.linspace(-12, 12, 20001, dtype=torch.float64)
    weights = torch.full_like(x, float(x[1] - x[0]))
    weights[[0, -1]] /= 2  # trapezoid rule
    p = torch.exp(torch.distributions.Normal(0.0, 1.0).log_prob(x))
    q = torch.exp(torch.distributions.Normal(1.5, 0.7).log_prob(x))
    assert float(generator_criterion(p, q, weights)) == pytest.approx(-LOG4 + 2 * jsd, abs=1e-8)


def test_earth_movers_distance_moving_unit_masses_three_units():
    # the notes' example: two unit masses each moved 3 units to the right cost W = 3
    positions_p = torch.tensor([0.0, 1.0], dtype=torch.float64)
    positions_q = positions_p + 3.0
    p = torch.tensor([0.5, 0.5], dtype=torch.float64)
    cost = (positions_p[:, None] - positions_q[None, :]).abs()
    assert earth_movers_distance(p, p, cost) == pytest.approx(3.0)
    assert stats.wasserstein_distance(positions_p.numpy(), positions_q.numpy()) == pytest.approx(3.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_earth_movers_distance_equals_scipy_in_one_dimension(seed):
    rng = np.random.default_rng(seed)
    u, v = rng.normal(size=7), rng.normal(1.0, 2.0, size=5)
    u_weights, v_weights = rng.dirichlet(np.ones(7)), rng.dirichlet(np.ones(5))
    cost = torch.from_numpy(np.abs(u[:, None] - v[None, :]))
    ours = earth_movers_distance(torch.from_numpy(u_weights), torch.from_numpy(v_weights), cost)
    assert ours == pytest.approx(stats.wasserstein_distance(u, v, u_weights, v_weights), abs=1e-9)


def test_trained_discriminator_approaches_the_optimal_one():
    torch.manual_seed(0)
    p, q = torch.distributions.Normal(0.0, 1.0), torch.distributions.Normal(2.0, 1.0)
    discriminator = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 1), nn.Flatten(0))
    optimizer = torch.optim.Adam(discriminator.parameters(), lr=1e-2)
    for _ in range(400):
        real, fake = p.sample((512, 1)), q.sample((512, 1))
        loss = losses.minimax_discriminator_loss(discriminator(real), discriminator(fake))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x = torch.linspace(-1.5, 3.5, 101)
    d_star = optimal_discriminator(p.log_prob(x).exp(), q.log_prob(x).exp())
    with torch.no_grad():
        d_trained = torch.sigmoid(discriminator(x[:, None]))
    assert (d_trained - d_star).abs().max() < 0.05
