import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

from ppl_dgm.lvm import GaussianMixture
from pyro.infer import TraceEnum_ELBO
from ppl_dgm.train import evaluate_elbo, fit_svi


def three_blobs(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = 0.5 * torch.randn(n // 3, 2, generator=g) + torch.tensor([2.0, 0.0])
    b = torch.randn(n // 2, 2, generator=g) @ torch.tensor([[1.0, 0.3], [0.0, 0.4]]) - 1.0
    c = 0.3 * torch.randn(n - n // 3 - n // 2, 2, generator=g) + torch.tensor([0.0, 3.0])
    return torch.cat([a, b, c]).double()


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_em_is_monotone_and_matches_sklearn_from_the_same_start(covariance_type):
    x = three_blobs()
    gmm = GaussianMixture(3, 2, covariance_type, reg_covar=1e-6).double()
    gmm.initialize(x, torch.Generator().manual_seed(1))
    weights, locs, covariances = (t.detach().clone() for t in (gmm.weights, gmm.locs, gmm.covariances))
    trace = gmm.fit_em(x, init="current", tol=1e-12, max_iter=2000)
    assert len(trace) > 5
    assert np.all(np.diff(trace) >= -1e-10), "EM decreased the log-likelihood"  # Bishop PRML §9.4
    precisions = torch.linalg.inv(covariances) if covariance_type == "full" else 1 / covariances
    reference = SklearnGaussianMixture(3, covariance_type=covariance_type, weights_init=weights.numpy(), means_init=locs.numpy(),
                                       precisions_init=precisions.numpy(), tol=1e-12, max_iter=2000, reg_covar=1e-6).fit(x.numpy())
    assert reference.converged_
    assert gmm.log_likelihood(x) == pytest.approx(reference.score(x.numpy()), rel=1e-6)
    assert trace[-1] == pytest.approx(gmm.log_likelihood(x), rel=1e-9)
    np.testing.assert_allclose(gmm.weights.detach().numpy(), reference.weights_, atol=1e-5)
    np.testing.assert_allclose(gmm.locs.detach().numpy(), reference.means_, atol=1e-5)


def test_log_likelihood_is_the_mixture_density():
    gmm = GaussianMixture(2, 1, "diag").double()
    f64 = dict(dtype=torch.float64)
    gmm.set_parameters(torch.tensor([0.3, 0.7], **f64), torch.tensor([[-1.0], [2.0]], **f64), torch.tensor([[0.25], [4.0]], **f64))
    x = torch.tensor([[0.0], [1.5], [-3.0]], dtype=torch.float64)
    normal = torch.distributions.Normal
    expected = torch.log(0.3 * normal(-1.0, 0.5).log_prob(x).exp() + 0.7 * normal(2.0, 2.0).log_prob(x).exp()).mean()
    assert gmm.log_likelihood(x) == pytest.approx(expected.item(), rel=1e-8)  # constraint transforms round-trip to ~1e-9
    responsibilities = gmm.responsibilities(x)
    torch.testing.assert_close(responsibilities.sum(-1), torch.ones(3, dtype=torch.float64))


def test_svi_with_enumeration_reaches_the_em_log_likelihood():
    x = three_blobs().float()
    em = GaussianMixture(3, 2, "full")
    em.initialize(x, torch.Generator().manual_seed(1))
    svi = GaussianMixture(3, 2, "full")
    svi.load_state_dict(em.state_dict())
    em_trace = em.fit_em(x, init="current")
    # the guide is empty and the assignment is summed out, so the ELBO is the exact log-likelihood
    elbo = evaluate_elbo(svi.model, svi.guide, (x,), loss=TraceEnum_ELBO(max_plate_nesting=1))
    assert elbo == pytest.approx(svi.log_likelihood(x), rel=1e-5)
    fit_svi(svi.model, svi.guide, (x,), loss=TraceEnum_ELBO(max_plate_nesting=1), epochs=300, batch_size=300, device="cpu",
            optim=lambda p: torch.optim.Adam(p, lr=0.05), progress=False)
    assert svi.log_likelihood(x) > em_trace[0] + 0.5  # it learned
    assert abs(svi.log_likelihood(x) - em_trace[-1]) / abs(em_trace[-1]) < 0.01


def test_sample_has_the_mixture_moments():
    gmm = GaussianMixture(2, 2, "full").double()
    gmm.set_parameters(torch.tensor([0.5, 0.5]), torch.tensor([[-2.0, 0.0], [2.0, 1.0]]), torch.eye(2).expand(2, 2, 2) * 0.5)
    draws = gmm.sample(20000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(draws.mean(0), torch.tensor([0.0, 0.5], dtype=torch.float64), atol=0.05, rtol=0)


def test_bad_input():
    with pytest.raises(ValueError, match="num_components must be a positive int, got 0"):
        GaussianMixture(0, 2)
    with pytest.raises(ValueError, match="data_dim must be a positive int, got -1"):
        GaussianMixture(2, -1)
    with pytest.raises(ValueError, match="covariance_type must be one of"):
        GaussianMixture(2, 2, "tied")
    gmm = GaussianMixture(3, 2)
    with pytest.raises(ValueError, match=r"x must be 2-D \(N, D\), got shape \(10,\)"):
        gmm.fit_em(torch.randn(10))
    with pytest.raises(ValueError, match="x has 3 features per row .* data_dim=2"):
        gmm.fit_em(torch.randn(10, 3))
    x = torch.randn(10, 2)
    x[4, 1] = float("nan")
    with pytest.raises(ValueError, match="x contains 1 NaN or infinite values"):
        gmm.fit_em(x)
    with pytest.raises(ValueError, match="x has 2 rows; expected at least 3 .one per component. for num_components=3"):
        gmm.fit_em(torch.randn(2, 2))
    with pytest.raises(ValueError, match=r"locs must be a tensor of shape \(3, 2\)"):
        gmm.set_parameters(torch.ones(3), torch.zeros(2, 2), torch.eye(2).expand(3, 2, 2))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        gmm.log_likelihood([[0.0, 1.0]])
