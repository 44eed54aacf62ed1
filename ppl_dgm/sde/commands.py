"""``ppl-dgm train ncsn|score-sde|ebm``, ``sample score-sde|ebm``, ``eval score-sde|ebm`` (logic in :mod:`ppl_dgm.sde.experiment`
and :mod:`ppl_dgm.sde.ebm_experiment`)."""
from __future__ import annotations

import argparse
from dataclasses import fields

__all__ = ["add_parsers"]


def _add_training_arguments(parser: argparse.ArgumentParser, model: str) -> None:
    from ppl_dgm.cli import add_config_options, add_run_options
    from ppl_dgm.sde.experiment import ScoreConfig

    # NCSN perturbs with geometric σ's, not an SDE
    add_config_options(parser, ScoreConfig, exclude=("model",) if model == "score-sde" else ("model", "sde", "likelihood_weighting", "importance_sampling"))
    # score-SDE: bf16 on images by default, its held-out loss within seed noise of float32 (docs/benchmarks.md); NCSN's
    # bf16 loss was higher for both seeds measured, so it stays float32
    add_run_options(parser, f"{model}_<dataset>", amp=True, amp_default="auto" if model == "score-sde" else None)
    parser.set_defaults(handler=_train, model=model)


def add_parsers(train: argparse._SubParsersAction, sample: argparse._SubParsersAction, evaluate: argparse._SubParsersAction) -> None:
    from ppl_dgm.cli import add_eval_parser, add_sample_parser
    from ppl_dgm.sde.experiment import SAMPLERS

    _add_training_arguments(train.add_parser("score-sde", help="ε-network by continuous DSM on a VP/sub-VP/VE SDE (Song et al. 2021)"), "score-sde")
    _add_training_arguments(train.add_parser("ncsn", help="noise-conditional score network by DSM over geometric σ's (Song & Ermon 2019)"), "ncsn")

    families = ("score-sde", "ncsn")
    parser = add_sample_parser(sample, "score-sde", "samples of a score-sde or ncsn run (PNG grid or scatter)", "runs/score-sde_checkerboard",
                               families=families, progress=True, out_help="PNG path (default: <run>/samples_<sampler>.png)")
    parser.add_argument("--sampler", default=None, choices=SAMPLERS, help="default: langevin for ncsn runs, reverse-sde otherwise")
    parser.add_argument("--steps", type=int, default=None,
                        help="reverse-sde / pc: solver steps (default 500); langevin: steps per noise level T (default 100)")
    parser.add_argument("--step-size", type=float, default=None, help="langevin: ε of α_i = ε σ_i²/σ_L² (default: the paper's, scaled to σ_L)")

    parser = add_eval_parser(evaluate, "score-sde", "held-out ODE NLL (nats per 2-D point, bits/dim for images)", "runs/score-sde_checkerboard",
                             families=families, progress=True)
    parser.add_argument("--num-examples", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0, help="seeds the Hutchinson probes (images)")

    _add_ebm_parsers(train, sample, evaluate)


def _add_ebm_parsers(train: argparse._SubParsersAction, sample: argparse._SubParsersAction, evaluate: argparse._SubParsersAction) -> None:
    from ppl_dgm.cli import add_config_options, add_eval_parser, add_run_options, add_sample_parser
    from ppl_dgm.sde.ebm_experiment import SAMPLERS, EBMConfig

    parser = train.add_parser("ebm", help="energy-based model E(x, σ) on a 2-D toy by denoising, sliced or implicit score matching")
    add_config_options(parser, EBMConfig)
    add_run_options(parser, "ebm_<objective>_<dataset>")
    parser.set_defaults(handler=_train_ebm)

    parser = add_sample_parser(sample, "ebm", "Langevin samples of an ebm run (scatter PNG)", "runs/ebm_dsm_8gaussians", progress=True,
                               out_help="PNG path (default: <run>/samples_<sampler>.png)")
    parser.add_argument("--sampler", default=None, choices=SAMPLERS, help="default: annealed-langevin (langevin when num_scales = 1)")
    parser.add_argument("--steps", type=int, default=None, help="annealed-langevin: steps per noise level (default 100); langevin: steps (1,000)")
    parser.add_argument("--step-size", type=float, default=None, help="ε (default 0.2 σ_min²; annealed: α_i = ε σ_i²/σ_L²)")

    parser = add_eval_parser(evaluate, "ebm", "held-out NLL in nats per point, log Z by quadrature on a grid", "runs/ebm_dsm_8gaussians")
    parser.add_argument("--num-examples", type=int, default=2000)


def _train(args: argparse.Namespace) -> int:
    from ppl_dgm.cli import train_command
    from ppl_dgm.sde.experiment import ScoreConfig, train_score

    config = ScoreConfig(**{f.name: getattr(args, f.name) for f in fields(ScoreConfig) if hasattr(args, f.name)})
    amp = ("bf16" if config.is_image else "none") if args.amp == "auto" else args.amp
    return train_command(args, config, train_score, f"{config.model}_{config.dataset}", amp=amp)


def _train_ebm(args: argparse.Namespace) -> int:
    from ppl_dgm.cli import train_command
    from ppl_dgm.sde.ebm_experiment import EBMConfig, train_ebm

    config = EBMConfig(**{f.name: getattr(args, f.name) for f in fields(EBMConfig)})
    return train_command(args, config, train_ebm, f"ebm_{config.objective}_{config.dataset}")
