import pytest
import torch

from pyro import poutine

from ppl_dgm.analysis import diagnostics, pointwise_log_likelihood, posterior_draws, to_inference_data
from ppl_dgm.lvm import BayesianFactorAnalysis, FactorAnalysis, fit_autoguide, run_nuts


def one_factor_data(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    weight, noise = torch.tensor([[1.5], [1.0], [-0.8], [0.5]]), torch.tensor([0.3, 0.5, 0.4, 0.6])
    return (torch.randn(n, 1, generator=g) @ weight.T + noise.sqrt() * torch.randn(n, 4, generator=g) + torch.tensor([1.0, 0.0, -1.0, 2.0])).double()


def test_nuts_posterior_concentrates_on_the_maximum_likelihood_fa_and_mixes():
    x = one_factor_data()
    model = BayesianFactorAnalysis(4, 1)
    runs = run_nuts(model.model, x, num_samples=150, warmup_steps=150, num_chains=2, seed=0)
    inference_data = to_inference_data(runs, x, model=model.model, posterior_predictive=False, log_likelihood=False)
    assert dict(inference_data.posterior.sizes)["chain"] == 2 and dict(inference_data.posterior.sizes)["draw"] == 150
    report = diagnostics(inference_data)
    assert set(report) == {"loc", "weight_lower", "weight_diag", "noise_variance"}
    for name, values in report.items():
        assert values["r_hat"] < 1.05, (name, values)
        assert values["ess_bulk"] > 50, (name, values)
    # with 300 points and weak priors the posterior mean sits within a few posterior sd of the MLE (Bernstein–von Mises)
    reference = FactorAnalysis(4, 1).double()
    reference.fit_em(x, tol=1e-10, max_iter=5000)
    weight = reference.weight.detach() * torch.sign(reference.weight.detach()[0, 0])  # the sign convention W_11 > 0
    posterior = inference_data.posterior
    draws_weight = model.assemble_weight(torch.as_tensor(posterior["weight_lower"].values), torch.as_tensor(posterior["weight_diag"].values))
    for draws, mle in ((draws_weight, weight), (torch.as_tensor(posterior["noise_variance"].values), reference.psi.detach()),
                       (torch.as_tensor(posterior["loc"].values), reference.loc.detach())):
        mean, sd = draws.mean((0, 1)), draws.std((0, 1))
        assert ((mean - mle).abs() < 3 * sd + 0.02).all(), (mean, mle, sd)


def test_guide_draws_and_posterior_predictive_become_inference_data():
    x = one_factor_data(n=50)
    fa = FactorAnalysis(4, 1).double()
    fa.fit_em(x, tol=1e-8, max_iter=2000)
    inference_data = to_inference_data(fa.guide, x, model=fa.model, num_samples=400)
    assert set(inference_data.groups()) == {"posterior", "posterior_predictive", "observed_data", "log_likelihood"}
    z = torch.as_tensor(inference_data.posterior["z"].values)  # (chain 1, draw, N, K)
    assert z.shape == (1, 400, 50, 1)
    exact = fa.posterior(x)
    torch.testing.assert_close(z.mean((0, 1)), exact.mean.detach(), atol=4 * exact.stddev.max().item() / 20, rtol=0)
    predictive = torch.as_tensor(inference_data.posterior_predictive["x"].values)
    assert predictive.shape == (1, 400, 50, 4)
    assert not torch.equal(predictive[0, 0], x)  # drawn, not copied from the data
    torch.testing.assert_close(torch.as_tensor(inference_data.observed_data["x"].values), x)


def test_mcmc_and_guide_give_every_group_with_matching_shapes():
    x = one_factor_data(n=40)
    model = BayesianFactorAnalysis(4, 1)
    runs = run_nuts(model.model, x, num_samples=30, warmup_steps=30, num_chains=2, seed=0, init_values=model.em_initial_values(x))
    guide = fit_autoguide(model.model, x, "AutoNormal", schedule=((0.05, 50),))
    site_shapes = {"loc": (4,), "weight_lower": (3,), "weight_diag": (1,), "noise_variance": (4,)}
    for source, (chains, draws) in ((runs, (2, 30)), (guide, (1, 25))):
        inference_data = to_inference_data(source, x, model=model.model, num_samples=25)
        assert {"posterior", "posterior_predictive", "observed_data", "log_likelihood"} <= set(inference_data.groups())
        assert {name: inference_data.posterior[name].shape for name in site_shapes} == {n: (chains, draws, *s) for n, s in site_shapes.items()}
        assert inference_data.posterior_predictive["x"].shape == (chains, draws, 40, 4)
        assert inference_data.log_likelihood["x"].shape == (chains, draws, 40)  # one value per point, what az.loo reads
        torch.testing.assert_close(torch.as_tensor(inference_data.observed_data["x"].values), x)
        # each draw's pointwise log-likelihood sums to the log-probability Pyro's trace gives the observed site
        flat = posterior_draws(inference_data)
        log_likelihood = torch.as_tensor(inference_data.log_likelihood["x"].values).flatten(0, 1)
        for index in (0, draws - 1, chains * draws - 1):
            trace = poutine.trace(poutine.condition(model.model, data={n: v[index] for n, v in flat.items()})).get_trace(x)
            torch.testing.assert_close(log_likelihood[index].sum(), trace.nodes["x"]["fn"].log_prob(x).sum())
            # and the closed form N(x_n | μ, W Wᵀ + Ψ) (Bishop PRML eq. 12.65)
            weight = model.assemble_weight(flat["weight_lower"][index], flat["weight_diag"][index])
            marginal = torch.distributions.LowRankMultivariateNormal(flat["loc"][index], weight, flat["noise_variance"][index])
            torch.testing.assert_close(log_likelihood[index], marginal.log_prob(x))
        # posterior predictive draws are new data: their spread matches the model's, not zero
        assert float(torch.as_tensor(inference_data.posterior_predictive["x"].values).std((0, 1)).mean()) > 0.3
    assert set(to_inference_data(runs, x, model=model.model, log_likelihood=False, posterior_predictive=False).groups()) == \
        {"posterior", "observed_data", "sample_stats"}


def test_pointwise_log_likelihood_refuses_enumeration_with_two_observed_sites():
    import pyro
    import pyro.distributions as dist

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Bernoulli(0.5), infer={"enumerate": "parallel"})
            pyro.sample("a", dist.Normal(z, 1.0), obs=x)
            pyro.sample("b", dist.Normal(z, 1.0), obs=x)

    with pytest.raises(ValueError, match=r"enumerated sites \['z'\] are summed out for one observed site only"):
        pointwise_log_likelihood(model, (torch.zeros(3),), {"unused": torch.zeros(2)})


def test_bad_arguments():
    with pytest.raises(ValueError, match="latent_dim must be smaller than data_dim=2"):
        BayesianFactorAnalysis(2, 2)
    with pytest.raises(ValueError, match="num_samples must be a positive int, got 0"):
        run_nuts(BayesianFactorAnalysis(3, 1).model, torch.randn(5, 3), num_samples=0)
    with pytest.raises(ValueError, match="x contains 1 NaN"):
        run_nuts(BayesianFactorAnalysis(3, 1).model, torch.tensor([[0.0, float("nan"), 1.0]]))
    with pytest.raises(TypeError, match="source must be a pyro.infer.MCMC"):
        to_inference_data(42)
    fa = FactorAnalysis(3, 1)
    with pytest.raises(ValueError, match="needs model="):
        to_inference_data(fa.guide, torch.randn(4, 3))
