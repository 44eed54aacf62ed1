"""Held-out log-likelihood per digit (nats) of GMM, FA and PPCA fitted by our exact EM, next to scikit-learn's.

    python scripts/fit_lvm.py --components 10 --latent-dim 10

Both sides fit the same dequantized digits train split (1,500) and score the same test split (297):
digits have 17 grey levels and constant pixels, so raw values have no density; (k + u)/16 with
seeded u ~ U[0, 1) does (see ppl_dgm/lvm/experiment.py). sklearn's GaussianMixture starts from our
initial parameters and uses the same reg_covar, so the GMM rows compare implementations, not restarts.
"""
from __future__ import annotations

import argparse
import time

import torch

from ppl_dgm.lvm.experiment import LVMConfig, build_lvm, digits_vectors, fit_lvm
from ppl_dgm.train.device import resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--components", type=int, default=10)
    parser.add_argument("--latent-dim", type=int, default=10)
    parser.add_argument("--reg-covar", type=float, default=1e-3)
    parser.add_argument("--max-iter", type=int, default=500)
    args = parser.parse_args()
    from sklearn.decomposition import PCA, FactorAnalysis
    from sklearn.mixture import GaussianMixture

    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    train_x, _ = digits_vectors("train", args.seed)
    test_x, _ = digits_vectors("test", args.seed)
    train_np, test_np = train_x.numpy(), test_x.numpy()
    rows = []
    for name in ("gmm", "fa", "ppca"):
        config = LVMConfig(model=name, components=args.components, latent_dim=args.latent_dim, reg_covar=args.reg_covar,
                           max_iter=args.max_iter, tol=1e-7, seed=args.seed)
        model, trace, seconds = fit_lvm(config, train_x, device)
        ours = model.log_likelihood(test_x.to(next(model.parameters()).device))
        started = time.perf_counter()
        if name == "gmm":
            initial = build_lvm(config)  # the initial parameters fit_lvm started from (same seeded generator)
            initial.initialize(train_x, torch.Generator().manual_seed(args.seed))
            reference = GaussianMixture(args.components, covariance_type="full", reg_covar=args.reg_covar, tol=1e-7, max_iter=args.max_iter,
                                        weights_init=initial.weights.detach().numpy(), means_init=initial.locs.detach().numpy(),
                                        precisions_init=torch.linalg.inv(initial.covariances.detach()).numpy()).fit(train_np)
            label = f"GMM (K={args.components}, full)"
        elif name == "fa":
            reference = FactorAnalysis(args.latent_dim, tol=1e-4, max_iter=5000, svd_method="lapack").fit(train_np)
            label = f"FA (K={args.latent_dim})"
        else:
            reference = PCA(args.latent_dim).fit(train_np)  # PCA.score is the PPCA log-likelihood (Tipping & Bishop 1999)
            label = f"PPCA (K={args.latent_dim})"
        sklearn_seconds = time.perf_counter() - started
        theirs = float(reference.score(test_np))
        rows.append((label, ours, theirs, ours - theirs, len(trace) - 1, seconds, sklearn_seconds))
    print(f"digits, dequantized, train 1500 / test 297, device {device}; held-out log-likelihood per digit (nats, 64 dims)")
    print(f"{'model':<22}{'ours':>11}{'sklearn':>11}{'ours−sk':>11}{'EM iters':>10}{'ours s':>9}{'sk s':>8}")
    for label, ours, theirs, difference, iterations, seconds, sklearn_seconds in rows:
        print(f"{label:<22}{ours:>11.3f}{theirs:>11.3f}{difference:>11.2e}{iterations:>10d}{seconds:>9.2f}{sklearn_seconds:>8.2f}")


if __name__ == "__main__":
    main()
