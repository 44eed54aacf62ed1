import pytest
import torch
from torch import nn

from ppl_dgm.vae import VAE, BernoulliLikelihood, mlp_vae
from ppl_dgm.vae.manifold import interpolate, latent_manifold


class Echo(nn.Module):
    """Decoder that writes z into the first two pixels (logits), so decoded images reveal the latent."""

    def forward(self, z):
        image = torch.zeros(z.shape[0], 1, 2, 2, dtype=z.dtype)
        image[:, 0, 0, 0], image[:, 0, 0, 1] = z[:, 0], z[:, 1]
        return image


class Identity(nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :2], torch.ones(x.shape[0], 2)


def test_manifold_grid_is_inverse_normal_cdf_of_uniform_grid():
    vae = VAE(Identity(), Echo(), BernoulliLikelihood(), latent_dim=2)
    vae.dummy = nn.Parameter(torch.zeros(1))  # the grid takes device/dtype from the parameters
    images = latent_manifold(vae, n=3, margin=0.1)
    z = torch.logit(images[:, 0, 0, :2])
    quantile = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.9)).item()
    # row-major: z1 increases along a row, z2 decreases down the rows
    torch.testing.assert_close(z[:3, 0], torch.tensor([-quantile, 0.0, quantile]), atol=1e-4, rtol=0)
    torch.testing.assert_close(z[[0, 3, 6], 1], torch.tensor([quantile, 0.0, -quantile]), atol=1e-4, rtol=0)


def test_interpolation_endpoints_and_linearity():
    vae = VAE(Identity(), Echo(), BernoulliLikelihood(), latent_dim=2)
    start, end = torch.tensor([[[1.0, -2.0], [0, 0]]]), torch.tensor([[[3.0, 2.0], [0, 0]]])
    path = torch.logit(interpolate(vae, start, end, steps=5)[:, 0, 0, :2])
    expected = torch.stack([torch.linspace(1, 3, 5), torch.linspace(-2, 2, 5)], 1)
    torch.testing.assert_close(path, expected, atol=1e-4, rtol=0)


def test_manifold_errors():
    with pytest.raises(ValueError, match="latent_dim=2, got latent_dim=5"):
        latent_manifold(mlp_vae((1, 8, 8), latent_dim=5))
    vae = mlp_vae((1, 8, 8), latent_dim=2)
    with pytest.raises(ValueError, match="n must be a positive int, got 0"):
        latent_manifold(vae, n=0)
    with pytest.raises(ValueError, match="x_start and x_end must have the same shape"):
        interpolate(vae, torch.zeros(1, 8, 8), torch.zeros(1, 4, 4))
    assert latent_manifold(vae, n=4).shape == (16, 1, 8, 8)
