import json
import math

import pytest
import torch

from ppl_dgm.cli import main as run  # the real command line, with every family
from ppl_dgm.sde.experiment import ScoreConfig


def test_train_resume_sample_eval_score_sde_on_toy_data(tmp_path, capsys):
    common = ["--dataset", "8gaussians", "--num-train", "1000", "--hidden", "32", "32", "--batch-size", "250",
              "--runs-dir", str(tmp_path), "--name", "toy", "--device", "cpu", "--no-progress"]
    assert run(["train", "score-sde", *common, "--epochs", "2", "--max-steps", "3"]) == 0
    assert run(["train", "score-sde", *common, "--epochs", "2", "--resume"]) == 0
    run_dir = tmp_path / "toy"
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt", "samples.png", "results.json"):
        assert (run_dir / name).is_file(), name
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and records[-1]["step"] == 8
    for sampler in ("reverse-sde", "pc", "ode", "dpmpp-2m", "heun"):
        steps = [] if sampler == "ode" else ["--steps", "20"]  # the adaptive ODE refuses --steps
        assert run(["sample", "score-sde", str(run_dir), "--sampler", sampler, *steps, "--n", "50", "--device", "cpu", "--no-progress"]) == 0
        assert (run_dir / f"samples_{sampler}.png").is_file()
    with pytest.raises(ValueError, match="steps=20: the probability-flow ODE chooses its own steps"):
        run(["sample", "score-sde", str(run_dir), "--sampler", "ode", "--steps", "20", "--device", "cpu"])
    capsys.readouterr()
    assert run(["eval", "score-sde", str(run_dir), "--num-examples", "20", "--device", "cpu", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_points"] == 20 and 0 < result["nll_nats"] < 20


def test_train_and_sample_ncsn_on_digits(tmp_path):
    common = ["--dataset", "digits", "--channels", "8", "--channel-mults", "1", "2", "--num-scales", "4", "--sigma-max", "1",
              "--batch-size", "500", "--runs-dir", str(tmp_path), "--name", "n", "--device", "cpu", "--no-progress"]
    assert run(["train", "ncsn", *common, "--epochs", "1", "--max-steps", "2"]) == 0
    assert run(["sample", "score-sde", str(tmp_path / "n"), "--sampler", "langevin", "--steps", "8", "--n", "4", "--device", "cpu", "--no-progress"]) == 0
    assert (tmp_path / "n" / "samples_langevin.png").is_file()
    with pytest.raises(ValueError, match="likelihoods need a score-sde run"):
        run(["eval", "score-sde", str(tmp_path / "n"), "--device", "cpu", "--no-progress"])


def test_langevin_step_size_keeps_the_papers_last_level_step_to_noise_ratio():
    from ppl_dgm.sde.experiment import langevin_step_size

    # Song & Ermon 2019, §5: ε = 2e-5 at σ_L = 0.01 on [0, 1] images; [−1, 1] images with σ_L = 0.02 need 4x.
    assert langevin_step_size(ScoreConfig(model="ncsn", dataset="mnist5k", sigma_min=0.01)) == pytest.approx(2e-5)
    assert langevin_step_size(ScoreConfig(model="ncsn", dataset="mnist5k", sigma_min=0.02)) == pytest.approx(8e-5)
    assert langevin_step_size(ScoreConfig(model="ncsn", dataset="moons", sigma_min=0.05)) == pytest.approx(5e-4)


def test_langevin_is_the_sampler_of_ncsn_runs_only():
    from ppl_dgm.sde.experiment import build_network, sample_score_run

    ncsn = ScoreConfig(model="ncsn", dataset="moons", hidden=(8,), num_scales=3, sigma_max=1.0)
    net = build_network(ncsn)
    assert sample_score_run(net, ncsn, 5, steps=2).shape == (5, 2)  # default sampler: annealed Langevin
    with pytest.raises(ValueError, match="sampler='langevin' is the sampler of ncsn runs.*sampler='pc' for a ncsn run"):
        sample_score_run(net, ncsn, 5, sampler="pc")
    score = ScoreConfig(dataset="moons", hidden=(8,))
    with pytest.raises(ValueError, match="sampler='langevin' for a score-sde run"):
        sample_score_run(build_network(score), score, 5, sampler="langevin")


def test_config_rejects_unknown_names():
    with pytest.raises(ValueError, match="sde='vv' is not known"):
        ScoreConfig(sde="vv")
    with pytest.raises(ValueError, match="dataset='cifar' is not known"):
        ScoreConfig(dataset="cifar")
    with pytest.raises(ValueError, match=r"importance_sampling=True needs .* got model='score-sde', sde='vp', likelihood_weighting=False"):
        ScoreConfig(importance_sampling=True)
    with pytest.raises(ValueError, match=r"importance_sampling=True needs .* sde='subvp'"):
        ScoreConfig(sde="subvp", likelihood_weighting=True, importance_sampling=True)


def test_train_score_sde_with_importance_sampled_time(tmp_path):
    common = ["--dataset", "8gaussians", "--num-train", "1000", "--hidden", "16", "--batch-size", "250", "--runs-dir",
              str(tmp_path), "--device", "cpu", "--no-progress", "--epochs", "1", "--likelihood-weighting"]
    assert run(["train", "score-sde", *common, "--importance-sampling", "--name", "sampled"]) == 0
    assert json.loads((tmp_path / "sampled" / "config.json").read_text())["importance_sampling"] is True


@pytest.mark.cuda
def test_every_sampler_and_the_trainer_run_on_cuda(tmp_path):
    from ppl_dgm.nn import TimeConditionedMLP
    from ppl_dgm.sde import VPSDE, ode_log_likelihood, sample_ode, sample_pc, sample_reverse_sde

    common = ["--dataset", "moons", "--num-train", "1000", "--hidden", "32", "--runs-dir", str(tmp_path), "--name", "c", "--device", "cuda", "--no-progress"]
    assert run(["train", "score-sde", *common, "--epochs", "1"]) == 0
    net, sde = TimeConditionedMLP(2, hidden=(16,)).cuda(), VPSDE()
    generator = torch.Generator(device="cuda").manual_seed(0)
    for sample in (sample_reverse_sde, sample_pc):
        assert sample(net, sde, (8, 2), steps=5, generator=generator).is_cuda
    assert sample_ode(net, sde, (8, 2), generator=generator).is_cuda
    assert ode_log_likelihood(net, sde, torch.randn(8, 2, device="cuda")).log_likelihood.is_cuda


def test_ncsn_trained_on_8gaussians_samples_every_mode_by_annealed_langevin(tmp_path):
    from ppl_dgm.metrics.modes import mode_coverage
    from ppl_dgm.sde.experiment import load_score_run, sample_score_run, train_score

    # 320 DSM steps; 16 steps leave 44% of samples near a mode, exact samples would put 98.9% within 3σ.
    config = ScoreConfig(model="ncsn", dataset="8gaussians", num_train=4000, hidden=(64, 64), epochs=20, batch_size=256,
                         lr=2e-3, ema_decay=0.99)
    assert train_score(config, tmp_path / "run", device="cpu", progress=False)["steps"] == 320
    net, loaded = load_score_run(tmp_path / "run", device="cpu")
    samples = sample_score_run(net, loaded, 1000, steps=50, generator=torch.Generator().manual_seed(0))
    coverage = mode_coverage(samples, "8gaussians")
    assert coverage["modes_covered"] == 8 and coverage["high_quality_fraction"] > 0.75


def test_cosine_schedule_and_fourier_features_resume_exactly(tmp_path):
    from ppl_dgm.sde.experiment import load_score_run

    common = ["--dataset", "checkerboard", "--num-train", "1000", "--hidden", "16", "16", "--batch-size", "250", "--epochs", "2",
              "--lr-schedule", "cosine", "--fourier-features", "8", "--fourier-scale", "0.5", "--device", "cpu", "--no-progress"]
    assert run(["train", "score-sde", *common, "--runs-dir", str(tmp_path), "--name", "whole"]) == 0
    assert run(["train", "score-sde", *common, "--runs-dir", str(tmp_path), "--name", "split", "--max-steps", "3"]) == 0
    assert run(["train", "score-sde", *common, "--runs-dir", str(tmp_path), "--name", "split", "--resume"]) == 0
    whole, config = load_score_run(tmp_path / "whole", device="cpu")
    split, _ = load_score_run(tmp_path / "split", device="cpu")
    assert config.lr_schedule == "cosine" and whole.input_features.frequencies.shape == (8, 2)
    for (name, a), b in zip(whole.state_dict().items(), split.state_dict().values()):
        assert torch.equal(a, b), name  # the lr of step s depends on s alone, so a resumed run is bit for bit the same
    last = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)["optimizer"]["param_groups"][0]["lr"]
    assert last == pytest.approx(2e-3 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))  # set before the 8th and last step


def test_config_rejects_unknown_schedule_and_fourier_features_on_images():
    with pytest.raises(ValueError, match="lr_schedule='step' is not known"):
        ScoreConfig(lr_schedule="step")
    with pytest.raises(ValueError, match="fourier_features=16 is for the toy 2-D MLP; dataset='mnist5k' uses a U-Net"):
        ScoreConfig(dataset="mnist5k", fourier_features=16)
