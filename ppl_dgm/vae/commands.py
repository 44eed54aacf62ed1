"""``ppl-dgm train|sample|eval`` for the VAE subpackage (vae, hvae, ae, dae, vqvae, dvae, code-prior): argument parsers and
handlers (all logic lives in the experiment modules)."""
from __future__ import annotations

import argparse
from dataclasses import fields


__all__ = ["add_parsers"]


def add_parsers(train: argparse._SubParsersAction, sample: argparse._SubParsersAction, evaluate: argparse._SubParsersAction) -> None:
    from ppl_dgm.cli import add_config_options, add_run_options
    from ppl_dgm.vae.experiment import VAEConfig

    for model, help_text in (("vae", "VAE by SVI (Bernoulli or Gaussian decoder, beta-VAE)"), ("hvae", "two-layer hierarchical VAE by SVI")):
        parser = train.add_parser(model, help=help_text)
        parser.set_defaults(model=model, handler=_train)
        if model == "vae":
            add_config_options(parser, VAEConfig, exclude=("model", "latent_dim2", "hidden2", "depth", "inference"))
        else:  # the HVAE is a two-layer MLP
            add_config_options(parser, VAEConfig, exclude=("model",), choices={"arch": ("mlp",)})
        parser.add_argument("--iwae-k", type=int, default=None, help="also report the held-out IWAE bound with k samples (e.g. 1000)")
        add_run_options(parser, f"{model}_<dataset>_<likelihood>_<arch>")

    from ppl_dgm.vae.autoencoder_experiment import AEConfig, VQVAEConfig

    for model, corruption, help_text in (("ae", 0.0, "deterministic autoencoder (plain torch)"), ("dae", 0.3, "denoising autoencoder (Vincent et al. 2008)")):
        parser = train.add_parser(model, help=help_text)
        parser.set_defaults(handler=_train_autoencoder, model=model)
        add_config_options(parser, AEConfig, defaults={"corruption": corruption})
        add_run_options(parser, f"{model}_<dataset>_<arch>")

    parser = train.add_parser("vqvae", help="VQ-VAE (van den Oord et al. 2017), EMA codebook, dead-code restarts")
    parser.set_defaults(handler=_train_vqvae)
    add_config_options(parser, VQVAEConfig)  # --ema-decay 0 means None, the codebook loss (_train_vqvae)
    add_run_options(parser, "vqvae_<dataset>")

    from ppl_dgm.vae.dvae_experiment import DVAEConfig

    parser = train.add_parser("dvae", help="discrete VAE by SVI: categorical latent grid, Gumbel-softmax relaxation, annealed τ")
    parser.set_defaults(handler=_train_dvae)
    add_config_options(parser, DVAEConfig)
    parser.add_argument("--iwae-k", type=int, default=None, help="also report the held-out IWAE bound with k samples (e.g. 100)")
    add_run_options(parser, "dvae_<dataset>")

    from ppl_dgm.vae.prior_experiment import CodePriorConfig

    parser = train.add_parser("code-prior", help="autoregressive transformer prior over a VQ-VAE or dVAE run's codes (stage two)")
    parser.set_defaults(handler=_train_code_prior)
    add_config_options(parser, CodePriorConfig)
    parser.add_argument("--num-samples", type=int, default=1000, help="decoded samples for FD/KID after training")
    parser.add_argument("--classifier-dir", default="runs", help="where the digit classifier for FD is cached")
    add_run_options(parser, "code_prior_<source run name>", distributed=False)

    from ppl_dgm.cli import add_eval_parser, add_sample_parser

    for model in ("vae", "hvae"):
        example = f"runs/{model}_mnist5k_bernoulli_mlp"
        add_sample_parser(sample, model, "write a grid of samples from a trained run", example)
        parser = add_eval_parser(evaluate, model, "held-out ELBO / IWAE of a trained run", example)
        parser.add_argument("--iwae-k", type=int, default=None, help="importance samples for the IWAE bound (e.g. 1000)")
    for model, help_text in (("ae", "held-out reconstruction error of an autoencoder run"), ("dae", "held-out reconstruction error of a denoising autoencoder run"),
                             ("vqvae", "held-out MSE and codebook perplexity of a VQ-VAE run")):
        add_eval_parser(evaluate, model, help_text, f"runs/{model}_mnist5k")
    add_sample_parser(sample, "dvae", "decode codes drawn from the dVAE's uniform prior (not digits: stage two's code-prior "
                      "generates those)", "runs/dvae_mnist5k")
    parser = add_eval_parser(evaluate, "dvae", "held-out discrete ELBO / IWAE (nats), KL and codebook usage of a dVAE run",
                             "runs/dvae_mnist5k")
    parser.add_argument("--iwae-k", type=int, default=None, help="importance samples for the IWAE bound (e.g. 100)")
    parser = add_sample_parser(sample, "code-prior", "decode code grids drawn from a trained prior", "runs/code_prior_vqvae_mnist5k")
    parser.add_argument("--temperature", type=float, default=None, help="divide the prior's logits by this (default 1)")
    parser = add_eval_parser(evaluate, "code-prior", "held-out nats per code, the two-stage bound (bits/dim or nats), FD/KID of samples",
                             "runs/code_prior_vqvae_mnist5k")
    parser.add_argument("--num-samples", type=int, default=1000, help="decoded samples compared with the test digits")
    parser.add_argument("--classifier-dir", default="runs", help="where the digit classifier for FD is cached")
    parser.add_argument("--seed", type=int, default=0, help="seeds the samples and the dequantization")


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


def _train_dvae(args: argparse.Namespace) -> int:
    from ppl_dgm.cli import train_command
    from ppl_dgm.vae.dvae_experiment import DVAEConfig, train_dvae

    config = DVAEConfig(**{f.name: getattr(args, f.name) for f in fields(DVAEConfig) if hasattr(args, f.name)})
    return train_command(args, config, train_dvae, f"dvae_{config.dataset}", iwae_k=args.iwae_k)


def _train_code_prior(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ppl_dgm.cli import train_command
    from ppl_dgm.vae.prior_experiment import CodePriorConfig, train_code_prior

    config = CodePriorConfig(**{f.name: getattr(args, f.name) for f in fields(CodePriorConfig) if hasattr(args, f.name)})
    return train_command(args, config, train_code_prior, f"code_prior_{Path(config.source_run).name}",
                         num_samples=args.num_samples, cache_dir=args.classifier_dir)
