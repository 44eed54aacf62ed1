from functools import partial

import pytest
import torch
from pyro.infer import Trace_ELBO

from ppl_dgm.data import load_dataset
from ppl_dgm.lvm import AlternatingOptimizer, FactorAnalysis, LinearGaussianGuide, run_em, split_parameters, variational_em
from ppl_dgm.train import evaluate_elbo, fit_svi
from ppl_dgm.vae import mlp_vae


def factor_data(n=500, seed=0):
    g = torch.Generator().manual_seed(seed)
    weight, noise = 1.5 * torch.randn(6, 2, generator=g), torch.rand(6, generator=g) + 0.2
    return torch.randn(n, 2, generator=g) @ weight.T + noise.sqrt() * torch.randn(n, 6, generator=g) + 1.0


def test_run_em_stops_at_tol_and_warns_at_max_iter():
    values = iter([-3.0, -2.0, -1.5, -1.4, -1.39999])
    steps = []
    trace = run_em(lambda: (next(values), None), steps.append, lambda: 0.0, max_iter=10, tol=1e-3)
    assert trace == [-3.0, -2.0, -1.5, -1.4, -1.39999] and len(steps) == 4  # no M-step after convergence
    with pytest.warns(RuntimeWarning, match="EM did not converge to tol=0 within max_iter=2"):
        trace = run_em(lambda: (-1.0, None), lambda s: None, lambda: -0.5, max_iter=2, tol=0)
    assert trace == [-1.0, -1.0, -0.5]


def test_alternating_optimizer_steps_one_group_per_phase_and_resumes():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    make = lambda: AlternatingOptimizer(torch.optim.SGD([a], lr=1.0), torch.optim.SGD([b], lr=1.0), e_steps=2, m_steps=3)  # noqa: E731
    optimizer, phases = make(), []
    for _ in range(7):
        optimizer.zero_grad()
        (-(a + b)).sum().backward()
        phases.append(optimizer.phase)
        optimizer.step()
    assert phases == ["E", "E", "M", "M", "M", "E", "E"]
    assert a.item() == 4.0 and b.item() == 3.0
    restored = make()
    restored.load_state_dict(optimizer.state_dict())
    assert (restored.phase, restored.steps_in_phase) == ("M", 0)


def test_split_parameters_finds_encoder_and_decoder_of_a_vae():
    vae = mlp_vae((1, 8, 8), latent_dim=2, hidden=(8,), likelihood="gaussian")
    guide_parameters, model_parameters = split_parameters(vae.model, vae.guide, (torch.rand(4, 1, 8, 8),), vae.parameters())
    assert {id(p) for p in guide_parameters} == {id(p) for p in vae.encoder.parameters()}
    assert {id(p) for p in model_parameters} == {id(p) for p in [*vae.decoder.parameters(), *vae.likelihood.parameters()]}
    fa = FactorAnalysis(4, 2)
    with pytest.raises(ValueError, match="the guide has no parameters of its own"):
        split_parameters(fa.model, fa.guide, (torch.randn(5, 4),), fa.parameters())
    with pytest.raises(ValueError, match="e_steps must be a positive int, got 0"):
        variational_em(fa.model, LinearGaussianGuide(4, 2).guide, (torch.randn(5, 4),), e_steps=0, m_steps=1, epochs=1, batch_size=5)


def test_alternation_and_joint_svi_reach_the_same_elbo_on_factor_analysis():
    x = factor_data()
    elbos = {}
    for mode in ("joint", "alternating"):
        torch.manual_seed(1)
        fa, encoder = FactorAnalysis(6, 2), LinearGaussianGuide(6, 2)
        fa.initialize(x)
        for lr, epochs in ((0.05, 600), (0.005, 200)):
            common = dict(epochs=epochs, batch_size=500, device="cpu", progress=False)
            if mode == "joint":
                fit_svi(fa.model, encoder.guide, (x,), optim=partial(torch.optim.Adam, lr=lr), **common)
            else:
                variational_em(fa.model, encoder.guide, (x,), e_steps=5, m_steps=5, e_optim=partial(torch.optim.Adam, lr=lr),
                               m_optim=partial(torch.optim.Adam, lr=lr), **common)
        elbos[mode] = evaluate_elbo(fa.model, encoder.guide, (x,), loss=Trace_ELBO(num_particles=20))
    reference = FactorAnalysis(6, 2)
    reference.fit_em(x, tol=1e-9, max_iter=5000)
    maximum = reference.log_likelihood(x)
    assert abs(elbos["alternating"] - elbos["joint"]) / abs(elbos["joint"]) < 0.005
    for value in elbos.values():  # both within 0.5% of the maximum log-likelihood (the guide family holds the posterior)
        assert value <= maximum + 1e-3 and abs(value - maximum) / abs(maximum) < 0.005


def test_variational_em_trains_a_vae_encoder_and_decoder_in_turn_and_resumes_exactly(tmp_path):
    x = torch.bernoulli(load_dataset("digits", "train").tensors[0][:400], generator=torch.Generator().manual_seed(0))

    def run(**kwargs):
        torch.manual_seed(0)
        vae = mlp_vae((1, 8, 8), latent_dim=2, hidden=(32,))
        encoder = [p.detach().clone() for p in vae.encoder.parameters()]
        decoder = [p.detach().clone() for p in vae.decoder.parameters()]
        before = evaluate_elbo(vae.model, vae.guide, (x,))
        history = variational_em(vae.model, vae.guide, (x,), e_steps=4, m_steps=4, epochs=kwargs.pop("epochs", 6), batch_size=100,
                                 device="cpu", progress=False, e_optim=partial(torch.optim.Adam, lr=3e-3),
                                 m_optim=partial(torch.optim.Adam, lr=3e-3), **kwargs)
        return vae, encoder, decoder, before, history

    # 4 E-steps on the encoder only: the decoder has not moved
    vae, encoder, decoder, _, _ = run(epochs=1, max_steps=4)
    assert all(torch.equal(p, q) for p, q in zip(vae.decoder.parameters(), decoder))
    assert not any(torch.equal(p, q) for p, q in zip(vae.encoder.parameters(), encoder))

    vae, _, _, before, history = run()
    assert evaluate_elbo(vae.model, vae.guide, (x,)) > before + 3  # nats per digit, after 24 steps
    assert history.loss[-1] < history.loss[0]

    checkpoint = tmp_path / "vem.pt"
    run(checkpoint=checkpoint, max_steps=10)  # stops mid-epoch, in an M phase
    resumed, _, _, _, resumed_history = run(checkpoint=checkpoint, resume=True)
    assert resumed_history.loss == pytest.approx(history.loss, rel=1e-6)
    for p, q in zip(resumed.parameters(), vae.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
