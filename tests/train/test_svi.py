import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.nn import PyroModule, PyroParam

from ppl_dgm.train import evaluate_elbo, fit_svi
from ppl_dgm.train.svi import elbo_loss_fn
from ppl_dgm.vae import mlp_vae


class NormalMean(PyroModule):
    """mu ~ N(0, prior_scale²), x_i | mu ~ N(mu, 1); guide q(mu) = N(loc, scale²) — conjugate, exact posterior known."""

    def __init__(self, prior_scale=10.0):
        super().__init__()
        self.prior_scale = prior_scale
        self.loc = PyroParam(torch.tensor(0.0))
        self.scale = PyroParam(torch.tensor(1.0), constraint=dist.constraints.positive)

    def model(self, x):
        mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0), torch.tensor(self.prior_scale)))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def guide(self, x):
        pyro.sample("mu", dist.Normal(self.loc, self.scale))


def test_minibatch_loss_scales_only_the_data_plate():
    x = torch.randn(40) + 3.0
    module = NormalMean()
    loss = TraceMeanField_ELBO()
    batch = x[:8]
    with torch.no_grad():
        module.scale = torch.tensor(1e-6)  # q(mu) ≈ δ(loc): the sampled likelihood term is exact to ~1e-6
    value = elbo_loss_fn(module.model, module.guide, loss, num_data=40)((batch,))
    loc = module.loc.detach()
    prior, posterior = dist.Normal(0.0, 10.0), dist.Normal(loc, module.scale.detach())
    kl = torch.distributions.kl_divergence(posterior, prior)
    expected = (kl - (40 / 8) * dist.Normal(loc, 1.0).log_prob(batch).sum()) / 40
    torch.testing.assert_close(value.detach(), expected, rtol=1e-5, atol=1e-5)


def test_fit_svi_recovers_conjugate_posterior():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, generator=generator) + 1.5
    module = NormalMean(prior_scale=10.0)
    for lr, epochs in [(0.05, 100), (0.005, 200), (0.001, 200)]:  # decreasing steps quiet the SGD noise
        fit_svi(module.model, module.guide, (x,), loss=TraceMeanField_ELBO(), epochs=epochs, batch_size=50,
                device="cpu", optim=lambda p: torch.optim.Adam(p, lr=lr), progress=False)
    # Normal–Normal conjugacy (Bishop PRML eq. 2.141–2.142)
    posterior_precision = 1 / 10.0**2 + len(x)
    posterior_mean = x.sum() / posterior_precision
    assert module.loc.item() == pytest.approx(posterior_mean.item(), abs=0.03)
    # the posterior std is 1/sqrt(200.01) ≈ 0.0707; wrong minibatch scaling would give 1/sqrt(50) ≈ 0.141
    assert module.scale.item() == pytest.approx(posterior_precision**-0.5, rel=0.15)


def test_one_svi_step_changes_every_vae_parameter():
    vae = mlp_vae((1, 8, 8), latent_dim=2, hidden=(16,), likelihood="gaussian")
    before = {name: p.detach().clone() for name, p in vae.named_parameters()}
    x = torch.rand(20, 1, 8, 8)
    fit_svi(vae.model, vae.guide, (x,), epochs=1, batch_size=20, device="cpu", progress=False)
    unchanged = [name for name, p in vae.named_parameters() if torch.equal(p.detach(), before[name])]
    assert unchanged == []
    assert "likelihood.raw_scale" in before  # the learned per-pixel scale is trained too


def test_evaluate_elbo_is_exact_for_deterministic_guide():
    x = torch.randn(30) + 1.0
    module = NormalMean()
    with torch.no_grad():
        module.scale = torch.tensor(1e-6)
    elbo = evaluate_elbo(module.model, module.guide, (x,), loss=TraceMeanField_ELBO(), batch_size=7)
    posterior = dist.Normal(module.loc.detach(), module.scale.detach())
    kl = torch.distributions.kl_divergence(posterior, dist.Normal(0.0, 10.0))
    expected = (dist.Normal(module.loc.detach(), 1.0).log_prob(x).sum() - kl) / 30
    assert elbo == pytest.approx(expected.item(), rel=1e-5)


def test_fit_svi_errors():
    def model(x):
        pass

    vae = mlp_vae((1, 8, 8), latent_dim=2, hidden=(8,))
    with pytest.raises(TypeError, match="model must be a torch/Pyro module or a bound method"):
        fit_svi(model, vae.guide, (torch.rand(4, 1, 8, 8),), epochs=1, batch_size=2, progress=False)
    with pytest.raises(TypeError, match="loss must be a pyro.infer ELBO instance"):
        fit_svi(vae.model, vae.guide, (torch.rand(4, 1, 8, 8),), loss="elbo", epochs=1, batch_size=2, progress=False)
    assert math.isfinite(evaluate_elbo(vae.model, vae.guide, (torch.bernoulli(torch.rand(4, 1, 8, 8)),), loss=Trace_ELBO()))


@pytest.mark.parametrize("reparameterized", [True, False])
def test_score_function_and_pathwise_gradients_are_unbiased(reparameterized):
    """TraceGraph_ELBO (surrogate loss) and Trace_ELBO gradients average to the analytic ELBO gradient."""
    from pyro.infer import TraceGraph_ELBO

    from ppl_dgm.train.svi import differentiable_loss
    from ppl_dgm.vae.vae import NormalWithoutRsample

    class Module(NormalMean):
        def guide(self, x):
            normal = dist.Normal if reparameterized else NormalWithoutRsample
            pyro.sample("mu", normal(self.loc, self.scale))

    x = torch.tensor([0.5, 1.5, 2.0, 3.0])
    module = Module(prior_scale=2.0)
    with torch.no_grad():
        module.loc, module.scale = torch.tensor(1.0), torch.tensor(0.5)
    loss = TraceGraph_ELBO(num_particles=20000, vectorize_particles=True)
    value = differentiable_loss(loss, module.model, module.guide, x)
    value.backward()
    # ELBO(m, s) = Σ_i E_q log N(x_i | mu, 1) + E_q log N(mu | 0, 2²) + H[q]  →  ∂/∂m = Σ(x_i − m) − m / 4
    expected = -((x - 1.0).sum() - 1.0 / 4)
    tolerance = 0.02 if reparameterized else 0.25  # score-function draws are far noisier
    assert module.loc.grad.item() == pytest.approx(expected.item(), abs=tolerance)
    analytic_elbo = (dist.Normal(1.0, 1.0).log_prob(x).sum() - 4 * 0.25 / 2
                     + dist.Normal(0.0, 2.0).log_prob(torch.tensor(1.0)) - 0.25 / 8 + dist.Normal(1.0, 0.5).entropy())
    assert -value.item() == pytest.approx(analytic_elbo.item(), abs=0.05)


def test_fit_svi_names_the_data_shape_when_the_network_does_not_fit():
    vae = mlp_vae((1, 28, 28), latent_dim=2, hidden=(8,))
    digits = torch.bernoulli(torch.rand(10, 1, 8, 8))
    with pytest.raises(ValueError, match=r"cannot run on data whose examples have shapes \[\(1, 8, 8\)\]"):
        fit_svi(vae.model, vae.guide, (digits,), epochs=1, batch_size=5, device="cpu", progress=False)
    grey = torch.rand(10, 1, 28, 28)  # not binary: outside the Bernoulli support
    with pytest.raises(ValueError, match="values lie in the likelihood's support"):
        fit_svi(vae.model, vae.guide, (grey,), epochs=1, batch_size=5, device="cpu", progress=False)
