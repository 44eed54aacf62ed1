import argparse
import json
import math
from dataclasses import dataclass, field

import pytest
import torch

from ppl_dgm.cli import add_config_options, build_parser, main
from ppl_dgm.train import Checkpoint


def test_train_resume_sample_eval_vae_on_digits(tmp_path, capsys):
    runs = tmp_path / "runs"
    common = ["train", "vae", "--dataset", "digits", "--latent-dim", "4", "--hidden", "32", "--batch-size", "100",
              "--runs-dir", str(runs), "--name", "d", "--no-progress", "--device", "cpu"]
    assert main(common + ["--epochs", "2"]) == 0
    run = runs / "d"
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt", "samples.png", "reconstructions.png", "results.json"):
        assert (run / name).is_file(), name
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    config = json.loads((run / "config.json").read_text())
    assert config["dataset"] == "digits" and config["latent_dim"] == 4 and config["epochs"] == 2

    # resuming with more epochs extends the run from epoch 2; any other change is refused, naming both values
    assert main(common + ["--epochs", "3", "--resume"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    assert json.loads((run / "config.json").read_text())["epochs"] == 3
    with pytest.raises(ValueError, match=r"in \['latent_dim'\] \(latent_dim: saved 4, now 5\)"):
        main(common + ["--epochs", "3", "--resume", "--latent-dim", "5"])

    capsys.readouterr()
    assert main(["eval", "vae", str(run), "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert -60 < result["test_elbo_nats"] < 0  # 64 binarized pixels: chance is 44 nats

    assert main(["sample", "vae", str(run), "--n", "16", "--out", str(tmp_path / "s.png"), "--device", "cpu"]) == 0
    from PIL import Image

    assert Image.open(tmp_path / "s.png").size == (2 + 8 * 10, 2 + 2 * 10)  # 8x8 images, padding 2, 8 per row


def test_resume_equals_uninterrupted_run(tmp_path):
    common = ["train", "vae", "--dataset", "digits", "--latent-dim", "3", "--hidden", "16", "--batch-size", "64",
              "--epochs", "2", "--no-progress", "--device", "cpu"]
    main(common + ["--runs-dir", str(tmp_path / "a"), "--name", "r"])
    main(common + ["--runs-dir", str(tmp_path / "b"), "--name", "r", "--max-steps", "30"])  # 24 steps per epoch
    main(common + ["--runs-dir", str(tmp_path / "b"), "--name", "r", "--resume"])
    read = lambda p: [json.loads(line) for line in p.read_text().splitlines()]  # noqa: E731
    full, resumed = read(tmp_path / "a/r/metrics.jsonl"), read(tmp_path / "b/r/metrics.jsonl")
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in full], rel=1e-6)
    assert [r["val_loss"] for r in resumed] == pytest.approx([r["val_loss"] for r in full], rel=1e-6)
    a = Checkpoint(tmp_path / "a/r/checkpoint.pt").load()["module"]
    b = Checkpoint(tmp_path / "b/r/checkpoint.pt").load()["module"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=1e-7)


def test_cli_rejects_bad_choices(capsys):
    with pytest.raises(SystemExit):
        main(["train", "vae", "--likelihood", "poisson"])
    assert "invalid choice: 'poisson'" in capsys.readouterr().err


def test_hvae_with_iwae_on_digits(tmp_path, capsys):
    args = ["train", "hvae", "--dataset", "digits", "--latent-dim", "4", "--latent-dim2", "2", "--hidden", "32",
            "--hidden2", "16", "--epochs", "2", "--iwae-k", "20", "--runs-dir", str(tmp_path), "--no-progress", "--device", "cpu"]
    assert main(args) == 0
    result = json.loads((tmp_path / "hvae_digits_bernoulli_mlp" / "results.json").read_text())
    config = json.loads((tmp_path / "hvae_digits_bernoulli_mlp" / "config.json").read_text())
    assert config["model"] == "hvae" and config["elbo"] == "trace"
    assert result["iwae_k"] == 20 and result["test_iwae_nats"] > result["test_elbo_nats"]
    capsys.readouterr()
    with pytest.raises(ValueError, match="model='hvae' with inference='bottom_up' needs elbo='trace'"):
        main(args[:-1] + ["cpu", "--elbo", "meanfield"])


def test_discretized_gaussian_vae_reports_bits_per_dim_of_8bit_data(tmp_path):
    args = ["train", "vae", "--dataset", "digits", "--likelihood", "discretized_gaussian", "--latent-dim", "4",
            "--hidden", "32", "--epochs", "2", "--runs-dir", str(tmp_path), "--no-progress", "--device", "cpu"]
    assert main(args) == 0
    result = json.loads((tmp_path / "vae_digits_discretized_gaussian_mlp" / "results.json").read_text())
    # a probability of discrete data: −ELBO ≥ 0 nats and bits/dim = −ELBO / (64 ln 2), no dequantization offset
    assert result["test_elbo_nats"] < 0
    assert result["test_bits_per_dim"] == pytest.approx(-result["test_elbo_nats"] / (64 * math.log(2)))


def test_same_seed_gives_identical_metrics_files(tmp_path):
    common = ["train", "vae", "--dataset", "digits", "--latent-dim", "3", "--hidden", "16", "--epochs", "2",
              "--no-progress", "--device", "cpu", "--seed", "3"]
    main(common + ["--runs-dir", str(tmp_path / "a"), "--name", "r"])
    main(common + ["--runs-dir", str(tmp_path / "b"), "--name", "r"])
    first, second = ((tmp_path / side / "r" / "metrics.jsonl").read_bytes() for side in "ab")
    assert first == second and len(first.splitlines()) == 2


def test_a_failed_start_leaves_no_run_folder_and_run_options_are_checked(tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(FileNotFoundError, match="root"):
        main(["train", "vae", "--dataset", "mnist", "--data-root", str(tmp_path / "nowhere"), "--runs-dir", str(runs),
              "--name", "x", "--no-progress", "--device", "cpu"])
    assert not (runs / "x").exists()
    for option, value, message in (("--seed", "-1", "seed must be an int >= 0, got -1"),
                                   ("--max-steps", "0", "--max-steps must be a positive int, got 0")):
        with pytest.raises(ValueError, match=message):
            main(["train", "vae", "--dataset", "digits", option, value, "--runs-dir", str(runs), "--name", "y", "--no-progress"])
    assert not runs.exists()


def test_shell_errors_exit_2_without_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["ppl-dgm", "sample", "vae", str(tmp_path / "typo")])
    assert main() == 2
    err = capsys.readouterr().err
    assert "ppl-dgm sample vae: error: run folder" in err and "typo" in err and "Traceback" not in err
    assert not (tmp_path / "typo").exists()


def test_add_config_options_derives_each_option_from_its_field():
    @dataclass
    class Config:
        model: str = "a"
        kind: str = field(default="b", metadata={"choices": ("a", "b", "c"), "help": "which kind"})
        widths: tuple[int, ...] = (4, 8)
        attention: bool = field(default=True, metadata={"help": "no attention"})
        verbose: bool = False
        lr: float | None = None
        seed: int = 0

    parser = argparse.ArgumentParser()
    add_config_options(parser, Config, exclude=("model",), defaults={"widths": (2,)}, choices={"kind": ("a", "b")})
    actions = {action.dest: action for action in parser._actions if action.dest != "help"}
    assert list(actions) == ["kind", "widths", "attention", "verbose", "lr"]  # field order; seed is a run option
    kind, widths, attention, verbose, lr = actions.values()
    assert (kind.option_strings, kind.type, kind.default, kind.choices, kind.help) == (["--kind"], None, "b", ("a", "b"), "which kind")
    assert (widths.option_strings, widths.type, widths.nargs, widths.default) == (["--widths"], int, "+", [2])
    assert (attention.option_strings, attention.default, attention.help) == (["--no-attention"], True, "no attention")
    assert isinstance(attention, argparse._StoreFalseAction) and isinstance(verbose, argparse._StoreTrueAction)
    assert (verbose.option_strings, verbose.default) == (["--verbose"], False)
    assert (lr.option_strings, lr.type, lr.nargs, lr.default) == (["--lr"], float, None, None)
    assert vars(parser.parse_args([])) == {"kind": "b", "widths": [2], "attention": True, "verbose": False, "lr": None}
    args = parser.parse_args(["--kind", "a", "--widths", "3", "5", "--no-attention", "--verbose", "--lr", "0.5"])
    assert vars(args) == {"kind": "a", "widths": [3, 5], "attention": False, "verbose": True, "lr": 0.5}
    with pytest.raises(SystemExit):
        parser.parse_args(["--kind", "c"])  # the call site narrowed the field's choices


def test_train_parsers_keep_their_family_differences(capsys):
    parse = build_parser().parse_args
    assert parse(["train", "dae"]).corruption == 0.3 and parse(["train", "ae"]).corruption == 0.0
    assert parse(["train", "pix2pix"]).l1_weight is None  # the model's λ, filled in by the handler
    assert parse(["train", "hvae", "--latent-dim2", "3"]).latent_dim2 == 3
    for argv in (["train", "hvae", "--arch", "conv"], ["train", "vae", "--latent-dim2", "3"], ["train", "ncsn", "--sde", "ve"],
                 ["train", "gmm", "--latent-dim", "3"], ["train", "fa", "--components", "3"], ["train", "pix2pix", "--model", "cyclegan"]):
        with pytest.raises(SystemExit):
            parse(argv)
    assert "error" in capsys.readouterr().err
