import numpy as np
import pytest
import torch
from pyro.infer import Trace_ELBO
from sklearn.decomposition import FactorAnalysis as SklearnFactorAnalysis

from ppl_dgm.lvm import PPCA, FactorAnalysis


def factor_data(n=500, data_dim=6, latent_dim=2, seed=0, isotropic=False):
    g = torch.Generator().manual_seed(seed)
    weight = 1.5 * torch.randn(data_dim, latent_dim, generator=g)
    noise = torch.full((data_dim,), 0.5) if isotropic else torch.rand(data_dim, generator=g) + 0.2
    z = torch.randn(n, latent_dim, generator=g)
    return (z @ weight.T + noise.sqrt() * torch.randn(n, data_dim, generator=g) + 1.0).double()


def test_fa_em_is_monotone_and_matches_sklearn_score():
    x = factor_data()
    fa = FactorAnalysis(6, 2).double()
    trace = fa.fit_em(x, tol=1e-11, max_iter=5000)
    assert np.all(np.diff(trace) >= -1e-10)
    reference = SklearnFactorAnalysis(2, tol=1e-10, max_iter=100000, svd_method="lapack").fit(x.numpy())
    assert fa.log_likelihood(x) == pytest.approx(reference.score(x.numpy()), rel=1e-4)
    # the same model: the implied covariances W Wᵀ + Ψ agree too
    covariance = fa.weight @ fa.weight.T + torch.diag(fa.psi)
    np.testing.assert_allclose(covariance.detach().numpy(), reference.get_covariance(), atol=1e-4)


def test_ppca_em_spans_the_principal_subspace_with_closed_form_noise():
    x = factor_data(isotropic=True, latent_dim=2)
    ppca = PPCA(6, 2).double()
    trace = ppca.fit_em(x, tol=1e-13, max_iter=5000)
    assert np.all(np.diff(trace) >= -1e-10)
    eigenvalues, eigenvectors = torch.linalg.eigh(torch.cov(x.T, correction=0))
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
    top = eigenvectors[:, :2]
    basis, _ = torch.linalg.qr(ppca.weight.detach())
    torch.testing.assert_close(basis @ basis.T, top @ top.T, atol=1e-6, rtol=0)  # same projector
    # σ²_ML is the mean of the discarded eigenvalues (Tipping & Bishop 1999, eq. 8)
    assert ppca.noise_variance.item() == pytest.approx(eigenvalues[2:].mean().item(), rel=1e-6)
    closed = PPCA(6, 2).double()
    assert closed.fit_closed_form(x) == pytest.approx(ppca.log_likelihood(x), rel=1e-9)
    # |W|² per direction is λ_k − σ² (eq. 7)
    singular = torch.linalg.svdvals(ppca.weight.detach()) ** 2
    torch.testing.assert_close(singular, eigenvalues[:2] - eigenvalues[2:].mean(), rtol=1e-5, atol=0)


def test_elbo_with_the_exact_posterior_is_the_marginal_log_likelihood():
    x = factor_data(n=200)
    fa = FactorAnalysis(6, 2).double()
    fa.fit_em(x, max_iter=200, tol=1e-4)
    elbo = -Trace_ELBO().differentiable_loss(fa.model, fa.guide, x).item() / x.shape[0]
    # log p(x, z) − log p(z | x) = log p(x) for every z, so even one sample is exact
    assert elbo == pytest.approx(fa.log_likelihood(x), rel=1e-10)
    perturbed = FactorAnalysis(6, 2).double()
    perturbed.load_state_dict(fa.state_dict())
    with torch.no_grad():
        perturbed.weight = fa.weight * 1.2
    # a guide that is not the posterior gives a strictly smaller ELBO
    wrong = -Trace_ELBO(num_particles=20).differentiable_loss(fa.model, perturbed.guide, x).item() / x.shape[0]
    assert wrong < fa.log_likelihood(x) - 1e-3


def test_marginal_density_is_the_gaussian_with_low_rank_covariance():
    fa = FactorAnalysis(3, 1).double()
    with torch.no_grad():
        fa.loc = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
        fa.weight = torch.tensor([[1.0], [0.5], [-2.0]], dtype=torch.float64)
        fa.noise_variance = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64)
    covariance = fa.weight @ fa.weight.T + torch.diag(fa.noise_variance)
    expected = torch.distributions.MultivariateNormal(fa.loc, covariance_matrix=covariance).log_prob(x)
    torch.testing.assert_close(fa.log_prob(x), expected)
    draws = fa.sample(20000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(torch.cov(draws.T), covariance.detach(), atol=0.05, rtol=0.05)  # ~4 standard errors


def test_bad_input():
    with pytest.raises(ValueError, match="latent_dim must be a positive int, got 0"):
        FactorAnalysis(5, 0)
    with pytest.raises(ValueError, match="latent_dim must be smaller than data_dim=3, got latent_dim=3"):
        PPCA(3, 3)
    with pytest.raises(TypeError, match="data_dim must be an int"):
        FactorAnalysis(5.0, 2)
    fa = FactorAnalysis(4, 2)
    with pytest.raises(ValueError, match=r"x must be 2-D \(N, D\), got shape \(2, 2, 2\)"):
        fa.fit_em(torch.randn(2, 2, 2))
    with pytest.raises(ValueError, match="x has 5 features per row"):
        fa.log_likelihood(torch.randn(3, 5))
    with pytest.raises(ValueError, match="x contains 2 NaN or infinite values"):
        fa.fit_em(torch.tensor([[0.0, 1.0, float("inf"), 2.0], [float("nan"), 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="x has 1 rows; expected at least 2"):
        PPCA(4, 2).fit_closed_form(torch.randn(1, 4))
    with pytest.raises(ValueError, match="init must be 'pca', 'current' or 'state'"):
        fa.fit_em(torch.randn(10, 4), init="kmeans")
