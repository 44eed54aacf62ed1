"""Mode coverage of five GAN objectives on ring8 and grid25 (2,500 samples; 3σ high quality), plus a PNG of samples.

    python scripts/gan_toy_table.py --out runs/gan_toy_table.png
"""
import argparse
import json
import sys
import time

import torch

from ppl_dgm.gan.toy import train_toy_gan

OBJECTIVES = ("minimax", "non_saturating", "least_squares", "wasserstein", "wasserstein_gp")
# One setting for every objective, tuned by hand on ring8 only: MLP 3 x 128 ReLU for G and D, z in R^16,
# batch 256, 50,000 training points, 16,000 discriminator steps, lr 1e-3 constant for half the steps then
# decayed linearly to 0. Each objective keeps the rest of its recipe: Adam β = (0.5, 0.999) for minimax /
# non-saturating / least squares; RMSProp, c = 0.01, n_critic = 5 for WGAN (its recipe lr 5e-5 was not
# tried at this budget); Adam β = (0, 0.9), λ = 10, n_critic = 5 for WGAN-GP.
SETTINGS = {"batch_size": 256, "lr": 1e-3, "latent_dim": 16, "hidden": (128, 128, 128), "lr_decay": True}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=16000, help="discriminator steps per run")
    parser.add_argument("--datasets", nargs="+", default=["ring8", "grid25"])
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES)
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
    print(f"{'dataset':8} {'objective':16} {'modes':>7} {'high quality':>12} {'seconds':>8}")
    for row, name in enumerate(args.datasets):
        centers, _ = toy2d_modes(name)
        for column, loss in enumerate(args.objectives):
            result = train_toy_gan(name, loss, steps=args.steps, seed=args.seed, **SETTINGS)
            samples = result.pop("samples")
            rows.append(result)
            print(f"{name:8} {loss:16} {result['modes_covered']:>3}/{result['num_modes']:<3} {result['high_quality_fraction']:>12.3f} {result['seconds']:>8.1f}", flush=True)
            axis = axes[row, column]
            axis.scatter(samples[:, 0], samples[:, 1], s=1, alpha=0.4)
            axis.scatter(centers[:, 0], centers[:, 1], s=8, c="red", marker="x")
            axis.set_title(f"{loss}\n{result['modes_covered']}/{result['num_modes']} modes, {100 * result['high_quality_fraction']:.0f}% HQ", fontsize=8)
            axis.set_aspect("equal")
            axis.set_xlim(-5.5, 5.5) if name == "grid25" else axis.set_xlim(-3, 3)
            axis.set_ylim(axis.get_xlim())
    figure.tight_layout()
    from pathlib import Path

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=100)
    Path(args.out).with_suffix(".json").write_text(json.dumps({"settings": {**SETTINGS, "steps": args.steps}, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
