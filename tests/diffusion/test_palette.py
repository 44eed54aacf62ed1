"""Palette (Saharia et al. 2022): the concatenation-conditioned ε-network, its loss, samplers, runs and command line."""
import json

import pytest
import torch
from torch import nn

from ppl_dgm.cli import build_parser
from ppl_dgm.cli import main as run_cli
from ppl_dgm.data.pairs import load_pairs
from ppl_dgm.diffusion.experiment import build_schedule
from ppl_dgm.diffusion.palette import (
    ImageConditionedEps,
    PaletteConfig,
    build_palette_net,
    evaluate_palette,
    palette_loss,
    sample_palette,
    train_palette,
    translate_held_out,
    translation_quality,
)
from ppl_dgm.diffusion.sampling import SAMPLER_NAMES
from ppl_dgm.metrics.frechet import feature_classifier
from ppl_dgm.nn.functional import expand_like
from ppl_dgm.runs import WrongFamilyError, load_run
from ppl_dgm.train import Checkpoint

TINY = dict(channels=8, attention=False, dropout=0.0, sample_steps=2, batch_size=32, lr=1e-3, ema_decay=0.9, num_train=64)
TINY_CLI = ["--channels", "8", "--no-attention", "--dropout", "0", "--sample-steps", "2", "--batch-size", "32", "--lr", "1e-3",
            "--ema-decay", "0.9", "--num-train", "64", "--no-progress", "--device", "cpu"]


def random_net(config: PaletteConfig, seed: int = 0) -> ImageConditionedEps:
    """An untrained network whose zero-initialized output layer is made random, so ε depends on its inputs."""
    torch.manual_seed(seed)
    model = build_palette_net(config).eval()
    nn.init.normal_(model.net.output_conv.weight, std=0.1)
    return model


def tensors_of(state, prefix=""):
    """Every tensor of a nested checkpoint state by path, RNG states left out."""
    if isinstance(state, torch.Tensor):
        return {prefix: state}
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, (list, tuple)) else ()
    return {path: value for key, item in items if key not in ("rng", "rng_per_rank")
            for path, value in tensors_of(item, f"{prefix}/{key}").items()}


def edges(n: int, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    source, target, _ = load_pairs("edges2digit", split).tensors
    return source[:n], target[:n]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One epoch of a tiny Palette run on 64 edges2digit pairs through `ppl-dgm train palette`, and a feature-classifier
    cache (one epoch) for FD."""
    runs = tmp_path_factory.mktemp("runs")
    assert run_cli(["train", "palette", *TINY_CLI, "--runs-dir", str(runs), "--name", "p", "--epochs", "1"]) == 0
    feature_classifier("mnist5k", cache_dir=runs, epochs=1)
    return runs


def test_network_takes_target_plus_source_channels_and_gives_target_channels():
    model = build_palette_net(PaletteConfig(**TINY))
    assert (model.net.in_channels, model.net.out_channels) == (2, 1)
    assert (model.target_channels, model.source_channels) == (1, 1)
    x, source = torch.randn(3, 1, 28, 28), torch.rand(3, 1, 28, 28)
    assert model(x, torch.rand(3), source).shape == (3, 1, 28, 28)
    assert torch.equal(model(x, 0.5, source), torch.zeros(3, 1, 28, 28))  # zero-initialized output: ε̂ = 0 at the start


def test_the_source_reaches_the_network_by_channel_concatenation():
    model = random_net(PaletteConfig(**TINY))
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([0.3, 0.9])
    source, other = edges(2)[0], edges(4)[0][2:]
    eps = model(x, t, source)
    torch.testing.assert_close(eps, model.net(torch.cat([x, source], dim=1), t), rtol=0, atol=0)  # [x_t, source], in that order
    assert (eps - model(x, t, other)).abs().max() > 1e-3  # another source, another ε
    source = source.clone().requires_grad_()
    model(x, t, source).sum().backward()
    assert source.grad.abs().sum() > 0


def test_palette_loss_noises_the_target_and_conditions_on_the_clean_source():
    config = PaletteConfig(**TINY, num_steps=100)
    model, schedule = random_net(config), build_schedule(config)
    source, target = (images * 2 - 1 for images in edges(4))
    torch.manual_seed(5)
    loss = palette_loss(model, schedule, source, target)
    torch.manual_seed(5)  # the same draws by hand: t ~ U{1..T}, ε ~ N(0, I) (Ho et al. 2020, Alg. 1)
    t = torch.randint(1, 101, (4,))
    noise = torch.randn_like(target)
    alpha_bar = expand_like(schedule.alpha_bar[t - 1].float(), target)
    x_t = alpha_bar.sqrt() * target + (1 - alpha_bar).sqrt() * noise
    expected = (noise - model.net(torch.cat([x_t, source], 1), t.float() / 100)).pow(2).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-7)


def test_a_few_steps_of_training_reduce_l_simple_on_a_slice():
    torch.manual_seed(0)
    config = PaletteConfig(**TINY)
    model, schedule = build_palette_net(config), build_schedule(config)
    source, target = (images * 2 - 1 for images in edges(64, "train"))

    def held_loss():  # the same t and ε each time
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(123)
            return float(palette_loss(model, schedule, source, target))

    before = held_loss()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for step in range(20):
        batch = slice(32 * (step % 2), 32 * (step % 2) + 32)
        loss = palette_loss(model, schedule, source[batch], target[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert before == pytest.approx(1.0, abs=0.05)  # ε̂ = 0 at the start: E‖ε‖² = 1
    assert held_loss() < 0.6


def test_a_run_stopped_mid_epoch_and_resumed_equals_a_straight_run(tmp_path):
    config = PaletteConfig(**{**TINY, "num_train": 128})  # 4 steps per epoch: both runs stop inside the first
    train_palette(config, tmp_path / "straight", device="cpu", progress=False, max_steps=3, amp="bf16")
    train_palette(config, tmp_path / "resumed", device="cpu", progress=False, max_steps=1, amp="bf16")
    train_palette(config, tmp_path / "resumed", device="cpu", progress=False, max_steps=3, amp="bf16", resume=True)
    straight, resumed = (Checkpoint(tmp_path / name / "checkpoint.pt").load() for name in ("straight", "resumed"))
    assert straight["step"] == resumed["step"] == 3 and straight["partial_loss_sum"] == resumed["partial_loss_sum"]
    tensors, other = tensors_of(straight), tensors_of(resumed)
    assert tensors.keys() == other.keys() and any(key.startswith("/ema") for key in tensors)
    for key, value in tensors.items():
        assert torch.equal(value, other[key]), key


def test_every_sampler_of_the_contract_translates(tmp_path):
    config = PaletteConfig(**TINY)  # linear T = 1000: the SDE samplers read it as VPSDE(0.1, 20)
    model = random_net(config)
    source = edges(2)[0]
    for sampler in SAMPLER_NAMES:
        steps = {"ancestral": None, "ode": None, "pc": 20}.get(sampler, 3)
        run_config = PaletteConfig(**TINY, num_steps=50) if sampler == "ancestral" else config  # 50 calls, not 1,000
        calls = []
        images = sample_palette(model, run_config, source, sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(1),
                                callback=lambda call, x, denoised: calls.append(x.shape))
        assert images.shape == (2, 1, 28, 28) and images.min() >= 0 and images.max() <= 1, sampler
        again = sample_palette(model, run_config, source, sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(1))
        assert torch.equal(images, again), sampler
        expected_calls = {"ancestral": 50, "heun": 5, "pc": 40, "ode": len(calls)}.get(sampler, 3)
        assert len(calls) == expected_calls and all(shape == (2, 1, 28, 28) for shape in calls), sampler


def test_bad_inputs_are_clear_errors():
    config = PaletteConfig(**TINY)
    model = build_palette_net(config)
    with pytest.raises(ValueError, match=r"task='edges2cats' is not known; expected one of \('edges2digit'"):
        PaletteConfig(task="edges2cats")
    with pytest.raises(ValueError, match="sample_steps must be at most num_steps=10, got 50"):
        PaletteConfig(num_steps=10)
    with pytest.raises(ValueError, match=r"source must be a float tensor \(B, 1, 28, 28\) of 'edges2digit' sources in \[0, 1\], "
                                         r"got shape \(2, 2, 28, 28\)"):
        sample_palette(model, config, torch.rand(2, 2, 28, 28))
    with pytest.raises(ValueError, match=r"got shape \(2, 1, 8, 8\)"):
        sample_palette(model, config, torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"source must hold images in \[0, 1\] \(not model space\), got values in \[-1"):
        sample_palette(model, config, torch.rand(2, 1, 28, 28) * 2 - 1)
    with pytest.raises(ValueError, match="sampler='euler' is not known"):
        sample_palette(model, config, torch.rand(2, 1, 28, 28), sampler="euler")
    with pytest.raises(ValueError, match="steps must be at most the run's num_steps=1000, got 2000"):
        sample_palette(model, config, torch.rand(2, 1, 28, 28), steps=2000)
    with pytest.raises(ValueError, match="sampler='ode' reads the network as VPSDE\\(0.1, 20\\).*schedule='cosine'"):
        sample_palette(model, PaletteConfig(**TINY, schedule="cosine"), torch.rand(2, 1, 28, 28), sampler="ode")
    with pytest.raises(ValueError, match=r"source must have shape \(3, 1, 28, 28\) to match x, got \(2, 1, 28, 28\)"):
        model(torch.randn(3, 1, 28, 28), 0.5, torch.rand(2, 1, 28, 28))
    with pytest.raises(ValueError, match=r"num_images=1001 exceeds the 1000 held-out pairs of task 'edges2digit'"):
        translate_held_out(model, config, 1001)


def test_translation_quality_of_the_targets_themselves_is_zero(trained):
    source, target = edges(300)
    perfect = translation_quality(target, target, cache_dir=trained)
    assert perfect["test_l1"] == 0 and abs(perfect["fd"]) < 1e-6 and perfect["num_images"] == 300
    copied = translation_quality(source, target, cache_dir=trained)  # the identity map: pix2pix's identity_l1
    assert copied["test_l1"] == pytest.approx(float((source - target).abs().mean()), rel=1e-6) and copied["fd"] > 1


def test_run_round_trip_through_load_run_and_the_command_line(trained, tmp_path, capsys):
    path = trained / "p"
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt", "samples.png", "results.json"):
        assert (path / name).is_file(), name
    record = json.loads((path / "metrics.jsonl").read_text())
    assert record["step"] == 2 and 0 < record["val_loss"] < 1.5  # 64 pairs / 32; held-out L_simple of the EMA weights
    from PIL import Image

    assert Image.open(path / "samples.png").size == (2 + 10 * 30, 2 + 3 * 30)  # source / sample / target rows of 10

    run = load_run(path, device="cpu")
    assert run.family == "palette" and run.config.num_train == 64
    samples = run.sample(3, seed=4, steps=2)
    expected = sample_palette(run.model, run.config, edges(3)[0], steps=2, generator=torch.Generator().manual_seed(4))
    assert torch.equal(samples, expected)  # the first n held-out sources
    source = torch.rand(2, 1, 28, 28)
    assert run.sample(2, source=source, sampler="dpmpp-2m", steps=2).shape == (2, 1, 28, 28)
    with pytest.raises(ValueError, match="source must hold n=3 images"):
        run.sample(3, source=source)
    with pytest.raises(ValueError, match="guidance_scale=2.0 is not an option of a palette run"):
        run.sample(3, guidance_scale=2.0)
    with pytest.raises(WrongFamilyError, match="is a palette run, not a ddpm run"):
        load_run(path, family="ddpm")

    result = run.evaluate(num_images=12, steps=2, batch_size=5, cache_dir=trained)
    _, outputs, targets, calls = translate_held_out(run.model, run.config, 12, steps=2, batch_size=5)
    assert result["test_l1"] == pytest.approx(float((outputs - targets).abs().mean()), rel=1e-6)
    assert result["network_calls_per_image"] == calls == 2 and result["num_images"] == 12 and result["fd"] > 0

    out = tmp_path / "grid.png"
    assert run_cli(["sample", "palette", str(path), "--n", "4", "--steps", "2", "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    assert out.is_file()
    capsys.readouterr()
    assert run_cli(["eval", "palette", str(path), "--num-images", "12", "--steps", "2", "--batch-size", "5", "--classifier-dir", str(trained),
                    "--device", "cpu", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["test_l1"] == pytest.approx(result["test_l1"], rel=1e-6)


def test_train_parser_declares_the_config_and_defaults_to_bf16():
    args = build_parser().parse_args(["train", "palette"])
    assert args.amp == "bf16" and args.task == "edges2digit" and args.num_train is None
    assert (args.channels, args.channel_mults, args.epochs, args.batch_size) == (24, [1, 2, 2], 30, 32)
    config = PaletteConfig(**{name: getattr(args, name) for name in PaletteConfig.__dataclass_fields__})
    assert config == PaletteConfig()
    args = build_parser().parse_args(["train", "palette", "--task", "digit2rotated", "--amp", "none", "--no-attention", "--epochs", "3"])
    assert (args.task, args.amp, args.attention, args.epochs) == ("digit2rotated", "none", False, 3)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "palette", "--task", "edges2cats"])
