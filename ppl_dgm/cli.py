"""``ppl-dgm train|sample|eval <family> ...``: a thin command line over the package.

Each family adds its own sub-commands from ``ppl_dgm/<family>/commands.py`` (``add_parsers``);
every parser sets ``handler``, the function that runs it.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

__all__ = ["main", "build_parser", "sample_command", "evaluate_command"]

SAMPLE_OPTIONS = ("eta", "guidance_scale", "step_size", "truncation")
EVALUATE_OPTIONS = ("iwae_k", "num_images", "batch_size", "num_examples", "num_samples", "seed", "classifier_dir")


def sample_command(args: argparse.Namespace) -> int:
    """``ppl-dgm sample <family> RUN``: :meth:`ppl_dgm.runs.Run.sample`, written as a PNG grid (a scatter for 2-D runs)."""
    from pathlib import Path

    from torchvision.utils import save_image

    from ppl_dgm.runs import load_run

    run = load_run(args.run, device=args.device, family=args.families)
    options = {name: getattr(args, name) for name in SAMPLE_OPTIONS if getattr(args, name, None) is not None}
    sampler = getattr(args, "sampler", None)
    samples = run.sample(args.n, sampler=sampler, steps=getattr(args, "steps", None), seed=args.seed,
                         progress=not getattr(args, "no_progress", True), **options)
    if run.family in ("score-sde", "ncsn"):
        from ppl_dgm.sde.experiment import _save_samples
        from ppl_dgm.train.runs import RunDir

        out = Path(args.out) if args.out else run.path / f"samples_{sampler or run.config.default_sampler}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        _save_samples(RunDir(out.parent), run.config, samples * 2 - 1 if run.config.is_image else samples, out.name)
    else:
        out = Path(args.out) if args.out else run.path / "samples_cli.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        save_image(samples.cpu(), out, nrow=run.grid_rows(samples.shape[0]), padding=2, pad_value=1.0)
    print(f"wrote {out}")
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    """``ppl-dgm eval <family> RUN``: :meth:`ppl_dgm.runs.Run.evaluate`, printed as JSON."""
    import json

    from ppl_dgm.runs import load_run

    run = load_run(args.run, device=args.device, family=args.families)
    options = {name: getattr(args, name) for name in EVALUATE_OPTIONS if getattr(args, name, None) is not None}
    if "classifier_dir" in options:
        options["cache_dir"] = options.pop("classifier_dir")
    print(json.dumps(run.evaluate(progress=not getattr(args, "no_progress", True), **options), indent=2))
    return 0


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
    """Run one command. From the shell, bad input exits 2 and a divergence exits 3, each with its message on stderr and
    no traceback; called with ``argv`` from Python, bad input raises its ValueError/TypeError/FileNotFoundError."""
    args = build_parser().parse_args(argv)
    from ppl_dgm.train.loop import TrainingDiverged

    try:
        return args.handler(args)
    except TrainingDiverged as error:
        print(f"ppl-dgm: {error}", file=sys.stderr)
        return 3
    except (ValueError, TypeError, FileNotFoundError) as error:
        if argv is not None:  # called from Python (scripts, tests): the exception is the answer
            raise
        print(f"ppl-dgm {args.command} {args.family}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
