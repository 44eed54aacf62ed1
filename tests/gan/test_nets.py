import pytest
import torch
from torch import nn

from ppl_dgm.gan.nets import DCGANDiscriminator, DCGANGenerator, MinibatchStd, PatchDiscriminator, Pix2PixGenerator, ResnetGenerator


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_dcgan_shapes_and_architecture_rules(shape):
    torch.manual_seed(0)
    generator = DCGANGenerator(16, shape, channels=8)
    discriminator = DCGANDiscriminator(shape, channels=8)
    images = generator(torch.randn(5, 16)).detach()
    assert images.shape == (5, *shape) and float(images.abs().max()) <= 1.0
    assert discriminator(images).shape == (5,)
    # Radford et al. 2016: no pooling (strided convs), batchnorm, ReLU in G with tanh output, LeakyReLU 0.2 in D
    g_layers, d_layers = list(generator.layers), list(discriminator.layers)
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.Linear)) for m in generator.modules())
    assert isinstance(g_layers[-1], nn.Tanh) and any(isinstance(m, nn.ReLU) for m in g_layers)
    assert all(m.negative_slope == 0.2 for m in d_layers if isinstance(m, nn.LeakyReLU))
    assert isinstance(d_layers[0], nn.Conv2d) and not isinstance(d_layers[1], nn.BatchNorm2d)  # no BN on the input layer
    assert sum(isinstance(m, nn.BatchNorm2d) for m in generator.modules()) == {28: 2, 32: 3}[shape[1]]  # all but the output
    assert any(isinstance(m, nn.BatchNorm2d) for m in discriminator.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in DCGANDiscriminator(shape, 8, batch_norm=False).modules())


def test_conditional_networks_use_the_label():
    torch.manual_seed(0)
    generator = DCGANGenerator(8, channels=8, num_classes=10).eval()
    discriminator = DCGANDiscriminator(channels=8, num_classes=10).eval()
    z = torch.randn(2, 8)
    three, seven = torch.tensor([3, 3]), torch.tensor([7, 7])
    assert not torch.allclose(generator(z, three), generator(z, seven))
    x = generator(z, three)
    assert not torch.allclose(discriminator(x, three), discriminator(x, seven))
    with pytest.raises(ValueError, match=r"class-conditional: y \(B,\) of labels is required, got None"):
        generator(z)


def test_minibatch_std_sees_a_collapsed_batch():
    collapsed = torch.randn(1, 3, 4, 4).expand(6, -1, -1, -1)
    out = MinibatchStd()(collapsed)
    assert out.shape == (6, 4, 4, 4) and float(out[:, 3].max()) < 1e-3
    spread = MinibatchStd()(torch.randn(6, 3, 4, 4))
    assert float(spread[:, 3].min()) > 0.5
    assert DCGANDiscriminator(channels=8, minibatch_std=True)(torch.randn(3, 1, 28, 28)).shape == (3,)


def test_image_to_image_networks_keep_the_image_shape():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 28, 28)
    assert Pix2PixGenerator(1, 1, channels=8)(x).shape == x.shape
    assert ResnetGenerator(1, 1, channels=4, num_blocks=2)(x).shape == x.shape
    patch = PatchDiscriminator(2, channels=8)(torch.cat([x, x], 1))
    assert patch.shape == (2, 12, 12)  # one score per overlapping patch (Isola et al. 2017, sec. 2.2)
    with pytest.raises(ValueError, match=r"image_shape must be \(C, 28, 28\) or \(C, 32, 32\), got \(1, 64, 64\)"):
        DCGANGenerator(8, (1, 64, 64))
    with pytest.raises(ValueError, match="norm must be 'batch' or 'instance', got 'layer'"):
        PatchDiscriminator(2, norm="layer")
