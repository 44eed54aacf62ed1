"""Pictures of a VAE's latent space: the decoded 2-D manifold and latent interpolations."""
from __future__ import annotations

import torch

from ppl_dgm._checks import check_positive_int

__all__ = ["latent_manifold", "interpolate"]


@torch.no_grad()
def latent_manifold(vae, n: int = 20, margin: float = 0.05) -> torch.Tensor:
    """Decode an n×n grid of a 2-D latent space, (n·n, C, H, W), row-major with z2 decreasing down the rows.

    Grid points are Φ⁻¹ of a uniform grid on [margin, 1 − margin]², so equal areas of the prior
    N(0, I) get equal room (Kingma & Welling 2014, fig. 4).
    """
    check_positive_int("n", n)
    if vae.latent_dim != 2:
        raise ValueError(f"latent_manifold needs a VAE with latent_dim=2, got latent_dim={vae.latent_dim}")
    if not 0.0 < margin < 0.5:
        raise ValueError(f"margin must be in (0, 0.5), got {margin!r}")
    parameter = next(vae.parameters())
    uniform = torch.linspace(margin, 1.0 - margin, n, dtype=torch.float64)
    coordinates = torch.distributions.Normal(0.0, 1.0).icdf(uniform)
    z2, z1 = torch.meshgrid(coordinates.flip(0), coordinates, indexing="ij")
    z = torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=1).to(device=parameter.device, dtype=parameter.dtype)
    return vae.decode(z)


@torch.no_grad()
def interpolate(vae, x_start: torch.Tensor, x_end: torch.Tensor, steps: int = 10) -> torch.Tensor:
    """Decode the straight line between the codes (posterior means) of two images, (steps, C, H, W), endpoints included."""
    check_positive_int("steps", steps)
    if x_start.shape != x_end.shape:
        raise ValueError(f"x_start and x_end must have the same shape, got {tuple(x_start.shape)} and {tuple(x_end.shape)}")
    codes = vae.encode(torch.stack([x_start, x_end]))
    loc = codes[0] if isinstance(codes, tuple) else codes  # VAEs give (loc, scale), autoencoders a code
    weights = torch.linspace(0.0, 1.0, steps, device=loc.device, dtype=loc.dtype)
    weights = weights.view(steps, *([1] * (loc.dim() - 1)))  # codes may be vectors or feature maps
    return vae.decode((1 - weights) * loc[0] + weights * loc[1])
