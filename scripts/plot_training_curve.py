"""The training curve of a run: its metrics.jsonl's training loss and held-out loss per epoch, as a PNG.

    python scripts/plot_training_curve.py runs/ddpm_mnist5k_ref docs/images/ddpm_ref_training_curve_200ep.png --log
"""
import argparse
from pathlib import Path

from ppl_dgm.train.runs import RunDir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run folder with metrics.jsonl")
    parser.add_argument("out", help="PNG path")
    parser.add_argument("--skip", type=int, default=5, help="epochs left out at the start (the first losses dwarf the rest)")
    parser.add_argument("--log", action="store_true", help="log-scale loss axis")
    args = parser.parse_args()
    records = RunDir(Path(args.run)).read_metrics()
    if not records:
        raise SystemExit(f"{args.run}: no metrics records")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in records if r["epoch"] > args.skip]
    fig, axis = plt.subplots(figsize=(6, 3.2))
    axis.plot([r["epoch"] for r in shown], [r["loss"] for r in shown], label="training loss (epoch mean)")
    if "val_loss" in shown[0]:
        axis.plot([r["epoch"] for r in shown], [r["val_loss"] for r in shown], label="held-out loss")
    axis.set_xlabel("epoch")
    axis.set_ylabel("loss")
    if args.log:
        axis.set_yscale("log")
    axis.set_title(f"{Path(args.run).name}: {records[-1]['step']:,} steps")
    axis.legend()
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
