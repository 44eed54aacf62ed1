"""``ppl-dgm train|sample|eval vae``: argument parsers and handlers (all logic lives in :mod:`ppl_dgm.vae.experiment`)."""
from __future__ import annotations

import argparse
from dataclasses import fields


__all__ = ["add_parsers"]


def add_parsers(train: argparse._SubParsersAction, sample: argparse._SubParsersAction, evaluate: argparse._SubParsersAction) -> None:
    from ppl_dgm.cli import add_run_options
    from ppl_dgm.vae.experiment import ARCHITECTURES, ELBOS, VAEConfig
    from ppl_dgm.vae.likelihoods import LIKELIHOOD_NAMES

    defaults = VAEConfig()
    for model, help_text in (("vae", "VAE by SVI (Bernoulli or Gaussian decoder, beta-VAE)"), ("hvae", "two-layer hierarchical VAE by SVI")):
        parser = train.add_parser(model, help=help_text)
        parser.set_defaults(model=model, handler=_train)
        parser.add_argument("--dataset", default=defaults.dataset, choices=["mnist5k", "digits", "mnist", "fashion_mnist", "cifar10"])
        parser.add_argument("--data-root", default=None, help="folder with torchvision files (mnist, fashion_mnist, cifar10); never downloads")
        parser.add_argument("--likelihood", default=defaults.likelihood, choices=LIKELIHOOD_NAMES)
        parser.add_argument("--arch", default=defaults.arch, choices=ARCHITECTURES if model == "vae" else ("mlp",))
        parser.add_argument("--latent-dim", type=int, default=defaults.latent_dim, help="z (VAE) or z1 (HVAE) size")
        parser.add_argument("--hidden", type=int, default=defaults.hidden, help="MLP hidden width (next to x)")
        if model == "hvae":
            parser.add_argument("--latent-dim2", type=int, default=defaults.latent_dim2, help="z2 size")
            parser.add_argument("--hidden2", type=int, default=defaults.hidden2, help="hidden width between z1 and z2")
        parser.add_argument("--channels", type=int, default=defaults.channels, help="conv base channels")
        parser.add_argument("--beta", type=float, default=defaults.beta, help="KL weight (beta-VAE, Higgins et al. 2017)")
        parser.add_argument("--elbo", default="auto", choices=tuple(ELBOS) + ("auto",),
                            help="trace: Trace_ELBO; meanfield: TraceMeanField_ELBO (analytic KL); auto: meanfield for VAE, trace for HVAE")
        parser.add_argument("--epochs", type=int, default=defaults.epochs)
        parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
        parser.add_argument("--lr", type=float, default=defaults.lr)
        parser.add_argument("--iwae-k", type=int, default=None, help="also report the held-out IWAE bound with k samples (e.g. 1000)")
        add_run_options(parser, f"{model}_<dataset>_<likelihood>_<arch>")

    from ppl_dgm.vae.autoencoder_experiment import AEConfig
    from ppl_dgm.vae.autoencoder import NOISE_TYPES, RECONSTRUCTION_LOSSES

    ae_defaults = AEConfig()
    for model, corruption, help_text in (("ae", 0.0, "deterministic autoencoder (plain torch)"), ("dae", 0.3, "denoising autoencoder (Vincent et al. 2008)")):
        parser = train.add_parser(model, help=help_text)
        parser.set_defaults(handler=_train_autoencoder, model=model)
        parser.add_argument("--dataset", default=ae_defaults.dataset, choices=["mnist5k", "digits", "mnist", "fashion_mnist", "cifar10"])
        parser.add_argument("--data-root", default=None)
        parser.add_argument("--arch", default=ae_defaults.arch, choices=ARCHITECTURES)
        parser.add_argument("--latent-dim", type=int, default=ae_defaults.latent_dim)
        parser.add_argument("--hidden", type=int, default=ae_defaults.hidden)
        parser.add_argument("--channels", type=int, default=ae_defaults.channels)
        parser.add_argument("--corruption", type=float, default=corruption, help="masking probability or Gaussian noise std")
        parser.add_argument("--noise", default=ae_defaults.noise, choices=NOISE_TYPES)
        parser.add_argument("--loss", default=ae_defaults.loss, choices=RECONSTRUCTION_LOSSES, help="bce on binarized digits or mse on grey levels")
        parser.add_argument("--epochs", type=int, default=ae_defaults.epochs)
        parser.add_argument("--batch-size", type=int, default=ae_defaults.batch_size)
        parser.add_argument("--lr", type=float, default=ae_defaults.lr)
        add_run_options(parser, f"{model}_<dataset>_<arch>")

    from ppl_dgm.vae.autoencoder_experiment import VQVAEConfig

    vq_defaults = VQVAEConfig()
    parser = train.add_parser("vqvae", help="VQ-VAE (van den Oord et al. 2017), EMA codebook, dead-code restarts")
    parser.set_defaults(handler=_train_vqvae)
    parser.add_argument("--dataset", default=vq_defaults.dataset, choices=["mnist5k", "digits", "mnist", "fashion_mnist", "cifar10"])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--num-codes", type=int, default=vq_defaults.num_codes)
    parser.add_argument("--code-dim", type=int, default=vq_defaults.code_dim)
    parser.add_argument("--channels", type=int, default=vq_defaults.channels)
    parser.add_argument("--beta", type=float, default=vq_defaults.beta, help="commitment weight")
    parser.add_argument("--ema-decay", type=float, default=vq_defaults.ema_decay, help="EMA codebook decay; 0 for the codebook loss instead")
    parser.add_argument("--no-restart-dead-codes", dest="restart_dead_codes", action="store_false")
    parser.add_argument("--epochs", type=int, default=vq_defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=vq_defaults.batch_size)
    parser.add_argument("--lr", type=float, default=vq_defaults.lr)
    add_run_options(parser, "vqvae_<dataset>")

    from ppl_dgm.cli import evaluate_command, sample_command

    for model in ("vae", "hvae"):
        for subparsers, handler, help_text in ((sample, sample_command, "write a grid of samples from a trained run"), (evaluate, evaluate_command, "held-out ELBO / IWAE of a trained run")):
            parser = subparsers.add_parser(model, help=help_text)
            parser.add_argument("run", help=f"run folder, e.g. runs/{model}_mnist5k_bernoulli_mlp")
            parser.add_argument("--device", default="auto")
            if handler is sample_command:
                parser.add_argument("--n", type=int, default=64)
                parser.add_argument("--seed", type=int, default=0)
                parser.add_argument("--out", default=None, help="PNG path (default: <run>/samples_cli.png)")
            else:
                parser.add_argument("--iwae-k", type=int, default=None, help="importance samples for the IWAE bound (e.g. 1000)")
            parser.set_defaults(handler=handler, families=(model,))
    for model, help_text in (("ae", "held-out reconstruction error of an autoencoder run"), ("dae", "held-out reconstruction error of a denoising autoencoder run"),
                             ("vqvae", "held-out MSE and codebook perplexity of a VQ-VAE run")):
        parser = evaluate.add_parser(model, help=help_text)
        parser.add_argument("run", help=f"run folder, e.g. runs/{model}_mnist5k")
        parser.add_argument("--device", default="auto")
        parser.set_defaults(handler=evaluate_command, families=(model,))


def _train(args: argparse.Namespace) -> int:
    from ppl_dgm.cli import train_command
    from ppl_dgm.vae.experiment import VAEConfig, train_vae

    config = VAEConfig(**{f.name: getattr(args, f.name) for f in fields(VAEConfig) if hasattr(args, f.name)})
    return train_command(args, config, train_vae, f"{config.model}_{config.dataset}_{config.likelihood}_{config.arch}", iwae_k=args.iwae_k)


def _train_autoencoder(args: argparse.Namespace) -> int:
    from ppl_dgm.cli import train_command
    from ppl_dgm.vae.autoencoder_experiment import AEConfig, train_autoencoder

    config = AEConfig(**{f.name: getattr(args, f.name) for f in fields(AEConfig) if hasattr(args, f.name)})
    return train_command(args, config, train_autoencoder, f"{args.model}_{config.dataset}_{config.arch}")


def _train_vqvae(args: argparse.Namespace) -> int:
    from ppl_dgm.cli import train_command
    from ppl_dgm.vae.autoencoder_experiment import VQVAEConfig, train_vqvae

    if args.ema_decay == 0:
        args.ema_decay = None
    config = VQVAEConfig(**{f.name: getattr(args, f.name) for f in fields(VQVAEConfig) if hasattr(args, f.name)})
    return train_command(args, config, train_vqvae, f"vqvae_{config.dataset}")
