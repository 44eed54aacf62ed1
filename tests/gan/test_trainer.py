import json
import math

import pytest
import torch
from torch import nn

from ppl_dgm.data import toy2d
from ppl_dgm.gan import DCGANDiscriminator, DCGANGenerator
from ppl_dgm.gan.losses import minimax_discriminator_loss, objective, with_r1
from ppl_dgm.gan.trainer import fit_gan, train_adversarial
from ppl_dgm.gan.toy import toy_networks
from ppl_dgm.train import Checkpoint, TrainingDiverged, make_ema


def images_and_labels(n=48):
    generator = torch.Generator().manual_seed(3)
    return torch.rand(n, 1, 28, 28, generator=generator) * 2 - 1, torch.randint(10, (n,), generator=generator)


def small_dcgan(seed=0, conditional=True):
    torch.manual_seed(seed)
    classes = 10 if conditional else None
    generator = DCGANGenerator(8, (1, 28, 28), channels=4, num_classes=classes)
    return generator, DCGANDiscriminator((1, 28, 28), channels=4, num_classes=classes)


@pytest.mark.parametrize("loss,first_steps", [("non_saturating", 3), ("wasserstein_gp", 6)])  # 16/batch: 3 batches per epoch
def test_resume_continues_exactly(tmp_path, loss, first_steps):
    data = images_and_labels()
    kwargs = dict(loss=objective(loss), latent_dim=8, conditional=True, epochs=3, batch_size=16, n_critic=2,
                  device="cpu", progress=False)

    generator, discriminator = small_dcgan()
    ema = make_ema(generator, 0.9)
    torch.manual_seed(123)
    full = fit_gan(generator, discriminator, data, ema=ema, checkpoint=tmp_path / "full.pt", **kwargs)

    part_g, part_d = small_dcgan()
    torch.manual_seed(123)
    fit_gan(part_g, part_d, data, ema=make_ema(part_g, 0.9), checkpoint=tmp_path / "part.pt",
            metrics_path=tmp_path / "part.jsonl", max_steps=first_steps, **kwargs)
    torch.manual_seed(999)  # the resumed run must not depend on the RNG state it starts in
    fresh_g, fresh_d = small_dcgan(seed=5)
    fresh_ema = make_ema(fresh_g, 0.9)
    again = fit_gan(fresh_g, fresh_d, data, ema=fresh_ema, checkpoint=tmp_path / "part.pt",
                    metrics_path=tmp_path / "part.jsonl", resume=True, **kwargs)

    assert len(again) == len(full) == 3
    for key in ("d_loss", "g_loss", "step"):
        assert again[key] == pytest.approx(full[key], rel=1e-6, abs=1e-9)
    for ours, theirs in ((generator, fresh_g), (discriminator, fresh_d), (ema, fresh_ema)):
        for name, value in ours.state_dict().items():
            torch.testing.assert_close(fresh_value := theirs.state_dict()[name], value, msg=name)
            assert fresh_value.shape == value.shape
    lines = [json.loads(line) for line in (tmp_path / "part.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2, 3]


def test_n_critic_discriminator_steps_per_generator_step_and_weight_clip():
    generator, discriminator = toy_networks(2, (8,))
    calls = {"d": 0, "g": 0}
    recipe = objective("wasserstein")
    data = toy2d("ring8", 64, generator=torch.Generator().manual_seed(0))

    def count(kind, fn):
        def wrapped(batch):
            calls[kind] += 1
            return fn(batch)
        return wrapped

    def d_loss(batch):
        fake = generator(torch.randn(batch[0].shape[0], 2)).detach()
        return recipe.discriminator_loss(discriminator(batch[0]), discriminator(fake))

    def g_loss(batch):
        return recipe.generator_loss(discriminator(generator(torch.randn(batch[0].shape[0], 2))))

    train_adversarial(generator, discriminator, data, discriminator_loss=count("d", d_loss), generator_loss=count("g", g_loss),
                      generator_optim=recipe.make_optimizer, discriminator_optim=recipe.make_optimizer, epochs=5,
                      batch_size=8, n_critic=5, weight_clip=0.01, device="cpu", progress=False)
    assert calls == {"d": 40, "g": 8}  # 8 batches x 5 epochs; Arjovsky et al. 2017, Alg. 1
    assert max(float(p.detach().abs().max()) for p in discriminator.parameters()) <= 0.01


def test_nan_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    generator, discriminator = toy_networks(2, (8,))
    data = toy2d("ring8", 64, generator=torch.Generator().manual_seed(0))
    recipe = objective("non_saturating")
    calls = {"n": 0}

    def d_loss(batch):
        calls["n"] += 1
        fake = generator(torch.randn(batch[0].shape[0], 2)).detach()
        value = recipe.discriminator_loss(discriminator(batch[0]).squeeze(-1), discriminator(fake).squeeze(-1))
        return value * (math.nan if calls["n"] > 10 else 1.0)  # epoch 1 (8 steps) is fine, epoch 2 diverges

    def g_loss(batch):
        return recipe.generator_loss(discriminator(generator(torch.randn(batch[0].shape[0], 2))))

    checkpoint = Checkpoint(tmp_path / "ck.pt")
    with pytest.raises(TrainingDiverged, match=r"losses \[nan, .*\] are not finite at epoch 2.*last good checkpoint is .*ck.pt"):
        train_adversarial(generator, discriminator, data, discriminator_loss=d_loss, generator_loss=g_loss,
                          generator_optim=recipe.make_optimizer, discriminator_optim=recipe.make_optimizer, epochs=3,
                          batch_size=8, device="cpu", progress=False, checkpoint=checkpoint)
    state = checkpoint.load()
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["discriminator"].values())


@pytest.mark.parametrize("loss", ["non_saturating", "least_squares"])
def test_toy_gan_learns_a_gaussian(loss):
    torch.manual_seed(0)
    data = 0.5 * torch.randn(2048, 2, generator=torch.Generator().manual_seed(0)) + torch.tensor([2.0, -1.0])
    generator = nn.Linear(2, 2)  # the family of Gaussians contains the data: the GAN must find it
    _, discriminator = toy_networks(2, (32, 32))
    fit_gan(generator, discriminator, data, loss=objective(loss), latent_dim=2, epochs=30, batch_size=64,
            lr=5e-3, device="cpu", progress=False)
    with torch.no_grad():
        samples = generator(torch.randn(4000, 2))
    assert torch.allclose(samples.mean(0), torch.tensor([2.0, -1.0]), atol=0.1)
    assert torch.allclose(samples.std(0), torch.tensor([0.5, 0.5]), atol=0.1)


def test_bad_arguments_raise_clear_errors():
    generator, discriminator = toy_networks(2, (8,))
    data = torch.zeros(8, 2)
    with pytest.raises(ValueError, match=r"n_critic must be an int >= 1 .*, got 0"):
        fit_gan(generator, discriminator, data, loss=objective("wasserstein"), latent_dim=2, epochs=1, n_critic=0)
    with pytest.raises(ValueError, match=r"clip must be a finite float > 0, got 0.0"):
        objective("wasserstein", clip=0.0)
    with pytest.raises(ValueError, match=r"clip must be a finite float > 0, got -0.01"):
        objective("wasserstein", clip=-0.01)
    with pytest.raises(ValueError, match=r"penalty_weight must be a finite float >= 0, got -1.0"):
        objective("wasserstein_gp", penalty_weight=-1.0)
    with pytest.raises(ValueError, match=r"loss='vanilla' is not a known GAN objective; expected one of \('minimax'"):
        objective("vanilla")
    with pytest.raises(ValueError, match=r"weight_clip must be a float > 0 .*, got -1"):
        train_adversarial(generator, discriminator, data, discriminator_loss=None, generator_loss=None,
                          generator_optim=None, discriminator_optim=None, epochs=1, batch_size=4, weight_clip=-1)
    with pytest.raises(TypeError, match="loss must be a ppl_dgm.gan.losses.Objective"):
        fit_gan(generator, discriminator, data, loss="minimax", latent_dim=2, epochs=1)


@pytest.mark.cuda
def test_fit_gan_on_cuda_keeps_everything_on_the_device(tmp_path):
    data = images_and_labels()
    generator, discriminator = small_dcgan()
    ema = make_ema(generator, 0.9)
    history = fit_gan(generator, discriminator, data, loss=objective("wasserstein_gp"), latent_dim=8, conditional=True,
                      epochs=1, batch_size=16, n_critic=2, ema=ema, device="cuda", progress=False, checkpoint=tmp_path / "ck.pt")
    assert len(history) == 1 and math.isfinite(history["d_loss"][0])
    assert all(p.device.type == "cuda" for p in (*generator.parameters(), *ema.parameters()))
    assert Checkpoint(tmp_path / "ck.pt").load()["step"] == 3


def test_extending_a_run_with_a_learning_rate_schedule_stretches_what_remains(tmp_path):
    """lr_factor reads the fraction of ``epochs`` done: extending 1 -> 2 epochs keeps epoch 1 as trained (decayed over one
    epoch) and runs epoch 2 on the 2-epoch schedule, so it ends at the straight run's learning rate, with other weights."""
    data = images_and_labels()
    seen = {}

    def run(name, epochs, resume=False):
        generator, discriminator = small_dcgan(conditional=False)
        torch.manual_seed(5)
        decay = lambda fraction: 1.0 - 0.9 * fraction  # noqa: E731
        fit_gan(generator, discriminator, (data[0],), loss=objective("non_saturating"), latent_dim=8, epochs=epochs,
                batch_size=16, device="cpu", progress=False, checkpoint=tmp_path / f"{name}.pt", resume=resume, lr_factor=decay)
        state = Checkpoint(tmp_path / f"{name}.pt").load()
        seen[name] = state
        return state

    straight = run("straight", 2)
    run("extended", 1)
    extended = run("extended", 2, resume=True)
    lr = lambda state: state["generator_optimizer"]["param_groups"][0]["lr"]  # noqa: E731
    assert lr(extended) == pytest.approx(lr(straight)) == pytest.approx(2e-4 * (1 - 0.9 * 5 / 6))  # set before the last step
    assert any(not torch.equal(straight["generator"][k], extended["generator"][k]) for k in straight["generator"])


def test_r1_adds_half_gamma_times_the_real_gradient_norm_to_the_discriminator_step():
    """One discriminator step by SGD(lr = 1) against a generator that ignores z: the update is −∇ of
    loss(D(x), D(x̃)) + γ/2·‖w‖² for D(x) = w·x + b (Mescheder et al. 2018, eq. 9), computed by hand here."""
    torch.manual_seed(0)
    real = torch.randn(8, 3)
    fake_value = torch.randn(1, 3)

    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.value = nn.Parameter(fake_value.clone())

        def forward(self, z):
            return self.value.expand(z.shape[0], -1)

    discriminator = nn.Sequential(nn.Linear(3, 1), nn.Flatten(0))
    w, b = discriminator[0].weight.detach().clone().requires_grad_(True), discriminator[0].bias.detach().clone().requires_grad_(True)
    gamma = 4.0
    by_hand = minimax_discriminator_loss((real @ w.T + b).squeeze(1), (fake_value @ w.T + b).squeeze(1).expand(8)) + gamma / 2 * w.pow(2).sum()
    by_hand.backward()
    sgd = lambda parameters: torch.optim.SGD(parameters, lr=1.0)  # noqa: E731
    fit_gan(Constant(), discriminator, (real,), loss=with_r1(objective("non_saturating"), gamma), latent_dim=2,
            n_critic=2, epochs=1, batch_size=8, generator_optim=sgd, discriminator_optim=sgd, progress=False, max_steps=1)
    torch.testing.assert_close(discriminator[0].weight.detach(), w.detach() - w.grad)
    torch.testing.assert_close(discriminator[0].bias.detach(), b.detach() - b.grad)
