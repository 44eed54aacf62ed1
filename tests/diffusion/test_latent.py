import json

import pytest
import torch

from ppl_dgm.train import Checkpoint

from ppl_dgm.cli import main as run_cli
from ppl_dgm.diffusion import linear_schedule
from ppl_dgm.diffusion.latent import (
    LatentDDPM,
    LatentDDPMConfig,
    encode_images,
    latent_statistics,
    load_latent_ddpm_run,
    sample_latent_ddpm,
    standardize_latents,
    train_latent_ddpm,
    unstandardize_latents,
)
from ppl_dgm.vae.experiment import VAEConfig, load_vae_run, train_vae, vae_data

TINY = dict(hidden=(32, 32), time_embedding_dim=16, num_steps=200, sample_steps=5, batch_size=250, lr=3e-3, ema_decay=0.9)


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    """A 4-latent MLP VAE trained for one epoch on binarized 8x8 digits (1,500 train images)."""
    path = tmp_path_factory.mktemp("runs") / "vae"
    train_vae(VAEConfig(dataset="digits", latent_dim=4, hidden=32, epochs=1, batch_size=250), path, device="cpu", progress=False)
    return path


def test_standardization_round_trip_and_unit_moments():
    z = torch.randn(500, 6, dtype=torch.float64) * torch.tensor([3.0, 0.1, 1.0, 7.0, 0.5, 2.0], dtype=torch.float64) + 4.0
    shift, scale = latent_statistics(z)
    u = standardize_latents(z, shift, scale)
    torch.testing.assert_close(u.mean(0), torch.zeros(6, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(u.var(0, unbiased=False), torch.ones(6, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(unstandardize_latents(u, shift, scale), z, rtol=0, atol=1e-12)
    # a constant coordinate keeps a finite (floored) scale
    _, scale = latent_statistics(torch.ones(10, 2))
    assert torch.equal(scale, torch.full((2,), 1e-6))


def test_aggregate_posterior_statistics_follow_the_law_of_total_variance():
    generator = torch.Generator().manual_seed(0)
    loc = torch.randn(200, 3, generator=generator, dtype=torch.float64) * 2.0 + 1.0
    posterior_scale = torch.rand(200, 3, generator=generator, dtype=torch.float64) + 0.5
    shift, scale = latent_statistics(loc, posterior_scale)
    # exact: Var z = Var(loc) + mean(scale²) under the equal-weight mixture of q(z|x_n)
    expected = (loc.var(0, unbiased=False) + posterior_scale.pow(2).mean(0)).sqrt()
    torch.testing.assert_close(scale, expected, rtol=0, atol=1e-12)
    # and the Monte Carlo moments of z ~ q(z) agree with them (4 standard errors)
    draws = (loc + posterior_scale * torch.randn(2000, *loc.shape, generator=generator, dtype=torch.float64)).reshape(-1, 3)
    assert ((draws.mean(0) - shift).abs() < 4 * scale / draws.shape[0] ** 0.5).all()
    assert ((draws.std(0) - scale).abs() < 0.02 * scale).all()


def test_statistics_reject_bad_input():
    with pytest.raises(ValueError, match=r"loc must be a \(N, D\) tensor of latents with N >= 2, got shape \(5,\)"):
        latent_statistics(torch.zeros(5))
    with pytest.raises(ValueError, match=r"posterior_scale must be a tensor shaped like loc \(5, 2\), got shape \(5, 3\)"):
        latent_statistics(torch.zeros(5, 2), torch.ones(5, 3))


def test_config_rejects_bad_input():
    with pytest.raises(ValueError, match="latents='median' is not known; expected one of \\('mean', 'sample'\\)"):
        LatentDDPMConfig(latents="median")
    with pytest.raises(ValueError, match="hidden must be a sequence of positive ints"):
        LatentDDPMConfig(hidden=(32, 0))
    with pytest.raises(ValueError, match="ema_decay must lie in \\(0, 1\\), got 1.0"):
        LatentDDPMConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match="sample_steps must be at most num_steps=10, got 50"):
        LatentDDPMConfig(num_steps=10)
    with pytest.raises(ValueError, match="sampler='euler' is not known"):
        LatentDDPMConfig(sampler="euler")


def test_missing_or_wrong_vae_run_is_a_clear_error(tmp_path, vae_run):
    missing = tmp_path / "no_such_vae"
    with pytest.raises(FileNotFoundError, match=f"vae_run='{missing}' does not exist; expected a VAE run folder"):
        train_latent_ddpm(LatentDDPMConfig(**TINY), tmp_path / "latent", missing, device="cpu", progress=False)
    assert not (tmp_path / "latent").exists()  # no empty run folder left behind
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json and checkpoint.pt"):
        train_latent_ddpm(LatentDDPMConfig(**TINY), tmp_path / "latent", tmp_path / "empty", device="cpu", progress=False)
    hvae = tmp_path / "hvae"
    hvae.mkdir()
    config = json.loads((vae_run / "config.json").read_text()) | {"model": "hvae", "elbo": "trace"}
    (hvae / "config.json").write_text(json.dumps(config))
    (hvae / "checkpoint.pt").write_bytes((vae_run / "checkpoint.pt").read_bytes())
    with pytest.raises(ValueError, match="is a model='hvae' run; latent diffusion needs model='vae'"):
        train_latent_ddpm(LatentDDPMConfig(**TINY), tmp_path / "latent", hvae, device="cpu", progress=False)
    with pytest.raises(TypeError, match="config must be a LatentDDPMConfig, got dict"):
        train_latent_ddpm(TINY, tmp_path / "latent", vae_run, device="cpu", progress=False)


def test_training_lowers_the_loss_and_samples_decode_to_images(tmp_path, vae_run):
    run_dir = tmp_path / "latent"
    result = train_latent_ddpm(LatentDDPMConfig(**TINY, epochs=8), run_dir, vae_run, device="cpu", progress=False)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, 9)) and records[-1]["step"] == 48  # 1500 / 250 = 6 steps
    assert records[-1]["loss"] < 0.8 * records[0]["loss"], [r["loss"] for r in records]
    assert result["latent_dim"] == 4 and (run_dir / "samples.png").is_file()
    assert json.loads((run_dir / "config.json").read_text())["vae_run"] == str(vae_run)

    model, config = load_latent_ddpm_run(run_dir, device="cpu")
    assert isinstance(model, LatentDDPM) and config == LatentDDPMConfig(**TINY, epochs=8)
    # the stored standardization is exactly that of the VAE's posterior means of the training images
    vae, vae_config = load_vae_run(vae_run, device="cpu")
    loc, _ = encode_images(vae, vae_data(vae_config, "train").tensors[0])
    shift, scale = latent_statistics(loc)
    assert torch.equal(model.latent_shift, shift) and torch.equal(model.latent_scale, scale)
    torch.testing.assert_close(model.encode(vae_data(vae_config, "train").tensors[0]), standardize_latents(loc, shift, scale))
    # decoding a standardized latent = the VAE decoding the latent itself
    torch.testing.assert_close(model.decode(standardize_latents(loc[:3], shift, scale)), vae.decode(loc[:3]))

    schedule = linear_schedule(config.num_steps)
    for sampler in ("ancestral", "ddim", "dpmpp-2m", "dpmpp-2m-sde", "heun", "euler-ancestral"):
        images = sample_latent_ddpm(model, schedule, 5, sampler=sampler, steps=4, generator=torch.Generator().manual_seed(0))
        assert images.shape == (5, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
        again = sample_latent_ddpm(model, schedule, 5, sampler=sampler, steps=4, generator=torch.Generator().manual_seed(0))
        assert torch.equal(images, again)
    with pytest.raises(ValueError, match="n must be a positive int, got 0"):
        sample_latent_ddpm(model, schedule, 0)
    with pytest.raises(ValueError, match="sampler='euler' is not known"):
        sample_latent_ddpm(model, schedule, 2, sampler="euler")
    with pytest.raises(TypeError, match="model must be a LatentDDPM"):
        sample_latent_ddpm(model.eps_model, schedule, 2)


def test_resume_with_sampled_latents_equals_an_uninterrupted_run(tmp_path, vae_run):
    config = LatentDDPMConfig(**TINY, epochs=2, latents="sample")
    train_latent_ddpm(config, tmp_path / "straight", vae_run, device="cpu", progress=False)
    train_latent_ddpm(config, tmp_path / "resumed", vae_run, device="cpu", progress=False, max_steps=4)
    train_latent_ddpm(config, tmp_path / "resumed", vae_run, device="cpu", progress=False, resume=True)
    straight = Checkpoint(tmp_path / "straight" / "checkpoint.pt").load()["module"]
    resumed = Checkpoint(tmp_path / "resumed" / "checkpoint.pt").load()["module"]
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    assert (tmp_path / "straight" / "metrics.jsonl").read_text() == (tmp_path / "resumed" / "metrics.jsonl").read_text()
    with pytest.raises(ValueError, match="config differs .* in \\['latents'\\]"):
        train_latent_ddpm(LatentDDPMConfig(**TINY, epochs=2), tmp_path / "resumed", vae_run, device="cpu", progress=False, resume=True)


def test_cli_trains_and_samples_a_latent_ddpm(tmp_path, vae_run, capsys):
    runs = tmp_path / "runs"
    assert run_cli(["train", "latent-ddpm", "--vae-run", str(vae_run), "--hidden", "16", "16", "--num-steps", "10",
                    "--sample-steps", "3", "--batch-size", "500", "--epochs", "1", "--runs-dir", str(runs),
                    "--device", "cpu", "--no-progress"]) == 0
    run_dir = runs / "latent_ddpm_vae"
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt", "samples.png", "results.json"):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "config.json").read_text())["hidden"] == [16, 16]
    out = tmp_path / "grid.png"
    assert run_cli(["sample", "latent-ddpm", str(run_dir), "--sampler", "ddim", "--n", "16", "--out", str(out),
                    "--device", "cpu", "--no-progress"]) == 0
    from PIL import Image

    assert Image.open(out).size == (2 + 8 * 10, 2 + 2 * 10)  # 2 rows of 8 images, 8x8 + padding 2
    with pytest.raises(SystemExit):
        run_cli(["train", "latent-ddpm", "--runs-dir", str(runs)])  # --vae-run is required
    assert "--vae-run" in capsys.readouterr().err


def test_class_conditional_latent_ddpm_trains_resumes_and_guides(tmp_path, vae_run):
    config = LatentDDPMConfig(**TINY, epochs=2, class_conditional=True, p_uncond=0.2)
    train_latent_ddpm(config, tmp_path / "straight", vae_run, device="cpu", progress=False)
    train_latent_ddpm(config, tmp_path / "resumed", vae_run, device="cpu", progress=False, max_steps=4)
    train_latent_ddpm(config, tmp_path / "resumed", vae_run, device="cpu", progress=False, resume=True)
    straight = Checkpoint(tmp_path / "straight" / "checkpoint.pt").load()["module"]
    resumed = Checkpoint(tmp_path / "resumed" / "checkpoint.pt").load()["module"]
    for key in straight:  # label dropout draws from the checkpointed RNG: the resumed run is the same run
        assert torch.equal(straight[key], resumed[key]), key

    model, loaded = load_latent_ddpm_run(tmp_path / "straight", device="cpu")
    assert loaded == config and model.eps_model.num_classes == 10
    u, t = torch.randn(4, 4), torch.full((4,), 0.5)
    assert not torch.allclose(model.eps_model(u, t, torch.zeros(4, dtype=torch.long)), model.eps_model(u, t, torch.ones(4, dtype=torch.long)))
    schedule = linear_schedule(config.num_steps)
    seeded = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    plain = sample_latent_ddpm(model, schedule, 25, sampler="ddim", steps=4, generator=seeded())
    assert plain.shape == (20, 1, 8, 8)  # two per class, labels 0..9 in order
    guided = sample_latent_ddpm(model, schedule, 25, sampler="ddim", steps=4, generator=seeded(), guidance_scale=2.0)
    assert guided.shape == (20, 1, 8, 8) and not torch.allclose(plain, guided)
    sevens = sample_latent_ddpm(model, schedule, 3, sampler="ddim", steps=4, generator=seeded(), y=torch.full((3,), 7))
    assert sevens.shape == (3, 1, 8, 8)
    with pytest.raises(ValueError, match=r"y must be a \(n,\) int64 tensor of labels in \[0, 10\)"):
        sample_latent_ddpm(model, schedule, 3, y=torch.full((3,), 10))
    with pytest.raises(ValueError, match="n=5: a class-conditional latent DDPM draws n // 10 per class"):
        sample_latent_ddpm(model, schedule, 5)
    unconditional, _ = load_latent_ddpm_run(_train_unconditional(tmp_path, vae_run), device="cpu")
    with pytest.raises(ValueError, match="need a class-conditional latent DDPM; this one is unconditional"):
        sample_latent_ddpm(unconditional, schedule, 4, guidance_scale=1.0)
    with pytest.raises(ValueError, match="guidance_scale=1.0 needs class_conditional=True"):
        LatentDDPMConfig(guidance_scale=1.0)
    with pytest.raises(ValueError, match=r"p_uncond must be a probability in \[0, 1\], got 2"):
        LatentDDPMConfig(class_conditional=True, p_uncond=2)


def _train_unconditional(tmp_path, vae_run):
    train_latent_ddpm(LatentDDPMConfig(**TINY, epochs=1), tmp_path / "unconditional", vae_run, device="cpu", progress=False)
    return tmp_path / "unconditional"


def test_cli_trains_a_class_conditional_latent_ddpm_and_samples_with_guidance(tmp_path, vae_run):
    from PIL import Image

    runs = tmp_path / "runs"
    assert run_cli(["train", "latent-ddpm", "--vae-run", str(vae_run), "--hidden", "16", "16", "--num-steps", "10",
                    "--sample-steps", "3", "--batch-size", "500", "--epochs", "1", "--class-conditional", "--runs-dir", str(runs),
                    "--name", "cond", "--device", "cpu", "--no-progress"]) == 0
    out = tmp_path / "grid.png"
    assert run_cli(["sample", "latent-ddpm", str(runs / "cond"), "--sampler", "ddim", "--n", "20", "--guidance-scale", "3",
                    "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    assert Image.open(out).size == (2 + 2 * 10, 2 + 10 * 10)  # a row of two per class
