import pytest
import torch

from ppl_dgm.gan.toy import toy_networks, train_toy_gan


def test_spectral_norm_applies_to_the_discriminator_only():
    torch.manual_seed(0)
    generator, discriminator = toy_networks(2, (16, 16), spectral_norm=True)
    linears = [m for m in discriminator.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3 and all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in linears)
    assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in generator.modules())
    discriminator.train()
    for _ in range(30):  # power iterations converge: every weight has spectral norm 1 (Miyato et al. 2018, eq. 8)
        discriminator(torch.randn(4, 2))
    for linear in linears:
        assert torch.linalg.matrix_norm(linear.weight.detach(), ord=2).item() == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("loss", ["non_saturating", "wasserstein", "wasserstein_gp"])
def test_train_toy_gan_uses_the_recipe_and_is_deterministic(loss):
    runs = [train_toy_gan("ring8", loss, steps=20, hidden=(8,), num_train=256, num_samples=100, lr_decay=True,
                          spectral_norm=loss == "non_saturating", seed=3) for _ in range(2)]
    assert torch.equal(runs[0]["samples"], runs[1]["samples"]) and runs[0]["samples"].shape == (100, 2)
    expected = {"non_saturating": ("adam", 2e-4, 1, 64), "wasserstein": ("rmsprop", 5e-5, 5, 64),
                "wasserstein_gp": ("adam", 1e-4, 5, 64)}[loss]
    first = runs[0]
    assert (first["optimizer"], first["lr"], first["n_critic"], first["batch_size"]) == expected
    assert first["num_modes"] == 8 and 0.0 <= first["high_quality_fraction"] <= 1.0
    assert first["spectral_norm"] == (loss == "non_saturating")
    other_seed = train_toy_gan("ring8", loss, steps=20, hidden=(8,), num_train=256, num_samples=100, seed=4)
    assert not torch.equal(other_seed["samples"], first["samples"])
