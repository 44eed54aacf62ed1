"""SVI step time of the MNIST MLP VAE (784-400-50, batch 128) against a hand-written torch ELBO step.

All rows train the same networks with Adam on the same binarized mnist5k minibatches; they run
interleaved in one process after a warm-up, and the table reports the median over rounds of each
row's time per step divided by the hand-written torch step's (the named baseline).
  torch (baseline)       hand-written −ELBO: reparameterized z, Bernoulli log-likelihood, analytic KL
  ppl_dgm fit_svi step   what ppl_dgm.train.fit_svi runs after its first (validated) step: Pyro's
                         TraceMeanField_ELBO differentiable loss with the N/B data-plate scaling,
                         Pyro validation off, + torch.optim.Adam
  Pyro SVI.step          the Pyro-tutorial way (scripts/pyro_tutorial_vae.py): pyro.module registration,
                         SVI + pyro.optim.Adam + Trace_ELBO
"""
import argparse
import statistics
import time

import pyro
import torch
from pyro.infer import TraceMeanField_ELBO
from pyro_tutorial_vae import tutorial_svi
from torch.nn import functional as F

from ppl_dgm.data import load_dataset
from ppl_dgm.train.svi import elbo_loss_fn
from ppl_dgm.vae import mlp_vae


def torch_step_fn(vae, optimizer, num_data):
    def step(x):
        loc, scale = vae.encoder(x)
        z = loc + scale * torch.randn_like(loc)  # Kingma & Welling 2014, eq. 10 (reparameterization)
        logits = vae.decoder(z)
        log_likelihood = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
        kl = torch.distributions.kl_divergence(torch.distributions.Normal(loc, scale), torch.distributions.Normal(0.0, 1.0)).sum(1)
        loss = -(log_likelihood - kl).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step


def fit_svi_step_fn(vae, optimizer, num_data):
    loss_fn = elbo_loss_fn(vae.model, vae.guide, TraceMeanField_ELBO(), num_data)

    def step(x):
        with pyro.validation_enabled(False):  # as fit_svi after its validated first step
            loss = loss_fn((x,))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step


def pyro_svi_step_fn(vae, optimizer, num_data):
    svi = tutorial_svi(vae)
    return lambda x: svi.step(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="steps per row per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    pyro.set_rng_seed(args.seed)
    data = load_dataset("binarized_mnist5k", "train").tensors[0]
    batches = [data[i : i + args.batch_size] for i in range(0, data.shape[0] - args.batch_size + 1, args.batch_size)]
    rows = {}
    for label, make in (("torch (baseline)", torch_step_fn), ("ppl_dgm fit_svi step", fit_svi_step_fn), ("Pyro SVI.step", pyro_svi_step_fn)):
        torch.manual_seed(args.seed)
        vae = mlp_vae((1, 28, 28), latent_dim=50, hidden=(400,))
        rows[label] = make(vae, torch.optim.Adam(vae.parameters(), lr=1e-3), data.shape[0])
    for step in rows.values():  # warm-up
        for x in batches[:20]:
            step(x)
    times = {label: [] for label in rows}
    for round_index in range(args.rounds):
        for label, step in rows.items():
            started = time.perf_counter()
            for i in range(args.steps):
                step(batches[(round_index * args.steps + i) % len(batches)])
            times[label].append((time.perf_counter() - started) / args.steps)
    base = times["torch (baseline)"]
    print(f"MLP VAE 784-400-50, batch {args.batch_size}, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds x {args.steps} steps, interleaved")
    print(f"{'row':<24}{'ms/step (median)':>18}{'ratio to torch (median)':>26}")
    for label, values in times.items():
        ratio = statistics.median(v / b for v, b in zip(values, base))
        print(f"{label:<24}{statistics.median(values) * 1000:>18.2f}{ratio:>25.3f}x")


if __name__ == "__main__":
    main()
