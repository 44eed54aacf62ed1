"""``ppl-dgm train|sample|eval <family> ...``: a thin command line over the package."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Sequence

__all__ = ["main", "build_parser"]


def _add_vae_arguments(parser: argparse.ArgumentParser) -> None:
    from ppl_dgm.vae.experiment import ARCHITECTURES, ELBOS, VAEConfig
    from ppl_dgm.vae.likelihoods import LIKELIHOOD_NAMES

    defaults = VAEConfig()
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ppl-dgm", description="Deep generative models as Pyro programs.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model into runs/<name>/")
    train_families = train.add_subparsers(dest="family", required=True)
    train_vae = train_families.add_parser("vae", help="VAE by SVI (Bernoulli or Gaussian decoder)")
    _add_vae_arguments(train_vae)
    train_vae.add_argument("--runs-dir", default="runs")
    train_vae.add_argument("--name", default=None, help="run name (default: vae_<dataset>_<likelihood>_<arch>)")
    train_vae.add_argument("--resume", action="store_true", help="continue exactly from runs/<name>/checkpoint.pt")
    train_vae.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    train_vae.add_argument("--device", default="auto")
    train_vae.add_argument("--no-progress", action="store_true")

    for command, help_text in (("sample", "write a grid of samples from a trained run"), ("eval", "held-out ELBO of a trained run")):
        sub = commands.add_parser(command, help=help_text)
        families = sub.add_subparsers(dest="family", required=True)
        vae = families.add_parser("vae")
        vae.add_argument("run", help="run folder, e.g. runs/vae_mnist5k_bernoulli_mlp")
        vae.add_argument("--device", default="auto")
        if command == "sample":
            vae.add_argument("--n", type=int, default=64)
            vae.add_argument("--seed", type=int, default=0)
            vae.add_argument("--out", default=None, help="PNG path (default: <run>/samples_cli.png)")
    return parser


def _vae_config(args: argparse.Namespace):
    from ppl_dgm.vae.experiment import VAEConfig

    values = {f.name: getattr(args, f.name) for f in fields(VAEConfig)}
    return VAEConfig(**values)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.family != "vae":  # pragma: no cover - argparse choices already restrict this
        raise SystemExit(f"unknown family {args.family!r}")
    if args.command == "train":
        from ppl_dgm.vae.experiment import train_vae

        config = _vae_config(args)
        name = args.name or f"vae_{config.dataset}_{config.likelihood}_{config.arch}"
        run_dir = Path(args.runs_dir) / name
        result = train_vae(config, run_dir, device=args.device, resume=args.resume, progress=not args.no_progress, max_steps=args.max_steps)
        (run_dir / "results.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        print(f"wrote {run_dir}/ (config.json, metrics.jsonl, checkpoint.pt, samples.png, reconstructions.png)")
        return 0
    from ppl_dgm.vae.experiment import evaluate_vae, load_vae_run, vae_data

    vae, config = load_vae_run(args.run, device=args.device)
    if args.command == "sample":
        import torch
        from torchvision.utils import save_image

        parameter = next(vae.parameters())
        images = vae.sample(args.n, generator=torch.Generator(device=parameter.device).manual_seed(args.seed))
        out = Path(args.out) if args.out else Path(args.run) / "samples_cli.png"
        save_image(images.cpu(), out, nrow=8, pad_value=1.0)
        print(f"wrote {out}")
        return 0
    result = evaluate_vae(vae, config, vae_data(config, "test"))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
