import json

import pytest
import torch
from torch.nn import functional as F

from ppl_dgm.cli import main
from ppl_dgm.data import load_dataset
from ppl_dgm.train import fit
from ppl_dgm.vae.autoencoder import mlp_autoencoder


def test_masking_noise_zeroes_the_requested_fraction_without_mutating_input():
    model = mlp_autoencoder((1, 8, 8), latent_dim=4, corruption=0.3)
    x = torch.ones(200, 1, 8, 8)
    corrupted = model.corrupt(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, torch.ones(200, 1, 8, 8))
    assert (corrupted == 0).float().mean().item() == pytest.approx(0.3, abs=0.01)
    assert set(corrupted.unique().tolist()) == {0.0, 1.0}


def test_gaussian_noise_has_the_requested_std():
    model = mlp_autoencoder((1, 8, 8), latent_dim=4, corruption=0.5, noise="gaussian", loss="mse")
    x = torch.zeros(500, 1, 8, 8)
    assert model.corrupt(x).std().item() == pytest.approx(0.5, rel=0.02)
    assert mlp_autoencoder((1, 8, 8), latent_dim=4).corrupt(x) is x  # no corruption: the input itself


@pytest.mark.parametrize("loss", ["bce", "mse"])
def test_reconstruction_error_is_summed_bce_or_squared_error(loss):
    model = mlp_autoencoder((1, 8, 8), latent_dim=4, hidden=(16,), loss=loss)
    x = torch.bernoulli(torch.rand(3, 1, 8, 8))
    output = model.decoder(model.encoder(x))
    if loss == "bce":
        expected = -(x * F.logsigmoid(output) + (1 - x) * F.logsigmoid(-output)).flatten(1).sum(1)
    else:
        expected = (output - x).pow(2).flatten(1).sum(1)
    torch.testing.assert_close(model.reconstruction_error(x), expected)


def test_denoising_autoencoder_learns_to_fill_in_masked_digits():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    model = mlp_autoencoder((1, 8, 8), latent_dim=16, hidden=(128,), corruption=0.3, loss="mse")
    x_test = test.tensors[0]
    corrupted = model.corrupt(x_test, generator=torch.Generator().manual_seed(1))
    def denoising_error():
        return (model.reconstruct(corrupted) - x_test).pow(2).mean().item()
    before = denoising_error()
    fit(model, model.loss, train, epochs=40, batch_size=100, device="cpu", progress=False,
        optim=lambda p: torch.optim.Adam(p, lr=3e-3))
    after = denoising_error()
    assert after < 0.5 * (corrupted - x_test).pow(2).mean().item()  # better than leaving the holes
    assert after < 0.3 * before


def test_autoencoder_errors():
    with pytest.raises(ValueError, match="corruption must be in \\[0, 1.0\\) for noise='masking', got 1.5"):
        mlp_autoencoder((1, 8, 8), corruption=1.5)
    with pytest.raises(ValueError, match="noise='salt' is not known"):
        mlp_autoencoder((1, 8, 8), noise="salt")
    with pytest.raises(ValueError, match="loss='l1' is not known"):
        mlp_autoencoder((1, 8, 8), loss="l1")
    with pytest.raises(ValueError, match="image_shape must be \\(C, H, W\\)"):
        mlp_autoencoder((8, 8))


def test_cli_trains_dae_and_reports_clean_reconstruction_error(tmp_path):
    assert main(["train", "dae", "--dataset", "digits", "--latent-dim", "8", "--hidden", "64", "--epochs", "2",
                 "--runs-dir", str(tmp_path), "--no-progress", "--device", "cpu"]) == 0
    run = tmp_path / "dae_digits_mlp"
    result = json.loads((run / "results.json").read_text())
    assert json.loads((run / "config.json").read_text())["corruption"] == 0.3
    assert 0 < result["test_reconstruction_nats"] < 64 * 0.7  # below the 44 nats of coin flips
    for name in ("reconstructions.png", "interpolations.png", "metrics.jsonl", "checkpoint.pt"):
        assert (run / name).is_file()
    assert not (run / "samples.png").exists()  # an autoencoder has no prior to sample
