import pyro
import pytest
import torch

from ppl_dgm.analysis import posterior_errors, to_inference_data
from ppl_dgm.lvm import AUTOGUIDES, PPCA, BayesianFactorAnalysis, BayesianPPCA, FactorAnalysis, fit_autoguide, run_nuts


def factor_data(n, seed=0, latent_dim=2):
    """Factors in D = 5 (or the first 4 coordinates and 1 factor) with unequal noise: the posterior of (W, Ψ) is correlated."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.tensor([[1.5, 0.0], [1.0, 0.8], [-0.8, 0.5], [0.5, -1.0], [0.3, 0.6]])
    noise = torch.tensor([0.3, 0.5, 0.4, 0.6, 0.2])
    if latent_dim == 1:
        weight, noise = weight[:4, :1], noise[:4]
    return (torch.randn(n, latent_dim, generator=g) @ weight.T + noise.sqrt() * torch.randn(n, noise.numel(), generator=g)).double()


def test_full_rank_guide_is_closest_to_nuts():
    x = factor_data(60, latent_dim=1)
    model = BayesianFactorAnalysis(4, 1)
    with pyro.validation_enabled(False):  # the distributions' argument checks cost ~40% of this test; the models are tested elsewhere
        runs = run_nuts(model.model, x, num_samples=100, warmup_steps=80, num_chains=2, seed=0, jit_compile=True, full_mass=True,
                        init_values=model.em_initial_values(x))
        approximations = {}
        for name in ("AutoNormal", "AutoMultivariateNormal"):
            guide = fit_autoguide(model.model, x, name, schedule=((0.05, 300), (0.005, 150)))
            approximations[name] = to_inference_data(guide, x, model=model.model, num_samples=2000, posterior_predictive=False, log_likelihood=False)
    reference = to_inference_data(runs, x, model=model.model, posterior_predictive=False, log_likelihood=False)
    table = posterior_errors(reference, approximations)
    full, mean_field = table.loc["AutoMultivariateNormal"], table.loc["AutoNormal"]
    # the full-rank Gaussian holds the posterior correlations: RMS log sd ratio to NUTS < 0.25, RMS mean error < 0.35
    # NUTS sds (measured 0.18 and 0.17, against NUTS Monte-Carlo floors of 0.065); mean-field VI is too narrow
    # (geometric-mean sd ratio measured 0.79) and further off in sd (0.33)
    assert full["sd_error"] < 0.25 and full["mean_error"] < 0.35, table
    assert mean_field["sd_ratio"] < 0.85 and mean_field["sd_error"] > full["sd_error"] + 0.05, table


def test_em_initial_values_are_the_mle_in_the_identified_form():
    x = factor_data(200)
    for bayesian, classical in ((BayesianFactorAnalysis(5, 2), FactorAnalysis(5, 2)), (BayesianPPCA(5, 2), PPCA(5, 2))):
        init = bayesian.em_initial_values(x)
        classical = classical.double()
        classical.fit_em(x, tol=1e-6, max_iter=1000)
        weight = bayesian.assemble_weight(init["weight_lower"], init["weight_diag"])
        assert weight[0, 1] == 0 and (init["weight_diag"] > 0).all()  # lower-triangular, positive diagonal
        # the rotation keeps W Wᵀ, hence the likelihood: the same model as EM's
        torch.testing.assert_close(weight @ weight.T, classical.weight @ classical.weight.T)
        torch.testing.assert_close(init["noise_variance"], classical.noise_variance.detach())
    assert BayesianPPCA(5, 2).em_initial_values(x)["noise_variance"].shape == ()


def test_bayesian_ppca_has_one_noise_variance():
    from pyro import poutine

    x = factor_data(10)
    trace = poutine.trace(BayesianPPCA(5, 2).model).get_trace(x)
    assert trace.nodes["noise_variance"]["value"].shape == ()
    covariance = trace.nodes["x"]["fn"].covariance_matrix[0]  # the same for every point of the plate
    weight = BayesianPPCA(5, 2).assemble_weight(trace.nodes["weight_lower"]["value"], trace.nodes["weight_diag"]["value"])
    torch.testing.assert_close(covariance - weight @ weight.T, trace.nodes["noise_variance"]["value"] * torch.eye(5, dtype=torch.float64))


def test_bad_arguments():
    model = BayesianFactorAnalysis(3, 1)
    x = torch.randn(8, 3)
    with pytest.raises(ValueError, match=r"guide='AutoDelta' is not known; expected one of \('AutoNormal', "):
        fit_autoguide(model.model, x, "AutoDelta")
    with pytest.raises(ValueError, match="rank is an argument of AutoLowRankMultivariateNormal only"):
        fit_autoguide(model.model, x, "AutoNormal", rank=2)
    with pytest.raises(ValueError, match="schedule must be a non-empty sequence"):
        fit_autoguide(model.model, x, "AutoNormal", schedule=((0.01, 0),))
    with pytest.raises(ValueError, match="init_values must be a dict of site values, got list"):
        fit_autoguide(model.model, x, "AutoNormal", init_values=[1.0])
    with pytest.raises(ValueError, match=r"x must be 2-D \(N, D\), got shape \(8,\)"):
        fit_autoguide(model.model, torch.randn(8), "AutoNormal")
    with pytest.raises(ValueError, match="init_values must be a dict or a sequence of num_chains=2 dicts"):
        run_nuts(model.model, x, num_chains=2, init_values=[{}])
    assert AUTOGUIDES == ("AutoNormal", "AutoLowRankMultivariateNormal", "AutoMultivariateNormal")
