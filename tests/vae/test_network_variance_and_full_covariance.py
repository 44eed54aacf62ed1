"""The decoder-variance likelihood N(μ_θ(z), diag σ_θ(z)²) and the full-covariance guide N(μ, L Lᵀ), against
hand-written densities and the closed-form KL."""
import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch.distributions import kl_divergence

from ppl_dgm.metrics.likelihood import iwae_log_likelihood
from ppl_dgm.vae.experiment import VAEConfig, build_vae
from ppl_dgm.vae.likelihoods import NetworkGaussianLikelihood, make_likelihood
from ppl_dgm.vae.vae import FullCovarianceEncoder, conv_vae, mlp_vae


def hand_gaussian_log_density(x, loc, scale):
    """Σ over pixels of −½((x − μ)/σ)² − log σ − ½ log 2π, one value per example."""
    return (-0.5 * ((x - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)


def test_network_gaussian_log_density_with_per_example_variances():
    torch.manual_seed(0)
    likelihood = make_likelihood("gaussian_network", (1, 4, 4), min_scale=0.01)
    output = torch.randn(3, 2, 4, 4) * 2  # (μ, raw σ) per example and pixel
    x = torch.rand(3, 1, 4, 4)
    loc, raw = output[:, :1], output[:, 1:]
    scale = torch.log1p(raw.exp()) + 0.01  # softplus by hand, plus the floor
    assert torch.allclose(likelihood(output).log_prob(x), hand_gaussian_log_density(x, loc, scale), atol=1e-4)
    assert torch.equal(likelihood.mean(output), loc)
    # the floor binds: a very negative raw scale gives σ = min_scale exactly
    assert torch.allclose(likelihood.split(torch.full((1, 2, 4, 4), -100.0))[1], torch.full((1, 1, 4, 4), 0.01))
    # different examples get different variances (unlike the shared per-pixel σ of likelihood="gaussian")
    assert not torch.allclose(likelihood.split(output)[1][0], likelihood.split(output)[1][1])


@pytest.mark.parametrize("min_scale", [0.0, -1e-3, float("nan"), float("inf"), True])
def test_network_gaussian_floor_must_be_positive(min_scale):
    with pytest.raises(ValueError, match=r"min_scale must be a finite float > 0 .* got"):
        NetworkGaussianLikelihood((1, 4, 4), min_scale=min_scale)
    with pytest.raises(ValueError, match="min_scale"):
        VAEConfig(likelihood="gaussian_network", min_scale=min_scale)


def test_network_gaussian_rejects_a_decoder_with_the_wrong_channels():
    with pytest.raises(ValueError, match=r"decoder output has 1 channels; gaussian_network expects 2 × 1"):
        NetworkGaussianLikelihood((1, 4, 4))(torch.zeros(2, 1, 4, 4))


@pytest.mark.parametrize("builder", [mlp_vae, conv_vae])
def test_pyro_elbo_equals_the_hand_written_one_with_decoder_variances(builder):
    """One-particle Trace_ELBO = −[log p(x|z) + log p(z) − log q(z|x)] at the z the guide drew, each term by hand."""
    torch.manual_seed(1)
    vae = builder((1, 8, 8), latent_dim=3, likelihood="gaussian_network")
    x = torch.rand(5, 1, 8, 8)
    pyro.set_rng_seed(7)
    guide_trace = pyro.poutine.trace(vae.guide).get_trace(x)
    z = guide_trace.nodes["z"]["value"]
    pyro.set_rng_seed(7)
    loss = Trace_ELBO().loss(vae.model, vae.guide, x)
    with torch.no_grad():
        output = vae.decoder(z)
        q_loc, q_scale = vae.encoder(x)
    loc, scale = output[:, :1], torch.nn.functional.softplus(output[:, 1:]) + 1e-3
    log_likelihood = hand_gaussian_log_density(x, loc, scale)
    log_prior = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(1)
    log_q = hand_gaussian_log_density(z, q_loc, q_scale)
    assert loss == pytest.approx(-(log_likelihood + log_prior - log_q).sum().item(), rel=1e-5)


def test_full_covariance_kl_is_the_closed_form():
    """KL(N(μ, Σ) ‖ N(0, I)) = ½(tr Σ + ‖μ‖² − k − log|Σ|), Σ = L Lᵀ from the encoder."""
    torch.manual_seed(2)
    vae = mlp_vae((1, 8, 8), latent_dim=4, hidden=(16,), posterior="full")
    x = torch.rand(6, 1, 8, 8)
    loc, scale_tril = vae.encoder(x)
    assert torch.equal(scale_tril, scale_tril.tril()) and (scale_tril.diagonal(dim1=-2, dim2=-1) > 0).all()
    assert (scale_tril.tril(-1) != 0).any()  # a genuinely full covariance
    sigma = scale_tril @ scale_tril.transpose(-1, -2)
    closed_form = 0.5 * (sigma.diagonal(dim1=-2, dim2=-1).sum(-1) + (loc**2).sum(-1) - 4 - torch.logdet(sigma))
    kl = kl_divergence(vae.posterior(x), vae._prior(6, x))
    assert torch.allclose(kl, closed_form, atol=1e-5)
    # the analytic-KL ELBO uses it: TraceMeanField = −E log p(x|z) + KL; with β = 1 its KL part is exactly this
    assert vae.encode(x)[1].shape == (6, 4) and torch.allclose(vae.encode(x)[1] ** 2, sigma.diagonal(dim1=-2, dim2=-1), atol=1e-6)


def test_full_covariance_with_zero_correlations_is_the_diagonal_guide():
    """Zero strict-lower outputs: the full guide's ELBO and IWAE equal the diagonal guide's with the same weights."""
    torch.manual_seed(3)
    diagonal = mlp_vae((1, 8, 8), latent_dim=3, hidden=(16,))
    full = mlp_vae((1, 8, 8), latent_dim=3, hidden=(16,), posterior="full")
    full.decoder.load_state_dict(diagonal.decoder.state_dict())
    with torch.no_grad():
        last_diag, last_full = diagonal.encoder.net.layers[-1], full.encoder.net.layers[-1]
        last_full.weight.zero_()
        last_full.bias.zero_()
        last_full.weight[:6] = last_diag.weight  # (loc, raw diagonal) rows; the 3 strict-lower rows stay 0
        last_full.bias[:6] = last_diag.bias
        for source, target in zip(list(diagonal.encoder.net.layers)[:-1], list(full.encoder.net.layers)[:-1]):
            target.load_state_dict(source.state_dict())
    x = torch.bernoulli(torch.rand(4, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    elbos = []
    for vae in (diagonal, full):
        pyro.set_rng_seed(0)
        elbos.append(TraceMeanField_ELBO(num_particles=4).loss(vae.model, vae.guide, x))
    assert elbos[0] == pytest.approx(elbos[1], rel=1e-5)
    bounds = []
    for vae in (diagonal, full):
        pyro.set_rng_seed(0)
        bounds.append(iwae_log_likelihood(vae.model, vae.guide, x, 16))
    assert torch.allclose(bounds[0], bounds[1], atol=1e-4)


def test_config_builds_and_rejects():
    vae = build_vae(VAEConfig(dataset="digits", likelihood="gaussian_network", posterior="full", latent_dim=4, hidden=16))
    assert isinstance(vae.encoder, FullCovarianceEncoder)
    assert isinstance(vae.likelihood, NetworkGaussianLikelihood) and vae.decoder(torch.zeros(2, 4)).shape == (2, 2, 8, 8)
    with pytest.raises(ValueError, match=r"posterior='cholesky' is not known; expected one of \('diagonal', 'full'\)"):
        VAEConfig(posterior="cholesky")
    with pytest.raises(ValueError, match=r"posterior='full' is implemented for model='vae'"):
        VAEConfig(model="hvae", posterior="full")
    with pytest.raises(ValueError, match="reparameterized=False .* diagonal guide only"):
        from ppl_dgm.vae.vae import VAE
        VAE(vae.encoder, vae.decoder, vae.likelihood, 4, reparameterized=False)


def test_active_units_and_per_dimension_kl():
    """A VAE whose encoder ignores all but 2 latent dims (means constant, scales 1) has 2 active units and zero KL on
    the rest; the HVAE reports both layers."""
    from ppl_dgm.vae.experiment import latent_usage
    from ppl_dgm.vae.hvae import mlp_hvae

    torch.manual_seed(0)
    vae = mlp_vae((1, 8, 8), latent_dim=5, hidden=(16,))
    with torch.no_grad():
        last = vae.encoder.net.layers[-1]
        last.weight[2:5].zero_()
        last.bias[2:5].zero_()   # loc_j = 0 for j ≥ 2
        last.weight[5:].zero_()
        last.bias[5:].fill_(math.log(math.e - 1))  # softplus → 1: scale ≈ 1 + 1e-5 for all
    x = torch.rand(200, 1, 8, 8)
    usage = latent_usage(vae, x, threshold=1e-6)
    assert usage["active_units_z"] == 2
    assert all(kl < 1e-8 for kl in usage["kl_per_dim_z"][2:]) and all(kl > 0 for kl in usage["kl_per_dim_z"][:2])
    loc, _ = vae.encode(x)
    assert usage["kl_per_dim_z"][0] == pytest.approx(float((0.5 * loc[:, 0] ** 2).mean()), rel=1e-3)  # KL(N(μ, 1)‖N(0, 1))
    hvae_usage = latent_usage(mlp_hvae((1, 8, 8), (4, 3), (16, 8)), x)
    assert set(hvae_usage) == {"active_units_z1", "active_units_z2", "kl_per_dim_z2"} and len(hvae_usage["kl_per_dim_z2"]) == 3
