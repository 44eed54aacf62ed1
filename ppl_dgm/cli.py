"""``ppl-dgm train|sample|eval <family> ...``: a thin command line over the package.

Each family adds its own sub-commands from ``ppl_dgm/<family>/commands.py`` (``add_parsers``);
every parser sets ``handler``, the function that runs it.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    from ppl_dgm.diffusion import commands as diffusion_commands
    from ppl_dgm.gan import commands as gan_commands
    from ppl_dgm.lvm import commands as lvm_commands
    from ppl_dgm.sde import commands as sde_commands
    from ppl_dgm.vae import commands as vae_commands

    parser = argparse.ArgumentParser(prog="ppl-dgm", description="Deep generative models as Pyro programs.")
    commands = parser.add_subparsers(dest="command", required=True)
    families = {}
    for command, help_text in (("train", "train a model into runs/<name>/"), ("sample", "sample a trained run"), ("eval", "evaluate a trained run")):
        families[command] = commands.add_parser(command, help=help_text).add_subparsers(dest="family", required=True)
    for module in (vae_commands, lvm_commands, diffusion_commands, sde_commands, gan_commands):
        module.add_parsers(families["train"], families["sample"], families["eval"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
