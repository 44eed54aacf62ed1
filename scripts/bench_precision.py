"""bf16 autocast against float32 training: held-out loss after a fixed budget, and wall time, side by side.

For each family (DDPM, VP score-SDE and NCSN on mnist5k, each with its default network and hyperparameters) the same
run is trained from scratch in float32 and under ``torch.autocast("cpu"|"cuda", torch.bfloat16)`` for the same number
of optimizer steps, over ``--seeds`` (initialization and data order); the held-out loss at the end is the run's own
``val_loss`` (the family's training objective on the test split). "Within noise" means the precision gap of the
mean is smaller than the spread between seeds of one precision. Runs go to a temporary folder and are deleted.

    python scripts/bench_precision.py --threads 1 --seeds 0 1              # ~25 min on one free core
    python scripts/bench_precision.py --families ddpm --steps 2 --seeds 0  # a quick check
"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ppl_dgm.data import load_dataset
from ppl_dgm.diffusion.experiment import DDPMConfig, train_ddpm
from ppl_dgm.sde.experiment import ScoreConfig, train_score

FAMILIES = ("ddpm", "score-sde", "ncsn")


def train_once(family: str, steps: int, seed: int, amp: str | None, device: str, root: Path) -> tuple[float, float]:
    """(held-out loss, seconds) of one run stopped after ``steps`` optimizer steps at an epoch end."""
    if family == "ddpm":
        config = DDPMConfig(dataset="mnist5k", seed=seed)
        train = train_ddpm
    else:
        config = ScoreConfig(model=family, dataset="mnist5k", seed=seed,
                             **({"sigma_min": 0.02, "sigma_max": 2.0} if family == "ncsn" else {}))
        train = train_score
    steps_per_epoch = -(-len(load_dataset("mnist5k", "train")) // config.batch_size)
    if steps % steps_per_epoch:
        raise ValueError(f"--steps {steps} is not a whole number of {family} epochs ({steps_per_epoch} steps each)")
    config.epochs = steps // steps_per_epoch
    start = time.perf_counter()
    result = train(config, root / f"{family}_{seed}_{amp or 'fp32'}", device=device, progress=False, amp=amp)
    return result["val_loss"], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--steps", type=int, default=64, help="optimizer steps per run (a whole number of epochs)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"| family | steps | float32 held-out loss | bf16 held-out loss | gap / seed spread | bf16 time ratio |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for family in args.families:
            losses = {"fp32": [], "bf16": []}
            seconds = {"fp32": 0.0, "bf16": 0.0}
            for seed in args.seeds:
                for amp in (None, "bf16"):  # side by side, the same seed in both precisions
                    loss, elapsed = train_once(family, args.steps, seed, amp, args.device, Path(folder))
                    losses[amp or "fp32"].append(loss)
                    seconds[amp or "fp32"] += elapsed
                    print(f"  {family} seed {seed} {amp or 'fp32'}: val_loss {loss:.5f} in {elapsed:.0f} s", flush=True)
            means = {key: statistics.fmean(values) for key, values in losses.items()}
            spread = max((max(v) - min(v) for v in losses.values()), default=0.0)
            gap = means["bf16"] - means["fp32"]
            ratio = f"{gap / spread:+.2f}" if spread > 0 else "n/a (one seed)"
            print(f"| {family} | {args.steps} | {means['fp32']:.5f} ({', '.join(f'{v:.5f}' for v in losses['fp32'])}) "
                  f"| {means['bf16']:.5f} ({', '.join(f'{v:.5f}' for v in losses['bf16'])}) | {ratio} "
                  f"| {seconds['bf16'] / seconds['fp32']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
