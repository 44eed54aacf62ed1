"""Mode coverage of five GAN objectives on ring8 and grid25 (2,500 samples; 3σ high quality), plus a PNG of samples.

    python scripts/gan_toy_table.py --out runs/gan_toy_table.png
    python scripts/gan_toy_table.py --objectives wasserstein_gp --wasserstein-recipe toy \\
        --steps-for wasserstein_gp=30000 --out runs/gan_toy_wgan_gp.png
    python scripts/gan_toy_table.py --critic-figure docs/images/gan_toy_clipped_critic.png
    python scripts/gan_toy_table.py --seeds 0 1 2 3 4 --out runs/gan_toy_table_5seeds.png   # mean ± sd over seeds
    python scripts/gan_toy_table.py --stack-figures WITH_SN.png WITHOUT_SN.png --titles "with SN" "without SN" --out BOTH.png

Each objective trains with its own published recipe (optimizer, lr, betas, n_critic, batch size; see
``ppl_dgm.gan.losses``): minimax / non-saturating / least squares Adam 2e-4, β = (0.5, 0.999), n_critic = 1
(Radford et al. 2016); WGAN RMSProp 5e-5, c = 0.01, n_critic = 5 (Arjovsky et al. 2017, Alg. 1); WGAN-GP
Adam 1e-4, β = (0, 0.9), λ = 10, n_critic = 5 (Gulrajani et al. 2017, Alg. 1); batch 64 for all.
``--wasserstein-recipe toy`` gives the two Wasserstein objectives the settings of Gulrajani et al.'s own toy
experiments (gan_toy.py of igul222/improved_wgan_training): batch 256, data divided by 1.414 (ring8) or 2.828
(grid25), and for WGAN-GP λ = 0.1, Adam β = (0.5, 0.9); lr, n_critic and clipping are unchanged. Their toy networks
are 3 x 512 and train 100,000 generator steps; ours stay 3 x 256 at the budget given by ``--steps-for``.

``--critic-figure`` instead repeats Gulrajani et al. 2017, sec. 3 / Fig. 1 on ring8 and grid25: critics trained with
the generator held at real data + N(0, I) (gan_toy.py's FIXED_GENERATOR), by clipping and by the penalty, their value
surfaces, their weights, and the share of W1 each one's dual value reaches once divided by its largest slope.
"""
import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from ppl_dgm.gan.losses import objective
from ppl_dgm.gan.toy import train_toy_gan

OBJECTIVES = ("minimax", "non_saturating", "least_squares", "wasserstein", "wasserstein_gp")
WASSERSTEIN = ("wasserstein", "wasserstein_gp")
# Objectives whose recipe has no Lipschitz control of the discriminator (WGAN clips, WGAN-GP penalizes)
# get a spectrally normalized one by default (Miyato et al. 2018); without it (3 x 128 or 3 x 256, 10,000-16,000
# steps) they covered 5-9 of grid25's 25 modes.
UNCONSTRAINED = ("minimax", "non_saturating", "least_squares")
# Shared by every objective: MLP 3 x 256 ReLU for G and D (Gulrajani et al. 2017 use 3 x 512 on 25 Gaussians;
# 256 keeps the default table to 23 min on one thread of a busy 2-core machine), z ~ N(0, I_2), 50,000 training points, 20,000
# discriminator steps, the recipe's learning rates kept for half the steps, then decayed linearly to 0.
SETTINGS = {"latent_dim": 2, "hidden": (256, 256, 256), "lr_decay": True}
# gan_toy.py (Gulrajani et al. 2017): `dataset /= 1.414` for 8 Gaussians (radius 2, std 0.02, our ring8) and
# `dataset /= 2.828` for 25 Gaussians (spacing 2, std 0.05, our grid25); BATCH_SIZE = 256; LAMBDA = .1 and
# Adam(1e-4, beta1=0.5, beta2=0.9) for WGAN-GP; RMSProp 5e-5 and clipping at 0.01 for WGAN (as in Alg. 1).
TOY_DATA_SCALE = {"ring8": 1.414, "grid25": 2.828}


def recipe(loss: str, wasserstein_recipe: str):
    """The objective with its paper's recipe, or for a Wasserstein loss under "toy" that of gan_toy.py."""
    if wasserstein_recipe == "paper" or loss not in WASSERSTEIN:
        return objective(loss)
    if loss == "wasserstein":
        return dataclasses.replace(objective(loss), batch_size=256)
    return dataclasses.replace(objective(loss, penalty_weight=0.1), betas=(0.5, 0.9), batch_size=256)


def parse_budgets(pairs: list[str], default: int) -> dict[str, int]:
    """{objective: discriminator steps} from OBJECTIVE=STEPS pairs; every other objective gets ``default``."""
    budgets = dict.fromkeys(OBJECTIVES, default)
    for pair in pairs:
        name, _, steps = pair.partition("=")
        if name not in OBJECTIVES or not steps.isdigit() or int(steps) < 1:
            raise SystemExit(f"--steps-for expects OBJECTIVE=STEPS with OBJECTIVE in {OBJECTIVES} and STEPS >= 1, got {pair!r}")
        budgets[name] = int(steps)
    return budgets


def train_fixed_generator_critic(data: torch.Tensor, loss: str, steps: int, seed: int) -> torch.nn.Module:
    """A 3 x 256 critic trained by :func:`ppl_dgm.gan.estimate_w1` for ``steps`` on minibatches of ``data`` (N, 2)
    against data + N(0, I), with the toy recipe of ``loss`` (clipping: RMSProp 5e-5, c = 0.01; penalty: Adam 1e-4,
    β = (0.5, 0.9), λ = 0.1)."""
    from ppl_dgm.gan import estimate_w1

    def sample_data(n: int, generator: torch.Generator) -> torch.Tensor:
        return data[torch.randint(len(data), (n,), generator=generator)]

    def sample_fixed_generator(n: int, generator: torch.Generator) -> torch.Tensor:  # gan_toy.py's FIXED_GENERATOR
        return sample_data(n, generator) + torch.randn(n, data.shape[1], generator=generator)

    objective_ = recipe(loss, "toy")
    return estimate_w1(sample_data, sample_fixed_generator, steps=steps, batch_size=objective_.batch_size, hidden=SETTINGS["hidden"],
                       objective=objective_, num_eval=1000, seed=seed)["critic"]


def stack_figures(paths: list[str], titles: list[str], out: str) -> None:
    """The sample figures at ``paths`` one above the other, each under its title (e.g. with and without SN)."""
    import matplotlib.pyplot as plt

    images = [plt.imread(path) for path in paths]
    width = max(image.shape[1] for image in images) / 100
    figure, axes = plt.subplots(len(images), 1, figsize=(width, sum(image.shape[0] for image in images) / 100 + 0.4 * len(images)),
                                squeeze=False, gridspec_kw={"height_ratios": [image.shape[0] for image in images]})
    for axis, image, title in zip(axes[:, 0], images, titles):
        axis.imshow(image)
        axis.set_title(title, fontsize=11)
        axis.axis("off")
    figure.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)


def critic_figure(path: str, steps: int, seed: int) -> list[dict]:
    """Gulrajani et al. 2017, Fig. 1 on ring8 / grid25 (scaled as in gan_toy.py): value surfaces and weights of
    clipped and penalized critics; returns per critic the W1 share E f(x) − E f(x̃) / (max ‖∇f‖ · W1)."""
    import matplotlib.pyplot as plt
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    from ppl_dgm.data import toy2d

    figure, axes = plt.subplots(2, 3, figsize=(10.5, 6.6))
    rows = []
    clip = objective("wasserstein").weight_clip
    for row, name in enumerate(("ring8", "grid25")):
        scale = TOY_DATA_SCALE[name]
        data = toy2d(name, 50_000, generator=torch.Generator().manual_seed(seed)) / scale
        held_out = toy2d(name, 2000, generator=torch.Generator().manual_seed(seed + 1)) / scale
        noisy = held_out + torch.randn(held_out.shape, generator=torch.Generator().manual_seed(seed + 2))
        distances = torch.cdist(held_out.double(), noisy.double())
        assignment = linear_sum_assignment(distances.numpy())  # W1 of two equal-weight point sets
        w1 = float(distances[assignment].mean())
        grid = torch.linspace(-3, 3, 121)
        points = torch.stack(torch.meshgrid(grid, grid, indexing="xy"), dim=-1).reshape(-1, 2)
        weights = {}
        for column, loss in enumerate(WASSERSTEIN):
            critic = train_fixed_generator_critic(data, loss, steps, seed)
            probe = torch.cat([points, held_out, noisy]).requires_grad_(True)
            (gradients,) = torch.autograd.grad(critic(probe).sum(), probe)
            slope = float(gradients.norm(dim=1).max())  # largest slope seen: f / slope is (about) 1-Lipschitz
            with torch.no_grad():
                dual_value = float(critic(held_out).mean() - critic(noisy).mean())
                surface = critic(points).reshape(len(grid), len(grid))
            parameters = torch.cat([p.detach().flatten() for n, p in critic.named_parameters() if n.endswith("weight")])
            weights[loss] = parameters
            share = dual_value / (slope * w1)
            pinned = float((parameters.abs() >= 0.99 * clip).double().mean())
            rows.append({"dataset": name, "critic": loss, "steps": steps, "w1": w1, "dual_value": dual_value,
                         "max_slope": slope, "w1_share": share, "weights_at_clip": pinned})
            axis = axes[row, column]
            axis.contourf(grid, grid, surface, levels=20, cmap="viridis")
            axis.scatter(held_out[:500, 0], held_out[:500, 1], s=2, c="orange")
            axis.set_aspect("equal")
            label = f"clipping, c = {clip}" if loss == "wasserstein" else "gradient penalty, λ = 0.1"
            axis.set_title(f"{name}: {label}\ndual / (max slope · W1) = {100 * share:.0f}%", fontsize=9)
        axis = axes[row, 2]
        bins = np.linspace(-0.1, 0.1, 81)
        for loss, color in zip(WASSERSTEIN, ("C3", "C0")):
            pinned = rows[-2 + WASSERSTEIN.index(loss)]["weights_at_clip"]
            label = f"clipping: {100 * pinned:.0f}% at ±c" if loss == "wasserstein" else "penalty (not clipped)"
            axis.hist(weights[loss].clamp(-0.1, 0.1).numpy(), bins=bins, color=color, alpha=0.6, log=True, label=label)
        for bound in (-clip, clip):
            axis.axvline(bound, color="k", linestyle=":", linewidth=0.8)
        axis.set_title(f"{name}: critic weights (±c dotted)", fontsize=9)
        axis.legend(fontsize=8)
    figure.suptitle(f"Critics after {steps:,} steps against a generator fixed at data + N(0, I) (Gulrajani et al. 2017, Fig. 1)",
                    fontsize=10)
    figure.tight_layout()

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=72)
    return rows


def seed_summary(rows: list[dict]) -> list[dict]:
    """Per (dataset, objective label) over its seeds: modes and high-quality share as mean, sd and min, and the number
    of seeds that cover every mode."""
    import statistics

    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["label"]), []).append(row)
    summary = []
    for (dataset, label), group in groups.items():
        modes = [r["modes_covered"] for r in group]
        quality = [r["high_quality_fraction"] for r in group]
        summary.append({"dataset": dataset, "label": label, "seeds": len(group), "num_modes": group[0]["num_modes"],
                        "modes_mean": statistics.fmean(modes), "modes_sd": statistics.stdev(modes) if len(group) > 1 else 0.0,
                        "modes_min": min(modes), "all_modes_seeds": sum(m == group[0]["num_modes"] for m in modes),
                        "hq_mean": statistics.fmean(quality), "hq_sd": statistics.stdev(quality) if len(group) > 1 else 0.0,
                        "hq_min": min(quality), "generator_steps": group[0]["generator_steps"]})
    return summary


def summary_markdown(summary: list[dict]) -> str:
    lines = ["| objective | data | G steps | modes (mean ± sd) | min modes | seeds with all modes | high quality (mean ± sd) | min HQ |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in summary:
        lines.append(f"| {row['label']} | {row['dataset']} | {row['generator_steps']:,} | {row['modes_mean']:.1f} ± {row['modes_sd']:.1f} "
                     f"/ {row['num_modes']} | {row['modes_min']} | {row['all_modes_seeds']}/{row['seeds']} | "
                     f"{100 * row['hq_mean']:.1f} ± {100 * row['hq_sd']:.1f}% | {100 * row['hq_min']:.1f}% |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20000, help="discriminator steps per run")
    parser.add_argument("--steps-for", nargs="+", default=[], metavar="OBJECTIVE=STEPS",
                        help="discriminator steps for one objective (generator steps = STEPS / n_critic), e.g. wasserstein_gp=30000")
    parser.add_argument("--wasserstein-recipe", choices=("paper", "toy"), default="paper",
                        help="paper: Alg. 1 of Arjovsky et al. / Gulrajani et al.; toy: the settings of gan_toy.py (see above)")
    parser.add_argument("--datasets", nargs="+", default=["ring8", "grid25"])
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES)
    parser.add_argument("--no-spectral-norm", dest="spectral_norm", action="store_false",
                        help=f"plain discriminators for {', '.join(UNCONSTRAINED)} too")
    parser.add_argument("--out", default="runs/gan_toy_table.png")
    parser.add_argument("--critic-figure", metavar="PNG", help="only the fixed-generator critic figure (see above), to PNG")
    parser.add_argument("--critic-steps", type=int, default=5000, help="critic steps for --critic-figure")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stack-figures", nargs="+", metavar="PNG", help="only stack these sample figures (one above the other) into --out")
    parser.add_argument("--titles", nargs="+", help="a title per --stack-figures figure")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="several seeds: every run per seed, a summary of modes and HQ (mean ± sd, min) over them; the "
                             "figure shows the first seed")
    args = parser.parse_args(argv)
    if args.stack_figures:
        titles = args.titles or [Path(path).stem for path in args.stack_figures]
        if len(titles) != len(args.stack_figures):
            parser.error(f"--titles needs one title per figure: {len(args.stack_figures)} figures, {len(titles)} titles")
        missing = [path for path in args.stack_figures if not Path(path).is_file()]
        if missing:
            raise FileNotFoundError(f"--stack-figures: no such file {missing[0]!r}")
        stack_figures(args.stack_figures, titles, args.out)
        print(f"wrote {args.out}")
        return 0
    seeds = args.seeds if args.seeds else [args.seed]
    budgets = parse_budgets(args.steps_for, args.steps)
    torch.set_num_threads(1)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if args.critic_figure:
        for row in critic_figure(args.critic_figure, args.critic_steps, args.seed):
            print(json.dumps(row))
        print(f"wrote {args.critic_figure}")
        return 0

    from ppl_dgm.data import toy2d_modes

    rows = []
    figure, axes = plt.subplots(len(args.datasets), len(args.objectives), figsize=(3 * len(args.objectives), 3 * len(args.datasets)), squeeze=False)
    print(f"{'seed':>4} {'dataset':8} {'objective':21} {'modes':>7} {'high quality':>12} {'D steps':>8} {'G steps':>8} {'seconds':>8}")
    for seed, row, name, column, loss in ((seed, row, name, column, loss) for seed in seeds for row, name in enumerate(args.datasets)
                                          for column, loss in enumerate(args.objectives)):
        centers, _ = toy2d_modes(name)
        spectral_norm = args.spectral_norm and loss in UNCONSTRAINED
        toy = args.wasserstein_recipe == "toy" and loss in WASSERSTEIN
        result = train_toy_gan(name, recipe(loss, args.wasserstein_recipe), steps=budgets[loss], spectral_norm=spectral_norm,
                               data_scale=TOY_DATA_SCALE[name] if toy else 1.0, seed=seed, **SETTINGS)
        samples = result.pop("samples")
        label = loss + (" + SN" if spectral_norm else "") + (" (toy)" if toy else "")
        rows.append({**result, "seed": seed, "label": label})
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)  # rows so far, in case a long multi-seed run stops
        Path(args.out).with_suffix(".json").write_text(json.dumps({"rows": rows}, indent=2) + "\n")
        print(f"{seed:>4} {name:8} {label:21} {result['modes_covered']:>3}/{result['num_modes']:<3} {result['high_quality_fraction']:>12.3f} "
              f"{result['steps']:>8} {result['generator_steps']:>8} {result['seconds']:>8.1f}", flush=True)
        if seed != seeds[0]:
            continue
        axis = axes[row, column]
        axis.scatter(samples[:, 0], samples[:, 1], s=1, alpha=0.4)
        axis.scatter(centers[:, 0], centers[:, 1], s=8, c="red", marker="x")
        axis.set_title(f"{name}: {label}, {result['generator_steps']:,} G steps\n{result['modes_covered']}/{result['num_modes']} modes, "
                       f"{100 * result['high_quality_fraction']:.0f}% HQ", fontsize=8)
        axis.set_aspect("equal")
        axis.set_xlim(-5.5, 5.5) if name == "grid25" else axis.set_xlim(-3, 3)
        axis.set_ylim(axis.get_xlim())
    figure.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=100)
    settings = {**SETTINGS, "steps": {loss: budgets[loss] for loss in args.objectives}, "wasserstein_recipe": args.wasserstein_recipe,
                "seeds": seeds, "spectral_norm": list(UNCONSTRAINED) if args.spectral_norm else []}
    summary = seed_summary(rows)
    if len(seeds) > 1:
        print(f"\nover seeds {seeds}:\n" + summary_markdown(summary))
    Path(args.out).with_suffix(".json").write_text(json.dumps({"settings": settings, "rows": rows, "summary": summary}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
