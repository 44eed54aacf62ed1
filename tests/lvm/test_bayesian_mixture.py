import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO

from ppl_dgm.analysis import diagnostics, to_inference_data
from ppl_dgm.analysis.comparison import posterior_draws
from ppl_dgm.lvm import BayesianGaussianMixture, GaussianMixture, run_nuts

CENTRES = torch.tensor([[-4.0, 0.0], [0.0, 3.0], [4.0, -1.0]])


def separated_clusters(n=120, seed=0):
    """Three well-separated clusters (centres ≥ 4 apart, sd 0.7), equal sizes; labels sorted by the first coordinate."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    return (CENTRES[labels] + 0.7 * torch.randn(n, 2, generator=g)).double(), labels


@pytest.fixture(scope="module")
def gmm_posterior():
    x, labels = separated_clusters()
    model = BayesianGaussianMixture(3, 2)
    with pyro.validation_enabled(False):  # the argument checks cost ~40% of NUTS here; the model's math is tested below
        runs = run_nuts(model.model, x, num_samples=100, warmup_steps=100, num_chains=2, seed=0, jit_compile=True,
                        init_values=[model.em_initial_values(x, seed=chain) for chain in range(2)])
    return x, labels, model, to_inference_data(runs, x, model=model.model, relabel=model.relabel)


def test_nuts_with_enumerated_assignments_matches_exact_em(gmm_posterior):
    x, _, model, inference_data = gmm_posterior
    assert set(inference_data.posterior.data_vars) == {"weights", "locs", "scales"}  # the assignment is summed out, not sampled
    for name, values in diagnostics(inference_data).items():
        # 2 chains x 100 draws: r̂ < 1.1 and bulk ESS > 50 (measured r̂ ≤ 1.062, ESS ≥ 217)
        assert values["r_hat"] < 1.1 and values["ess_bulk"] > 50, (name, values)
    em = GaussianMixture(3, 2, "diag", reg_covar=0.0).double()
    em.fit_em(x, tol=1e-10, max_iter=2000, generator=torch.Generator().manual_seed(0))
    order = em.locs[:, 0].argsort()  # the relabelling's order
    maximum_likelihood = {"weights": em.weights[order], "locs": em.locs[order], "scales": em.scales[order]}
    draws = posterior_draws(inference_data)
    # Bernstein–von Mises: posterior mean − MLE is O(1/N), the posterior sd O(1/√N). Tolerances in posterior sds:
    # 0.25 for weights and locs (measured ≤ 0.06); 1 for the scales, whose mean sits above the MLE by about
    # 1.5/N_k relative (the MLE of σ is biased low), ≈ 0.4 sd at N_k = 40 (measured 0.32–0.51 sd)
    for name, tolerance in (("weights", 0.25), ("locs", 0.25), ("scales", 1.0)):
        mean, sd = draws[name].mean(0), draws[name].std(0)
        assert ((mean - maximum_likelihood[name].detach()).abs() < tolerance * sd).all(), (name, mean, maximum_likelihood[name], sd)
    # in absolute terms: locs within 0.05, weights within 0.02, scales within 10% of EM (measured 0.006, 0.002, 6.5%)
    assert (draws["locs"].mean(0) - maximum_likelihood["locs"]).abs().max() < 0.05
    assert (draws["scales"].mean(0) / maximum_likelihood["scales"] - 1).abs().max() < 0.1
    assert (draws["weights"].mean(0) - maximum_likelihood["weights"]).abs().max() < 0.02


def test_infer_discrete_recovers_the_assignments(gmm_posterior):
    x, labels, model, inference_data = gmm_posterior
    draws = posterior_draws(inference_data)
    assignments = model.sample_assignments(draws, x)  # (S, N), one z ~ p(z | x, θ_s) per draw
    assert assignments.shape == (200, x.shape[0]) and assignments.dtype == torch.int64
    frequencies = torch.nn.functional.one_hot(assignments, 3).double().mean(0)  # Monte-Carlo p(z_n = k | x)
    assert (frequencies.argmax(1) == labels).all()  # relabelled components follow the clusters' order in x
    # against EM's responsibilities at the MLE: the posterior over θ is narrow, so they agree to MC error (S = 200;
    # measured 2e-6, the clusters being so far apart that both are 0 or 1 almost everywhere)
    em = GaussianMixture(3, 2, "diag", reg_covar=0.0).double()
    em.fit_em(x, tol=1e-10, max_iter=2000, generator=torch.Generator().manual_seed(0))
    order = em.locs[:, 0].argsort()
    torch.testing.assert_close(frequencies, em.responsibilities(x)[:, order], atol=0.1, rtol=0)
    map_assignments = model.sample_assignments({name: value[:3] for name, value in draws.items()}, x, temperature=0)
    assert (map_assignments == labels).all()


def test_log_likelihood_sums_out_the_assignment(gmm_posterior):
    x, _, model, inference_data = gmm_posterior
    draws = posterior_draws(inference_data)
    log_likelihood = torch.as_tensor(inference_data.log_likelihood["x"].values).flatten(0, 1)  # (S, N)
    assert log_likelihood.shape == (200, x.shape[0])
    for index in (0, 57, 199):
        draw = {name: value[index] for name, value in draws.items()}
        # closed form: log Σ_k π_k N(x_n | μ_k, diag σ_k²) (Bishop PRML eq. 9.7)
        components = torch.distributions.Independent(torch.distributions.Normal(draw["locs"], draw["scales"]), 1)
        mixture = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(draw["weights"]), components)
        torch.testing.assert_close(log_likelihood[index], mixture.log_prob(x))
        # Pyro's own enumerated sum: −TraceEnum_ELBO of the model conditioned on θ is log p(x | θ) + log p(θ)
        conditioned = poutine.condition(model.model, data=draw)
        elbo = -TraceEnum_ELBO(max_plate_nesting=1).loss(conditioned, lambda x: None, x)
        trace = poutine.trace(conditioned).get_trace(x)
        log_prior = sum(trace.nodes[name]["fn"].log_prob(draw[name]).sum() for name in ("weights", "locs", "scales"))
        torch.testing.assert_close(log_likelihood[index].sum(), torch.as_tensor(elbo, dtype=torch.float64) - log_prior)


def test_relabel_undoes_any_permutation_of_the_components():
    model = BayesianGaussianMixture(3, 2, order_by=1)
    g = torch.Generator().manual_seed(0)
    draws = {"weights": torch.rand(5, 3, generator=g), "locs": torch.randn(5, 3, 2, generator=g), "scales": torch.rand(5, 3, 2, generator=g),
             "other": torch.arange(5)}
    relabelled = model.relabel(draws)
    assert (relabelled["locs"][..., 1].diff(dim=-1) > 0).all()  # sorted by coordinate order_by = 1
    permutation = torch.tensor([2, 0, 1])
    permuted = {"weights": draws["weights"][:, permutation], "locs": draws["locs"][:, permutation], "scales": draws["scales"][:, permutation],
                "other": draws["other"]}
    for name, value in model.relabel(permuted).items():
        torch.testing.assert_close(value, relabelled[name])
    # each draw keeps its own (weight, loc, scale) triples
    smallest = draws["locs"][0, :, 1].argmin()
    assert relabelled["weights"][0, 0] == draws["weights"][0, smallest]
    assert torch.equal(relabelled["scales"][0, 0], draws["scales"][0, smallest])


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_components must be a positive int, got 0"):
        BayesianGaussianMixture(0, 2)
    with pytest.raises(ValueError, match=r"order_by must be a coordinate index in \[0, 2\) for data_dim=2, got 2"):
        BayesianGaussianMixture(3, 2, order_by=2)
    with pytest.raises(ValueError, match="concentration must be a positive float, got -1"):
        BayesianGaussianMixture(3, 2, concentration=-1)
    model = BayesianGaussianMixture(2, 2)
    with pytest.raises(ValueError, match="missing \\['scales'\\]"):
        model.relabel({"weights": torch.ones(2), "locs": torch.zeros(2, 2)})
    draws = {"weights": torch.ones(1, 2) / 2, "locs": torch.zeros(1, 2, 2), "scales": torch.ones(1, 2, 2)}
    with pytest.raises(ValueError, match=r"x must be 2-D \(N, D\), got shape \(4,\)"):
        model.sample_assignments(draws, torch.zeros(4))
    with pytest.raises(ValueError, match="temperature must be 0 \\(MAP\\) or 1"):
        model.sample_assignments(draws, torch.zeros(4, 2), temperature=2)
