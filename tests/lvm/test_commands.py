import argparse
import json

import pytest

from ppl_dgm.lvm import commands


def parse(argv):
    parser = argparse.ArgumentParser(prog="ppl-dgm")
    subcommands = parser.add_subparsers(dest="command", required=True)
    families = {name: subcommands.add_parser(name).add_subparsers(dest="family", required=True) for name in ("train", "sample", "eval")}
    commands.add_parsers(families["train"], families["sample"], families["eval"])
    return parser.parse_args(argv)


@pytest.mark.filterwarnings("ignore:EM did not converge")
@pytest.mark.parametrize("argv", [["gmm", "--components", "3", "--covariance", "diag"], ["fa", "--latent-dim", "4"], ["ppca", "--latent-dim", "4"]])
def test_train_then_eval_on_digits(tmp_path, capsys, argv):
    args = parse(["train", *argv, "--max-iter", "20", "--tol", "1e-4", "--runs-dir", str(tmp_path), "--name", "r", "--device", "cpu"])
    assert args.handler(args) == 0
    trained = json.loads((tmp_path / "r" / "results.json").read_text())
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt"):
        assert (tmp_path / "r" / name).is_file()
    assert json.loads((tmp_path / "r" / "config.json").read_text())["model"] == argv[0]
    curve = [json.loads(line)["train_log_likelihood"] for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert curve[-1] > curve[0] and curve[-1] == pytest.approx(trained["train_log_likelihood_nats"], rel=1e-3)
    # a uniform density on the dequantized cube [0, 17/16)^64 scores −64·ln(17/16) ≈ −3.9 nats per digit
    assert trained["test_log_likelihood_nats"] > 0
    capsys.readouterr()
    args = parse(["eval", argv[0], str(tmp_path / "r")])
    assert args.handler(args) == 0
    assert json.loads(capsys.readouterr().out)["test_log_likelihood_nats"] == pytest.approx(trained["test_log_likelihood_nats"], rel=1e-9)


def test_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        parse(["train", "gmm", "--covariance", "tied"])
    assert "invalid choice: 'tied'" in capsys.readouterr().err
    args = parse(["train", "fa", "--latent-dim", "0", "--device", "cpu"])
    with pytest.raises(ValueError, match="latent_dim must be a positive int, got 0"):
        args.handler(args)
