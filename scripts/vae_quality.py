"""Quality bar: our MLP VAE vs the same network trained by a plain Pyro-tutorial-style SVI loop.

Both train the 784-400-50 Bernoulli VAE (ppl_dgm.vae.mlp_vae) on the 4,000 binarized mnist5k
training digits for the same epochs and batch size, from the same initial weights; both are
evaluated by the importance-weighted bound (k samples, Burda et al. 2016) on the 1,000 held-out digits.
  ppl_dgm      fit_svi: TraceMeanField_ELBO (analytic KL), torch.optim.Adam(lr=1e-3), N/B data-plate scaling
  tutorial     pyro.module registration, SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO()),
               per-batch svi.step(x) as in Pyro's VAE tutorial
"""
import argparse
import copy
import time

import pyro
import torch
from pyro.infer import TraceMeanField_ELBO
from pyro_tutorial_vae import tutorial_svi

from ppl_dgm.data import load_dataset
from ppl_dgm.metrics.likelihood import iwae_log_likelihood
from ppl_dgm.train import evaluate_elbo, fit_svi, resolve_device
from ppl_dgm.vae import mlp_vae


def tutorial_training(vae, data, epochs, batch_size, seed):
    """The Pyro tutorial's loop: registered modules in the param store, SVI.step per shuffled minibatch."""
    pyro.clear_param_store()
    svi = tutorial_svi(vae)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(data.shape[0], generator=generator)
        for begin in range(0, data.shape[0], batch_size):
            svi.step(data[order[begin : begin + batch_size]])
    pyro.clear_param_store()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--iwae-k", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = resolve_device(args.device)
    pyro.set_rng_seed(args.seed)
    train = load_dataset("binarized_mnist5k", "train")
    test_x = load_dataset("binarized_mnist5k", "test").tensors[0].to(device)
    initial = mlp_vae((1, 28, 28), latent_dim=50, hidden=(400,)).to(device)

    ours, tutorial = copy.deepcopy(initial), copy.deepcopy(initial)
    started = time.perf_counter()
    fit_svi(ours.model, ours.guide, train, loss=TraceMeanField_ELBO(), epochs=args.epochs, batch_size=args.batch_size,
            device=device, seed=args.seed, progress=False)
    ours_seconds = time.perf_counter() - started
    started = time.perf_counter()
    tutorial_training(tutorial, train.tensors[0].to(device), args.epochs, args.batch_size, args.seed)
    tutorial_seconds = time.perf_counter() - started

    print(f"Held-out binarized mnist5k (1,000 digits), 784-400-50 VAE, {args.epochs} epochs, batch {args.batch_size}")
    print(f"{'training':<12}{'−ELBO nats':>12}{f'NLL ≤ −IWAE k={args.iwae_k}':>24}{'train s':>10}")
    for label, vae, seconds in (("ppl_dgm", ours, ours_seconds), ("tutorial", tutorial, tutorial_seconds)):
        elbo = evaluate_elbo(vae.model, vae.guide, (test_x,), loss=TraceMeanField_ELBO())
        bound = torch.cat([iwae_log_likelihood(vae.model, vae.guide, chunk, args.iwae_k) for chunk in test_x.split(50)]).mean().item()
        print(f"{label:<12}{-elbo:>12.2f}{-bound:>24.2f}{seconds:>10.1f}")


if __name__ == "__main__":
    main()
