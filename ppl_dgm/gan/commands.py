"""``ppl-dgm train gan|pix2pix|cyclegan``, ``sample gan``, ``eval gan``: parsers and handlers (logic in
:mod:`ppl_dgm.gan.experiment` and :mod:`ppl_dgm.gan.translation`)."""
from __future__ import annotations

import argparse
from dataclasses import fields

__all__ = ["add_parsers"]


def add_parsers(train: argparse._SubParsersAction, sample: argparse._SubParsersAction, evaluate: argparse._SubParsersAction) -> None:
    from ppl_dgm.cli import add_run_options, evaluate_command, sample_command
    from ppl_dgm.gan.experiment import ARCHITECTURES, DATASETS, GANConfig
    from ppl_dgm.gan.losses import OBJECTIVE_NAMES
    from ppl_dgm.gan.translation import PAIR_TASKS, TranslationConfig

    defaults = GANConfig()
    parser = train.add_parser("gan", help="DCGAN, class-conditional GAN or style-based generator on images")
    parser.add_argument("--arch", default=defaults.arch, choices=ARCHITECTURES)
    parser.add_argument("--loss", default=defaults.loss, choices=OBJECTIVE_NAMES)
    parser.add_argument("--dataset", default=defaults.dataset, choices=DATASETS)
    parser.add_argument("--data-root", default=None, help="folder with torchvision files; never downloads")
    parser.add_argument("--latent-dim", type=int, default=defaults.latent_dim)
    parser.add_argument("--channels", type=int, default=defaults.channels)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the objective's recipe (64)")
    parser.add_argument("--lr", type=float, default=None, help="default: the objective's recipe")
    parser.add_argument("--n-critic", type=int, default=None, help="discriminator steps per generator step (default: recipe)")
    parser.add_argument("--ema-decay", type=float, default=defaults.ema_decay)
    parser.add_argument("--spectral-norm", action="store_true", help="spectral normalization in D (Miyato et al. 2018)")
    parser.add_argument("--minibatch-std", action="store_true", help="minibatch std feature in D (Karras et al. 2018)")
    parser.add_argument("--mixing-probability", type=float, default=defaults.mixing_probability, help="style mixing (stylegan)")
    parser.add_argument("--eval-samples", type=int, default=0, help="FD/KID on this many samples after training")
    add_run_options(parser, distributed=False, max_steps_help="stop after this many discriminator steps", default_name="<arch>_<loss>_<dataset>")
    parser.set_defaults(handler=_train_gan)

    translation_defaults = TranslationConfig()
    for model, help_text in (("pix2pix", "paired image-to-image: U-Net + PatchGAN, cGAN + λ·L1 (Isola et al. 2017)"),
                             ("cyclegan", "unpaired image-to-image: LS-GAN + λ·cycle L1 (Zhu et al. 2017)")):
        parser = train.add_parser(model, help=help_text)
        parser.set_defaults(model=model, handler=_train_translation)
        parser.add_argument("--task", default=translation_defaults.task, choices=PAIR_TASKS)
        parser.add_argument("--channels", type=int, default=translation_defaults.channels)
        parser.add_argument("--epochs", type=int, default=translation_defaults.epochs)
        parser.add_argument("--batch-size", type=int, default=translation_defaults.batch_size)
        parser.add_argument("--lr", type=float, default=translation_defaults.lr)
        parser.add_argument("--l1-weight", type=float, default=None, help="λ: 100 for pix2pix, 10 for cyclegan's cycle loss")
        parser.add_argument("--identity-weight", type=float, default=translation_defaults.identity_weight,
                            help="cyclegan identity loss weight, times λ (0 = off)")
        add_run_options(parser, distributed=False, max_steps_help="stop after this many discriminator steps", default_name=f"{model}_<task>")

    parser = sample.add_parser("gan", help="write a grid of samples from a trained GAN run (one row per class for cgan)")
    parser.add_argument("run", help="run folder, e.g. runs/dcgan_non_saturating_mnist5k")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--truncation", type=float, default=1.0, help="ψ of the truncation trick (stylegan)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="PNG path (default: <run>/samples_cli.png)")
    parser.add_argument("--device", default="auto")
    parser.set_defaults(handler=sample_command, families=("gan",))

    parser = evaluate.add_parser("gan", help="Fréchet distance and KID on features of the library's digit classifier")
    parser.add_argument("run", help="run folder")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--classifier-dir", default="runs", help="where the feature classifier is cached")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.set_defaults(handler=evaluate_command, families=("gan",))
    for model in ("pix2pix", "cyclegan"):
        parser = sample.add_parser(model, help="translations of the first n held-out sources (PNG grid)")
        parser.add_argument("run", help=f"run folder, e.g. runs/{model}_edges2digit")
        parser.add_argument("--n", type=int, default=64)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--out", default=None, help="PNG path (default: <run>/samples_cli.png)")
        parser.add_argument("--device", default="auto")
        parser.set_defaults(handler=sample_command, families=(model,))
        parser = evaluate.add_parser(model, help="held-out L1 of the translations (CycleGAN: also cycle errors)")
        parser.add_argument("run", help="run folder")
        parser.add_argument("--device", default="auto")
        parser.set_defaults(handler=evaluate_command, families=(model,))


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
