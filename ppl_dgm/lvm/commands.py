"""``ppl-dgm train|eval gmm|fa|ppca``: argument parsers and handlers (all logic lives in :mod:`ppl_dgm.lvm.experiment`)."""
from __future__ import annotations

import argparse
from dataclasses import fields

__all__ = ["add_parsers"]

_HELP = {"gmm": "Gaussian mixture by exact EM on dequantized digits", "fa": "factor analysis by exact EM on dequantized digits",
         "ppca": "probabilistic PCA by exact EM on dequantized digits"}


def add_parsers(train: argparse._SubParsersAction, sample: argparse._SubParsersAction, evaluate: argparse._SubParsersAction) -> None:
    from ppl_dgm.cli import add_run_options, evaluate_command
    from ppl_dgm.lvm.experiment import LVMConfig

    defaults = LVMConfig()
    for model in ("gmm", "fa", "ppca"):
        parser = train.add_parser(model, help=_HELP[model])
        if model == "gmm":
            parser.add_argument("--components", type=int, default=defaults.components)
            parser.add_argument("--covariance", default=defaults.covariance, choices=("full", "diag"))
            parser.add_argument("--reg-covar", type=float, default=defaults.reg_covar, help="added to covariance diagonals (as sklearn)")
        else:
            parser.add_argument("--latent-dim", type=int, default=defaults.latent_dim)
        parser.add_argument("--max-iter", type=int, default=defaults.max_iter)
        parser.add_argument("--tol", type=float, default=defaults.tol, help="stop when the mean log-likelihood changes less (nats)")
        add_run_options(parser, f"{model}_digits", resumable=False, distributed=False)
        parser.set_defaults(handler=_train, model=model)

        parser = evaluate.add_parser(model, help=f"held-out log-likelihood per digit of a trained {model} run")
        parser.add_argument("run", help=f"run folder, e.g. runs/{model}_digits")
        parser.add_argument("--device", default="cpu")
        parser.set_defaults(handler=evaluate_command, families=("lvm",))


def _train(args: argparse.Namespace) -> int:
    from ppl_dgm.cli import train_command
    from ppl_dgm.lvm.experiment import LVMConfig, train_lvm

    config = LVMConfig(**{f.name: getattr(args, f.name) for f in fields(LVMConfig) if hasattr(args, f.name)})
    train = lambda config, run_dir, device, progress: train_lvm(config, run_dir, device=device)  # noqa: E731 (exact EM: no progress bar)
    return train_command(args, config, train, f"{config.model}_digits")
