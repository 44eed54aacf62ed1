"""Train a model of the VAE family: the same options as `ppl-dgm train vae|hvae|ae|dae|vqvae` (see `--help`).

    python scripts/train_vae.py --dataset mnist5k --likelihood bernoulli --epochs 50     # a VAE
    python scripts/train_vae.py hvae --dataset mnist5k --epochs 50 --iwae-k 1000          # or name the model first
    python scripts/train_vae.py vqvae --dataset mnist5k --epochs 20
"""
import sys

from ppl_dgm.cli import main

MODELS = ("vae", "hvae", "ae", "dae", "vqvae")

if __name__ == "__main__":
    arguments = sys.argv[1:]
    model = arguments.pop(0) if arguments and arguments[0] in MODELS else "vae"
    sys.exit(main(["train", model, *arguments]))
