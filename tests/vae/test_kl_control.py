"""KL warm-up and free bits (ppl_dgm.vae.kl_control): schedule values, the objective against hand computations, the
unchanged default, exact resume with validation at β = 1, config errors, the CLI (with the top-down HVAE options)."""
import json
import re

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from ppl_dgm.train import Checkpoint
from ppl_dgm.vae.experiment import VAEConfig, train_vae, training_objective
from ppl_dgm.vae.hvae import mlp_hvae
from ppl_dgm.vae.kl_control import FreeBitsELBO, kl_weight_at
from ppl_dgm.vae.vae import mlp_vae


def _binary(n=6, seed=0):
    return torch.bernoulli(torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)))


def _normal_kl(loc_q, scale_q, loc_p, scale_p):
    """KL(N(μq, σq²) ‖ N(μp, σp²)) per coordinate, written out."""
    return torch.log(scale_p / scale_q) + (scale_q**2 + (loc_q - loc_p) ** 2) / (2 * scale_p**2) - 0.5


# ------------------------------------------------------------------ warm-up schedule


def test_warmup_schedule_values_and_the_hook_sets_them_on_the_loss():
    assert [kl_weight_at(step, 4) for step in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]  # linear, never 0
    assert kl_weight_at(0, 0) == 1.0 and kl_weight_at(10**6, 0) == 1.0
    config = VAEConfig(kl_warmup_steps=100)
    assert [config.kl_weight_at_step(step) for step in (0, 49, 99, 100)] == [0.01, 0.5, 1.0, 1.0]
    loss, on_step = training_objective(config)
    assert isinstance(loss, FreeBitsELBO) and loss.analytic_kl and loss.free_bits == 0 and loss.kl_weight == 0.01
    on_step(24)
    assert loss.kl_weight == 0.25
    hvae_loss, _ = training_objective(VAEConfig(model="hvae", free_bits=0.5))
    assert not hvae_loss.analytic_kl and hvae_loss.free_bits == 0.5 and hvae_loss.kl_weight == 1.0  # bottom-up: Monte Carlo KLs


def test_without_warmup_and_free_bits_the_training_loss_is_the_plain_estimator():
    for config, estimator in ((VAEConfig(), TraceMeanField_ELBO), (VAEConfig(model="hvae"), Trace_ELBO),
                              (VAEConfig(model="hvae", inference="top_down"), TraceMeanField_ELBO)):
        loss, on_step = training_objective(config)
        assert type(loss) is estimator and on_step is None


# ------------------------------------------------------------------ the objective against hand computations


def test_free_bits_objective_equals_a_hand_computation_with_analytic_kls():
    vae = mlp_vae((1, 8, 8), latent_dim=4, hidden=(16,))
    x = _binary(6)
    free_bits, kl_weight = 0.2, 0.3
    pyro.set_rng_seed(3)
    loss = FreeBitsELBO(free_bits, kl_weight).differentiable_loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(3)
    z = poutine.trace(vae.guide).get_trace(x).nodes["z"]["value"]
    loc, scale = vae.encoder(x)
    mean_kl = _normal_kl(loc, scale, torch.zeros(()), torch.ones(())).mean(0)  # (1/B) Σ_b KL_bj, (4,)
    assert (mean_kl < free_bits).any() and (mean_kl > free_bits).any()  # the floor binds on some dimensions only
    reconstruction = dist.Bernoulli(logits=vae.decoder(z)).log_prob(x).sum()
    hand = -reconstruction + kl_weight * 6 * torch.maximum(mean_kl, torch.tensor(free_bits)).sum()
    torch.testing.assert_close(loss, hand)


def test_free_bits_objective_equals_a_hand_computation_with_monte_carlo_kls_on_the_bottom_up_hvae():
    hvae = mlp_hvae((1, 8, 8), latent_dims=(3, 2), hidden=(16, 8))
    x = _binary(5)
    free_bits = 0.2
    pyro.set_rng_seed(4)
    loss = FreeBitsELBO(free_bits, analytic_kl=False).differentiable_loss(hvae.model, hvae.guide, x)
    pyro.set_rng_seed(4)
    guide = poutine.trace(hvae.guide).get_trace(x)
    z1, z2 = guide.nodes["z1"]["value"], guide.nodes["z2"]["value"]
    # one-sample KL per example and dimension: log q − log p at the guide's draw
    kl1 = dist.Normal(*hvae.encoder1(x)).log_prob(z1) - dist.Normal(*hvae.prior1(z2)).log_prob(z1)
    kl2 = dist.Normal(*hvae.encoder2(z1)).log_prob(z2) - dist.Normal(0.0, 1.0).log_prob(z2)
    floor = torch.tensor(free_bits)
    means = torch.cat([kl1.mean(0), kl2.mean(0)])
    assert (means < free_bits).any() and (means > free_bits).any()  # the floor binds on some dimensions only
    hand = (-dist.Bernoulli(logits=hvae.decoder(z1)).log_prob(x).sum()
            + 5 * (torch.maximum(kl1.mean(0), floor).sum() + torch.maximum(kl2.mean(0), floor).sum()))
    torch.testing.assert_close(loss, hand)


@pytest.mark.parametrize("case", ["vae meanfield", "hvae trace", "hvae top-down meanfield"])
def test_at_beta_one_and_no_free_bits_the_objective_and_its_gradient_are_pyros(case):
    x = _binary(6)
    if case == "vae meanfield":
        module, reference, analytic = mlp_vae((1, 8, 8), latent_dim=4, hidden=(16,)), TraceMeanField_ELBO(), True
    else:
        inference = "top_down" if "top-down" in case else "bottom_up"
        module = mlp_hvae((1, 8, 8), latent_dims=(3, 2), hidden=(16, 8), inference=inference)
        reference, analytic = (TraceMeanField_ELBO(), True) if inference == "top_down" else (Trace_ELBO(), False)
    values, gradients = [], []
    for loss in (reference, FreeBitsELBO(0.0, 1.0, analytic_kl=analytic)):
        module.zero_grad()
        pyro.set_rng_seed(7)
        value = loss.differentiable_loss(module.model, module.guide, x)
        value.backward()
        values.append(value.detach())
        gradients.append([p.grad.clone() for p in module.parameters()])
    torch.testing.assert_close(values[1], values[0])
    for ours, pyros in zip(*gradients[::-1]):
        torch.testing.assert_close(ours, pyros, rtol=1e-4, atol=1e-5)


def test_free_bits_objective_is_at_least_the_true_negative_elbo():
    vae = mlp_vae((1, 8, 8), latent_dim=4, hidden=(16,))
    x = _binary(6)
    for free_bits in (0.0, 0.1, 1.0):
        pyro.set_rng_seed(9)
        objective = FreeBitsELBO(free_bits).differentiable_loss(vae.model, vae.guide, x)
        pyro.set_rng_seed(9)
        true = TraceMeanField_ELBO().differentiable_loss(vae.model, vae.guide, x)
        assert objective >= true - 1e-4
    assert objective > true + 1.0  # λ = 1 nat per dimension binds


def test_free_bits_elbo_refuses_what_it_cannot_compute():
    with pytest.raises(ValueError, match=re.escape("free_bits must be a float >= 0 (nats per latent dimension for free_bits), got -0.1")):
        FreeBitsELBO(-0.1)
    vae = mlp_vae((1, 8, 8), latent_dim=2, hidden=(8,))
    vae.reparameterized = False  # score-function guide: max(λ, ·) has no pathwise gradient to carry
    with pytest.raises(ValueError, match="FreeBitsELBO needs reparameterized latent sites; site 'z' has no rsample"):
        FreeBitsELBO(0.1).differentiable_loss(vae.model, vae.guide, _binary(2))


# ------------------------------------------------------------------ runs: config errors, validation at β = 1, resume, CLI


@pytest.mark.parametrize("options, message", [
    (dict(free_bits=-0.5), "free_bits must be a float >= 0 (nats per latent dimension), got -0.5"),
    (dict(free_bits=float("nan")), "free_bits must be a float >= 0 (nats per latent dimension), got nan"),
    (dict(kl_warmup_steps=-1), "kl_warmup_steps must be an int >= 0, got -1"),
    (dict(kl_warmup_steps=2.5), "kl_warmup_steps must be an int >= 0, got 2.5"),
    (dict(model="hvae", inference="sideways"), "inference='sideways' is not known; expected one of ('bottom_up', 'top_down')"),
    (dict(inference="top_down"), "inference='top_down' is an HVAE option (model='hvae'); the VAE has one latent layer"),
    (dict(model="hvae", elbo="meanfield"), "model='hvae' with inference='bottom_up' needs elbo='trace', got elbo='meanfield'"),
    (dict(model="hvae", depth=0), "depth must be a positive int, got 0"),
])
def test_bad_options_are_clear_errors(options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        VAEConfig(**options)


def _digits_run(path, epochs, max_steps=None, resume=False, seen=None, **options):
    """1,500 binarized 8x8 digits, batch 250: 6 steps an epoch; β rises over 8 steps."""
    options = {"kl_warmup_steps": 8, "free_bits": 0.05, **options}
    config = VAEConfig(dataset="digits", model="hvae", inference="top_down", latent_dim=4, hidden=32, latent_dim2=3, hidden2=16,
                       batch_size=250, epochs=epochs, **options)
    original = FreeBitsELBO._particle_loss
    if seen is not None:  # record the KL weight of every training step (the training loss runs with grad enabled)
        def recording(self, model_trace, guide_trace):
            if torch.is_grad_enabled():
                seen.append(self.kl_weight)
            return original(self, model_trace, guide_trace)

        FreeBitsELBO._particle_loss = recording
    try:
        return train_vae(config, path, device="cpu", progress=False, max_steps=max_steps, resume=resume)
    finally:
        FreeBitsELBO._particle_loss = original


def test_warmup_is_set_every_step_a_stopped_run_resumes_exactly_and_validation_is_the_true_elbo(tmp_path):
    seen = []
    straight = _digits_run(tmp_path / "straight", 2)
    _digits_run(tmp_path / "stopped", 2, max_steps=5, seen=seen)  # stops inside the first epoch
    resumed = _digits_run(tmp_path / "stopped", 2, resume=True, seen=seen)
    assert seen == [min(1.0, (step + 1) / 8) for step in range(12)]
    assert resumed["steps"] == 12 and resumed["final_kl_weight"] == 1.0
    first, second = (Checkpoint(tmp_path / name / "checkpoint.pt").load()["module"] for name in ("straight", "stopped"))
    for name, value in first.items():
        assert torch.equal(value, second[name]), name
    assert (tmp_path / "straight" / "metrics.jsonl").read_bytes() == (tmp_path / "stopped" / "metrics.jsonl").read_bytes()
    # validation losses are the true −ELBO (β = 1, no free bits), the held-out figure at the end is the same bound
    records = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["val_loss"] == pytest.approx(-straight["test_elbo_nats"], rel=0.02)
    _digits_run(tmp_path / "constant", 2, kl_warmup_steps=0)  # the schedule matters: without it the weights differ
    constant = Checkpoint(tmp_path / "constant" / "checkpoint.pt").load()["module"]
    assert not torch.equal(constant["decoder.0.layers.0.weight"], first["decoder.0.layers.0.weight"])


def test_cli_trains_a_top_down_hvae_with_warmup_and_free_bits(tmp_path):
    from ppl_dgm.cli import build_parser, main

    args = ["train", "hvae", "--dataset", "digits", "--inference", "top_down", "--kl-warmup-steps", "6", "--free-bits", "0.1",
            "--latent-dim", "4", "--latent-dim2", "2", "--hidden", "32", "--hidden2", "16", "--epochs", "1", "--iwae-k", "10",
            "--runs-dir", str(tmp_path), "--name", "ladder", "--no-progress", "--device", "cpu"]
    assert main(args) == 0
    config = json.loads((tmp_path / "ladder" / "config.json").read_text())
    assert (config["inference"], config["elbo"], config["kl_warmup_steps"], config["free_bits"]) == ("top_down", "meanfield", 6, 0.1)
    result = json.loads((tmp_path / "ladder" / "results.json").read_text())
    assert result["test_iwae_nats"] > result["test_elbo_nats"] and {"active_units_z1", "active_units_z2"} <= set(result)
    parse = build_parser().parse_args
    vae = parse(["train", "vae", "--kl-warmup-steps", "100", "--free-bits", "0.25"])
    assert (vae.kl_warmup_steps, vae.free_bits) == (100, 0.25)
    assert parse(["train", "hvae", "--depth", "1"]).depth == 1
    for option in (["--inference", "top_down"], ["--depth", "1"]):  # HVAE options only
        with pytest.raises(SystemExit):
            parse(["train", "vae", *option])
