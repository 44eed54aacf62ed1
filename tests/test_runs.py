"""The run lifecycle of every family: extend = straight, load_run, sample, evaluate, wrong-family errors."""
import json
import math

import pytest
import torch

from ppl_dgm.runs import WrongFamilyError, load_run, run_family
from ppl_dgm.train import Checkpoint


def _vae(epochs, **kw):
    from ppl_dgm.vae.experiment import VAEConfig, train_vae

    config = VAEConfig(dataset="digits", latent_dim=4, hidden=32, batch_size=250, epochs=epochs, **kw)
    return lambda path, resume: train_vae(config, path, device="cpu", progress=False, resume=resume)


def _ae(epochs, **kw):
    from ppl_dgm.vae.autoencoder_experiment import AEConfig, train_autoencoder

    config = AEConfig(dataset="digits", latent_dim=4, hidden=32, batch_size=250, epochs=epochs, **kw)
    return lambda path, resume: train_autoencoder(config, path, device="cpu", progress=False, resume=resume)


def _vqvae(epochs):
    from ppl_dgm.vae.autoencoder_experiment import VQVAEConfig, train_vqvae

    config = VQVAEConfig(dataset="digits", num_codes=16, code_dim=4, channels=8, batch_size=250, epochs=epochs)
    return lambda path, resume: train_vqvae(config, path, device="cpu", progress=False, resume=resume)


def _dvae(epochs):
    from ppl_dgm.vae.dvae_experiment import DVAEConfig, train_dvae

    config = DVAEConfig(dataset="digits", num_codes=8, code_dim=4, channels=8, batch_size=250, anneal_rate=0.1, epochs=epochs)
    return lambda path, resume: train_dvae(config, path, device="cpu", progress=False, resume=resume)


def _ddpm(epochs):
    from ppl_dgm.diffusion.experiment import DDPMConfig, train_ddpm

    config = DDPMConfig(dataset="digits", channels=8, channel_mults=(1, 2), num_steps=20, sample_steps=4, batch_size=500,
                        ema_decay=0.9, grad_clip=0.5, class_conditional=True, epochs=epochs)
    return lambda path, resume: train_ddpm(config, path, device="cpu", progress=False, resume=resume, amp="bf16")


def _score(epochs, **kw):
    from ppl_dgm.sde.experiment import ScoreConfig, train_score

    config = ScoreConfig(num_train=1000, hidden=(16, 16), batch_size=250, epochs=epochs, **kw)
    return lambda path, resume: train_score(config, path, device="cpu", progress=False, resume=resume)


def _ebm(epochs):
    from ppl_dgm.sde.ebm_experiment import EBMConfig, train_ebm

    config = EBMConfig(objective="sliced", num_train=1000, hidden=(16, 16), num_scales=3, batch_size=250, quadrature_points=64,
                       epochs=epochs)
    return lambda path, resume: train_ebm(config, path, device="cpu", progress=False, resume=resume)


def _gan(epochs):
    from ppl_dgm.gan.experiment import GANConfig, train_gan

    config = GANConfig(arch="cgan", latent_dim=8, channels=8, batch_size=500, epochs=epochs)
    return lambda path, resume: train_gan(config, path, device="cpu", progress=False, resume=resume)


def _translation(epochs, model):
    from ppl_dgm.gan.translation import TranslationConfig, train_translation

    config = TranslationConfig(model=model, task="digit2inverted", channels=4, batch_size=400, epochs=epochs,
                               l1_weight=100.0 if model == "pix2pix" else 10.0)
    return lambda path, resume: train_translation(config, path, device="cpu", progress=False, resume=resume)


def _palette(epochs):
    from ppl_dgm.diffusion.palette import PaletteConfig, train_palette

    config = PaletteConfig(channels=8, attention=False, sample_steps=2, batch_size=32, ema_decay=0.9, num_train=64, epochs=epochs)
    return lambda path, resume: train_palette(config, path, device="cpu", progress=False, resume=resume, amp="bf16")


def _latent_ddpm(epochs):
    from ppl_dgm.diffusion.latent import LatentDDPMConfig, train_latent_ddpm

    config = LatentDDPMConfig(hidden=(16, 16), time_embedding_dim=8, num_steps=50, sample_steps=5, batch_size=500, ema_decay=0.9,
                              latents="sample", epochs=epochs)
    return lambda path, resume: train_latent_ddpm(config, path, path.parent / "vae_for_latent", device="cpu", progress=False,
                                                  resume=resume)


FAMILIES = {
    "vae": lambda e: _vae(e),
    "hvae": lambda e: _vae(e, model="hvae", latent_dim2=3, hidden2=16),
    "ae": lambda e: _ae(e),
    "dae": lambda e: _ae(e, corruption=0.3),
    "vqvae": _vqvae,
    "dvae": _dvae,
    "ddpm": _ddpm,
    "latent-ddpm": _latent_ddpm,
    "palette": _palette,
    "score-sde": lambda e: _score(e, dataset="checkerboard"),
    "ncsn": lambda e: _score(e, model="ncsn", dataset="8gaussians", sigma_max=3.0, sigma_min=0.05),
    "ebm": _ebm,
    "gan": _gan,
    "pix2pix": lambda e: _translation(e, "pix2pix"),
    "cyclegan": lambda e: _translation(e, "cyclegan"),
}


def _tensors(state, prefix=""):
    """Every tensor of a (nested) checkpoint state, by path; RNG states and bookkeeping excluded."""
    if isinstance(state, torch.Tensor):
        return {prefix: state}
    if isinstance(state, dict):
        found = {}
        for key, value in state.items():
            if key not in ("rng", "rng_per_rank"):
                found.update(_tensors(value, f"{prefix}/{key}"))
        return found
    if isinstance(state, (list, tuple)):
        return {k: v for i, item in enumerate(state) for k, v in _tensors(item, f"{prefix}/{i}").items()}
    return {}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_run_extended_from_n_to_2n_epochs_equals_a_straight_2n_run(tmp_path, family):
    if family == "latent-ddpm":  # its VAE run first
        _vae(1)(tmp_path / "vae_for_latent", False)
    FAMILIES[family](2)(tmp_path / "straight", False)
    FAMILIES[family](1)(tmp_path / "extended", False)
    FAMILIES[family](2)(tmp_path / "extended", True)
    straight = Checkpoint(tmp_path / "straight" / "checkpoint.pt").load()
    extended = Checkpoint(tmp_path / "extended" / "checkpoint.pt").load()
    tensors, other = _tensors(straight), _tensors(extended)
    assert tensors.keys() == other.keys() and tensors
    for key, value in tensors.items():
        assert torch.equal(value, other[key]), key
    assert (tmp_path / "straight" / "metrics.jsonl").read_bytes() == (tmp_path / "extended" / "metrics.jsonl").read_bytes()
    assert len((tmp_path / "extended" / "metrics.jsonl").read_text().splitlines()) == 2

    run = load_run(tmp_path / "extended", device="cpu")
    assert run.family == family == run_family(tmp_path / "straight")
    assert [record["epoch"] for record in run.metrics] == [1, 2]
    if family in ("ae", "dae", "vqvae"):
        with pytest.raises(ValueError, match=f"a {family} run is not a generative model"):
            run.sample(4)
    else:
        samples = run.sample(20, seed=3)
        assert isinstance(samples, torch.Tensor) and samples.shape[0] == 20 and torch.isfinite(samples).all()
        if samples.dim() == 4:
            assert samples.min() >= 0 and samples.max() <= 1
        assert torch.equal(samples, run.sample(20, seed=3))
    other_family = "ddpm" if family != "ddpm" else "vae"
    with pytest.raises(WrongFamilyError, match=f"is a {family} run, not a {other_family} run"):
        load_run(tmp_path / "extended", family=other_family)


def test_evaluate_through_load_run(tmp_path):
    _vae(1)(tmp_path / "vae", False)
    result = load_run(tmp_path / "vae", device="cpu").evaluate(iwae_k=4)
    assert result["test_iwae_nats"] >= result["test_elbo_nats"] - 0.5 and math.isfinite(result["test_elbo_nats"])
    with pytest.raises(ValueError, match="num_images=3 is not an option of a vae run"):
        load_run(tmp_path / "vae", device="cpu").evaluate(num_images=3)
    with pytest.raises(ValueError, match="sampler='ddim': a vae run has no sampler to choose"):
        load_run(tmp_path / "vae", device="cpu").sample(4, sampler="ddim")
    for bad, message in ((0, "n must be a positive int, got 0"), (-3, "n must be a positive int, got -3")):
        with pytest.raises(ValueError, match=message):
            load_run(tmp_path / "vae", device="cpu").sample(bad)
    with pytest.raises(ValueError, match="seed must be an int >= 0, got -1"):
        load_run(tmp_path / "vae", device="cpu").sample(4, seed=-1)


def test_load_run_of_a_missing_or_foreign_folder_creates_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match="run folder .*typo.* does not exist"):
        load_run(tmp_path / "typo")
    assert not (tmp_path / "typo").exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"colour": "blue"}))
    with pytest.raises(ValueError, match="matches no ppl_dgm family"):
        load_run(tmp_path / "other")


def test_ddpm_and_latent_runs_written_before_the_loop_owned_the_ema_still_load(tmp_path):
    """Old checkpoints kept the EMA inside the trained module ("net.*", "ema.module.*", "ema.n_averaged")."""
    from ppl_dgm.diffusion.experiment import load_ddpm_run

    _ddpm(1)(tmp_path / "new", False)
    state = Checkpoint(tmp_path / "new" / "checkpoint.pt").load()
    old_module = {f"net.{k}": v for k, v in state["module"].items()} | {f"ema.{k}": v for k, v in state["ema"].items()}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text((tmp_path / "new" / "config.json").read_text())
    Checkpoint(tmp_path / "old" / "checkpoint.pt").save({**state, "module": old_module, "ema": None})
    new_net, _ = load_ddpm_run(tmp_path / "new", device="cpu")
    old_net, _ = load_ddpm_run(tmp_path / "old", device="cpu")
    for (name, value), (_, other) in zip(new_net.state_dict().items(), old_net.state_dict().items()):
        assert torch.equal(value, other), name


@pytest.mark.parametrize("model", ["gmm", "fa", "ppca"])
def test_exact_em_extended_from_n_to_2n_iterations_equals_2n_straight(tmp_path, model):
    from ppl_dgm.lvm.experiment import LVMConfig, train_lvm

    def config(max_iter):
        return LVMConfig(model=model, components=3, latent_dim=3, max_iter=max_iter, tol=0.0)

    train_lvm(config(8), tmp_path / "straight", device="cpu")
    train_lvm(config(4), tmp_path / "extended", device="cpu")
    train_lvm(config(8), tmp_path / "extended", device="cpu", resume=True)
    straight = Checkpoint(tmp_path / "straight" / "checkpoint.pt").load()
    extended = Checkpoint(tmp_path / "extended" / "checkpoint.pt").load()
    for key in ("module", "em_state"):
        for name, value in straight[key].items():
            assert torch.equal(value, extended[key][name]), (key, name)
    assert (tmp_path / "straight" / "metrics.jsonl").read_bytes() == (tmp_path / "extended" / "metrics.jsonl").read_bytes()
    assert len((tmp_path / "extended" / "metrics.jsonl").read_text().splitlines()) == 9
    run = load_run(tmp_path / "extended", device="cpu")
    assert run.family == "lvm" and run.sample(5).shape == (5, 64)
    assert run.evaluate()["test_log_likelihood_nats"] == pytest.approx(run.results["test_log_likelihood_nats"])
