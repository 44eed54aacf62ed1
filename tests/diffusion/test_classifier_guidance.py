"""Classifier guidance (Dhariwal & Nichol 2021) against a Gaussian mixture's exact ε and exact p(y | x_t); the noisy
classifier's training, its run family, CLI and bad inputs."""
import json
import math

import pytest
import torch
from torch import nn

from ppl_dgm.diffusion.classifier_guidance import NoisyClassifier, classifier_guided_eps
from ppl_dgm.diffusion.sampling import SAMPLER_NAMES, SDE_SAMPLER_NAMES, sample_by_name
from ppl_dgm.diffusion.schedules import NoiseSchedule, cosine_schedule, linear_schedule
from ppl_dgm.sde import VPSDE


def alpha_bar_of(noise, t):
    """ᾱ at network time t, written out independently of the library: the table at step round(tT), or the VP SDE's
    a(t)² = exp(−½t²(β_max − β_min) − tβ_min) (Song et al. 2021, eq. 29)."""
    t = t.double()
    if isinstance(noise, NoiseSchedule):
        return noise.alpha_bar[torch.round(t * noise.num_steps).long() - 1]
    return torch.exp(-0.5 * t**2 * (noise.beta_max - noise.beta_min) - t * noise.beta_min)


class Mixture:
    """Data Σ_k π_k N(μ_k, σ²I) in D dimensions; under q(x_t | x_0) component k is N(√ᾱ μ_k, (ᾱσ² + 1 − ᾱ)I)."""

    def __init__(self, noise, means=((1.0, -0.5, 0.3), (-0.8, 0.6, -0.4)), std=0.4, weights=(0.3, 0.7)):
        self.noise, self.std = noise, std
        self.means = torch.tensor(means, dtype=torch.float64)
        self.log_weights = torch.tensor(weights, dtype=torch.float64).log()

    def parts(self, x, t):
        """(log π_k + log q_t(x | k)) (B, K) and each component's exact ε_k (B, K, D), in float64."""
        alpha_bar = alpha_bar_of(self.noise, t)[:, None, None]
        variance = alpha_bar * self.std**2 + 1 - alpha_bar
        difference = x.double()[:, None, :] - alpha_bar.sqrt() * self.means[None]
        dims = x.shape[-1]
        variance_k = variance[..., 0]  # (B, 1), one variance for every component
        log_joint = self.log_weights - 0.5 * (difference**2).sum(-1) / variance_k - 0.5 * dims * torch.log(2 * math.pi * variance_k)
        eps = difference * (1 - alpha_bar).sqrt() / variance  # ε_k = −√(1 − ᾱ) ∇ log N(x; √ᾱ μ_k, (ᾱσ² + 1 − ᾱ) I)
        return log_joint, eps


class MixtureEps(nn.Module):
    """The exact ε of the mixture, ε = Σ_k p(k | x_t) ε_k; given y ≥ 0 the exact ε_y of component y (−1: the mixture)."""

    def __init__(self, mixture):
        super().__init__()
        self.mixture = mixture
        self.anchor = nn.Parameter(torch.zeros((), dtype=torch.float64))  # samplers start in the network's dtype

    def forward(self, x, t, y=None):
        log_joint, eps = self.mixture.parts(x, t)
        mixed = (torch.softmax(log_joint, -1)[..., None] * eps).sum(1)
        if y is None:
            return mixed.to(x.dtype)
        component = eps[torch.arange(x.shape[0]), y.clamp(min=0)]
        return torch.where((y >= 0)[:, None], component, mixed).to(x.dtype)


class MixtureClassifier(nn.Module):
    """Logits whose log-softmax is the exact p(y | x_t) of the mixture (Bayes: π_y q_t(x | y) / Σ_k π_k q_t(x | k))."""

    def __init__(self, mixture):
        super().__init__()
        self.mixture, self.num_classes = mixture, 2

    def forward(self, x, t):
        return self.mixture.parts(x, t)[0].to(x.dtype)


NOISES = {"linear T=50": lambda: linear_schedule(50), "cosine T=40": lambda: cosine_schedule(40), "VPSDE": lambda: VPSDE(0.1, 20.0)}


def _times(noise, batch_size, generator):
    if isinstance(noise, NoiseSchedule):  # DDPM steps i/T
        return torch.randint(1, noise.num_steps + 1, (batch_size,), generator=generator).double() / noise.num_steps
    return 0.01 + 0.99 * torch.rand(batch_size, generator=generator, dtype=torch.float64)  # continuous t


@pytest.mark.parametrize("name", list(NOISES))
def test_scale_one_with_the_exact_classifier_gives_the_exact_class_conditional_eps(name):
    noise = NOISES[name]()
    generator = torch.Generator().manual_seed(0)
    mixture = Mixture(noise)
    x = 1.5 * torch.randn(64, 3, generator=generator, dtype=torch.float64)
    t = _times(noise, 64, generator)
    y = torch.randint(0, 2, (64,), generator=generator)
    eps_model, classifier = MixtureEps(mixture), MixtureClassifier(mixture)
    unguided, conditional = eps_model(x, t), eps_model(x, t, y)
    assert (conditional - unguided).abs().max() > 0.05  # guidance has something to do
    for scale in (0.0, 1.0, 2.5):
        guided = classifier_guided_eps(eps_model, classifier, y, scale, noise)(x, t)
        # s·∇ log p(y | x_t) = s·(∇ log q_t(x | y) − ∇ log q_t(x)): ε̂ = ε + s(ε_y − ε), exact at s = 1
        torch.testing.assert_close(guided, unguided + scale * (conditional - unguided), atol=1e-10, rtol=1e-10)


def test_guidance_reads_sigma_from_the_noise_it_is_given():
    """The σ_t of a DDPM schedule and of the VP SDE differ: guidance with the other one is no longer exact."""
    schedule, sde = linear_schedule(50), VPSDE(0.1, 20.0)
    generator = torch.Generator().manual_seed(1)
    x, t = torch.randn(16, 3, generator=generator, dtype=torch.float64), _times(schedule, 16, generator)
    y = torch.randint(0, 2, (16,), generator=generator)
    mixture = Mixture(schedule)
    exact = MixtureEps(mixture)(x, t, y)
    wrong = classifier_guided_eps(MixtureEps(mixture), MixtureClassifier(mixture), y, 1.0, sde)(x, t)
    assert (wrong - exact).abs().max() > 1e-3


STEPS = {"ancestral": None, "ode": None, "ddim": 10, "heun": 5, "reverse-sde": 20, "pc": 25}


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_every_sampler_with_the_exact_classifier_samples_the_class_conditional_chain(sampler):
    """With s = 1 and the exact p(y | x_t), every sampler's guided chain is the chain of the exact ε_y, draw for draw."""
    schedule, sde = linear_schedule(50), VPSDE(0.1, 20.0)
    mixture = Mixture(sde if sampler in SDE_SAMPLER_NAMES else schedule)
    eps_model, classifier = MixtureEps(mixture), MixtureClassifier(mixture)
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    options = dict(steps=STEPS.get(sampler, 8), sde=sde)
    calls = []
    guided = sample_by_name(sampler, eps_model, schedule, (6, 3), generator=torch.Generator().manual_seed(2), classifier=classifier,
                            classifier_scale=1.0, classifier_y=y, callback=lambda call, x, x0: calls.append(call), **options)
    exact = sample_by_name(sampler, eps_model, schedule, (6, 3), generator=torch.Generator().manual_seed(2), y=y, **options)
    unguided = sample_by_name(sampler, eps_model, schedule, (6, 3), generator=torch.Generator().manual_seed(2), **options)
    assert guided.dtype == torch.float64 and calls
    torch.testing.assert_close(guided, exact, atol=1e-6, rtol=1e-6)
    assert (guided - unguided).abs().max() > 1e-2


def test_classifier_guidance_composes_with_classifier_free_guidance():
    """w and s together: ε̃ = (1 + w)ε_y − wε (Ho & Salimans 2022, eq. 6), then − sσ∇ log p(y | x_t) = ε + (1 + w + s)(ε_y − ε)."""
    schedule = linear_schedule(50)
    mixture = Mixture(schedule)
    eps_model, classifier = MixtureEps(mixture), MixtureClassifier(mixture)
    y = torch.tensor([1, 0, 1, 0])

    class Extrapolated(MixtureEps):
        def forward(self, x, t, labels=None):
            return super().forward(x, t) + 3.5 * (super().forward(x, t, y) - super().forward(x, t))

    both = sample_by_name("ddim", eps_model, schedule, (4, 3), steps=6, generator=torch.Generator().manual_seed(3), y=y,
                          guidance_scale=1.0, classifier=classifier, classifier_scale=1.5)
    expected = sample_by_name("ddim", Extrapolated(mixture), schedule, (4, 3), steps=6, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(both, expected, atol=1e-8, rtol=1e-8)


def test_bad_guidance_inputs_are_clear_errors():
    schedule = linear_schedule(50)
    mixture = Mixture(schedule)
    eps_model, classifier = MixtureEps(mixture), MixtureClassifier(mixture)
    y = torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"classifier_scale=2.0 needs a classifier p_φ\(y \| x_t, t\), got classifier=None"):
        sample_by_name("ddim", eps_model, schedule, (2, 3), steps=2, classifier_scale=2.0, classifier_y=y)
    for bad in (-1.0, math.nan, True):
        with pytest.raises(ValueError, match=r"classifier_scale must be a finite float >= 0 \(s of Dhariwal & Nichol 2021\), got"):
            sample_by_name("ddim", eps_model, schedule, (2, 3), steps=2, classifier=classifier, classifier_scale=bad, classifier_y=y)
    with pytest.raises(ValueError, match="classifier guidance needs the classes to guide toward: pass classifier_y"):
        sample_by_name("ddim", eps_model, schedule, (2, 3), steps=2, classifier=classifier, classifier_scale=1.0)
    with pytest.raises(ValueError, match=r"classifier_y must hold one class per sample, 2 \(shape=\(2, 3\)\), got 3"):
        sample_by_name("ddim", eps_model, schedule, (2, 3), steps=2, classifier=classifier, classifier_scale=1.0,
                       classifier_y=torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match=r"y must hold classes in \[0, 2\) of the classifier, got values in \[0, 2\]"):
        classifier_guided_eps(eps_model, classifier, torch.tensor([0, 2]), 1.0, schedule)
    with pytest.raises(TypeError, match="y must be an int64 tensor of class labels"):
        classifier_guided_eps(eps_model, classifier, torch.tensor([0.0, 1.0]), 1.0, schedule)
    with pytest.raises(TypeError, match="noise must be a NoiseSchedule, a VPSDE or NoiseLevels, got str"):
        classifier_guided_eps(eps_model, classifier, y, 1.0, "linear")


def test_noisy_classifier_shapes_and_parameter_count():
    classifier = NoisyClassifier()
    assert sum(p.numel() for p in classifier.parameters()) == 239_114
    logits = classifier(torch.randn(3, 1, 28, 28), torch.tensor([0.001, 0.5, 1.0]))
    assert logits.shape == (3, 10)
    assert NoisyClassifier(3, 5, channels=8, channel_mults=(1, 2))(torch.randn(2, 3, 32, 32), 0.3).shape == (2, 5)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, H, W\), got shape \(2, 3, 8, 8\)"):
        classifier(torch.randn(2, 3, 8, 8), 0.5)
    with pytest.raises(ValueError, match="groups must divide channels and every level width"):
        NoisyClassifier(channels=12)


def test_short_training_on_mnist5k_learns_the_digits_at_small_t_and_chance_at_t_one(tmp_path):
    from ppl_dgm.diffusion.classifier_experiment import NoisyClassifierConfig, train_noisy_classifier

    config = NoisyClassifierConfig(channels=16, epochs=3, batch_size=64, lr=2e-3, eval_times=(0.0, 1.0))
    result = train_noisy_classifier(config, tmp_path / "clf", device="cpu", progress=False)
    records = [json.loads(line) for line in (tmp_path / "clf" / "metrics.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in records] == [1, 2, 3]
    assert records[-1]["test_accuracy_t0.001"] > records[0]["test_accuracy_t0.001"]
    assert result["test_accuracy_t0.001"] > 0.35 and result["test_accuracy_t0.1"] > 0.35  # chance: 0.1
    assert result["test_accuracy_t1"] < 0.2  # ᾱ_T ≈ 4e-5: nothing left to classify
    assert result["test_accuracy_t0.001"] > result["test_accuracy_t0.5"] > result["test_accuracy_t0.9"]


def _tiny_classifier(epochs, **overrides):
    from ppl_dgm.diffusion.classifier_experiment import NoisyClassifierConfig, train_noisy_classifier

    config = NoisyClassifierConfig(**{"dataset": "digits", "channels": 8, "channel_mults": (1, 2), "num_steps": 20,
                                      "batch_size": 250, "epochs": epochs, **overrides})
    return lambda path, resume=False: train_noisy_classifier(config, path, device="cpu", progress=False, resume=resume)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    from ppl_dgm.diffusion.experiment import DDPMConfig, train_ddpm

    root = tmp_path_factory.mktemp("guided")
    for name, class_conditional in (("ddpm", False), ("cddpm", True)):
        config = DDPMConfig(dataset="digits", channels=8, channel_mults=(1, 2), num_steps=20, sample_steps=4, batch_size=500,
                            ema_decay=0.9, class_conditional=class_conditional, epochs=1)
        train_ddpm(config, root / name, device="cpu", progress=False)
    _tiny_classifier(2)(root / "clf")
    _tiny_classifier(1, num_steps=10)(root / "clf_t10")
    _tiny_classifier(1, schedule="cosine")(root / "clf_cosine")
    return root


def test_the_run_family_extends_exactly_and_reloads(tmp_path, tiny_runs):
    from ppl_dgm.runs import WrongFamilyError, load_run, run_family
    from ppl_dgm.train import Checkpoint

    _tiny_classifier(1)(tmp_path / "extended")
    _tiny_classifier(2)(tmp_path / "extended", resume=True)
    straight, extended = (Checkpoint(path / "checkpoint.pt").load() for path in (tiny_runs / "clf", tmp_path / "extended"))
    for key, value in straight["module"].items():
        assert torch.equal(value, extended["module"][key]), key
    assert (tiny_runs / "clf" / "metrics.jsonl").read_bytes() == (tmp_path / "extended" / "metrics.jsonl").read_bytes()
    run = load_run(tmp_path / "extended", device="cpu")
    assert run.family == run_family(tiny_runs / "clf") == "noisy-classifier" and isinstance(run.model, NoisyClassifier)
    assert run_family(tiny_runs / "ddpm") == "ddpm"
    assert [record["epoch"] for record in run.metrics] == [1, 2] and "test_accuracy_t0.05" in run.metrics[-1]
    result = run.evaluate(num_examples=60, seed=1)
    assert result["num_examples"] == 60 and set(result) >= {"test_accuracy_t0.05", "test_accuracy_t1", "test_cross_entropy_nats"}
    assert result == run.evaluate(num_examples=60, seed=1)
    with pytest.raises(ValueError, match="a noisy-classifier run is a classifier .* not a generative model"):
        run.sample(4)
    with pytest.raises(WrongFamilyError, match="is a noisy-classifier run, not a ddpm run"):
        load_run(tmp_path / "extended", family="ddpm")


def test_run_sample_guides_an_unconditional_ddpm_with_one_row_per_class(tiny_runs):
    from ppl_dgm.runs import load_run

    run = load_run(tiny_runs / "ddpm", device="cpu")
    plain = run.sample(20, sampler="ddim", steps=3, seed=1)
    unguided = run.sample(20, sampler="ddim", steps=3, seed=1, classifier=tiny_runs / "clf", classifier_scale=0.0)
    guided = run.sample(20, sampler="ddim", steps=3, seed=1, classifier=load_run(tiny_runs / "clf", device="cpu"), classifier_scale=8.0)
    assert guided.shape == unguided.shape == (20, 1, 8, 8)
    assert torch.equal(unguided, plain)  # s = 0: the unguided chain, draw for draw
    assert (guided - unguided).abs().max() > 1e-4
    conditional = load_run(tiny_runs / "cddpm", device="cpu")  # classifier guidance on top of a conditional run's labels
    assert conditional.sample(10, sampler="ddim", steps=3, classifier=tiny_runs / "clf", classifier_scale=2.0).shape == (10, 1, 8, 8)


def test_run_sample_refuses_a_classifier_of_another_forward_process_or_family(tiny_runs):
    from ppl_dgm.runs import WrongFamilyError, load_run

    run = load_run(tiny_runs / "ddpm", device="cpu")
    with pytest.raises(ValueError, match=r"the classifier '.*clf_t10' was trained for another forward process than the DDPM run "
                                         r"'.*ddpm': num_steps 10 vs 20; train one with `ppl-dgm train noisy-classifier "
                                         r"--dataset digits --schedule linear --num-steps 20`"):
        run.sample(10, classifier=tiny_runs / "clf_t10")
    with pytest.raises(ValueError, match="schedule 'cosine' vs 'linear'"):
        run.sample(10, classifier=tiny_runs / "clf_cosine")
    with pytest.raises(WrongFamilyError, match="is a ddpm run, not a noisy-classifier run"):
        run.sample(10, classifier=tiny_runs / "cddpm")
    with pytest.raises(ValueError, match="classifier_scale=2.0 needs a classifier"):
        run.sample(10, classifier_scale=2.0)
    with pytest.raises(ValueError, match="classifier_scale must be a finite float >= 0"):
        run.sample(10, classifier=tiny_runs / "clf", classifier_scale=-1.0)
    with pytest.raises(TypeError, match="classifier must be a noisy-classifier run folder or its Run"):
        run.sample(10, classifier=NoisyClassifier())


def test_check_classifier_matches_names_the_dataset_and_image_shape():
    from ppl_dgm.diffusion.classifier_experiment import NoisyClassifierConfig, check_classifier_matches
    from ppl_dgm.diffusion.experiment import DDPMConfig

    with pytest.raises(ValueError, match=r"the classifier 'a' was trained for another forward process than the DDPM run 'b': "
                                         r"dataset 'digits' vs 'mnist5k'; image shape \(1, 8, 8\) vs \(1, 28, 28\)"):
        check_classifier_matches(NoisyClassifierConfig(dataset="digits"), DDPMConfig(), "'a'", "'b'")
    check_classifier_matches(NoisyClassifierConfig(), DDPMConfig())


def test_cli_trains_evaluates_and_guides(tmp_path, tiny_runs, capsys):
    from ppl_dgm.cli import build_parser, main

    args = build_parser().parse_args(["sample", "ddpm", "runs/x", "--classifier", "runs/c", "--classifier-scale", "4"])
    assert (args.classifier, args.classifier_scale) == ("runs/c", 4.0)
    args = build_parser().parse_args(["train", "noisy-classifier", "--eval-times", "0", "0.5", "--num-steps", "20"])
    assert (args.eval_times, args.num_steps, args.dataset) == ([0.0, 0.5], 20, "mnist5k")
    main(["train", "noisy-classifier", "--dataset", "digits", "--channels", "8", "--channel-mults", "1", "2", "--num-steps", "20",
          "--batch-size", "250", "--epochs", "1", "--runs-dir", str(tmp_path), "--name", "clf", "--no-progress"])
    assert "test_accuracy_t0.05" in json.loads((tmp_path / "clf" / "results.json").read_text())
    capsys.readouterr()
    main(["eval", "noisy-classifier", str(tmp_path / "clf"), "--num-examples", "40", "--device", "cpu"])
    assert json.loads(capsys.readouterr().out)["num_examples"] == 40
    out = tmp_path / "guided.png"
    main(["sample", "ddpm", str(tiny_runs / "ddpm"), "--classifier", str(tmp_path / "clf"), "--classifier-scale", "2", "--n", "20",
          "--sampler", "dpmpp-2m", "--steps", "3", "--out", str(out), "--device", "cpu", "--no-progress"])
    from PIL import Image

    assert Image.open(out).size == (2 * 8 + 3 * 2, 10 * 8 + 11 * 2)  # 2 per row (n // 10), 10 rows: one per class
