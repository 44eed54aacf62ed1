"""The discrete VAE: the relaxed ELBO by hand, the discrete ELBO / IWAE against log p(x) by enumeration, the temperature
schedule and its exact resume, bad inputs, and a class-conditional code prior over a dVAE run."""
import itertools
import json
import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from torch.utils.data import TensorDataset

from ppl_dgm.data import load_dataset
from ppl_dgm.metrics.likelihood import iwae_log_likelihood
from ppl_dgm.train import Checkpoint
from ppl_dgm.train.svi import evaluate_elbo
from ppl_dgm.vae.dvae import DiscreteVAE, temperature_at
from ppl_dgm.vae.dvae_experiment import DVAEConfig, dvae_data, evaluate_dvae, train_dvae
from ppl_dgm.vae.kl_control import kl_weight_at


def tiny_dvae(temperature=0.7):
    """8x8 images -> a 2x2 grid of 3-way codes: 3⁴ = 81 code grids, few enough to enumerate."""
    torch.manual_seed(0)
    model = DiscreteVAE((1, 8, 8), num_codes=3, code_dim=2, channels=4, temperature=temperature)
    with torch.no_grad():  # a q(c | x) far from uniform, so ELBO, IWAE and log p(x) differ visibly
        model.encoder.layers[-1].bias.normal_(0.0, 1.0)
    return model


def binary_digits(n):
    return dvae_data(DVAEConfig(dataset="digits"), "test").tensors[0][:n]


def concrete_log_density(z, logits, temperature):
    """log Concrete(z; α, λ) on the simplex (the density of Maddison et al. 2017), summed over cells:
    log (K−1)! + (K−1) log λ + Σ_k [log α_k − (λ + 1) log z_k] − K log Σ_i α_i z_i^−λ."""
    K = z.shape[-1]
    log_alpha = logits.log_softmax(-1)
    per_cell = (math.lgamma(K) + (K - 1) * math.log(temperature) + (log_alpha - (temperature + 1) * z.log()).sum(-1)
                - K * torch.logsumexp(log_alpha - temperature * z.log(), -1))
    return per_cell.flatten(1).sum(1)


def test_relaxed_elbo_equals_a_hand_computation_at_a_fixed_sample():
    model, x = tiny_dvae(), binary_digits(3)
    pyro.set_rng_seed(1)
    loss = Trace_ELBO().differentiable_loss(model.model, model.guide, x)
    pyro.set_rng_seed(1)  # the same draw: Trace_ELBO runs the guide first
    log_z = poutine.trace(model.guide).get_trace(x).nodes["z"]["value"]
    z = log_z.detach().exp()
    assert torch.allclose(z.sum(-1), torch.ones(3, 2, 2)) and log_z.shape == (3, 2, 2, 3)
    logits = model.encoder(x).permute(0, 2, 3, 1).detach()
    decoder_logits = model.decoder((z @ model.codebook.weight).permute(0, 3, 1, 2)).detach()
    log_likelihood = torch.distributions.Bernoulli(logits=decoder_logits).log_prob(x).flatten(1).sum(1)
    # log p(x | z) + log Concrete(z; uniform, τ) − log Concrete(z; q's logits, τ), the relaxed prior at the guide's τ
    elbo = log_likelihood + concrete_log_density(z, torch.zeros_like(logits), 0.7) - concrete_log_density(z, logits, 0.7)
    assert float(-loss.detach()) == pytest.approx(float(elbo.sum()), rel=1e-4)
    # the same number as Pyro's RelaxedOneHotCategorical pair: the ExpConcrete sites change no density ratio
    relaxed, tau = pyro.distributions.RelaxedOneHotCategorical, torch.tensor(0.7)
    ratio = relaxed(tau, logits=torch.zeros_like(logits)).log_prob(z) - relaxed(tau, logits=logits).log_prob(z)
    assert float((log_likelihood + ratio.flatten(1).sum(1)).sum()) == pytest.approx(float(elbo.sum()), rel=1e-4)
    # the KL weight β scales the z sites of model and guide: log p(x | z) + β (log p(z) − log q(z | x))
    model.set_kl_weight(0.25)
    pyro.set_rng_seed(1)
    weighted = Trace_ELBO().differentiable_loss(model.model, model.guide, x).detach()
    assert float(-weighted) == pytest.approx(float((log_likelihood + 0.25 * (elbo - log_likelihood)).sum()), rel=1e-4)


def test_discrete_elbo_and_iwae_against_log_likelihood_by_enumeration():
    model, x = tiny_dvae(), binary_digits(2)
    model.eval()
    grids = torch.tensor(list(itertools.product(range(3), repeat=4))).view(81, 2, 2)
    with torch.no_grad():
        log_px_given_c = torch.stack([model.log_likelihood(image.expand(81, 1, 8, 8), grids) for image in x]).double()  # (2, 81)
        log_q_cells = model.posterior_logits(x).log_softmax(-1).double()  # (2, 2, 2, 3)
    log_q = torch.stack([log_q_cells[:, i, j].gather(1, grids[:, i, j].expand(2, 81)) for i in range(2) for j in range(2)]).sum(0)
    log_prior = -4 * math.log(3)
    exact_log_px = torch.logsumexp(log_px_given_c + log_prior, 1)  # log Σ_c p(c) p(x | c)
    exact_elbo = (log_q.exp() * (log_px_given_c + log_prior - log_q)).sum(1)
    exact_kl = (log_q.exp() * (log_q - log_prior)).sum(1)
    assert (exact_log_px - exact_elbo > 0.5).all()  # a visible gap, so the bounds below are tested

    copies = 4000  # one image at a time, repeated: the ELBO estimate's Monte Carlo error is known exactly
    for n in range(2):
        def tolerance(values):  # 4 standard errors of the mean of `values` under q over the copies
            mean = (log_q[n].exp() * values).sum()
            return 4 * float((log_q[n].exp() * (values - mean) ** 2).sum().sqrt()) / math.sqrt(copies)

        data = TensorDataset(x[n : n + 1].expand(copies, 1, 8, 8).contiguous())
        result = evaluate_dvae(model, data)
        assert result["test_kl_nats"] == pytest.approx(float(exact_kl[n]), rel=1e-5)  # KL is exact
        assert result["test_elbo_nats"] == pytest.approx(float(exact_elbo[n]), abs=tolerance(log_px_given_c[n]))
        # the Pyro programs in eval mode are the discrete pair: their (score-function-free) −loss estimates the same ELBO
        log_weight = log_px_given_c[n] + log_prior - log_q[n]  # Trace_ELBO samples the KL too
        assert evaluate_elbo(model.model, model.guide, data) == pytest.approx(float(exact_elbo[n]), abs=tolerance(log_weight))
    assert result["codes_used"] <= 4  # one image: at most one code per cell
    # IWAE (Burda et al. 2016) of the same pair: k = 1 averages to the ELBO, IWAE-10 lies between, and IWAE-5000 is within
    # 4 standard deviations of log p(x); by the delta method that sd is √(Var_q(w)/k)/p(x), w = p(x, c)/q(c | x), exactly
    # known here: Var_q(w)/p(x)² = Σ_c p(x, c)²/q(c | x) / p(x)² − 1
    log_joint = log_px_given_c + log_prior
    relative_variance = torch.exp(torch.logsumexp(2 * log_joint - log_q, 1) - 2 * exact_log_px) - 1
    iwae_5000 = iwae_log_likelihood(model.discrete_model, model.discrete_guide, x, 5000).double()
    assert ((iwae_5000 - exact_log_px).abs() < 4 * (relative_variance / 5000).sqrt()).all(), (iwae_5000, exact_log_px)
    iwae_1 = iwae_log_likelihood(model.discrete_model, model.discrete_guide, x.repeat(2000, 1, 1, 1), 1).view(2000, 2).mean(0)
    weight_sd = ((log_q.exp() * (log_joint - log_q - exact_elbo[:, None]) ** 2).sum(1)).sqrt()
    assert ((iwae_1.double() - exact_elbo).abs() < 4 * weight_sd / math.sqrt(2000)).all()
    iwae_10 = iwae_log_likelihood(model.discrete_model, model.discrete_guide, x.repeat(400, 1, 1, 1), 10).view(400, 2).mean(0)
    assert (iwae_10.double() > exact_elbo + 0.3).all() and (iwae_10.double() < exact_log_px).all()


def test_temperature_schedule_values():
    assert temperature_at(0, 1.0, 0.5, 1e-3) == 1.0
    assert temperature_at(100, 1.0, 0.5, 1e-3) == pytest.approx(math.exp(-0.1))
    assert temperature_at(693, 1.0, 0.5, 1e-3) == pytest.approx(0.5, abs=1e-3)
    assert temperature_at(10_000, 1.0, 0.5, 1e-3) == 0.5  # the floor
    assert temperature_at(50, 2.0, 0.5, 0.0) == 2.0  # no annealing
    config = DVAEConfig(temperature_start=2.0, temperature_min=0.3, anneal_rate=0.01)
    assert [config.temperature_at_step(step) for step in (0, 10, 1000)] == [2.0, pytest.approx(2 * math.exp(-0.1)), 0.3]
    assert [kl_weight_at(step, 4) for step in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]  # linear warm-up, never 0
    assert kl_weight_at(0, 0) == 1.0 and DVAEConfig(kl_warmup_steps=100).kl_weight_at_step(49) == 0.5
    assert [kl_weight_at(step, 2, 0.2) for step in range(3)] == [0.1, 0.2, 0.2] and kl_weight_at(7, 0, 0.2) == 0.2


def _digits_run(path, epochs, resume=False, anneal_rate=0.2, max_steps=None, seen=None):
    """1,500 binarized 8x8 digits, batch 250: 6 steps an epoch; τ falls from 1 to 0.11 over 12 steps, β rises over 8."""
    config = DVAEConfig(dataset="digits", num_codes=8, code_dim=4, channels=8, batch_size=250, temperature_min=0.05,
                        anneal_rate=anneal_rate, kl_warmup_steps=8, epochs=epochs)
    if seen is not None:  # record the temperature and KL weight of every training step
        original = DiscreteVAE.relaxed_guide

        def recording(self, x, y=None):
            if torch.is_grad_enabled():
                seen.append((self.temperature, self.kl_weight))
            return original(self, x, y)

        DiscreteVAE.relaxed_guide = recording
    try:
        return train_dvae(config, path, device="cpu", progress=False, resume=resume, max_steps=max_steps)
    finally:
        if seen is not None:
            DiscreteVAE.relaxed_guide = original


def test_the_temperature_is_set_every_step_and_a_stopped_run_resumes_exactly(tmp_path):
    seen = []
    _digits_run(tmp_path / "straight", 2)
    _digits_run(tmp_path / "stopped", 2, max_steps=5, seen=seen)  # stops inside the first epoch
    result = _digits_run(tmp_path / "stopped", 2, resume=True, seen=seen)
    assert seen == [(temperature_at(step, 1.0, 0.05, 0.2), min(1.0, (step + 1) / 8)) for step in range(12)]
    assert result["final_temperature"] == pytest.approx(temperature_at(12, 1.0, 0.05, 0.2)) and result["final_kl_weight"] == 1.0
    straight = Checkpoint(tmp_path / "straight" / "checkpoint.pt").load()
    resumed = Checkpoint(tmp_path / "stopped" / "checkpoint.pt").load()
    for name, value in straight["module"].items():
        assert torch.equal(value, resumed["module"][name]), name
    assert (tmp_path / "straight" / "metrics.jsonl").read_bytes() == (tmp_path / "stopped" / "metrics.jsonl").read_bytes()
    _digits_run(tmp_path / "constant", 2, anneal_rate=0.0)  # the schedule matters: without it the weights differ
    constant = Checkpoint(tmp_path / "constant" / "checkpoint.pt").load()
    assert not torch.equal(constant["module"]["codebook.weight"], straight["module"]["codebook.weight"])
    records = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and all(r["val_loss"] > 0 for r in records)


def test_bad_inputs_are_clear_errors(tmp_path):
    from ppl_dgm.cli import main

    for name in ("temperature_start", "temperature_min"):
        for bad in (0, -0.5, float("nan")):
            with pytest.raises(ValueError, match=f"{name} must be a positive float, got {bad!r}"):
                DVAEConfig(**{name: bad})
    with pytest.raises(ValueError, match="anneal_rate must be a float >= 0, got -0.1"):
        DVAEConfig(anneal_rate=-0.1)
    with pytest.raises(ValueError, match="kl_warmup_steps must be an int >= 0, got -1"):
        DVAEConfig(kl_warmup_steps=-1)
    with pytest.raises(ValueError, match="kl_weight must be a positive float, got 0"):
        DVAEConfig(kl_weight=0)
    with pytest.raises(ValueError, match=r"dataset='cifar10' is not known; expected one of \('mnist5k', 'digits'"):
        DVAEConfig(dataset="cifar10")
    with pytest.raises(ValueError, match="temperature must be a positive float, got 0"):
        DiscreteVAE((1, 8, 8), temperature=0)
    model = tiny_dvae()
    with pytest.raises(ValueError, match="temperature must be a positive float, got -1"):
        model.set_temperature(-1)
    with pytest.raises(ValueError, match="kl_weight must be a positive float, got 0"):
        model.set_kl_weight(0)
    with pytest.raises(ValueError, match=r"codes must have shape \(B, 2, 2\), got \(1, 7, 7\)"):
        model.decode_codes(torch.zeros(1, 7, 7, dtype=torch.long))
    with pytest.raises(ValueError, match=r"codes must be integers in \[0, 3\)"):
        model.decode_codes(torch.full((1, 2, 2), 3))
    with pytest.raises(ValueError, match="n must be a positive int, got 0"):
        model.sample(0)
    with pytest.raises(ValueError, match="temperature_start must be a positive float, got 0.0"):
        main(["train", "dvae", "--dataset", "digits", "--temperature-start", "0", "--runs-dir", str(tmp_path / "runs"),
              "--no-progress"])
    assert not (tmp_path / "runs").exists()  # a failed start leaves nothing behind


@pytest.fixture(scope="module")
def dvae_runs(tmp_path_factory):
    """Two barely trained mnist5k dVAE runs (16 and 8 codes, one through the command line) and a cached digit classifier."""
    from ppl_dgm.cli import main
    from ppl_dgm.metrics.frechet import feature_classifier

    root = tmp_path_factory.mktemp("runs")
    feature_classifier("mnist5k", cache_dir=root, epochs=1)
    assert main(["train", "dvae", "--num-codes", "16", "--code-dim", "4", "--channels", "4", "--epochs", "1", "--max-steps", "2",
                 "--runs-dir", str(root), "--name", "dvae16", "--device", "cpu", "--no-progress"]) == 0
    train_dvae(DVAEConfig(num_codes=8, code_dim=4, channels=4, epochs=1), root / "dvae8", device="cpu", progress=False, max_steps=1)
    return root


def test_class_conditional_code_prior_over_a_dvae_run(dvae_runs, tmp_path, capsys):
    from ppl_dgm.cli import main
    from ppl_dgm.runs import WrongFamilyError, load_run
    from ppl_dgm.vae.prior_experiment import CodePriorConfig, train_code_prior

    source = load_run(dvae_runs / "dvae16", device="cpu")
    assert source.family == "dvae" and source.evaluate(iwae_k=2)["iwae_k"] == 2
    images = source.sample(8, seed=1)
    assert images.shape == (8, 1, 28, 28) and torch.equal(images, source.sample(8, seed=1))
    assert main(["sample", "dvae", str(dvae_runs / "dvae16"), "--n", "4", "--device", "cpu"]) == 0

    runs = tmp_path / "runs"
    assert main(["train", "code-prior", "--source-run", str(dvae_runs / "dvae16"), "--class-conditional", "--dim", "16",
                 "--depth", "1", "--heads", "2", "--epochs", "1", "--max-steps", "3", "--num-samples", "100",
                 "--classifier-dir", str(dvae_runs), "--runs-dir", str(runs), "--device", "cpu", "--no-progress"]) == 0
    result = json.loads((runs / "code_prior_dvae16" / "results.json").read_text())
    # the bound is in nats on the binarized test digits, with the dVAE's own Bernoulli decoder at its argmax codes
    test = load_dataset("binarized_mnist5k", "test").tensors[0]
    with torch.no_grad():
        decoder_nats = -source.model.log_likelihood(test, source.model.codes(test)).mean()
    assert result["test_decoder_nats"] == pytest.approx(float(decoder_nats), rel=1e-5)
    assert result["test_nll_bound_nats"] == pytest.approx(result["test_prior_nats"] + result["test_decoder_nats"], rel=1e-6)
    assert "test_bits_per_dim" not in result and result["num_codes"] == 16 and result["grid"] == [7, 7]
    assert 0.0 <= result["class_accuracy"] <= 1.0 and math.isfinite(result["sample_fd"])

    prior = load_run(runs / "code_prior_dvae16", device="cpu")
    assert prior.family == "code-prior" and prior.config.class_conditional
    samples = prior.sample(10, seed=0)
    assert samples.shape == (10, 1, 28, 28) and 0 <= float(samples.min()) and float(samples.max()) <= 1
    assert set(prior.evaluate(num_samples=20, cache_dir=str(dvae_runs))) >= {"test_nll_bound_nats", "class_accuracy"}

    saved = json.loads((runs / "code_prior_dvae16" / "config.json").read_text())
    saved["source_run"] = str(dvae_runs / "dvae8")
    (runs / "code_prior_dvae16" / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"models 16 codes but source_run=.*dvae8' has a codebook of 8"):
        load_run(runs / "code_prior_dvae16", device="cpu")
    (dvae_runs / "not_codes").mkdir(exist_ok=True)  # a run of a family without codes
    (dvae_runs / "not_codes" / "config.json").write_text(json.dumps({"model": "vae", "dataset": "digits", "latent_dim": 4}))
    (dvae_runs / "not_codes" / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(WrongFamilyError, match="is a vae run, not a vqvae or dvae run"):
        train_code_prior(CodePriorConfig(source_run=str(dvae_runs / "not_codes")), tmp_path / "p", device="cpu")
