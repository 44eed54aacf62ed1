"""Reparameterization vs score-function gradients of the same VAE ELBO: per-parameter variance table.

The same Bernoulli MLP VAE (briefly trained on binarized mnist5k) and the same minibatch; only the
gradient estimator of the guide changes:
  reparameterized  Trace_ELBO, z = μ + σ·ε (Kingma & Welling 2014)
  score function   Trace_ELBO with rsample hidden (REINFORCE, Williams 1992)
  score function   TraceGraph_ELBO (Rao–Blackwellized by Pyro's dependency graph)
For each parameter tensor: the gradient variance over --draws draws (mean over its elements), and
the ratio to the reparameterized estimator. Decoder gradients are pathwise in every case.
"""
import argparse
import time
from functools import partial

import pyro
import torch
from pyro.infer import Trace_ELBO, TraceGraph_ELBO

from ppl_dgm.data import load_dataset
from ppl_dgm.train import fit_svi, resolve_device
from ppl_dgm.train.svi import differentiable_loss
from ppl_dgm.vae import mlp_vae


def gradient_draws(vae, loss, x, draws):
    """(draws, ...) gradients of −ELBO per example for each parameter."""
    samples = {name: [] for name, _ in vae.named_parameters()}
    for _ in range(draws):
        vae.zero_grad(set_to_none=True)
        (differentiable_loss(loss, vae.model, vae.guide, x) / x.shape[0]).backward()
        for name, parameter in vae.named_parameters():
            samples[name].append(parameter.grad.detach().clone())
    return {name: torch.stack(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--train-epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if args.draws < 100:
        parser.error(f"--draws must be at least 100 for a stable variance estimate, got {args.draws}")

    device = resolve_device(args.device)
    pyro.set_rng_seed(args.seed)
    train = load_dataset("binarized_mnist5k", "train")
    vae = mlp_vae((1, 28, 28), latent_dim=20, hidden=(200,))
    fit_svi(vae.model, vae.guide, train, epochs=args.train_epochs, batch_size=128, device=device,
            optim=partial(torch.optim.Adam, lr=1e-3), progress=False)
    x = train.tensors[0][: args.batch_size].to(device)

    estimators = [
        ("reparameterized (Trace_ELBO)", True, Trace_ELBO()),
        ("score function (Trace_ELBO)", False, Trace_ELBO()),
        ("score function (TraceGraph_ELBO)", False, TraceGraph_ELBO()),
    ]
    variances, seconds = {}, {}
    for label, reparameterized, loss in estimators:
        vae.reparameterized = reparameterized
        pyro.set_rng_seed(args.seed + 1)
        started = time.perf_counter()
        draws = gradient_draws(vae, loss, x, args.draws)
        seconds[label] = time.perf_counter() - started
        variances[label] = {name: value.var(dim=0).mean().item() for name, value in draws.items()}
    vae.reparameterized = True

    base = estimators[0][0]
    names = list(variances[base])
    print(f"Gradient variance of −ELBO/example over {args.draws} draws, batch {args.batch_size}, "
          f"VAE 784-200-20 after {args.train_epochs} epochs (ratios to the reparameterized estimator)")
    header = f"{'parameter':<34}{'reparam var':>13}" + "".join(f"{label.split(' (')[0] + ' / ' + label.split('(')[1][:-1]:>40}" for label, _, _ in estimators[1:])
    print(header)
    for name in names:
        row = f"{name:<34}{variances[base][name]:>13.3e}"
        for label, _, _ in estimators[1:]:
            row += f"{variances[label][name] / max(variances[base][name], 1e-30):>39.1f}x"
        print(row)
    print("seconds per draw: " + ", ".join(f"{label}: {seconds[label] / args.draws * 1000:.1f} ms" for label, _, _ in estimators))


if __name__ == "__main__":
    main()
