"""``ppl-dgm train|sample|eval <family> ...``: a thin command line over the package.

Each family adds its own sub-commands from ``ppl_dgm/<family>/commands.py`` (``add_parsers``);
every parser sets ``handler``, the function that runs it.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any, Mapping, Sequence, get_args, get_origin, get_type_hints

__all__ = ["main", "build_parser", "add_config_options", "add_run_options", "train_command", "sample_command", "evaluate_command"]

SAMPLE_OPTIONS = ("eta", "guidance_scale", "classifier", "classifier_scale", "step_size", "truncation", "temperature",
                  "inpaint", "upsample", "method", "resample", "num_particles")
EVALUATE_OPTIONS = ("iwae_k", "num_images", "batch_size", "num_examples", "num_samples", "seed", "classifier_dir", "inception_weights",
                    "sampler", "steps", "eta")  # the last three: families evaluated through a sampler (palette)


def add_config_options(parser: argparse.ArgumentParser, config_class: type, *, exclude: Sequence[str] = (),
                       defaults: Mapping[str, Any] | None = None, choices: Mapping[str, Sequence[str]] | None = None) -> None:
    """One ``--field-name`` option per field of the dataclass ``config_class``, in field order: type and default from
    the field, ``help`` and ``choices`` from ``field.metadata``. A bool is a flag (``--name`` when it defaults to False,
    ``--no-name`` when True), ``tuple[int, ...]`` takes ``nargs="+"``, ``X | None`` is an ``X`` option. ``seed`` is a run
    option (:func:`add_run_options`) and never added here; ``exclude``, ``defaults`` and ``choices`` hold what one
    subcommand does differently (fields it sets itself, another default, fewer choices)."""
    defaults, choices = defaults or {}, choices or {}
    hints = get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        if field.name == "seed" or field.name in exclude:
            continue
        name, default, annotation = field.name.replace("_", "-"), defaults.get(field.name, field.default), hints[field.name]
        sequence = get_origin(annotation) in (tuple, list)  # tuple[int, ...] or list[int]
        kind = next((arg for arg in get_args(annotation) if arg not in (type(None), Ellipsis)), annotation)  # int | None -> int
        if kind is bool:
            parser.add_argument(f"--no-{name}" if default else f"--{name}", dest=field.name, action="store_false" if default else "store_true",
                                default=default, help=field.metadata.get("help"))
            continue
        parser.add_argument(f"--{name}", type=None if kind is str else kind, nargs="+" if sequence else None,
                            default=list(default) if sequence and default is not None else default,
                            choices=choices.get(field.name, field.metadata.get("choices")), help=field.metadata.get("help"))


def add_run_options(parser: argparse.ArgumentParser, default_name: str, *, resumable: bool = True, distributed: bool = True,
                    amp: bool = False, amp_default: str | None = None, max_steps: bool = True,
                    max_steps_help: str = "stop after this many optimizer steps (a checkpoint is written)") -> None:
    """The options every ``train`` subcommand shares, declared once (docs/design.md, "Runs")."""
    parser.add_argument("--seed", type=int, default=0, help="seeds the initialization and every epoch's data order")
    parser.add_argument("--runs-dir", default="runs", help="folder holding the run folders")
    parser.add_argument("--name", default=None, help=f"run name (default: {default_name})")
    if resumable:
        parser.add_argument("--resume", action="store_true",
                            help="continue exactly from <runs-dir>/<name>/checkpoint.pt; with a larger --epochs it extends the run")
    if resumable and max_steps:
        parser.add_argument("--max-steps", type=int, default=None, help=max_steps_help)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    if distributed:
        parser.add_argument("--distributed", action="store_true", help="data-parallel under torchrun (DDP; --batch-size per process)")
    if amp:  # "none" → None: float32 throughout; "auto" is resolved by the family's handler
        extra = " auto: bf16 on image data, float32 on 2-D data;" if amp_default == "auto" else ""
        parser.add_argument("--amp", default=amp_default or "none", choices=("bf16", "none") + (("auto",) if amp_default == "auto" else ()),
                            type=str, help=f"bf16: autocast for the training loss (weights stay float32); none: float32;{extra} "
                                           f"(default: {amp_default or 'none'})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_sample_parser(sample: argparse._SubParsersAction, family: str, help: str, example: str, *,
                      families: tuple[str, ...] | None = None, progress: bool = False,
                      out_help: str = "PNG path (default: <run>/samples_cli.png)", n_help: str = "samples") -> argparse.ArgumentParser:
    """``ppl-dgm sample <family> RUN`` with the options every sample command shares; add the family's own to the result."""
    parser = sample.add_parser(family, help=help)
    parser.add_argument("run", help=f"run folder, e.g. {example}")
    parser.add_argument("--n", type=int, default=64, help=n_help)
    parser.add_argument("--seed", type=int, default=0, help="seeds the sampler's noise")
    parser.add_argument("--out", default=None, help=out_help)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    if progress:
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=sample_command, families=families or (family,))
    return parser


def add_eval_parser(evaluate: argparse._SubParsersAction, family: str, help: str, example: str, *,
                    families: tuple[str, ...] | None = None, progress: bool = False, device: str = "auto") -> argparse.ArgumentParser:
    """``ppl-dgm eval <family> RUN`` with the options every eval command shares; add the family's own to the result."""
    parser = evaluate.add_parser(family, help=help)
    parser.add_argument("run", help=f"run folder, e.g. {example}")
    parser.add_argument("--device", default=device, help="auto (CUDA when present), cpu, cuda, cuda:N")
    if progress:
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=evaluate_command, families=families or (family,))
    return parser


def add_quality_options(parser: argparse.ArgumentParser) -> None:
    """FD/KID of samples against the test digits (features of the library's digit classifier)."""
    parser.add_argument("--num-samples", type=int, default=1000, help="samples compared with the test digits")
    parser.add_argument("--classifier-dir", default="runs", help="where the feature classifier is cached")
    parser.add_argument("--seed", type=int, default=0, help="seeds the samples")
    parser.add_argument("--inception-weights", default=None,
                        help="also the standard FID: a local FID Inception-v3 weights file (pt_inception-2015-12-05); never downloads")


def train_command(args: argparse.Namespace, config: object, train, default_name: str, **train_options) -> int:
    """Run ``train(config, run_dir, device=, resume=, progress=, max_steps=, **train_options)`` for a ``train`` subcommand:
    checks the run options, opens a torchrun session with ``--distributed``, writes results.json (rank 0) and prints
    it. A folder this call created is removed again when training fails before its first checkpoint (bad data,
    a missing file), so a failed start leaves nothing behind."""
    import json
    import shutil
    from pathlib import Path

    from ppl_dgm.train.distributed import distributed_session, is_main_process
    from ppl_dgm.train.runs import RunDir

    if args.seed < 0:
        raise ValueError(f"--seed must be an int >= 0, got {args.seed}")
    max_steps = getattr(args, "max_steps", None)
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"--max-steps must be a positive int, got {max_steps}")
    run_dir = Path(args.runs_dir) / (args.name or default_name)
    created = None  # the outermost folder this call will create (the run folder, or runs/ itself)
    for folder in (run_dir, *run_dir.parents):
        if folder.exists():
            break
        created = folder
    options = dict(train_options)
    if options.get("amp") == "none":
        options["amp"] = None
    if hasattr(args, "resume"):
        options["resume"] = args.resume
    if hasattr(args, "max_steps"):
        options["max_steps"] = max_steps
    with distributed_session(getattr(args, "distributed", False), args.device) as device:
        try:
            result = train(config, run_dir, device=device, progress=not args.no_progress, **options)
        except (ValueError, TypeError, FileNotFoundError):
            if created is not None and is_main_process() and not (run_dir / "checkpoint.pt").exists():
                shutil.rmtree(created, ignore_errors=True)
            raise
        RunDir(run_dir).write_results(result)
        if not is_main_process():
            return 0
    print(json.dumps(result, indent=2))
    print(f"wrote {run_dir}/ (config.json, metrics.jsonl, checkpoint.pt, results.json and PNG grids)")
    return 0


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
    if run.family in ("score-sde", "ncsn", "ebm"):
        from ppl_dgm.sde.experiment import _save_samples
        from ppl_dgm.train.runs import RunDir

        out = Path(args.out) if args.out else run.path / f"samples_{sampler or run.config.default_sampler}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        _save_samples(RunDir(out.parent), run.config, samples * 2 - 1 if run.config.is_image else samples, out.name)
    else:
        out = Path(args.out) if args.out else run.path / "samples_cli.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        nrow = max(1, samples.shape[0] // 10) if options.get("classifier") else run.grid_rows(samples.shape[0])  # guided: a row per class
        if options.get("inpaint") is not None or options.get("upsample") is not None:  # rows: observation, restoration, truth
            import torch

            from ppl_dgm.diffusion.inverse import held_out_observations

            seen = held_out_observations(run.config, args.n, inpaint_mask=options.get("inpaint"), upsample=options.get("upsample"))
            samples, nrow = torch.cat([seen["observed"], samples.cpu(), seen["truth"]]), samples.shape[0]
        save_image(samples.cpu(), out, nrow=nrow, padding=2, pad_value=1.0)
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
