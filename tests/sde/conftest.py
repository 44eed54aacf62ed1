import torch
from torch import nn

from ppl_dgm.nn.functional import expand_like


class GaussianScoreEps(nn.Module):
    """ε*(x, t) = σ(t)·C_t⁻¹(x − a(t)μ): the exact ε of data N(μ, Σ) under any SDE, C_t = a²Σ + σ²I (float64)."""

    def __init__(self, sde, mean, covariance):
        super().__init__()
        self.sde = sde
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float64))
        self.register_buffer("covariance", torch.as_tensor(covariance, dtype=torch.float64))
        self.calls = 0

    def marginal(self, t: float):
        """The exact marginal p_t = N(a μ, a²Σ + σ²I) as a torch distribution."""
        coefficient, std = self.sde._mean_coefficient_std(torch.tensor([float(t)], dtype=torch.float64))
        eye = torch.eye(self.mean.numel(), dtype=torch.float64)
        return torch.distributions.MultivariateNormal(coefficient * self.mean, coefficient**2 * self.covariance + std**2 * eye)

    def forward(self, x, t, y=None):
        self.calls += 1
        shape, x = x.shape, x.reshape(x.shape[0], -1)
        coefficient, std = self.sde._mean_coefficient_std(t)
        eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
        a = coefficient.to(x.dtype).view(-1, 1, 1)
        s = std.to(x.dtype).view(-1, 1, 1)
        covariance = a**2 * self.covariance.to(x.dtype) + s**2 * eye  # (B, D, D)
        centered = x - expand_like(coefficient.to(x.dtype), x) * self.mean.to(x.dtype)
        eps = std.to(x.dtype)[:, None] * torch.linalg.solve(covariance, centered.unsqueeze(-1)).squeeze(-1)
        return eps.reshape(shape)


def moment_errors(samples, target):
    """|mean − μ| and |cov − Σ| in units of their Monte Carlo standard errors (Gaussian samples)."""
    n = samples.shape[0]
    variances = target.covariance_matrix.diagonal()
    mean_z = (samples.mean(0) - target.mean).abs() / (variances / n).sqrt()
    cov = target.covariance_matrix
    cov_se = ((cov**2 + variances[:, None] * variances[None, :]) / n).sqrt()
    cov_z = (torch.cov(samples.T) - cov).abs() / cov_se
    return float(mean_z.max()), float(cov_z.max())


MEAN = [0.5, -0.3]
COVARIANCE = [[0.6, 0.2], [0.2, 0.3]]
