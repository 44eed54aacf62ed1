import argparse
import json

import pytest
import torch

from ppl_dgm.gan import commands
from ppl_dgm.gan.experiment import GANConfig, load_gan_run, sample_gan
from ppl_dgm.gan.translation import TranslationConfig
from ppl_dgm.metrics.frechet import feature_classifier


def run(argv):
    parser = argparse.ArgumentParser(prog="ppl-dgm")
    families = {}
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("train", "sample", "eval"):
        families[command] = sub.add_parser(command).add_subparsers(dest="family", required=True)
    commands.add_parsers(families["train"], families["sample"], families["eval"])
    args = parser.parse_args(argv)
    return args.handler(args)


def test_train_resume_sample_eval_cgan(tmp_path, capsys):
    runs = tmp_path / "runs"
    feature_classifier("mnist5k", cache_dir=runs, epochs=1)  # cached where `eval gan --classifier-dir` looks
    def common(epochs=2):
        return ["train", "gan", "--arch", "cgan", "--latent-dim", "8", "--channels", "8", "--batch-size", "500",
                "--epochs", str(epochs), "--runs-dir", str(runs), "--name", "c", "--no-progress", "--device", "cpu"]

    assert run(common() + ["--max-steps", "5"]) == 0
    assert run(common() + ["--resume"]) == 0  # continues from step 5 to the end of epoch 2 (8 steps per epoch)
    folder = runs / "c"
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt", "samples.png", "results.json"):
        assert (folder / name).is_file(), name
    assert [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()] == [8, 16]
    with pytest.raises(ValueError, match=r"config differs .* in \['lr'\] \(lr: saved None, now 0.001\)"):
        run(common(epochs=3) + ["--resume", "--lr", "1e-3"])
    assert run(common(epochs=3) + ["--resume"]) == 0  # extending the run by a third epoch
    assert [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()] == [8, 16, 24]

    from PIL import Image

    assert Image.open(folder / "samples.png").size == (2 + 10 * 30, 2 + 10 * 30)  # one row of 10 per class
    assert run(["sample", "gan", str(folder), "--n", "20", "--out", str(tmp_path / "s.png"), "--device", "cpu"]) == 0
    assert Image.open(tmp_path / "s.png").size == (2 + 2 * 30, 2 + 10 * 30)
    capsys.readouterr()
    assert run(["eval", "gan", str(folder), "--num-samples", "100", "--classifier-dir", str(runs), "--device", "cpu"]) == 0
    with pytest.raises(FileNotFoundError, match="no_inception.pt"):  # the standard FID needs the user's local weights file
        run(["eval", "gan", str(folder), "--num-samples", "100", "--classifier-dir", str(runs), "--device", "cpu",
             "--inception-weights", str(tmp_path / "no_inception.pt")])
    result = json.loads(capsys.readouterr().out)
    assert result["fd"] > 0 and result["num_samples"] == 100 and result["reference"] == "mnist5k/test"

    generator, config = load_gan_run(folder, device="cpu")
    images, nrow = sample_gan(generator, config, 30, generator_rng=torch.Generator().manual_seed(0))
    assert images.shape == (30, 1, 28, 28) and nrow == 3 and 0 <= float(images.min()) and float(images.max()) <= 1


@pytest.mark.parametrize("model", ["pix2pix", "cyclegan"])
def test_train_translation(tmp_path, model, capsys):
    argv = ["train", model, "--task", "digit2inverted", "--channels", "4", "--batch-size", "400", "--epochs", "1",
            "--max-steps", "2", "--runs-dir", str(tmp_path), "--name", "t", "--no-progress", "--device", "cpu"]
    assert run(argv) == 0
    result = json.loads((tmp_path / "t" / "results.json").read_text())
    assert result["steps"] == 2 and 0 <= result["test_l1"] <= 1
    assert ("cycle_l1_a" in result) == (model == "cyclegan")
    assert json.loads((tmp_path / "t" / "config.json").read_text())["l1_weight"] == (100.0 if model == "pix2pix" else 10.0)
    assert (tmp_path / "t" / "samples.png").is_file()


def test_stylegan_with_r1_and_its_own_generator_lr(tmp_path):
    argv = ["train", "gan", "--arch", "stylegan", "--latent-dim", "8", "--channels", "8", "--batch-size", "500", "--epochs", "1",
            "--max-steps", "2", "--r1-gamma", "1", "--minibatch-std", "--generator-lr", "1e-3", "--runs-dir", str(tmp_path),
            "--name", "s", "--no-progress", "--device", "cpu"]
    assert run(argv) == 0
    state = torch.load(tmp_path / "s" / "checkpoint.pt", weights_only=True)
    assert state["generator_optimizer"]["param_groups"][0]["initial_lr"] == 1e-3  # two time scales: G at 1e-3
    assert state["discriminator_optimizer"]["param_groups"][0]["initial_lr"] == 2e-4  # D at the recipe's 2e-4
    generator, config = load_gan_run(tmp_path / "s", device="cpu")
    assert config.r1_gamma == 1.0 and config.generator_lr == 1e-3
    images, _ = sample_gan(generator, config, 4, truncation=0.5)
    assert images.shape == (4, 1, 28, 28)


def test_configs_reject_bad_values():
    with pytest.raises(ValueError, match=r"n_critic must be an int >= 1 .*, got 0"):
        GANConfig(n_critic=0)
    with pytest.raises(ValueError, match=r"arch='biggan' is not known; expected one of \('dcgan', 'cgan', 'stylegan'\)"):
        GANConfig(arch="biggan")
    with pytest.raises(ValueError, match=r"generator_lr must be a positive float, got -0.001"):
        GANConfig(generator_lr=-1e-3)
    with pytest.raises(ValueError, match=r"r1_gamma must be a finite float >= 0, got -1"):
        GANConfig(r1_gamma=-1)
    with pytest.raises(ValueError, match=r"l1_weight must be a float >= 0 \(λ of the L1 term\), got -1.0"):
        TranslationConfig(l1_weight=-1.0)
