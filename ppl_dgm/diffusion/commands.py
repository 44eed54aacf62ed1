"""``ppl-dgm train|sample|eval ddpm``, ``train|sample latent-ddpm``, ``train|eval noisy-classifier`` and ``train|sample|eval
palette``: argument parsers and handlers (all logic lives in :mod:`ppl_dgm.diffusion.experiment`,
:mod:`~ppl_dgm.diffusion.latent`, :mod:`~ppl_dgm.diffusion.classifier_experiment` and :mod:`~ppl_dgm.diffusion.palette`)."""
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
    parser.add_argument("--sampler", default=None, choices=SAMPLER_NAMES,
                        help="ancestral (all T steps), ddim (default), the fast solvers, or the network read as a VP SDE "
                             "(reverse-sde, pc, ode)")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps (DDIM: the run's sample_steps; dpmpp-2m 20, heun 18 (35 network calls), euler-ancestral 50, ...)")
    parser.add_argument("--eta", type=float, default=None, help="DDIM η in [0, 1] (default 0)")
    parser.add_argument("--guidance-scale", type=float, default=None, help="classifier-free guidance w (default: the run's)")
    parser.add_argument("--classifier", default=None,
                        help="a noisy-classifier run of the same dataset and schedule: classifier guidance, one row per class")
    parser.add_argument("--classifier-scale", type=float, default=None, help="classifier guidance scale s >= 0 (default 1)")
    restore = parser.add_argument_group("restoration of held-out test images with the unconditional network (grid rows: "
                                        "observation, restoration, truth)")
    restore.add_argument("--inpaint", default=None, metavar="MASK",
                         help="inpaint: lower-half, upper-half, left-half, right-half, center, random-half, or a .pt/.png mask (1 = known)")
    restore.add_argument("--upsample", type=int, default=None, metavar="FACTOR", help="super-resolution from FACTOR x FACTOR average pooling (DDRM)")
    restore.add_argument("--method", default=None, choices=("repaint", "smc", "ddrm"),
                         help="inpainting: repaint (default; --steps 100 x --resample), smc (SMCDiff, --num-particles) or ddrm")
    restore.add_argument("--resample", type=int, default=None, help="RePaint's resampling U (default 5)")
    restore.add_argument("--num-particles", type=int, default=None, help="SMC particles per image (default 8)")

    parser = add_eval_parser(evaluate, "ddpm", "bits/dim of the full Pyro ELBO on held-out images", "runs/ddpm_mnist5k", progress=True)
    parser.add_argument("--num-images", type=int, default=16, help="held-out images (T network calls each)")
    parser.add_argument("--batch-size", type=int, default=16)
    _add_latent_parsers(train, sample, evaluate)
    _add_classifier_parsers(train, evaluate)
    _add_palette_parsers(train, sample, evaluate)


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
    parser.add_argument("--eta", type=float, default=None, help="DDIM η in [0, 1] (default 0)")
    parser.add_argument("--guidance-scale", type=float, default=None,
                        help="classifier-free guidance w of a class-conditional run (default: the run's)")
    add_quality_options(add_eval_parser(evaluate, "latent-ddpm", "FD/KID of decoded samples against the test digits", example))


def _add_classifier_parsers(train: argparse._SubParsersAction, evaluate: argparse._SubParsersAction) -> None:
    from ppl_dgm.cli import add_config_options, add_eval_parser, add_run_options
    from ppl_dgm.diffusion.classifier_experiment import NoisyClassifierConfig

    parser = train.add_parser("noisy-classifier", help="noise-aware classifier p(y | x_t, t) for classifier guidance (Dhariwal & Nichol 2021)")
    add_config_options(parser, NoisyClassifierConfig)
    add_run_options(parser, "noisy_classifier_<dataset>")
    parser.set_defaults(handler=_train_classifier)
    parser = add_eval_parser(evaluate, "noisy-classifier", "held-out accuracy by noise level t", "runs/noisy_classifier_mnist5k")
    parser.add_argument("--num-examples", type=int, default=None, help="held-out images (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the forward-process noise")


def _train_classifier(args: argparse.Namespace) -> int:
    from ppl_dgm.cli import train_command
    from ppl_dgm.diffusion.classifier_experiment import NoisyClassifierConfig, train_noisy_classifier

    config = NoisyClassifierConfig(**{f.name: getattr(args, f.name) for f in fields(NoisyClassifierConfig)})
    return train_command(args, config, train_noisy_classifier, f"noisy_classifier_{config.dataset}")


def _add_palette_parsers(train: argparse._SubParsersAction, sample: argparse._SubParsersAction, evaluate: argparse._SubParsersAction) -> None:
    from ppl_dgm.cli import add_config_options, add_eval_parser, add_run_options, add_sample_parser
    from ppl_dgm.diffusion.palette import PaletteConfig
    from ppl_dgm.diffusion.sampling import SAMPLER_NAMES

    parser = train.add_parser("palette", help="image-conditioned DDPM on a paired digit task (Palette, Saharia et al. 2022)")
    add_config_options(parser, PaletteConfig)
    parser.add_argument("--eval-images", type=int, default=0, help="held-out L1 and FD/KID on this many test pairs after training")
    add_run_options(parser, "palette_<task>", amp=True, amp_default="bf16")  # bf16 as ddpm's
    parser.set_defaults(handler=_train_palette)

    example = "runs/palette_edges2digit"
    parser = add_sample_parser(sample, "palette", "translate the first n held-out sources of a Palette run", example, progress=True,
                               n_help="held-out sources, one sample each")
    evaluation = add_eval_parser(evaluate, "palette", "held-out L1 and FD/KID of one sample per source (pix2pix's test pairs)",
                                 example, progress=True)
    evaluation.add_argument("--num-images", type=int, default=1000, help="held-out pairs (all 1,000 by default)")
    evaluation.add_argument("--batch-size", type=int, default=250)
    evaluation.add_argument("--seed", type=int, default=0, help="seeds the sampler's noise")
    evaluation.add_argument("--classifier-dir", default="runs", help="where the FD feature classifier is cached")
    for each in (parser, evaluation):
        each.add_argument("--sampler", default=None, choices=SAMPLER_NAMES, help="default: ddim")
        each.add_argument("--steps", type=int, default=None, help="sampler steps (DDIM: the run's sample_steps)")
        each.add_argument("--eta", type=float, default=None, help="DDIM η in [0, 1] (default 0)")


def _train_palette(args: argparse.Namespace) -> int:
    from ppl_dgm.cli import train_command
    from ppl_dgm.diffusion.palette import PaletteConfig, train_palette

    config = PaletteConfig(**{f.name: getattr(args, f.name) for f in fields(PaletteConfig)})
    return train_command(args, config, train_palette, f"palette_{config.task}", eval_images=args.eval_images, amp=args.amp)


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
