"""Train a VAE by SVI: the same options as `ppl-dgm train vae` (see `--help`).

    python scripts/train_vae.py --dataset mnist5k --likelihood bernoulli --epochs 50
"""
import sys

from ppl_dgm.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "vae", *sys.argv[1:]]))
