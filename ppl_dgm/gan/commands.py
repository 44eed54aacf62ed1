"""``ppl-dgm train gan|pix2pix|cyclegan``, ``sample gan``, ``eval gan``: parsers and handlers (logic in
:mod:`ppl_dgm.gan.experiment` and :mod:`ppl_dgm.gan.translation`)."""
from __future__ import annotations

import argparse
from dataclasses import fields

__all__ = ["add_parsers"]


def add_parsers(train: argparse._SubParsersAction, sample: argparse._SubParsersAction, evaluate: argparse._SubParsersAction) -> None:
    from ppl_dgm.cli import add_config_options, add_run_options, add_eval_parser, add_quality_options, add_sample_parser
    from ppl_dgm.gan.experiment import GANConfig
    from ppl_dgm.gan.translation import TranslationConfig

    parser = train.add_parser("gan", help="DCGAN, class-conditional GAN or style-based generator on images")
    add_config_options(parser, GANConfig)
    parser.add_argument("--eval-samples", type=int, default=0, help="FD/KID on this many samples after training")
    add_run_options(parser, max_steps_help="stop after this many discriminator steps", default_name="<arch>_<loss>_<dataset>")
    parser.set_defaults(handler=_train_gan)

    for model, help_text in (("pix2pix", "paired image-to-image: U-Net + PatchGAN, cGAN + λ·L1 (Isola et al. 2017)"),
                             ("cyclegan", "unpaired image-to-image: LS-GAN + λ·cycle L1 (Zhu et al. 2017)")):
        parser = train.add_parser(model, help=help_text)
        parser.set_defaults(model=model, handler=_train_translation)
        # --l1-weight None: the model's λ, filled in by _train_translation
        add_config_options(parser, TranslationConfig, exclude=("model",), defaults={"l1_weight": None})
        add_run_options(parser, max_steps_help="stop after this many discriminator steps", default_name=f"{model}_<task>")

    example = "runs/dcgan_non_saturating_mnist5k"
    parser = add_sample_parser(sample, "gan", "write a grid of samples from a trained GAN run (one row per class for cgan)", example)
    parser.add_argument("--truncation", type=float, default=1.0, help="ψ of the truncation trick (stylegan)")
    add_quality_options(add_eval_parser(evaluate, "gan", "Fréchet distance and KID on features of the library's digit classifier", example))
    for model in ("pix2pix", "cyclegan"):
        add_sample_parser(sample, model, "translations of the first n held-out sources (PNG grid)", f"runs/{model}_edges2digit")
        add_eval_parser(evaluate, model, "held-out L1 of the translations (CycleGAN: also cycle errors)", f"runs/{model}_edges2digit")


def _train_gan(args: argparse.Namespace) -> int:
    from ppl_dgm.cli import train_command
    from ppl_dgm.gan.experiment import GANConfig, train_gan

    config = GANConfig(**{f.name: getattr(args, f.name) for f in fields(GANConfig)})
    return train_command(args, config, train_gan, f"{config.arch}_{config.loss}_{config.dataset}", eval_samples=args.eval_samples,
                         classifier_dir=args.runs_dir)


def _train_translation(args: argparse.Namespace) -> int:
    from ppl_dgm.cli import train_command
    from ppl_dgm.gan.translation import TranslationConfig, train_translation

    values = {f.name: getattr(args, f.name) for f in fields(TranslationConfig) if hasattr(args, f.name)}
    if values.get("l1_weight") is None:
        values["l1_weight"] = 100.0 if args.model == "pix2pix" else 10.0
    config = TranslationConfig(**values)
    return train_command(args, config, train_translation, f"{config.model}_{config.task}")
