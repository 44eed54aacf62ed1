"""``ppl-dgm train|sample|eval ddpm`` and ``train|sample latent-ddpm``: argument parsers and handlers (all logic lives in
:mod:`ppl_dgm.diffusion.experiment` and :mod:`ppl_dgm.diffusion.latent`)."""
from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

__all__ = ["add_parsers"]


def add_parsers(train: argparse._SubParsersAction, sample: argparse._SubParsersAction, evaluate: argparse._SubParsersAction) -> None:
    from ppl_dgm.cli import add_config_options, add_eval_parser, add_quality_options, add_run_options, add_sample_parser
    from ppl_dgm.diffusion.sampling import SAMPLER_NAMES
    from ppl_dgm.diffusion.experiment import SAMPLERS, DDPMConfig

    parser = train.add_parser("ddpm", help="DDPM ε-network by L_simple (Ho et al. 2020), optionally class-conditional")
    add_config_options(parser, DDPMConfig)
    parser.add_argument("--eval-images", type=int, default=0, help="bits/dim on this many test images after training")
    # bf16 by default: held-out L_simple within seed noise of float32 at a fixed budget, and faster (docs/benchmarks.md)
    add_run_options(parser, "ddpm_<dataset>", amp=True, amp_default="bf16")
    parser.set_defaults(handler=_train)

    parser = add_sample_parser(sample, "ddpm", "write a grid of samples from a trained DDPM run (one row per class if conditional)",
                               "runs/ddpm_mnist5k", progress=True, n_help="images (per class: n // 10)")
    parser.add_argument("--sampler", default="ddim", choices=SAMPLER_NAMES,
                        help="ancestral (all T steps), ddim, the fast solvers, or the network read as a VP SDE (reverse-sde, pc, ode)")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps (DDIM: the run's sample_steps; dpmpp-2m 20, heun 18 (35 network calls), euler-ancestral 50, ...)")
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM η in [0, 1]")
    parser.add_argument("--guidance-scale", type=float, default=None, help="classifier-free guidance w (default: the run's)")

    parser = add_eval_parser(evaluate, "ddpm", "bits/dim of the full Pyro ELBO on held-out images", "runs/ddpm_mnist5k", progress=True)
    parser.add_argument("--num-images", type=int, default=16, help="held-out images (T network calls each)")
    parser.add_argument("--batch-size", type=int, default=16)
    _add_latent_parsers(train, sample, evaluate)


def _add_latent_parsers(train: argparse._SubParsersAction, sample: argparse._SubParsersAction, evaluate: argparse._SubParsersAction) -> None:
    from ppl_dgm.cli import add_config_options, add_eval_parser, add_quality_options, add_run_options, add_sample_parser
    from ppl_dgm.diffusion.experiment import SAMPLERS
    from ppl_dgm.diffusion.latent import LatentDDPMConfig

    parser = train.add_parser("latent-ddpm", help="DDPM on the standardized latents of a trained VAE run (Rombach et al. 2022)")
    parser.add_argument("--vae-run", required=True, help="VAE run folder, e.g. runs/table_vae_mlp_bernoulli_50ep")  # not a config field
    add_config_options(parser, LatentDDPMConfig)
    add_run_options(parser, "latent_ddpm_<vae run name>")
    parser.set_defaults(handler=_train_latent)

    example = "runs/latent_ddpm_table_vae_mlp_bernoulli_50ep"
    parser = add_sample_parser(sample, "latent-ddpm", "write a grid of decoded samples from a trained latent-DDPM run", example,
                               progress=True)
    parser.add_argument("--sampler", default=None, choices=SAMPLERS, help="default: the run's")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the run's sample_steps)")
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM η in [0, 1]")
    add_quality_options(add_eval_parser(evaluate, "latent-ddpm", "FD/KID of decoded samples against the test digits", example))


def _train(args: argparse.Namespace) -> int:
    from ppl_dgm.cli import train_command
    from ppl_dgm.diffusion.experiment import DDPMConfig, train_ddpm

    config = DDPMConfig(**{f.name: getattr(args, f.name) for f in fields(DDPMConfig)})
    return train_command(args, config, train_ddpm, f"ddpm_{config.dataset}", eval_images=args.eval_images, amp=args.amp)


def _train_latent(args: argparse.Namespace) -> int:
    from ppl_dgm.cli import train_command
    from ppl_dgm.diffusion.latent import LatentDDPMConfig, train_latent_ddpm

    config = LatentDDPMConfig(**{f.name: getattr(args, f.name) for f in fields(LatentDDPMConfig)})
    train = lambda config, run_dir, **options: train_latent_ddpm(config, run_dir, args.vae_run, **options)  # noqa: E731
    return train_command(args, config, train, f"latent_ddpm_{Path(args.vae_run).name}")
