import math

import pytest
import torch

from ppl_dgm.data import load_dataset
from ppl_dgm.train import fit
from ppl_dgm.vae.vqvae import VQVAE, VectorQuantizer


def test_quantizer_picks_nearest_code_and_reports_perplexity():
    quantizer = VectorQuantizer(num_codes=4, code_dim=2, ema_decay=None, restart_dead_codes=False).eval()
    with torch.no_grad():
        quantizer.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]))
    z_e = torch.tensor([[[[0.1, 0.9]], [[0.1, 0.1]]], [[[0.0, 4.0]], [[0.8, 4.5]]]])  # (B=2, D=2, H=1, W=2)
    quantized, indices, losses = quantizer(z_e)
    brute_force = torch.cdist(z_e.permute(0, 2, 3, 1).reshape(-1, 2), quantizer.codebook).argmin(1)
    assert indices.flatten().tolist() == brute_force.tolist() == [0, 1, 2, 3]
    torch.testing.assert_close(quantized, quantizer.codebook[indices].permute(0, 3, 1, 2))
    assert losses["perplexity"].item() == pytest.approx(4.0)  # four codes used equally: exp(log 4)
    # β‖z_e − sg[e]‖² and ‖sg[z_e] − e‖² are the same number, weighted by β = 0.25
    assert losses["commitment"].item() == pytest.approx(0.25 * losses["codebook"].item())


def test_straight_through_gradient_equals_gradient_at_quantized_output():
    torch.manual_seed(0)
    model = VQVAE((1, 8, 8), num_codes=8, code_dim=3, channels=4, ema_decay=None, restart_dead_codes=False)
    z_e = torch.randn(2, 3, 2, 2, requires_grad=True)
    quantized, _, _ = model.quantizer(z_e)
    target = torch.rand(2, 1, 8, 8)
    ((model.decoder(quantized) - target) ** 2).sum().backward()
    z_q = model.quantizer.codebook[model.quantizer(z_e)[1]].permute(0, 3, 1, 2).detach().requires_grad_(True)
    ((model.decoder(z_q) - target) ** 2).sum().backward()
    torch.testing.assert_close(z_e.grad, z_q.grad)  # van den Oord et al. 2017, eq. 3: ∇z_e L ≈ ∇z_q L


def test_commitment_trains_encoder_and_codebook_loss_trains_codebook_only():
    quantizer = VectorQuantizer(num_codes=4, code_dim=2, ema_decay=None, restart_dead_codes=False)
    z_e = torch.randn(3, 2, 2, 2, requires_grad=True)
    _, _, losses = quantizer(z_e)
    losses["commitment"].backward(retain_graph=True)
    assert quantizer.codebook.grad is None and z_e.grad.abs().sum() > 0
    z_e.grad = None
    losses["codebook"].backward()
    assert z_e.grad is None and quantizer.codebook.grad.abs().sum() > 0


def test_ema_codebook_update_follows_the_moving_averages():
    quantizer = VectorQuantizer(num_codes=2, code_dim=1, ema_decay=0.9, restart_dead_codes=False, epsilon=0.0)
    with torch.no_grad():
        quantizer.codebook.copy_(torch.tensor([[0.0], [10.0]]))
        quantizer.ema_sum.copy_(torch.tensor([[0.0], [10.0]]))
    quantizer(torch.tensor([1.0, 2.0, 9.0]).view(1, 1, 1, 3))  # two vectors to code 0, one to code 1
    # N ← 0.9 N + 0.1 n ; m ← 0.9 m + 0.1 Σ z ; e = m / N   (App. A.1)
    counts = torch.tensor([0.9 + 0.1 * 2, 0.9 + 0.1 * 1])
    sums = torch.tensor([0.9 * 0.0 + 0.1 * 3.0, 0.9 * 10.0 + 0.1 * 9.0])
    torch.testing.assert_close(quantizer.ema_count, counts)
    torch.testing.assert_close(quantizer.codebook.squeeze(1), sums / counts)


def test_dead_codes_are_restarted_on_encoder_outputs():
    quantizer = VectorQuantizer(num_codes=3, code_dim=1, ema_decay=0.5, dead_code_threshold=0.2)
    with torch.no_grad():
        quantizer.codebook.copy_(torch.tensor([[0.0], [100.0], [200.0]]))
        quantizer.ema_sum.copy_(quantizer.codebook)
    z_e = torch.tensor([0.1, -0.1, 0.2, 0.0]).view(1, 1, 1, 4)
    for _ in range(3):  # codes 1 and 2 are never used: counts 1 → 0.5 → 0.25 → 0.125 < 0.2
        quantizer(z_e)
    assert set(quantizer.codebook[1:].flatten().tolist()) <= set(z_e.flatten().tolist())
    assert torch.all(quantizer.ema_count[1:] == 1.0)


def test_vqvae_learns_digits_and_uses_many_codes():
    torch.manual_seed(0)
    train = load_dataset("digits", "train")
    model = VQVAE((1, 8, 8), num_codes=32, code_dim=8, channels=16)
    x = train.tensors[0][:500]
    before = model.losses(x)["reconstruction"].item()
    fit(model, model.loss, train, epochs=15, batch_size=100, device="cpu", progress=False,
        optim=lambda p: torch.optim.Adam(p, lr=3e-3))
    model.eval()
    after = model.losses(x)
    assert after["reconstruction"].item() < 0.3 * before
    assert after["perplexity"].item() > 8  # well above a collapsed codebook (perplexity 1)
    assert model.codes(x[:2]).shape == (2, 2, 2) and model.reconstruct(x[:2]).shape == (2, 1, 8, 8)


def test_vqvae_errors():
    with pytest.raises(ValueError, match="num_codes must be a positive int, got 0"):
        VectorQuantizer(num_codes=0)
    with pytest.raises(ValueError, match="ema_decay must be in \\(0, 1\\) or None, got 1.0"):
        VectorQuantizer(ema_decay=1.0)
    with pytest.raises(ValueError, match="z_e has 3 channels, expected code_dim=2"):
        VectorQuantizer(code_dim=2)(torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match="image_shape must be"):
        VQVAE((1, 10, 10))
    assert math.isfinite(VQVAE((1, 8, 8), channels=4).loss((torch.rand(2, 1, 8, 8),)).item())


def test_cli_trains_vqvae_and_reports_perplexity(tmp_path):
    import json

    from ppl_dgm.cli import main

    assert main(["train", "vqvae", "--dataset", "digits", "--num-codes", "16", "--code-dim", "4", "--channels", "8",
                 "--epochs", "2", "--runs-dir", str(tmp_path), "--no-progress", "--device", "cpu"]) == 0
    result = json.loads((tmp_path / "vqvae_digits" / "results.json").read_text())
    assert 1.0 - 1e-6 <= result["test_perplexity"] <= 16.0 and 1 <= result["codes_used"] <= 16
    assert 0 < result["test_mse_per_pixel"] < 0.2
    assert (tmp_path / "vqvae_digits" / "reconstructions.png").is_file()
