"""Train a score model: the same options as `ppl-dgm train score-sde|ncsn` (see `--help`).

    python scripts/train_score.py score-sde --sde vp --dataset checkerboard --epochs 60
    python scripts/train_score.py ncsn --dataset mnist5k --epochs 80 --sigma-max 2 --sigma-min 0.02 --batch-size 128 --lr 2e-4  # README run
"""
import sys

from ppl_dgm.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
