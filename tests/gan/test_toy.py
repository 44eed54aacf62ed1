import dataclasses

import pytest
import torch

from ppl_dgm.gan.losses import wasserstein_gp
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


def test_train_toy_gan_takes_an_objective_with_its_own_recipe():
    kwargs = dict(steps=12, hidden=(8,), num_train=256, num_samples=100, seed=3)
    by_name = train_toy_gan("ring8", "wasserstein_gp", **kwargs)
    by_objective = train_toy_gan("ring8", wasserstein_gp(), **kwargs)
    assert torch.equal(by_name["samples"], by_objective["samples"])
    toy = dataclasses.replace(wasserstein_gp(0.1), betas=(0.5, 0.9), batch_size=32)  # gan_toy.py's settings
    run = train_toy_gan("ring8", toy, **kwargs)
    assert (run["loss"], run["penalty_weight"], run["betas"], run["batch_size"]) == ("wasserstein_gp", 0.1, [0.5, 0.9], 32)
    assert (run["steps"], run["n_critic"], run["generator_steps"]) == (12, 5, 2)  # 12 critic steps, a G step every 5th
    assert not torch.equal(run["samples"], by_name["samples"])


def test_data_scale_multiplies_the_samples_back_and_is_validated():
    # 4 critic steps < n_critic = 5: the generator never steps, so its samples are the initial ones, times the scale
    kwargs = dict(steps=4, hidden=(8,), num_train=256, num_samples=100, seed=3)
    plain = train_toy_gan("grid25", "wasserstein_gp", **kwargs)
    scaled = train_toy_gan("grid25", "wasserstein_gp", data_scale=2.0, **kwargs)
    assert plain["generator_steps"] == 0 and scaled["data_scale"] == 2.0
    assert torch.equal(scaled["samples"], 2.0 * plain["samples"])
    with pytest.raises(ValueError, match=r"data_scale must be a finite float > 0, got 0.0"):
        train_toy_gan("grid25", "wasserstein_gp", data_scale=0.0, **kwargs)
