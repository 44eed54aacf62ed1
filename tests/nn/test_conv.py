import pytest
import torch

from ppl_dgm.nn.conv import ConvDecoder, ConvEncoder

IMAGE_SHAPES = [(c, side, side) for side in (8, 28, 32) for c in (1, 3)]


@pytest.mark.parametrize("image_shape", IMAGE_SHAPES)
def test_encoder_decoder_shapes_and_roundtrip(image_shape):
    encoder = ConvEncoder(image_shape, out_features=6, channels=8)
    decoder = ConvDecoder(6, image_shape, channels=8)
    x = torch.rand(2, *image_shape)
    code = encoder(x)
    assert code.shape == (2, 6)
    assert decoder(code).shape == (2, *image_shape)


@pytest.mark.parametrize("image_shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8)])
def test_gradient_reaches_every_parameter(image_shape):
    encoder = ConvEncoder(image_shape, out_features=4, channels=8)
    decoder = ConvDecoder(4, image_shape, channels=8)
    decoder(encoder(torch.rand(2, *image_shape))).square().mean().backward()
    for name, parameter in [*encoder.named_parameters(), *decoder.named_parameters()]:
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_unsupported_image_shape():
    with pytest.raises(ValueError, match=r"image_shape must be one of \(C, 8, 8\), \(C, 28, 28\), \(C, 32, 32\), got \(1, 16, 16\)"):
        ConvEncoder((1, 16, 16), out_features=4)
    with pytest.raises(ValueError, match=r"image_shape must be \(C, H, W\), one of .*got \(28, 28\)"):
        ConvDecoder(4, (28, 28))
    with pytest.raises(ValueError, match=r"out_features must be a positive int, got 0"):
        ConvEncoder((1, 28, 28), out_features=0)


def test_image_shape_must_be_positive_ints():
    with pytest.raises(ValueError, match=r"image_shape must be a sequence of positive ints, got \(0, 28, 28\)"):
        ConvEncoder((0, 28, 28), out_features=4)


@pytest.mark.parametrize("shape, side", [((1, 8, 8), 2), ((1, 28, 28), 7), ((3, 32, 32), 4)])
def test_feature_encoder_decoder_keep_a_spatial_latent(shape, side):
    from ppl_dgm.nn import ConvFeatureDecoder, ConvFeatureEncoder

    encoder, decoder = ConvFeatureEncoder(shape, out_channels=5, channels=8), ConvFeatureDecoder(5, shape, channels=8)
    features = encoder(torch.rand(2, *shape))
    assert features.shape == (2, 5, side, side) == (2, *encoder.feature_shape)
    assert decoder(features).shape == (2, *shape)
