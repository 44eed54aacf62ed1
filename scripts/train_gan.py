"""Train an image GAN: the same options as `ppl-dgm train gan` (see `--help`).

    python scripts/train_gan.py --arch dcgan --epochs 10 --eval-samples 1000
"""
import sys

from ppl_dgm.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "gan", *sys.argv[1:]]))
