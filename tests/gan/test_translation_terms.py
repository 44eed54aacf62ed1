"""pix2pix and CycleGAN objectives term by term against hand computations on fixed tensors, and the PatchGAN
receptive field against the convolution arithmetic and the gradient's support."""
import math

import pytest
import torch
from torch import nn

from ppl_dgm.gan.nets import PatchDiscriminator
from ppl_dgm.gan.translation import cyclegan_losses, pix2pix_losses


def affine_map(weight: float, bias: float, in_channels: int = 1) -> nn.Conv2d:
    """A 1x1 convolution computing weight·(sum of channels) + bias: a generator or critic whose outputs are known by hand."""
    conv = nn.Conv2d(in_channels, 1, 1)
    with torch.no_grad():
        conv.weight.fill_(weight)
        conv.bias.fill_(bias)
    return conv


def fixed_images(seed: int, shape=(2, 1, 3, 3)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def value(loss: torch.Tensor) -> float:
    return loss.detach().item()


def log_sigmoid_by_hand(v: float) -> float:
    return -math.log1p(math.exp(-v))


def test_pix2pix_terms_by_hand():
    """D: ½[−log σ(D(s, y)) − log(1 − σ(D(s, G(s))))]; G: −log σ(D(s, G(s))) + λ·mean|G(s) − y| (Isola et al. 2017, eqs. 1–4)."""
    source, target = fixed_images(0), fixed_images(1)
    generator = affine_map(0.5, 0.1)               # G(s) = 0.5 s + 0.1
    discriminator = affine_map(0.3, -0.2, 2)      # D(s, y) = 0.3 (s + y) − 0.2 per pixel (a 1x1 "patch")
    d_loss, g_loss = pix2pix_losses(generator, discriminator, l1_weight=100.0)
    s, y = source.flatten().tolist(), target.flatten().tolist()
    fake = [0.5 * v + 0.1 for v in s]
    real_logits = [0.3 * (a + b) - 0.2 for a, b in zip(s, y)]
    fake_logits = [0.3 * (a + b) - 0.2 for a, b in zip(s, fake)]
    n = len(s)
    expected_d = 0.5 * (-sum(log_sigmoid_by_hand(v) for v in real_logits) / n
                        - sum(log_sigmoid_by_hand(-v) for v in fake_logits) / n)  # log(1 − σ(v)) = log σ(−v)
    adversarial = -sum(log_sigmoid_by_hand(v) for v in fake_logits) / n        # non-saturating −log D(G(s))
    l1 = sum(abs(f - t) for f, t in zip(fake, y)) / n
    batch = (source, target)
    assert value(d_loss(batch)) == pytest.approx(expected_d, rel=1e-6)
    assert value(g_loss(batch)) == pytest.approx(adversarial + 100.0 * l1, rel=1e-6)
    # λ enters linearly: the λ = 0 loss is the adversarial term alone
    assert value(pix2pix_losses(generator, discriminator, l1_weight=0.0)[1](batch)) == pytest.approx(adversarial, rel=1e-6)


@pytest.mark.parametrize("identity_weight", [0.0, 0.5])
def test_cyclegan_terms_by_hand(identity_weight):
    """Least-squares adversarial terms, λ·cycle L1 and identity_weight·λ·identity L1 (Zhu et al. 2017, eqs. 2–3, sec. 5.2)."""
    a, b = fixed_images(2), fixed_images(3)
    generators = nn.ModuleDict({"ab": affine_map(0.8, 0.05), "ba": affine_map(-0.6, 0.2)})
    discriminators = nn.ModuleDict({"a": affine_map(0.4, 0.3), "b": affine_map(-0.7, 0.1)})
    d_loss, g_loss = cyclegan_losses(generators, discriminators, cycle_weight=10.0, identity_weight=identity_weight)
    G = lambda v: 0.8 * v + 0.05        # noqa: E731  A → B
    F_ = lambda v: -0.6 * v + 0.2       # noqa: E731  B → A
    D_a = lambda v: 0.4 * v + 0.3       # noqa: E731
    D_b = lambda v: -0.7 * v + 0.1      # noqa: E731
    xs, ys = a.flatten().tolist(), b.flatten().tolist()
    n = len(xs)
    mean = lambda values: sum(values) / n  # noqa: E731
    # D: ½ E (D(y) − 1)² + ½ E D(G(x))² per domain (least squares, Mao et al. 2017 with a = 0, b = 1)
    expected_d = (0.5 * mean([(D_b(y) - 1) ** 2 for y in ys]) + 0.5 * mean([D_b(G(x)) ** 2 for x in xs])
                  + 0.5 * mean([(D_a(x) - 1) ** 2 for x in xs]) + 0.5 * mean([D_a(F_(y)) ** 2 for y in ys]))
    adversarial = mean([(D_b(G(x)) - 1) ** 2 for x in xs]) + mean([(D_a(F_(y)) - 1) ** 2 for y in ys])
    cycle = mean([abs(F_(G(x)) - x) for x in xs]) + mean([abs(G(F_(y)) - y) for y in ys])          # eq. 2
    identity = mean([abs(G(y) - y) for y in ys]) + mean([abs(F_(x) - x) for x in xs])            # sec. 5.2
    expected_g = adversarial + 10.0 * cycle + identity_weight * 10.0 * identity
    assert value(d_loss((a, b))) == pytest.approx(expected_d, rel=1e-6)
    assert value(g_loss((a, b))) == pytest.approx(expected_g, rel=1e-6)


def receptive_field(layers) -> int:
    """Receptive field of stacked convolutions by the usual recursion r ← r + (k − 1)·j, j ← j·s."""
    r, j = 1, 1
    for kernel, stride in layers:
        r, j = r + (kernel - 1) * j, j * stride
    return r


def gradient_support(discriminator: nn.Module, in_channels: int, side: int) -> tuple[int, int]:
    """Rows and columns of the input that one central patch score depends on (non-zero gradient)."""
    discriminator.eval()
    x = torch.randn(1, in_channels, side, side, requires_grad=True)
    scores = discriminator(x)
    scores[0, scores.shape[1] // 2, scores.shape[2] // 2].backward()
    touched = x.grad.abs().sum((0, 1)) > 0
    rows, cols = touched.any(1).nonzero().flatten(), touched.any(0).nonzero().flatten()
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


@pytest.mark.parametrize("num_layers, expected", [(1, 16), (3, 70)])
def test_patchgan_receptive_field(num_layers, expected):
    """num_layers = 1: the 16x16 patches the docstring states for 28x28 digits; num_layers = 3: the 70x70 PatchGAN of
    Isola et al. 2017 (sec. 4.4). Checked by the arithmetic of the 4x4 convolutions and by the gradient's support."""
    torch.manual_seed(0)
    discriminator = PatchDiscriminator(2, channels=4, num_layers=num_layers)
    convs = [(m.kernel_size[0], m.stride[0]) for m in discriminator.modules() if isinstance(m, nn.Conv2d)]
    assert receptive_field(convs) == expected
    assert gradient_support(discriminator, 2, side=2 * expected + 16) == (expected, expected)
    if num_layers == 1:
        assert discriminator(torch.zeros(3, 2, 28, 28)).shape == (3, 12, 12)
