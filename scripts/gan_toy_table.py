"""Mode coverage of five GAN objectives on ring8 and grid25 (2,500 samples; 3σ high quality), plus a PNG of samples.

    python scripts/gan_toy_table.py --out runs/gan_toy_table.png

Each objective trains with its own published recipe (optimizer, lr, betas, n_critic, batch size; see
``ppl_dgm.gan.losses``): minimax / non-saturating / least squares Adam 2e-4, β = (0.5, 0.999), n_critic = 1
(Radford et al. 2016); WGAN RMSProp 5e-5, c = 0.01, n_critic = 5 (Arjovsky et al. 2017, Alg. 1); WGAN-GP
Adam 1e-4, β = (0, 0.9), λ = 10, n_critic = 5 (Gulrajani et al. 2017, Alg. 1); batch 64 for all.
"""
import argparse
import json
import sys

import torch

from ppl_dgm.gan.toy import train_toy_gan

OBJECTIVES = ("minimax", "non_saturating", "least_squares", "wasserstein", "wasserstein_gp")
# Objectives whose recipe has no Lipschitz control of the discriminator (WGAN clips, WGAN-GP penalizes)
# get a spectrally normalized one by default (Miyato et al. 2018); without it (3 x 128 or 3 x 256, 10,000-16,000
# steps) they covered 5-9 of grid25's 25 modes. The two WGAN recipes get 4,000 generator steps at lr <= 1e-4 here,
# too few to fit either toy.
UNCONSTRAINED = ("minimax", "non_saturating", "least_squares")
# Shared by every objective: MLP 3 x 256 ReLU for G and D (Gulrajani et al. 2017 use 3 x 512 on 25 Gaussians;
# 256 keeps the default table to 23 min on one thread of a busy 2-core machine), z ~ N(0, I_2), 50,000 training points, 20,000
# discriminator steps, the recipe's learning rates kept for half the steps, then decayed linearly to 0.
SETTINGS = {"latent_dim": 2, "hidden": (256, 256, 256), "lr_decay": True}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20000, help="discriminator steps per run")
    parser.add_argument("--datasets", nargs="+", default=["ring8", "grid25"])
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES)
    parser.add_argument("--no-spectral-norm", dest="spectral_norm", action="store_false",
                        help=f"plain discriminators for {', '.join(UNCONSTRAINED)} too")
    parser.add_argument("--out", default="runs/gan_toy_table.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ppl_dgm.data import toy2d_modes

    rows = []
    figure, axes = plt.subplots(len(args.datasets), len(args.objectives), figsize=(3 * len(args.objectives), 3 * len(args.datasets)), squeeze=False)
    print(f"{'dataset':8} {'objective':21} {'modes':>7} {'high quality':>12} {'seconds':>8}")
    for row, name in enumerate(args.datasets):
        centers, _ = toy2d_modes(name)
        for column, loss in enumerate(args.objectives):
            spectral_norm = args.spectral_norm and loss in UNCONSTRAINED
            result = train_toy_gan(name, loss, steps=args.steps, spectral_norm=spectral_norm, seed=args.seed, **SETTINGS)
            samples = result.pop("samples")
            rows.append(result)
            label = loss + (" + SN" if spectral_norm else "")
            print(f"{name:8} {label:21} {result['modes_covered']:>3}/{result['num_modes']:<3} {result['high_quality_fraction']:>12.3f} {result['seconds']:>8.1f}", flush=True)
            axis = axes[row, column]
            axis.scatter(samples[:, 0], samples[:, 1], s=1, alpha=0.4)
            axis.scatter(centers[:, 0], centers[:, 1], s=8, c="red", marker="x")
            axis.set_title(f"{name}: {label}\n{result['modes_covered']}/{result['num_modes']} modes, {100 * result['high_quality_fraction']:.0f}% HQ", fontsize=8)
            axis.set_aspect("equal")
            axis.set_xlim(-5.5, 5.5) if name == "grid25" else axis.set_xlim(-3, 3)
            axis.set_ylim(axis.get_xlim())
    figure.tight_layout()
    from pathlib import Path

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=100)
    settings = {**SETTINGS, "steps": args.steps, "seed": args.seed, "spectral_norm": list(UNCONSTRAINED) if args.spectral_norm else []}
    Path(args.out).with_suffix(".json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
