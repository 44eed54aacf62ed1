"""Train a DDPM ε-network with L_simple: the same options as `ppl-dgm train ddpm` (see `--help`).

    python scripts/train_ddpm.py --dataset mnist5k --epochs 20 --eval-images 16
"""
import sys

from ppl_dgm.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "ddpm", *sys.argv[1:]]))
