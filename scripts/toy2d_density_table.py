"""Toy 2-D density table: a VP-SDE score network (TimeConditionedMLP) and energy-based models per density, held-out NLL
vs the entropy floor.

The NLL of held-out points in nats, −E log p_θ(x), is bounded below by the differential entropy H(p):
checkerboard ln 32 = 3.466 nats (uniform on 8 squares of area 4, docs/design.md); 8gaussians by Monte Carlo
from its exact log-density; moons and 2spirals have no closed form (no floor). Writes
runs/toy2d_table/<name>/ and a PNG of ODE samples and learned densities (toy2d_density_table.png).

Models (``--models``): ``score-sde`` (default), its NLL by the probability-flow ODE; ``ebm-dsm``, ``ebm-sliced``,
``ebm-implicit``, an EnergyModel E(x, σ) over 10 geometric σ's from 3 to 0.1 (ppl_dgm.sde.ebm_experiment's defaults)
trained by that score-matching objective, its NLL exact: E(x, σ_L) + log Z, Z by the midpoint rule on a 512² grid over
[−6, 6]² (the column "quad. err" is the Richardson estimate |log Z(512²) − log Z(256²)|/3).

Training: Adam at a constant learning rate, ``--steps`` optimizer steps of ``--batch-size`` points; the
EMA weights are evaluated. The EMA decay's horizon 1/(1 − decay) should be a few percent of the run:
0.999 (1,000 steps) lags a 5,000-step run; 0.995 (200 steps, 4%) measured within 0.012 nats of 0.99 and
0.005–0.018 nats better than 0.998/0.999 on checkerboard and 2spirals at 3,000 and 6,000 steps (held-out
ODE NLL). Everything is seeded by ``--seed``: two runs with the same seed print the same numbers (CPU).

    python scripts/toy2d_density_table.py        # 5,000 steps per density: about 6-8 minutes on an idle core (estimate)
    python scripts/toy2d_density_table.py --steps 200 --num-test 200 --grid 20   # smoke run, about a minute
    python scripts/toy2d_density_table.py --models ebm-dsm ebm-sliced --names 8gaussians checkerboard   # the EBM rows
"""
import argparse
import json
import math
import time
from pathlib import Path

import torch

from ppl_dgm.data import toy2d, toy2d_log_prob
from ppl_dgm.sde import VPSDE, ode_log_likelihood, sample_ode
from ppl_dgm.sde.ebm import quadrature_log_prob
from ppl_dgm.sde.ebm_experiment import EBMConfig, evaluate_ebm_run, load_ebm_run, sample_ebm_run, train_ebm
from ppl_dgm.sde.experiment import ScoreConfig, evaluate_score_run, load_score_run, train_score

NAMES = ("checkerboard", "8gaussians", "moons", "2spirals")
MODELS = ("score-sde", "ebm-dsm", "ebm-sliced", "ebm-implicit")


def entropy_floor(name: str) -> float | None:
    """Differential entropy in nats: exact for checkerboard, Monte Carlo (200k draws, fixed seed) for 8gaussians."""
    if name == "checkerboard":
        return math.log(32.0)
    if name == "8gaussians":
        x = toy2d(name, 200000, torch.Generator().manual_seed(123)).double()
        return float(-toy2d_log_prob(name, x).mean())
    return None


def samples_and_density(row, net, config, grid: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """2,000 samples (ODE for score-sde, annealed Langevin for EBMs) and the learned log-density on ``grid``."""
    generator = torch.Generator().manual_seed(seed)
    if row["model"] == "score-sde":
        sde = VPSDE()
        samples = sample_ode(net, sde, (2000, 2), generator=generator)
        chunks = []
        for chunk in grid.split(1200):
            try:
                chunks.append(ode_log_likelihood(net, sde, chunk, rtol=1e-4, atol=1e-4).log_likelihood)
            except FloatingPointError as error:  # a stiff corner of the picture must not cost the table
                print(f"density picture: {len(chunk)} grid points left blank ({error})", flush=True)
                chunks.append(torch.full((len(chunk),), float("nan"), dtype=torch.float64))
        return samples, torch.cat(chunks)
    samples = sample_ebm_run(net, config, 2000, generator=generator)
    return samples, quadrature_log_prob(net, grid, bound=config.bound, log_z=row["log_partition"])


def plot(rows, nets, configs, path: Path, grid_size: int, seed: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, len(rows), figsize=(3 * len(rows), 6), squeeze=False)
    axis_values = torch.linspace(-4.5, 4.5, grid_size)
    grid = torch.stack(torch.meshgrid(axis_values, axis_values, indexing="xy"), -1).reshape(-1, 2)
    for column, (row, net, config) in enumerate(zip(rows, nets, configs)):
        samples, log_density = samples_and_density(row, net, config, grid, seed)
        sampler = "ODE" if row["model"] == "score-sde" else "Langevin"
        axes[0, column].scatter(samples[:, 0], samples[:, 1], s=1, alpha=0.5)
        axes[0, column].set(xlim=(-4.5, 4.5), ylim=(-4.5, 4.5), aspect="equal", title=f"{row['model']} {row['name']}: {sampler}")
        axes[1, column].imshow(log_density.exp().reshape(grid_size, grid_size), origin="lower", extent=(-4.5, 4.5, -4.5, 4.5))
        axes[1, column].set(title=f"learned density, NLL {row['nll_nats']:.2f}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def train_row(model: str, name: str, args) -> tuple[dict, torch.nn.Module, object]:
    """Train one model on one density into <runs-dir>/<name> (score-sde) or <runs-dir>/<model>_<name>; its table row."""
    epochs = math.ceil(args.steps / math.ceil(args.num_train / args.batch_size))  # fit stops at --steps
    common = dict(dataset=name, num_train=args.num_train, hidden=tuple(args.hidden), epochs=epochs, batch_size=args.batch_size, lr=args.lr,
                  ema_decay=args.ema_decay, seed=args.seed)
    started = time.perf_counter()
    if model == "score-sde":
        config = ScoreConfig(**common, likelihood_weighting=args.likelihood_weighting, importance_sampling=args.importance_sampling,
                             fourier_features=args.fourier_features, fourier_scale=args.fourier_scale, lr_schedule=args.lr_schedule)
        run_dir = Path(args.runs_dir) / (name + args.suffix)
        trained = train_score(config, run_dir, device="cpu", progress=False, max_steps=args.steps)
        net, _ = load_score_run(run_dir, device="cpu")
        result = evaluate_score_run(net, config, args.num_test, batch_size=500)
        extra = {"nfe_per_batch": result["nfe_per_batch"]}
    else:
        config, run_dir = EBMConfig(objective=model.removeprefix("ebm-"), **common), Path(args.runs_dir) / f"{model}_{name}"
        trained = train_ebm(config, run_dir, device="cpu", progress=False, max_steps=args.steps)
        net, _ = load_ebm_run(run_dir, device="cpu")
        result = evaluate_ebm_run(net, config, args.num_test)
        extra = {"log_partition": result["log_partition"], "quadrature_error": result["quadrature_error"], "outside_box": result["outside_box"]}
    row = {"model": model, "name": name, "hidden": list(args.hidden), "likelihood_weighting": args.likelihood_weighting,
           "num_train": args.num_train, "fourier_features": args.fourier_features, "fourier_scale": args.fourier_scale, "lr_schedule": args.lr_schedule,
           "importance_sampling": args.importance_sampling, "nll_nats": result["nll_nats"], "standard_error": result["nll_standard_error"],
           "floor": entropy_floor(name), **extra, "steps": trained.get("steps"), "ema_decay": args.ema_decay, "seed": args.seed,
           "train_seconds": trained["train_seconds"], "total_seconds": time.perf_counter() - started}
    (run_dir / "results.json").write_text(json.dumps(row, indent=2) + "\n")
    return row, net, config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5000, help="optimizer steps per density")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--num-train", type=int, default=ScoreConfig.num_train, help="training points drawn from the density")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--ema-decay", type=float, default=0.995, help="EMA horizon 1/(1 - decay) steps; keep it a few %% of --steps")
    parser.add_argument("--seed", type=int, default=0, help="seeds the data, the network, the training order and the ODE samples")
    parser.add_argument("--names", nargs="+", default=list(NAMES), choices=NAMES)
    parser.add_argument("--models", nargs="+", default=["score-sde"], choices=MODELS, help="score-sde and/or EBMs by objective")
    parser.add_argument("--num-test", type=int, default=1000, help="held-out points for the NLL")
    parser.add_argument("--grid", type=int, default=60, help="side of the density grid in the PNG")
    parser.add_argument("--runs-dir", default="runs/toy2d_table")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 128, 128], help="MLP widths")
    parser.add_argument("--likelihood-weighting", action="store_true", help="score-sde: λ(t) = g(t)² (Song et al. 2021b)")
    parser.add_argument("--importance-sampling", action="store_true", help="score-sde: t ∝ g²/σ² (needs --likelihood-weighting)")
    parser.add_argument("--fourier-features", type=int, default=0, help="score-sde: random Fourier features of x (Tancik et al. 2020)")
    parser.add_argument("--fourier-scale", type=float, default=1.0, help="score-sde: std of their frequencies (cycles per unit)")
    parser.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant", help="score-sde: cosine anneals lr to 0")
    parser.add_argument("--suffix", default="", help="appended to the score-sde run folder names (variants side by side)")
    args = parser.parse_args()
    if args.importance_sampling and not args.likelihood_weighting:
        parser.error("--importance-sampling needs --likelihood-weighting")
    if args.steps < 1:
        parser.error(f"--steps must be a positive int, got {args.steps}")
    torch.set_num_threads(args.threads)
    rows, nets, configs = [], [], []
    for name in args.names:
        for model in args.models:
            row, net, config = train_row(model, name, args)
            rows.append(row), nets.append(net), configs.append(config)
            print(json.dumps(row), flush=True)
    png = Path(args.runs_dir) / ("toy2d_density_table.png" if args.models == ["score-sde"] else f"toy2d_density_table_{'_'.join(args.models)}.png")
    png = png.with_name(png.stem + args.suffix + png.suffix)
    plot(rows, nets, configs, png, args.grid, args.seed)
    print(f"\nTimeConditionedMLP {'x'.join(map(str, args.hidden))}, {args.steps} steps of {args.batch_size}, lr {args.lr}, EMA {args.ema_decay}, seed {args.seed}, "
          f"score-sde loss {'likelihood-weighted' if args.likelihood_weighting else 'σ²-weighted'}{', t importance-sampled' if args.importance_sampling else ''}; NLL of "
          f"{args.num_test} held-out points: score-sde by the ODE (VP-SDE; dopri5, rtol = atol = 1e-5, eps = 1e-5, exact divergence), "
          "EBMs by quadrature of Z")
    print(f"{'model':13s} {'density':14s} {'NLL (nats)':>16s} {'floor H(p)':>11s} {'gap':>7s} {'NFE':>6s} {'quad. err':>9s} {'train s':>8s}")
    for row in rows:
        floor = "—" if row["floor"] is None else f"{row['floor']:.3f}"
        gap = "—" if row["floor"] is None else f"{row['nll_nats'] - row['floor']:.3f}"
        nfe = f"{row['nfe_per_batch']:6.0f}" if "nfe_per_batch" in row else f"{'—':>6s}"
        error = f"{row['quadrature_error']:9.1e}" if "quadrature_error" in row else f"{'—':>9s}"
        print(f"{row['model']:13s} {row['name']:14s} {row['nll_nats']:9.3f} ± {row['standard_error']:.3f} {floor:>11s} {gap:>7s} {nfe} {error} "
              f"{row['train_seconds']:8.1f}")
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
