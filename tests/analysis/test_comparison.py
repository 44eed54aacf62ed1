import numpy as np
import pyro
import pytest
import torch

from ppl_dgm.analysis import compare_models, heldout_log_predictive_density, posterior_errors, to_inference_data
from ppl_dgm.analysis.arviz import import_arviz
from ppl_dgm.lvm import BayesianFactorAnalysis, BayesianGaussianMixture, BayesianPPCA, run_nuts


def three_clusters_on_a_line(n, seed):
    """Three clusters along one direction with unequal per-coordinate noise: the GMM is the true model, FA(1) the best
    Gaussian (the covariance is rank one plus diagonal), PPCA(1) worse (its noise is isotropic)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[-4.0, -2.0, 2.0], [0.0, 0.0, 0.0], [4.0, 2.0, -2.0]])
    return (centres[torch.arange(n) % 3] + torch.tensor([0.5, 0.5, 1.5]) * torch.randn(n, 3, generator=g)).double()


def test_loo_ranking_agrees_with_the_heldout_ranking():
    x, x_test = three_clusters_on_a_line(60, 0), three_clusters_on_a_line(300, 1)
    models = {"gmm": BayesianGaussianMixture(3, 3), "fa": BayesianFactorAnalysis(3, 1), "ppca": BayesianPPCA(3, 1)}
    inference_data, heldout = {}, {}
    for name, model in models.items():
        init = model.em_initial_values(x, seed=0) if name == "gmm" else model.em_initial_values(x)
        with pyro.validation_enabled(False):  # the argument checks cost ~40% of NUTS here; the models are tested elsewhere
            run = run_nuts(model.model, x, num_samples=60, warmup_steps=60, seed=0, init_values=init, jit_compile=True)
        inference_data[name] = to_inference_data(run, x, model=model.model, posterior_predictive=False, relabel=getattr(model, "relabel", None))
        heldout[name] = float(heldout_log_predictive_density(inference_data[name], model.model, x_test).sum())
    table = compare_models(inference_data, heldout)
    assert list(table.index) == ["gmm", "fa", "ppca"]  # the true model first, then the better Gaussian
    assert list(table["rank"]) == list(table["heldout_rank"]) == [0, 1, 2]
    # the gaps are several standard errors wide, not a coin flip (measured elpd_diff 53 ± 6.5 and 85 ± 9.0 nats at N = 60)
    assert (table["elpd_diff"].iloc[1:] > 4 * table["dse"].iloc[1:]).all(), table
    # WAIC orders them the same way; the Pareto k column counts the points PSIS cannot trust
    assert table["elpd_waic"].is_monotonic_decreasing
    assert (table["pareto_k_bad"] >= 0).all() and (table["pareto_k_max"] < np.inf).all()
    # the held-out density per point is of the same size as LOO's per training point (both estimate elpd per point;
    # measured ≤ 0.07 nats apart)
    per_point = table["elpd_loo"] / 60 - table["heldout_lppd"] / 300
    assert (per_point.abs() < 0.5).all(), per_point


def test_heldout_density_is_the_log_mean_of_the_likelihoods():
    az = import_arviz()
    model = BayesianPPCA(2, 1)
    loc, lower, diag, noise = torch.tensor([[0.0, 1.0], [0.5, -1.0]]), torch.tensor([[0.3], [-0.5]]), torch.tensor([[1.0], [2.0]]), torch.tensor([0.5, 1.0])
    inference_data = az.from_dict(posterior={"loc": loc[None].numpy(), "weight_lower": lower[None].numpy(), "weight_diag": diag[None].numpy(),
                                             "noise_variance": noise[None].numpy()})
    x = torch.tensor([[0.0, 0.0], [1.0, 2.0], [-3.0, 1.0]], dtype=torch.float64)
    densities = []
    for s in range(2):
        weight = torch.tensor([[diag[s, 0]], [lower[s, 0]]], dtype=torch.float64)
        covariance = weight @ weight.T + noise[s] * torch.eye(2, dtype=torch.float64)
        densities.append(torch.distributions.MultivariateNormal(loc[s].double(), covariance).log_prob(x).exp())
    torch.testing.assert_close(heldout_log_predictive_density(inference_data, model.model, x), (sum(densities) / 2).log())


def test_posterior_errors_in_reference_sds():
    az = import_arviz()
    rng = np.random.default_rng(0)
    draws = rng.normal(size=(2, 2000, 3))
    reference = az.from_dict(posterior={"theta": draws})
    shifted = az.from_dict(posterior={"theta": (0.5 * draws + 0.3)[:1]})  # sd halved, mean moved by 0.3 sd
    table = posterior_errors(reference, {"same": reference, "shifted": shifted})
    assert table.loc["same", "mean_error"] == 0 and table.loc["same", "sd_error"] == 0 and table.loc["same", "sd_ratio"] == 1
    assert abs(table.loc["shifted", "mean_error"] - 0.3) < 0.03 and abs(table.loc["shifted", "sd_ratio"] - 0.5) < 0.01
    assert abs(table.loc["shifted", "sd_error"] - np.log(2)) < 0.01
    assert 0.005 < table.loc["same", "reference_mcse"] < 0.05  # ≈ 1/√ESS for 4,000 independent draws
    with pytest.raises(ValueError, match="other has parameters"):
        posterior_errors(reference, {"other": az.from_dict(posterior={"phi": draws})})


def test_compare_models_bad_arguments():
    az = import_arviz()
    data = az.from_dict(posterior={"theta": np.zeros((1, 10))}, log_likelihood={"x": np.zeros((1, 10, 4))})
    with pytest.raises(ValueError, match="needs at least two models"):
        compare_models({"a": data})
    with pytest.raises(ValueError, match="heldout must name the same models"):
        compare_models({"a": data, "b": data}, heldout={"a": 1.0})
