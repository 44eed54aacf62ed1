"""``ppl-dgm train|eval gmm|fa|ppca``: argument parsers and handlers (all logic lives in :mod:`ppl_dgm.lvm.experiment`)."""
from __future__ import annotations

import argparse
from dataclasses import fields

__all__ = ["add_parsers"]

_HELP = {"gmm": "Gaussian mixture by exact EM on dequantized digits", "fa": "factor analysis by exact EM on dequantized digits",
         "ppca": "probabilistic PCA by exact EM on dequantized digits"}


def add_parsers(train: argparse._SubParsersAction, sample: argparse._SubParsersAction, evaluate: argparse._SubParsersAction) -> None:
    from ppl_dgm.cli import add_config_options, add_eval_parser, add_run_options
    from ppl_dgm.lvm.experiment import LVMConfig

    for model in ("gmm", "fa", "ppca"):
        parser = train.add_parser(model, help=_HELP[model])
        unused = ("latent_dim",) if model == "gmm" else ("components", "covariance", "reg_covar")  # a GMM has components, FA/PPCA a latent space
        add_config_options(parser, LVMConfig, exclude=("model", *unused))
        add_run_options(parser, f"{model}_digits", max_steps=False, distributed=False)  # --resume with a larger --max-iter extends EM
        parser.set_defaults(handler=_train, model=model)

        add_eval_parser(evaluate, model, f"held-out log-likelihood per digit of a trained {model} run", f"runs/{model}_digits",
                        families=("lvm",), device="cpu")


def _train(args: argparse.Namespace) -> int:
    from ppl_dgm.cli import train_command
    from ppl_dgm.lvm.experiment import LVMConfig, train_lvm

    config = LVMConfig(**{f.name: getattr(args, f.name) for f in fields(LVMConfig) if hasattr(args, f.name)})
    train = lambda config, run_dir, device, progress, resume: train_lvm(config, run_dir, device=device, resume=resume)  # noqa: E731
    return train_command(args, config, train, f"{config.model}_digits")
