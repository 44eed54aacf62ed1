import pytest
import torch

from ppl_dgm.gan.stylegan import MappingNetwork, StyleGenerator
from ppl_dgm.nn import AdaptiveInstanceNorm, EqualizedConv2d, EqualizedLinear, ModulatedConv2d, NoiseInjection, adaptive_instance_norm


def test_adain_output_has_the_target_per_channel_mean_and_std():
    generator = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(4, 5, 8, 8, generator=generator) + 2
    scale, bias = torch.rand(4, 5, generator=generator) + 0.5, torch.randn(4, 5, generator=generator)
    out = adaptive_instance_norm(x, scale, bias, eps=0.0)  # Huang & Belongie 2017, eq. 8
    torch.testing.assert_close(out.mean(dim=(2, 3)), bias, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(dim=(2, 3), unbiased=False), scale, atol=1e-5, rtol=0)


def test_adain_module_maps_the_style_to_scale_and_bias():
    torch.manual_seed(0)
    norm = AdaptiveInstanceNorm(channels=3, style_dim=2)
    with torch.no_grad():
        norm.affine.weight.zero_()
        # (y_s, y_b) = A w, w = (1, 0); the stored weight is scaled by 1/√style_dim at run time (equalized lr)
        norm.affine.weight[:, 0] = torch.tensor([1.0, 2.0, 3.0, -1.0, 0.0, 1.0]) * 2**0.5
        norm.affine.bias.zero_()
    out = norm(torch.randn(2, 3, 6, 6) * 5, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    torch.testing.assert_close(out.mean(dim=(2, 3)), torch.tensor([[-1.0, 0.0, 1.0]] * 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(dim=(2, 3), unbiased=False), torch.tensor([[1.0, 2.0, 3.0]] * 2), atol=1e-3, rtol=0)


def test_noise_injection_is_per_channel_scaled_shared_noise():
    injection = NoiseInjection(3)
    x = torch.zeros(2, 3, 4, 4)
    assert torch.equal(injection(x), x)  # B_c starts at 0
    with torch.no_grad():
        injection.weight.copy_(torch.tensor([1.0, -2.0, 0.5]))
    noise = torch.randn(2, 1, 4, 4)
    torch.testing.assert_close(injection(x, noise), noise * torch.tensor([1.0, -2.0, 0.5]).view(1, 3, 1, 1))


def test_modulated_conv_demodulates_to_unit_norm_and_matches_a_plain_conv():
    torch.manual_seed(0)
    conv = ModulatedConv2d(3, 4, 3, style_dim=5)
    style = torch.randn(2, 5)
    weight = conv.modulated_weight(style)
    torch.testing.assert_close(weight.pow(2).sum(dim=(2, 3, 4)), torch.ones(2, 4), atol=1e-5, rtol=0)  # Karras et al. 2020, eq. 3
    x = torch.randn(2, 3, 6, 6)
    out = conv(x, style)
    for b in range(2):  # the grouped conv equals one conv per sample with that sample's weight
        torch.testing.assert_close(out[b : b + 1], torch.nn.functional.conv2d(x[b : b + 1], weight[b], padding=1), atol=1e-5, rtol=1e-5)


def test_equalized_layers_scale_n01_weights_at_run_time_and_slow_the_mapping_network():
    torch.manual_seed(0)
    layer = EqualizedLinear(400, 300, gain=2**0.5, lr_multiplier=0.01, bias_init=0.5)
    x = torch.randn(7, 400)
    torch.testing.assert_close(layer(x), x @ (layer.weight * 0.01 * (2 / 400) ** 0.5).T + 0.5)  # c = gain / √fan_in · lr_mul
    assert abs(float(layer.weight.detach().std()) * 0.01 - 1) < 0.01  # stored N(0, 1) / lr_mul: run-time std is He's √(2 / fan_in)
    layer(x).sum().backward()  # the stored weight's gradient carries the factor c, so Adam's step moves it c-times slower
    torch.testing.assert_close(layer.weight.grad, torch.ones(300, 1) * x.sum(0)[None] * 0.01 * (2 / 400) ** 0.5)
    conv = EqualizedConv2d(4, 5, 3, padding=1, gain=2**0.5)
    image = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(conv(image), torch.nn.functional.conv2d(image, conv.weight * (2 / 36) ** 0.5, conv.bias, padding=1))
    w = MappingNetwork(64, 64)(torch.randn(2000, 64)).detach()  # at init w depends on z (default init gave std 0.02 across z)
    assert float(w.std(0).mean()) > 0.5


def test_style_mixing_takes_styles_after_the_crossover_from_the_second_latent():
    torch.manual_seed(0)
    generator = StyleGenerator(8, (1, 28, 28), channels=8)
    z, z_mix = torch.randn(3, 8), torch.randn(3, 8)
    styles = generator.styles(z, z_mix, torch.tensor([1, 3, 6]))
    w, w_mix = MappingNetwork.forward(generator.mapping, z), generator.mapping(z_mix)
    assert generator.num_styles == 6 and styles.shape == (3, 6, 8)
    torch.testing.assert_close(styles[0, 0], w[0])
    torch.testing.assert_close(styles[0, 1:], w_mix[0].expand(5, -1))
    torch.testing.assert_close(styles[1, :3], w[1].expand(3, -1))
    torch.testing.assert_close(styles[2], w[2].expand(6, -1))  # crossover after the last layer: no mixing
    generator.eval()
    noise = generator.make_noise(3, torch.Generator().manual_seed(0))
    assert [n.shape[-1] for n in noise] == [7, 7, 14, 14, 28, 28]
    images = generator.synthesize(styles, noise)
    assert images.shape == (3, 1, 28, 28)
    coarse_only = generator.synthesize(generator.styles(z, z_mix, 4), noise)  # styles differ only in the fine layers
    assert not torch.allclose(coarse_only, generator.synthesize(generator.styles(z), noise))


def test_generator_uses_a_learned_constant_and_rejects_bad_shapes():
    generator = StyleGenerator(8, (1, 28, 28), channels=8).eval()
    assert generator.constant.requires_grad and generator.constant.shape == (1, 8, 7, 7)
    for module in generator.modules():
        if isinstance(module, NoiseInjection):
            torch.nn.init.constant_(module.weight, 0.1)  # learned B_c start at 0: make the noise visible
    torch.manual_seed(1)
    first = generator(torch.zeros(2, 8) + 1)
    torch.manual_seed(2)
    assert not torch.equal(first, generator(torch.zeros(2, 8) + 1))  # per-layer noise makes stochastic detail
    with pytest.raises(ValueError, match=r"image_shape must be \(C, 28, 28\) or \(C, 32, 32\), got \(1, 8, 8\)"):
        StyleGenerator(8, (1, 8, 8))
    with pytest.raises(ValueError, match="mixing_probability must lie in \\[0, 1\\], got 1.5"):
        StyleGenerator(8, mixing_probability=1.5)


def test_truncation_psi_zero_gives_the_image_of_the_mean_style():
    torch.manual_seed(0)
    generator = StyleGenerator(8, (1, 28, 28), channels=8, mixing_probability=0.0)
    z_train = torch.randn(16, 8)
    generator(z_train)  # training mode: w̄ ← lerp(w̄ = 0, mean w, 0.005), also without style mixing
    torch.testing.assert_close(generator.mean_style, 0.005 * generator.mapping(z_train).mean(0).detach())
    assert generator.mean_style.abs().sum() > 0
    with torch.no_grad():
        generator.mean_style.copy_(torch.randn(8))  # a w̄ far from every w, so ψ shows
    generator.eval()  # noise strengths start at 0: the image is a function of the styles only
    z = torch.randn(5, 8)
    mean_image = generator.synthesize(generator.mean_style.expand(1, generator.num_styles, -1))
    torch.testing.assert_close(generator(z, truncation=0.0), mean_image.expand(5, -1, -1, -1))  # ψ = 0: every z gives f(w̄)
    halfway = generator.synthesize(0.5 * (generator.styles(z) + generator.mean_style))  # w' = w̄ + ψ (w − w̄)
    torch.testing.assert_close(generator(z, truncation=0.5), halfway)
    torch.testing.assert_close(generator(z, truncation=1.0), generator.synthesize(generator.styles(z)))
    with pytest.raises(ValueError, match=r"truncation must be a finite float \(ψ, usually in \[0, 1\]\), got nan"):
        generator(z, truncation=float("nan"))


def test_residual_discriminator_blocks_are_the_scaled_sum_of_the_two_paths():
    from torch.nn import functional as F

    from ppl_dgm.gan.stylegan import ResidualDiscriminator

    torch.manual_seed(0)
    discriminator = ResidualDiscriminator((1, 28, 28), channels=8, minibatch_std=True)
    block = discriminator.blocks[0]
    x = torch.randn(3, 4, 28, 28)

    def conv(layer, h):  # equalized lr: N(0, 1) weights times gain / sqrt(fan_in) at run time (Karras et al. 2018, sec. 4.1)
        return F.conv2d(h, layer.weight * layer.weight_scale, layer.bias, padding=layer.padding)

    main = F.avg_pool2d(F.leaky_relu(conv(block.conv2, F.leaky_relu(conv(block.conv1, x), 0.2)), 0.2), 2)
    expected = (main + conv(block.skip, F.avg_pool2d(x, 2))) / 2**0.5  # Karras et al. 2020, Fig. 7c
    assert torch.allclose(block(x), expected, atol=1e-6)
    assert block.conv1.weight_scale == pytest.approx(2**0.5 / (4 * 9) ** 0.5)
    images = torch.randn(5, 1, 28, 28)
    assert discriminator(images).shape == (5,)
    assert [b.skip.weight.shape[:2] for b in discriminator.blocks] == [(8, 4), (16, 8)]  # widths 4 -> 8 -> 16, side 28 -> 7
    assert discriminator.fc.weight.shape == (16, 16 * 7 * 7)
    assert ResidualDiscriminator((3, 32, 32), channels=8)(torch.randn(2, 3, 32, 32)).shape == (2,)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, 28, 28\), got shape \(5, 28, 28\)"):
        discriminator(images[:, 0])
    with pytest.raises(ValueError, match="image_shape must be"):
        ResidualDiscriminator((1, 64, 64))


def test_gan_config_takes_the_residual_discriminator_and_adam_betas():
    from ppl_dgm.gan.experiment import GANConfig, build_networks, config_objective
    from ppl_dgm.gan.stylegan import ResidualDiscriminator

    config = GANConfig(arch="stylegan", discriminator="residual", beta1=0.0, beta2=0.99, r1_gamma=0.5, channels=8, latent_dim=8)
    _, discriminator = build_networks(config)
    assert isinstance(discriminator, ResidualDiscriminator)
    recipe = config_objective(config)
    assert recipe.betas == (0.0, 0.99) and recipe.r1_weight == 0.5 and recipe.lr == 2e-4
    assert config_objective(GANConfig(beta2=0.9)).betas == (0.5, 0.9)  # the other β stays the recipe's
    with pytest.raises(ValueError, match="discriminator='residual' takes no labels"):
        GANConfig(arch="cgan", discriminator="residual")
    with pytest.raises(ValueError, match=r"beta2 must be a float in \[0, 1\) \(an Adam β\), got 1.0"):
        GANConfig(beta2=1.0)
    with pytest.raises(ValueError, match="discriminator='patch' is not known"):
        GANConfig(discriminator="patch")


def test_style_generator_tanh_output_bounds_the_linear_to_image_output():
    from ppl_dgm.gan.experiment import GANConfig, build_networks

    torch.manual_seed(0)
    linear = StyleGenerator(latent_dim=8, channels=8, mixing_probability=0.0)
    bounded = StyleGenerator(latent_dim=8, channels=8, mixing_probability=0.0, tanh=True)
    bounded.load_state_dict(linear.state_dict())  # tanh has no parameters: the same checkpoint
    styles = linear.styles(torch.randn(4, 8))
    noise = linear.make_noise(4, torch.Generator().manual_seed(1))
    assert torch.allclose(bounded.synthesize(styles, noise), torch.tanh(linear.synthesize(styles, noise)))
    generator, _ = build_networks(GANConfig(arch="stylegan", tanh_output=True, channels=8, latent_dim=8))
    assert generator.tanh and not build_networks(GANConfig(arch="stylegan", channels=8, latent_dim=8))[0].tanh
