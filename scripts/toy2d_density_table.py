"""Toy 2-D density table: a VP-SDE score network (TimeConditionedMLP) per density, held-out ODE NLL vs the entropy floor.

The NLL of held-out points in nats, −E log p_θ(x), is bounded below by the differential entropy H(p):
checkerboard ln 32 = 3.466 nats; 8gaussians by Monte Carlo from its exact log-density; moons and
2spirals have no closed form (no floor). Writes runs/toy2d_table/<name>/ and a PNG of samples and
learned densities (toy2d_density_table.png).

    python scripts/toy2d_density_table.py --epochs 60     # about 1 minute of training per density
"""
import argparse
import json
import math
import time
from pathlib import Path

import torch

from ppl_dgm.data import toy2d, toy2d_log_prob
from ppl_dgm.sde import VPSDE, ode_log_likelihood, sample_ode
from ppl_dgm.sde.experiment import ScoreConfig, evaluate_score_run, load_score_run, train_score

NAMES = ("checkerboard", "8gaussians", "moons", "2spirals")


def entropy_floor(name: str) -> float | None:
    """Differential entropy in nats: exact for checkerboard, Monte Carlo (200k draws) for 8gaussians."""
    if name == "checkerboard":
        return math.log(32.0)
    if name == "8gaussians":
        x = toy2d(name, 200000, torch.Generator().manual_seed(123)).double()
        return float(-toy2d_log_prob(name, x).mean())
    return None


def plot(rows, nets, path: Path, grid_size: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sde = VPSDE()
    figure, axes = plt.subplots(2, len(rows), figsize=(3 * len(rows), 6))
    axis_values = torch.linspace(-4.5, 4.5, grid_size)
    grid = torch.stack(torch.meshgrid(axis_values, axis_values, indexing="xy"), -1).reshape(-1, 2)
    for column, (row, net) in enumerate(zip(rows, nets)):
        samples = sample_ode(net, sde, (2000, 2), generator=torch.Generator().manual_seed(0))
        axes[0, column].scatter(samples[:, 0], samples[:, 1], s=1, alpha=0.5)
        axes[0, column].set(xlim=(-4.5, 4.5), ylim=(-4.5, 4.5), aspect="equal", title=f"{row['name']}: ODE samples")
        log_density = torch.cat([ode_log_likelihood(net, sde, chunk, rtol=1e-4, atol=1e-4).log_likelihood for chunk in grid.split(1200)])
        axes[1, column].imshow(log_density.exp().reshape(grid_size, grid_size), origin="lower", extent=(-4.5, 4.5, -4.5, 4.5))
        axes[1, column].set(title=f"learned density, NLL {row['nll_nats']:.2f}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--num-test", type=int, default=1000)
    parser.add_argument("--grid", type=int, default=60)
    parser.add_argument("--runs-dir", default="runs/toy2d_table")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows, nets = [], []
    for name in NAMES:
        config = ScoreConfig(dataset=name, hidden=(128, 128, 128), epochs=args.epochs, batch_size=500, lr=2e-3, ema_decay=0.99)
        run_dir = Path(args.runs_dir) / name
        started = time.perf_counter()
        trained = train_score(config, run_dir, device="cpu", progress=False)
        net, _ = load_score_run(run_dir, device="cpu")
        result = evaluate_score_run(net, config, args.num_test, batch_size=500)
        row = {"name": name, "nll_nats": result["nll_nats"], "standard_error": result["nll_standard_error"], "floor": entropy_floor(name),
               "nfe_per_batch": result["nfe_per_batch"], "train_seconds": trained["train_seconds"], "total_seconds": time.perf_counter() - started}
        (run_dir / "results.json").write_text(json.dumps(row, indent=2) + "\n")
        rows.append(row)
        nets.append(net)
        print(json.dumps(row))
    plot(rows, nets, Path(args.runs_dir) / "toy2d_density_table.png", args.grid)
    print(f"\n{'density':14s} {'ODE NLL (nats)':>16s} {'floor H(p)':>11s} {'gap':>7s} {'NFE':>6s} {'train s':>8s}")
    for row in rows:
        floor = "—" if row["floor"] is None else f"{row['floor']:.3f}"
        gap = "—" if row["floor"] is None else f"{row['nll_nats'] - row['floor']:.3f}"
        print(f"{row['name']:14s} {row['nll_nats']:9.3f} ± {row['standard_error']:.3f} {floor:>11s} {gap:>7s} {row['nfe_per_batch']:6.0f} {row['train_seconds']:8.1f}")
    print(f"wrote {Path(args.runs_dir) / 'toy2d_density_table.png'}")


if __name__ == "__main__":
    main()
