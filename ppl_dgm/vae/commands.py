"""``ppl-dgm train|sample|eval vae``: argument parsers and handlers (all logic lives in :mod:`ppl_dgm.vae.experiment`)."""
from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

__all__ = ["add_parsers"]


def add_parsers(train: argparse._SubParsersAction, sample: argparse._SubParsersAction, evaluate: argparse._SubParsersAction) -> None:
    from ppl_dgm.vae.experiment import ARCHITECTURES, ELBOS, VAEConfig
    from ppl_dgm.vae.likelihoods import LIKELIHOOD_NAMES

    defaults = VAEConfig()
    parser = train.add_parser("vae", help="VAE by SVI (Bernoulli or Gaussian decoder)")
    parser.add_argument("--dataset", default=defaults.dataset, choices=["mnist5k", "digits", "mnist", "fashion_mnist", "cifar10"])
    parser.add_argument("--data-root", default=None, help="folder with torchvision files (mnist, fashion_mnist, cifar10); never downloads")
    parser.add_argument("--likelihood", default=defaults.likelihood, choices=LIKELIHOOD_NAMES)
    parser.add_argument("--arch", default=defaults.arch, choices=ARCHITECTURES)
    parser.add_argument("--latent-dim", type=int, default=defaults.latent_dim)
    parser.add_argument("--hidden", type=int, default=defaults.hidden, help="MLP hidden width")
    parser.add_argument("--channels", type=int, default=defaults.channels, help="conv base channels")
    parser.add_argument("--beta", type=float, default=defaults.beta, help="KL weight (beta-VAE)")
    parser.add_argument("--elbo", default=defaults.elbo, choices=tuple(ELBOS), help="Trace_ELBO or TraceMeanField_ELBO (analytic KL)")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--name", default=None, help="run name (default: vae_<dataset>_<likelihood>_<arch>)")
    parser.add_argument("--resume", action="store_true", help="continue exactly from runs/<name>/checkpoint.pt")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(handler=_train)

    for subparsers, handler, help_text in ((sample, _sample, "write a grid of samples from a trained VAE run"), (evaluate, _evaluate, "held-out ELBO of a trained VAE run")):
        parser = subparsers.add_parser("vae", help=help_text)
        parser.add_argument("run", help="run folder, e.g. runs/vae_mnist5k_bernoulli_mlp")
        parser.add_argument("--device", default="auto")
        if handler is _sample:
            parser.add_argument("--n", type=int, default=64)
            parser.add_argument("--seed", type=int, default=0)
            parser.add_argument("--out", default=None, help="PNG path (default: <run>/samples_cli.png)")
        parser.set_defaults(handler=handler)


def _train(args: argparse.Namespace) -> int:
    from ppl_dgm.vae.experiment import VAEConfig, train_vae

    config = VAEConfig(**{f.name: getattr(args, f.name) for f in fields(VAEConfig)})
    name = args.name or f"vae_{config.dataset}_{config.likelihood}_{config.arch}"
    run_dir = Path(args.runs_dir) / name
    result = train_vae(config, run_dir, device=args.device, resume=args.resume, progress=not args.no_progress, max_steps=args.max_steps)
    (run_dir / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {run_dir}/ (config.json, metrics.jsonl, checkpoint.pt, samples.png, reconstructions.png)")
    return 0


def _sample(args: argparse.Namespace) -> int:
    import torch
    from torchvision.utils import save_image

    from ppl_dgm.vae.experiment import load_vae_run

    vae, _ = load_vae_run(args.run, device=args.device)
    parameter = next(vae.parameters())
    images = vae.sample(args.n, generator=torch.Generator(device=parameter.device).manual_seed(args.seed))
    out = Path(args.out) if args.out else Path(args.run) / "samples_cli.png"
    save_image(images.cpu(), out, nrow=8, pad_value=1.0)
    print(f"wrote {out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from ppl_dgm.vae.experiment import evaluate_vae, load_vae_run, vae_data

    vae, config = load_vae_run(args.run, device=args.device)
    print(json.dumps(evaluate_vae(vae, config, vae_data(config, "test")), indent=2))
    return 0
