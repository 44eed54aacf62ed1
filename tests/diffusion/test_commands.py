import json

import pytest
import torch

from ppl_dgm.cli import main as run  # the real command line, with every family
from ppl_dgm.diffusion.experiment import DDPMConfig, build_unet


TINY = ["--dataset", "digits", "--channels", "8", "--channel-mults", "1", "2", "--num-steps", "20", "--sample-steps", "4",
        "--batch-size", "250", "--ema-decay", "0.9", "--lr", "1e-3", "--no-progress", "--device", "cpu"]


def test_train_resume_sample_eval_ddpm_on_digits(tmp_path, capsys):
    runs = tmp_path / "runs"
    common = TINY + ["--runs-dir", str(runs), "--name", "d", "--class-conditional"]
    assert run(["train", "ddpm", *common, "--epochs", "2", "--max-steps", "3", "--amp", "bf16"]) == 0  # bf16 is a runtime option
    run_dir = runs / "d"
    assert run(["train", "ddpm", *common, "--epochs", "2", "--resume"]) == 0  # the partial epoch, then one more
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt", "samples.png", "results.json"):
        assert (run_dir / name).is_file(), name
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and records[-1]["step"] == 12  # 1500 / 250 = 6 steps per epoch
    assert records[-1]["loss"] < 1.0  # L_simple starts at E‖ε‖² = 1 with the zero-initialized output layer
    config = json.loads((run_dir / "config.json").read_text())
    assert config["class_conditional"] and config["channel_mults"] == [1, 2]
    with pytest.raises(ValueError, match="config differs .* in \\['lr'\\]"):
        run(["train", "ddpm", *common, "--epochs", "2", "--resume", "--lr", "1e-2"])

    from PIL import Image

    out = tmp_path / "grid.png"
    assert run(["sample", "ddpm", str(run_dir), "--sampler", "ddim", "--steps", "3", "--eta", "0.5", "--n", "20",
                "--guidance-scale", "2", "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    assert Image.open(out).size == (2 + 2 * 10, 2 + 10 * 10)  # 10 rows (one per digit) of 2 images, 8x8 + padding 2
    assert run(["sample", "ddpm", str(run_dir), "--sampler", "ancestral", "--n", "10", "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    # restoration of held-out digits by the unconditional network; grid rows: observation, restoration, truth
    for task in (["--inpaint", "lower-half", "--method", "smc", "--num-particles", "2"], ["--upsample", "2"]):
        assert run(["sample", "ddpm", str(run_dir), *task, "--steps", "3", "--n", "4", "--out", str(out), "--device", "cpu",
                    "--no-progress"]) == 0
        assert Image.open(out).size == (2 + 4 * 10, 2 + 3 * 10)
    with pytest.raises(ValueError, match="sampler='ddim': restoration .* has its own samplers"):
        run(["sample", "ddpm", str(run_dir), "--inpaint", "center", "--sampler", "ddim", "--device", "cpu"])
    with pytest.raises(ValueError, match=r"mask of shape \(28, 28\) does not fit the run's images of shape \(1, 8, 8\)"):
        torch.save(torch.ones(28, 28), tmp_path / "mask.pt")
        run(["sample", "ddpm", str(run_dir), "--inpaint", str(tmp_path / "mask.pt"), "--device", "cpu"])

    capsys.readouterr()
    assert run(["eval", "ddpm", str(run_dir), "--num-images", "3", "--device", "cpu", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_images"] == 3 and 0 < result["bits_per_dim"] < 16


def test_config_rejects_bad_input():
    with pytest.raises(ValueError, match="image size 28 of dataset 'mnist5k' is not divisible by 8"):
        DDPMConfig(dataset="mnist5k", channel_mults=(1, 2, 2, 2))
    with pytest.raises(ValueError, match="dataset='mnist' is not known"):
        DDPMConfig(dataset="mnist")
    with pytest.raises(ValueError, match="ema_decay must lie in"):
        DDPMConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match="sample_steps must be at most num_steps=10"):
        DDPMConfig(num_steps=10)
    unet = build_unet(DDPMConfig(dataset="mnist5k", channels=8, channel_mults=(1, 2)))
    with pytest.raises(ValueError, match="build the UNet with image_size=32"):
        unet(torch.zeros(1, 1, 32, 32), torch.ones(1))


def test_ddpm_trains_in_bf16_by_default_and_float32_on_request():
    """bf16 autocast is the DDPM default (held-out loss within seed noise of float32, docs/benchmarks.md), and the
    score-SDE's on images ("auto"); NCSN keeps float32 (its bf16 loss was higher for both seeds); ``--amp none`` is
    float32."""
    from ppl_dgm.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["train", "ddpm"]).amp == "bf16"
    assert parser.parse_args(["train", "ddpm", "--amp", "none"]).amp == "none"
    assert parser.parse_args(["train", "score-sde"]).amp == "auto"
    assert parser.parse_args(["train", "ncsn"]).amp == "none"


def test_score_sde_amp_auto_is_bf16_on_images_and_float32_on_2d_data(monkeypatch):
    import ppl_dgm.cli as cli

    seen = []

    def fake_train_command(args, config, train, default_name, **options):
        seen.append((config.dataset, options["amp"]))
        return 0

    monkeypatch.setattr(cli, "train_command", fake_train_command)
    parser = cli.build_parser()
    for argv in (["--dataset", "mnist5k"], ["--dataset", "checkerboard"], ["--dataset", "checkerboard", "--amp", "bf16"],
                 ["--dataset", "mnist5k", "--amp", "none"]):
        args = parser.parse_args(["train", "score-sde", *argv])
        assert args.handler(args) == 0
    assert seen == [("mnist5k", "bf16"), ("checkerboard", "none"), ("checkerboard", "bf16"), ("mnist5k", "none")]
