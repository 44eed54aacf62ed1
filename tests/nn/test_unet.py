import time

import pytest
import torch

from ppl_dgm.nn.blocks import AttentionBlock
from ppl_dgm.nn.unet import UNet

# Small configs, one per supported image size: (image_shape, constructor keywords).
CONFIGS = [
    ((1, 28, 28), dict(channels=8, channel_mults=(1, 2, 2), attention_resolutions=(7,), image_size=28)),
    ((3, 32, 32), dict(channels=8, channel_mults=(1, 2, 2), attention_resolutions=(8,), image_size=32)),
    ((1, 8, 8), dict(channels=8, channel_mults=(1, 2), attention_resolutions=(4,), image_size=8)),
]


def small_unet(**overrides):
    keywords = dict(channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(4,), image_size=8, groups=4)
    keywords.update(overrides)
    return UNet(**keywords)


def perturb_output_layer(network):
    # The last conv is zero-initialized, so the output is exactly zero until it is perturbed.
    with torch.no_grad():
        network.output_conv.weight.normal_(0.0, 0.1)
        network.output_conv.bias.normal_(0.0, 0.1)
    return network


def test_output_is_zero_at_init():
    network = small_unet()
    assert torch.count_nonzero(network(torch.randn(2, 1, 8, 8), 0.5)) == 0


@pytest.mark.parametrize("image_shape, keywords", CONFIGS)
def test_output_shapes(image_shape, keywords):
    network = UNet(in_channels=image_shape[0], **keywords)
    x = torch.randn(2, *image_shape)
    assert network(x, torch.rand(2)).shape == x.shape
    wider = UNet(in_channels=image_shape[0], out_channels=2 * image_shape[0], **keywords)
    assert wider(x, 0.3).shape == (2, 2 * image_shape[0], *image_shape[1:])


def test_attention_is_placed_at_the_listed_resolutions():
    network = UNet(channels=8, attention_resolutions=(7,))
    # Levels of a 28x28 input: 28, 14, 7; attention at level 2 on the way down and up, and in the middle.
    attention_counts = [sum(isinstance(m, AttentionBlock) for m in level.attentions) for level in network.down_levels]
    assert attention_counts == [0, 0, 2]
    assert sum(isinstance(m, AttentionBlock) for m in network.modules()) == 2 + 3 + 1


def test_changing_t_changes_output():
    network = perturb_output_layer(small_unet()).eval()
    x = torch.randn(2, 1, 8, 8)
    early = network(x, torch.full((2,), 0.01))
    assert not torch.allclose(early, network(x, torch.full((2,), 0.99)))
    torch.testing.assert_close(network(x, 0.01), early)
    torch.testing.assert_close(network(x, torch.tensor(0.01)), early)


def test_changing_y_changes_output_and_minus_one_is_unconditional():
    network = perturb_output_layer(small_unet(num_classes=3)).eval()
    x, t = torch.randn(3, 1, 8, 8), torch.rand(3)
    unconditional = network(x, t)
    torch.testing.assert_close(network(x, t, torch.full((3,), -1)), unconditional)
    conditional = network(x, t, torch.tensor([0, 1, 2]))
    assert not torch.allclose(conditional, unconditional)
    assert not torch.allclose(conditional, network(x, t, torch.tensor([1, 2, 0])))
    # A mixed batch treats each sample by its own label.
    mixed = network(x, t, torch.tensor([0, -1, 2]))
    torch.testing.assert_close(mixed[1], unconditional[1])
    torch.testing.assert_close(mixed[0], conditional[0])


def test_gradient_reaches_every_parameter():
    network = small_unet(num_classes=2, dropout=0.1)
    x, t, y = torch.randn(2, 1, 8, 8), torch.rand(2), torch.tensor([1, -1])
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    # Step 1 only moves the zero-initialized output conv; after it, gradient flows everywhere.
    for _ in range(2):
        optimizer.zero_grad()
        (network(x, t, y) - torch.randn_like(x)).square().mean().backward()
        optimizer.step()
    for name, parameter in network.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def test_batch_independence():
    network = perturb_output_layer(small_unet(num_classes=3)).eval()
    x, t, y = torch.randn(4, 1, 8, 8), torch.rand(4), torch.tensor([0, 2, -1, 1])
    batched = network(x, t, y)
    for i in range(4):
        torch.testing.assert_close(network(x[i : i + 1], t[i : i + 1], y[i : i + 1]), batched[i : i + 1], atol=1e-5, rtol=1e-5)
    # Changing the other samples leaves sample 0 untouched.
    other = torch.cat([x[:1], torch.randn(3, 1, 8, 8)])
    torch.testing.assert_close(network(other, t, y)[0], batched[0], atol=1e-5, rtol=1e-5)


def test_default_size_and_speed(capsys):
    default = UNet()
    parameter_count = sum(p.numel() for p in default.parameters())
    assert parameter_count == 6_469_889  # the number quoted in UNet's docstring
    network = perturb_output_layer(UNet(channels=32))
    x, t = torch.randn(8, 1, 28, 28), torch.rand(8)
    network(x, t).square().mean().backward()  # warm-up
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        network(x, t).square().mean().backward()
        timings.append(time.perf_counter() - start)
    with capsys.disabled():
        print(
            f"\nUNet() on 1x28x28: {parameter_count:,} parameters; UNet(channels=32) forward+backward, "
            f"batch 8, {torch.get_num_threads()} thread(s): {min(timings):.3f} s"
        )
    # Loose bound (best of 3): it measures about 0.1 s; only a gross regression should fail on a busy machine.
    assert min(timings) < 3.0


def test_y_without_num_classes():
    with pytest.raises(ValueError, match=r"y was given but this UNet has num_classes=None"):
        small_unet()(torch.randn(2, 1, 8, 8), 0.5, torch.tensor([0, 1]))


def test_bad_labels_and_inputs():
    network = small_unet(num_classes=3)
    with pytest.raises(ValueError, match=r"y must hold labels in \[0, 3\)"):
        network(torch.randn(2, 1, 8, 8), 0.5, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, H, W\), got shape \(2, 3, 8, 8\)"):
        network(torch.randn(2, 3, 8, 8), 0.5)
    with pytest.raises(ValueError, match=r"t must be .* of shape \(2,\) to match x, got shape \(3,\)"):
        network(torch.randn(2, 1, 8, 8), torch.rand(3))
    with pytest.raises(ValueError, match=r"x has spatial size \(16, 16\).*placed for image_size=8; build the UNet with image_size=16"):
        network(torch.randn(2, 1, 16, 16), 0.5)


@pytest.mark.parametrize(
    "keywords, message",
    [
        (dict(channels=0), r"channels must be a positive int, got 0"),
        (dict(channels=8.0), r"channels must be an int, got 8.0 of type float"),
        (dict(channel_mults=()), r"channel_mults must contain at least one positive int, got \(\)"),
        (dict(channel_mults=(1, 0)), r"channel_mults must be a sequence of positive ints, got \(1, 0\)"),
        (dict(num_res_blocks=0), r"num_res_blocks must be a positive int, got 0"),
        (dict(dropout=1.0), r"dropout must be a probability in \[0, 1\), got 1.0"),
        (dict(num_classes=0), r"num_classes must be a positive int, got 0"),
        (dict(channels=12, groups=8), r"groups must divide channels and every level width.*not 12.*got groups=8"),
        (dict(attention_resolutions=(8,)), r"attention_resolutions must be sides of the levels of a 28x28 input, \(28, 14, 7\), got \(8,\)"),
    ],
)
def test_constructor_errors(keywords, message):
    with pytest.raises((ValueError, TypeError), match=message):
        UNet(**keywords)


def test_float64_network_runs_in_float64():
    network = perturb_output_layer(small_unet(num_classes=2)).double()
    out = network(torch.randn(2, 1, 8, 8, dtype=torch.float64), 0.5, torch.tensor([0, -1]))
    assert out.dtype == torch.float64


@pytest.mark.cuda
def test_cuda_matches_cpu():
    network = perturb_output_layer(small_unet(num_classes=3)).eval()
    x, t, y = torch.randn(2, 1, 8, 8), torch.rand(2), torch.tensor([1, -1])
    expected = network(x, t, y)
    network.cuda()
    on_device = network(x.cuda(), t.cuda(), y.cuda())
    torch.testing.assert_close(on_device.cpu(), expected, atol=1e-3, rtol=1e-3)
    # A python-float t and y=None are created on x's device, never on a default one.
    assert network(x.cuda(), 0.5).device == x.cuda().device
