"""The VAE's inference gaps (Cremer, Li & Duvenaud 2018) on held-out digits of a trained VAE run, and NUTS on z | x.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/amortization_gap.py runs/vae_mnist5k_amortization \\
        --num-images 100 --k 5000 --nuts-digits 5

For the first ``--num-images`` test digits: log p̂(x) (IWAE with k draws from the tighter proposal), L[q*] (a diagonal
Gaussian per digit fitted by SVI, networks fixed), L[q_φ] (the encoder), the approximation gap log p̂ − L[q*] and the
amortization gap L[q*] − L[q_φ], nats, mean ± s.e. over digits. For the first ``--nuts-digits`` of them: NUTS on
p(z | x) (r̂, ESS, divergences) and how far q_φ and q* are from it in posterior sds. Writes
RUN/amortization_gap.json and docs/images/vae_amortization_nuts.png (marginals of one digit).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from ppl_dgm.vae.amortization import amortization_gap, gaussian_posterior_errors, nuts_posterior
from ppl_dgm.vae.experiment import load_vae_run, vae_data


def gaps_table(summary: dict) -> str:
    rows = [
        ("log p̂(x) (IWAE, k = {k}, {proposal} proposal)".format(k=summary["k"], proposal=summary["log_likelihood_proposal"]), "log_likelihood"),
        ("IWAE with the encoder q_φ as proposal", "iwae_encoder"),
        ("L[q*] (optimized local Gaussian)", "elbo_optimized"),
        ("L[q_φ] (encoder)", "elbo_encoder"),
        ("approximation gap log p̂ − L[q*]", "approximation_gap"),
        ("amortization gap L[q*] − L[q_φ]", "amortization_gap"),
        ("inference gap log p̂ − L[q_φ]", "inference_gap"),
    ]
    lines = [f"| {summary['num_examples']} held-out digits | nats (mean ± s.e.) |", "|---|---|"]
    lines += [f"| {label} | {summary[key]:.2f} ± {summary[key + '_se']:.2f} |" for label, key in rows]
    return "\n".join(lines)


def nuts_table(rows: list[dict]) -> str:
    lines = [
        "| digit | label | max r̂ | min ESS | div. | NUTS MC floor | mean err. q_φ | mean err. q* | sd ratio q_φ | sd ratio q* | amort. gap | approx. gap |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        encoder, optimized = row["encoder"], row["optimized"]
        lines.append(
            f"| {row['index']} | {row['label']} | {row['r_hat_max']:.3f} | {row['ess_min']:.0f} | {row['divergences']} | "
            f"{encoder['reference_mcse']:.3f} | {encoder['mean_error']:.2f} | {optimized['mean_error']:.2f} | "
            f"{encoder['sd_ratio']:.2f} | {optimized['sd_ratio']:.2f} | {row['amortization_gap']:.2f} | {row['approximation_gap']:.2f} |"
        )
    return "\n".join(lines)


def marginals_figure(path: str, title: str, image: torch.Tensor, samples: torch.Tensor, encoder: tuple, optimized: tuple,
                     num_dims: int = 9) -> None:
    """The digit, then the NUTS marginal histograms of the ``num_dims`` dimensions with the smallest posterior sd,
    with the densities of q_φ and q*."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    draws = samples.flatten(0, 1)
    dims = draws.std(0).argsort()[:num_dims].tolist()
    figure, axes = plt.subplots(2, (num_dims + 2) // 2, figsize=(2.4 * ((num_dims + 2) // 2), 4.8))
    axes = axes.flatten()
    axes[0].imshow(image.squeeze().cpu(), cmap="gray")
    axes[0].set_axis_off()
    axes[0].set_title("x")
    for axis, dim in zip(axes[1:], dims):
        values = draws[:, dim]
        axis.hist(values.numpy(), bins=30, density=True, color="0.75", label="NUTS")
        grid = torch.linspace(values.min().item() - 0.5 * values.std().item(), values.max().item() + 0.5 * values.std().item(), 200)
        for (loc, scale), name, style in ((encoder, "q_φ (encoder)", "C0--"), (optimized, "q* (optimized)", "C3-")):
            density = torch.distributions.Normal(loc[dim].item(), scale[dim].item()).log_prob(grid).exp()
            axis.plot(grid.numpy(), density.numpy(), style, label=name)
        axis.set_title(f"z[{dim}]")
        axis.set_yticks([])
    for axis in axes[1 + len(dims):]:
        axis.set_axis_off()
    axes[1].legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a VAE run folder (diagonal q(z|x), beta = 1)")
    parser.add_argument("--num-images", type=int, default=100, help="first N held-out digits")
    parser.add_argument("--k", type=int, default=5000, help="draws per digit and proposal (ELBOs and IWAE)")
    parser.add_argument("--steps", type=int, default=1000, help="Adam steps of the local SVI")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--particles", type=int, default=10, help="ELBO samples per step of the local SVI")
    parser.add_argument("--nuts-digits", type=int, default=5)
    parser.add_argument("--nuts-samples", type=int, default=500)
    parser.add_argument("--nuts-warmup", type=int, default=500)
    parser.add_argument("--nuts-chains", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", default="docs/images", help="folder of the figure")
    args = parser.parse_args()

    vae, config = load_vae_run(args.run, device="cpu")
    images, labels = vae_data(config, "test").tensors
    x = images[: args.num_images]
    started = time.perf_counter()
    gaps = amortization_gap(vae, x, k=args.k, steps=args.steps, lr=args.lr, num_particles=args.particles, seed=args.seed,
                            progress=True)
    gap_seconds = time.perf_counter() - started
    summary = gaps.summary()
    print(f"\n{args.run}: {config.dataset}, {config.likelihood} MLP VAE, latent {config.latent_dim}; "
          f"q*: {args.steps} Adam steps, lr {args.lr}, {args.particles} particles; {gap_seconds:.0f} s\n")
    print(gaps_table(summary))

    rows = []
    started = time.perf_counter()
    with torch.no_grad():
        encoder_loc, encoder_scale = vae.encoder(x[: args.nuts_digits])
    nuts_runs = []
    for i in range(min(args.nuts_digits, x.shape[0])):
        posterior = nuts_posterior(vae, x[i], num_samples=args.nuts_samples, warmup_steps=args.nuts_warmup,
                                   num_chains=args.nuts_chains, seed=args.seed + i, jit_compile=True)
        nuts_runs.append(posterior)
        rows.append({
            "index": i,
            "label": int(labels[i]),
            "r_hat_max": posterior.r_hat.max().item(),
            "ess_min": posterior.ess.min().item(),
            "divergences": posterior.divergences,
            "encoder": gaussian_posterior_errors(posterior, encoder_loc[i], encoder_scale[i]),
            "optimized": gaussian_posterior_errors(posterior, gaps.guide.loc[i], gaps.guide.scale[i]),
            "amortization_gap": gaps.amortization_gap[i].item(),
            "approximation_gap": gaps.approximation_gap[i].item(),
        })
    nuts_seconds = time.perf_counter() - started
    if rows:
        print(f"\nNUTS on z | x ({args.nuts_chains} chains x {args.nuts_samples} draws after {args.nuts_warmup} warm-up; "
              f"{nuts_seconds:.0f} s): errors of q_φ and q* in NUTS posterior sds (mean err. = RMS over the "
              f"{config.latent_dim} dims of (μ_q − μ)/sd; sd ratio = geometric mean of sd_q/sd)\n")
        print(nuts_table(rows))
        os.makedirs(args.images, exist_ok=True)
        figure = os.path.join(args.images, "vae_amortization_nuts.png")
        title = (f"held-out digit 0 (label {rows[0]['label']}): NUTS ({args.nuts_chains} x {args.nuts_samples} draws) against "
                 f"q_φ and q* on the 9 latent dimensions with the smallest posterior sd")
        marginals_figure(figure, title, x[0], nuts_runs[0].samples, (encoder_loc[0], encoder_scale[0]),
                         (gaps.guide.loc[0].detach(), gaps.guide.scale[0].detach()))
        print(f"\nwrote {figure}")

    result = {
        "run": args.run,
        "arguments": vars(args),
        "summary": summary,
        "per_example": {name: getattr(gaps, name).tolist() for name in
                        ("log_likelihood", "elbo_optimized", "elbo_encoder", "approximation_gap", "amortization_gap")},
        "nuts": rows,
        "seconds": {"gaps": gap_seconds, "nuts": nuts_seconds},
    }
    path = os.path.join(args.run, "amortization_gap.json")
    with open(path, "w") as file:
        json.dump(result, file, indent=2)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
