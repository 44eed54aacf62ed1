"""FD and KID against mnist5k's test split for trained GAN runs, with the data's own row as the floor.

    python scripts/frechet_table.py runs/dcgan_non_saturating_mnist5k runs/cgan_non_saturating_mnist5k --num-samples 1000
"""
import argparse
import json
import sys

import torch

from ppl_dgm.data import load_dataset
from ppl_dgm.gan.experiment import evaluate_gan, load_gan_run
from ppl_dgm.metrics.frechet import feature_classifier, sample_quality


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="*", help="GAN run folders")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--classifier-dir", default="runs")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    classifier = feature_classifier("mnist5k", cache_dir=args.classifier_dir, device=args.device)
    print(f"feature classifier: test accuracy {classifier.test_accuracy:.4f} ({classifier.cache_path})")
    train = load_dataset("mnist5k", "train").tensors[0]
    rows = {"mnist5k train (real digits)": sample_quality(train[: args.num_samples], classifier=classifier)}
    noisy = (train[: args.num_samples] + 0.2 * torch.randn(train[: args.num_samples].shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    rows["mnist5k train + N(0, 0.2²) noise"] = sample_quality(noisy, classifier=classifier)
    for run in args.runs:
        generator, config = load_gan_run(run, device=args.device)
        rows[run] = evaluate_gan(generator, config, args.num_samples, cache_dir=args.classifier_dir)
    print(f"{'samples':50} {'FD':>9} {'KID':>9} {'± std':>8}")
    for name, result in rows.items():
        print(f"{name:50} {result['fd']:9.3f} {result['kid']:9.4f} {result['kid_std']:8.4f}")
    print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
