"""The autoregressive code prior: causal, normalized, fits a known code distribution, samples from it; and the VQ-VAE
two-stage run around it."""
import itertools
import json
import math

import pytest
import torch

from ppl_dgm.vae.autoencoder_experiment import VQVAEConfig, train_vqvae
from ppl_dgm.vae.prior import CodePrior
from ppl_dgm.vae.prior_experiment import CodePriorConfig, load_code_prior_run, train_code_prior


def tiny_prior(num_codes=3, grid=(1, 2), num_classes=None, dropout=0.0):
    torch.manual_seed(0)
    return CodePrior(num_codes, grid, num_classes=num_classes, dim=16, depth=1, heads=2, dropout=dropout)


def test_prior_is_a_normalized_distribution_over_all_grids():
    """Σ over all 3² grids of p(c) = 1, also per class."""
    for num_classes in (None, 2):
        prior = tiny_prior(num_classes=num_classes).eval()
        grids = torch.tensor(list(itertools.product(range(3), repeat=2))).view(9, 1, 2)
        for y in ([None] if num_classes is None else [torch.zeros(9, dtype=torch.long), torch.ones(9, dtype=torch.long)]):
            total = prior.log_prob(grids, y).detach().exp().sum()
            assert float(total) == pytest.approx(1.0, abs=1e-5)


def test_prior_is_causal():
    """The logits of position i do not change when codes at positions ≥ i change."""
    prior = tiny_prior(num_codes=5, grid=(3, 3)).eval()
    codes = torch.randint(5, (2, 9), generator=torch.Generator().manual_seed(0))
    base = prior.logits(codes)
    for j in range(9):
        changed = codes.clone()
        changed[:, j] = (changed[:, j] + 1) % 5
        after = prior.logits(changed)
        assert torch.allclose(after[:, : j + 1], base[:, : j + 1], atol=1e-6)  # position j predicts code j from codes < j
        if j < 8:
            assert not torch.allclose(after[:, j + 1 :], base[:, j + 1 :], atol=1e-6)


def test_prior_fits_a_markov_chain_and_samples_it():
    """Codes from a known first-order chain over a 1x4 grid: the fitted NLL per grid approaches the chain's entropy and
    the samples' pair frequencies match the transition matrix."""
    generator = torch.Generator().manual_seed(1)
    initial = torch.tensor([0.6, 0.3, 0.1])
    transition = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4]])
    n = 4000
    codes = torch.empty(n, 4, dtype=torch.long)
    codes[:, 0] = torch.multinomial(initial, n, replacement=True, generator=generator)
    for i in range(1, 4):
        codes[:, i] = torch.multinomial(transition[codes[:, i - 1]], 1, generator=generator).squeeze(1)
    entropy = float(-(initial * initial.log()).sum())
    marginal = initial.clone()
    for _ in range(3):
        entropy += float((marginal[:, None] * -(transition * transition.log())).sum())
        marginal = marginal @ transition
    prior = tiny_prior(grid=(1, 4))
    optimizer = torch.optim.Adam(prior.parameters(), lr=1e-2)
    grids = codes.view(n, 1, 4)
    for step in range(300):
        batch = grids[torch.randint(n, (256,), generator=generator)]
        loss = prior.loss((batch,))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    prior.eval()
    nll = float(-prior.log_prob(grids).detach().mean())
    assert entropy <= nll + 0.02 and nll < entropy + 0.05, (nll, entropy)
    samples = prior.sample(4000, generator=torch.Generator().manual_seed(2)).view(-1, 4)
    first = torch.bincount(samples[:, 0], minlength=3).float() / 4000
    assert torch.allclose(first, initial, atol=0.04)
    pairs = torch.zeros(3, 3)
    for i in range(1, 4):
        pairs.index_put_((samples[:, i - 1], samples[:, i]), torch.ones(4000), accumulate=True)
    assert torch.allclose(pairs / pairs.sum(1, keepdim=True), transition, atol=0.05)


def test_class_conditional_prior_follows_the_label():
    """Codes equal to the label: a fitted p(c | y) samples grids of that label only."""
    prior = tiny_prior(num_codes=3, grid=(2, 2), num_classes=3)
    optimizer = torch.optim.Adam(prior.parameters(), lr=1e-2)
    y = torch.arange(3).repeat(50)
    codes = y.view(-1, 1, 1).expand(-1, 2, 2)
    for _ in range(100):
        loss = prior.loss((codes, y))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    prior.eval()
    samples = prior.sample(30, torch.arange(3).repeat_interleave(10), generator=torch.Generator().manual_seed(0))
    assert (samples == torch.arange(3).repeat_interleave(10).view(-1, 1, 1)).float().mean() > 0.99
    assert prior.sample(4, 2, generator=torch.Generator().manual_seed(0)).eq(2).all()  # a scalar label


def test_prior_bad_inputs():
    prior = tiny_prior(num_codes=3, grid=(1, 2))
    with pytest.raises(ValueError, match=r"codes must have shape \(B, 1, 2\), got \(2, 2, 2\)"):
        prior.log_prob(torch.zeros(2, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"codes must be integers in \[0, 3\); .* range \[0, 3\]"):
        prior.log_prob(torch.tensor([[[0, 3]]]))
    with pytest.raises(ValueError, match="y was given but this prior is unconditional"):
        prior.log_prob(torch.zeros(1, 1, 2, dtype=torch.long), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"this prior is class-conditional \(num_classes=2\); pass y"):
        tiny_prior(num_classes=2).sample(2)
    with pytest.raises(ValueError, match=r"y must be 2 labels in \[0, 2\)"):
        tiny_prior(num_classes=2).sample(2, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="temperature must be a float > 0, got 0"):
        prior.sample(2, temperature=0)
    with pytest.raises(ValueError, match="dim=10 must be a multiple of heads=4"):
        CodePrior(3, (1, 2), dim=10, heads=4)


@pytest.fixture(scope="module")
def vq_runs(tmp_path_factory):
    """Two briefly trained mnist5k VQ-VAE runs with different codebook sizes, and a cached digit classifier."""
    from ppl_dgm.metrics.frechet import feature_classifier

    root = tmp_path_factory.mktemp("runs")
    feature_classifier("mnist5k", cache_dir=root, epochs=1)
    for num_codes in (16, 32):
        train_vqvae(VQVAEConfig(num_codes=num_codes, code_dim=4, channels=8, epochs=1), root / f"vq{num_codes}",
                    device="cpu", progress=False, max_steps=3)
    return root


def test_two_stage_run_trains_evaluates_and_loads(vq_runs):
    config = CodePriorConfig(source_run=str(vq_runs / "vq16"), dim=16, depth=1, heads=2, epochs=1, class_conditional=True)
    result = train_code_prior(config, vq_runs / "prior", device="cpu", progress=False, max_steps=4, num_samples=100,
                              cache_dir=vq_runs)
    assert result["num_codes"] == 16 and result["grid"] == [7, 7]
    # the bound's parts: nats per code × 49 = prior nats; bits/dim = (prior + decoder nats)/(784 ln 2) + log2 256
    assert result["test_prior_nats"] == pytest.approx(49 * result["test_nats_per_code"], rel=1e-6)
    expected = (result["test_prior_nats"] + result["test_decoder_nats"]) / (784 * math.log(2)) + 8
    assert result["test_bits_per_dim"] == pytest.approx(expected, rel=1e-6)
    assert result["test_nats_per_code"] < math.log(16) + 0.5  # barely trained: near uniform over 16 codes
    assert 0.0 <= result["class_accuracy"] <= 1.0 and math.isfinite(result["sample_fd"])
    model, loaded = load_code_prior_run(vq_runs / "prior", device="cpu")
    assert loaded == config
    images = model.sample(4, torch.tensor([0, 1, 2, 3]), generator=torch.Generator().manual_seed(0))
    assert images.shape == (4, 1, 28, 28) and 0 <= float(images.min()) and float(images.max()) <= 1


def test_two_stage_bound_terms_against_a_hand_computation(vq_runs):
    """The bound's terms in batches of 4 against each digit alone (its own label) and log N(x̃; decoder(c(x)), σ²) pixel by
    pixel, with σ² the floored mean squared reconstruction error of the dequantized training digits."""
    from ppl_dgm.data import load_dataset
    from ppl_dgm.metrics.likelihood import dequantize
    from ppl_dgm.vae.prior_experiment import CodePriorModel, gaussian_decoder_variance, load_source_run, two_stage_bound

    source, source_config = load_source_run(vq_runs / "vq16")
    torch.manual_seed(0)
    prior = CodePrior(16, (7, 7), num_classes=10, dim=16, depth=1, heads=2, dropout=0.0).eval()
    model = CodePriorModel(prior, source)
    train_images = load_dataset("mnist5k", "train").tensors[0][:300]
    test_images, labels = (t[:6] for t in load_dataset("mnist5k", "test").tensors[:2])
    variance = gaussian_decoder_variance(source, train_images, generator=torch.Generator().manual_seed(1), batch_size=128)
    terms = two_stage_bound(model, test_images, labels, decoder_variance=variance, generator=torch.Generator().manual_seed(2),
                            batch_size=4)
    with torch.no_grad():
        codes = source.codes(test_images)
        recon_train = source.decode_codes(source.codes(train_images))
        by_hand_variance = ((dequantize(train_images, generator=torch.Generator().manual_seed(1)) - recon_train) ** 2).mean(0)
        torch.testing.assert_close(variance, by_hand_variance.clamp(min=1 / (12 * 256**2)))
        log_prior = torch.cat([prior.log_prob(codes[i : i + 1], labels[i : i + 1]) for i in range(6)])  # one digit at a time
        x = dequantize(test_images, generator=torch.Generator().manual_seed(2))
        mean = source.decode_codes(codes)
        log_density = (-0.5 * (x - mean) ** 2 / variance - 0.5 * torch.log(2 * math.pi * variance)).flatten(1).sum(1)
    torch.testing.assert_close(terms["log_prior"], log_prior)
    torch.testing.assert_close(terms["log_likelihood"], log_density, rtol=1e-5, atol=1e-3)
    with pytest.raises(ValueError, match="y must be given exactly when the prior is class-conditional"):
        two_stage_bound(model, test_images, decoder_variance=variance)
    with pytest.raises(ValueError, match="a VQ-VAE source needs decoder_variance"):
        two_stage_bound(model, test_images, labels)


def test_prior_refuses_a_source_with_another_codebook(vq_runs, tmp_path):
    import shutil

    config = CodePriorConfig(source_run=str(vq_runs / "vq16"), dim=16, depth=1, heads=2, epochs=1)
    train_code_prior(config, tmp_path / "prior", device="cpu", progress=False, max_steps=2, num_samples=20, cache_dir=vq_runs)
    saved = json.loads((tmp_path / "prior" / "config.json").read_text())
    saved["source_run"] = str(vq_runs / "vq32")
    (tmp_path / "prior" / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"models 16 codes but source_run=.*vq32' has a codebook of 32"):
        load_code_prior_run(tmp_path / "prior", device="cpu")
    shutil.rmtree(vq_runs / "vq16_missing", ignore_errors=True)
    with pytest.raises(FileNotFoundError, match=r"source_run=.*vq16_missing' is not a trained run folder"):
        train_code_prior(CodePriorConfig(source_run=str(vq_runs / "vq16_missing")), tmp_path / "p2", device="cpu")
    with pytest.raises(ValueError, match="source_run must name a VQ-VAE run folder"):
        CodePriorConfig()


def test_code_prior_through_load_run_and_the_command_line(vq_runs, tmp_path):
    from ppl_dgm.cli import main
    from ppl_dgm.runs import load_run

    runs = tmp_path / "runs"
    assert main(["train", "code-prior", "--source-run", str(vq_runs / "vq16"), "--dim", "16", "--depth", "1", "--heads", "2",
                 "--epochs", "1", "--max-steps", "2", "--num-samples", "20", "--classifier-dir", str(vq_runs),
                 "--runs-dir", str(runs), "--device", "cpu", "--no-progress"]) == 0
    run = load_run(runs / "code_prior_vq16", device="cpu")
    assert run.family == "code-prior"
    images = run.sample(6, seed=3, temperature=0.5)
    assert images.shape == (6, 1, 28, 28) and torch.equal(images, run.sample(6, seed=3, temperature=0.5))
    with pytest.raises(ValueError, match="sampler='ddim': a code-prior run has no sampler to choose"):
        run.sample(2, sampler="ddim")
    assert main(["sample", "code-prior", str(runs / "code_prior_vq16"), "--n", "4", "--device", "cpu"]) == 0
    assert (runs / "code_prior_vq16" / "samples_cli.png").is_file()
