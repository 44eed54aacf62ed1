"""Held-out likelihood table on mnist5k (1,000 test digits of the seeded split), one row per trained model.

Trains each model into runs/table_<row>/ (or reuses a finished run with the same config) and
evaluates it on the same held-out digits:
  binarized digits (fixed seeded binarization): −log p(x) upper bounds in nats per image, the
      single-sample ELBO and the importance-weighted bound with k samples (Burda et al. 2016), and the active
      units of each latent layer; the HVAE rows (--rows hvae_... hvae1_...) compare KL warm-up, free bits and
      top-down inference at two network depths;
  8-bit digits: bits/dim under uniform dequantization (docs/design.md), from the IWAE bound;
  autoencoders: held-out reconstruction error (nats per image, not a likelihood).
  PPCA and factor analysis (exact marginal likelihood, closed form / exact EM) on the same dequantized
      8-bit digits, flattened to 784 dimensions.
  DDPM (``--ddpm RUN``, a run of `ppl-dgm train ddpm`): bits/dim of the full Pyro ELBO, all T analytic KL terms
      plus the discretized decoder (Ho et al. 2020, eq. 5), and of the same ε-network read as a VP SDE through
      the probability-flow ODE (Song et al. 2021, App. D; Hutchinson divergence), on the first ``--ddpm-images``
      held-out digits (both are slow: T network calls per image, or a few hundred ODE evaluations per batch).

    python scripts/likelihood_table.py --epochs 50 --iwae-k 1000 --ddpm runs/ddpm_mnist5k_40ep
"""
import argparse
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import pyro
import torch

from ppl_dgm.train import resolve_device
from ppl_dgm.vae.autoencoder_experiment import AEConfig, train_autoencoder
from ppl_dgm.vae.experiment import VAEConfig, evaluate_vae, load_vae_run, train_vae, vae_data


def vae_rows(epochs: int, seed: int):
    common = dict(epochs=epochs, seed=seed)
    # Burda et al. 2016's two-stochastic-layer shape (two hidden layers per network), and one with the flat VAE's
    # networks (784-400-z1, one hidden layer) under a learned prior p(z1 | z2)
    hvae = dict(likelihood="bernoulli", latent_dim=64, hidden=512, latent_dim2=32, hidden2=256, **common)
    hvae1 = dict(likelihood="bernoulli", latent_dim=50, hidden=400, latent_dim2=25, hidden2=200, depth=1, **common)
    warmup = 10 * math.ceil(4000 / 128)  # 10 epochs of the 4,000 training digits at the default batch size (32 steps each)
    return [
        ("VAE MLP 784-400-50", "vae_mlp_bernoulli", VAEConfig(likelihood="bernoulli", arch="mlp", latent_dim=50, hidden=400, **common)),
        ("VAE conv, z=32", "vae_conv_bernoulli", VAEConfig(likelihood="bernoulli", arch="conv", latent_dim=32, **common)),
        ("HVAE MLP z1=64, z2=32", "hvae_mlp_bernoulli", VAEConfig(model="hvae", **hvae)),
        ("HVAE, KL warm-up 10 epochs", "hvae_mlp_bernoulli_warmup", VAEConfig(model="hvae", kl_warmup_steps=warmup, **hvae)),
        ("HVAE, free bits 0.1/dim", "hvae_mlp_bernoulli_free_bits", VAEConfig(model="hvae", free_bits=0.1, **hvae)),
        ("HVAE top-down (Ladder VAE)", "hvae_mlp_bernoulli_top_down", VAEConfig(model="hvae", inference="top_down", **hvae)),
        ("HVAE top-down, warm-up", "hvae_mlp_bernoulli_top_down_warmup",
         VAEConfig(model="hvae", inference="top_down", kl_warmup_steps=warmup, **hvae)),
        ("HVAE depth 1, z1=50, z2=25", "hvae1_mlp_bernoulli", VAEConfig(model="hvae", **hvae1)),
        ("HVAE depth 1, warm-up", "hvae1_mlp_bernoulli_warmup", VAEConfig(model="hvae", kl_warmup_steps=warmup, **hvae1)),
        ("HVAE depth 1, free bits 0.1/dim", "hvae1_mlp_bernoulli_free_bits", VAEConfig(model="hvae", free_bits=0.1, **hvae1)),
        ("HVAE depth 1, warm-up + free bits", "hvae1_mlp_bernoulli_warmup_free_bits",
         VAEConfig(model="hvae", kl_warmup_steps=warmup, free_bits=0.1, **hvae1)),
        ("HVAE depth 1, top-down, free bits", "hvae1_mlp_bernoulli_top_down_free_bits",
         VAEConfig(model="hvae", inference="top_down", free_bits=0.1, **hvae1)),
        ("VAE MLP, Gaussian σ per pixel", "vae_mlp_gaussian", VAEConfig(likelihood="gaussian", arch="mlp", latent_dim=50, hidden=400, **common)),
        ("VAE MLP, full-covariance q(z|x)", "vae_mlp_bernoulli_full", VAEConfig(likelihood="bernoulli", arch="mlp", latent_dim=50, hidden=400, posterior="full", **common)),
        ("VAE MLP, Gaussian μ, σ from the decoder", "vae_mlp_gaussian_network", VAEConfig(likelihood="gaussian_network", arch="mlp", latent_dim=50, hidden=400, **common)),
        ("VAE conv, Gaussian μ, σ from the decoder", "vae_conv_gaussian_network", VAEConfig(likelihood="gaussian_network", arch="conv", latent_dim=32, **common)),
        # the σ floor at about one dequantization bin, 1/256 (σ-VAE, Rybkin et al. 2021, clamps log σ ≥ −6, σ ≥ 0.0025)
        ("VAE conv, Gaussian μ, σ ≥ 0.0039 from the decoder", "vae_conv_gaussian_network_bin_floor",
         VAEConfig(likelihood="gaussian_network", arch="conv", latent_dim=32, min_scale=0.0039, **common)),
        ("VAE MLP, discretized Gaussian", "vae_mlp_discretized", VAEConfig(likelihood="discretized_gaussian", arch="mlp", latent_dim=50, hidden=400, **common)),
        ("VAE conv, Gaussian σ per pixel", "vae_conv_gaussian", VAEConfig(likelihood="gaussian", arch="conv", latent_dim=32, **common)),
        ("VAE conv, discretized Gaussian", "vae_conv_discretized", VAEConfig(likelihood="discretized_gaussian", arch="conv", latent_dim=32, **common)),
    ]


# k = 1000 on 1,000 digits costs ~20 min per conv row on 2 CPU cores (~1 ms per decoder pass): the 8-bit conv rows
# run only when asked for (--rows ... vae_conv_gaussian vae_conv_discretized)
DEFAULT_ROWS = ("vae_mlp_bernoulli", "vae_conv_bernoulli", "hvae_mlp_bernoulli", "hvae1_mlp_bernoulli_free_bits", "vae_mlp_gaussian",
                "vae_mlp_discretized")


def vae_row(config: VAEConfig, run_dir: Path, k: int, device, retrain: bool) -> dict:
    cached = run_dir / "results.json"
    if not retrain and cached.is_file() and json.loads((run_dir / "config.json").read_text()) == asdict(config):
        result = json.loads(cached.read_text())
        if result.get("iwae_k") != k:
            model, _ = load_vae_run(run_dir, device=device)
            result.update(evaluate_vae(model, config, vae_data(config, "test"), k=k))
    else:
        result = train_vae(config, run_dir, device=device, iwae_k=k)
    cached.write_text(json.dumps(result, indent=2) + "\n")
    return result


def active_units(result: dict, config: VAEConfig) -> str:
    """'z 50/50' or 'z1 64/64, z2 2/32': the active units of each latent layer out of its size."""
    if config.model == "hvae":
        return f"z1 {result['active_units_z1']}/{config.latent_dim}, z2 {result['active_units_z2']}/{config.latent_dim2}"
    return f"z {result['active_units_z']}/{config.latent_dim}"


def linear_gaussian_rows(latent_dim: int, seed: int, device) -> list[tuple[str, dict]]:
    """PPCA (Tipping & Bishop 1999, closed form) and FA (exact EM): exact held-out log-likelihoods of dequantized digits."""
    from ppl_dgm.data import load_dataset
    from ppl_dgm.lvm import PPCA, FactorAnalysis
    from ppl_dgm.metrics.likelihood import bits_per_dim, dequantize

    generator = torch.Generator().manual_seed(seed)
    train, test = (dequantize(load_dataset("mnist5k", split).tensors[0].double(), generator=generator).flatten(1).to(device)
                   for split in ("train", "test"))
    rows = []
    fits = ((f"PPCA q={latent_dim}", PPCA(784, latent_dim), lambda model: model.fit_closed_form(train)),
            (f"Factor analysis q={latent_dim}", FactorAnalysis(784, latent_dim), lambda model: model.fit_em(train, max_iter=300, tol=1e-6)))
    for label, model, fit in fits:
        model = model.double().to(device)
        started = time.perf_counter()
        fit(model)
        log_likelihood = model.log_prob(test).mean().item()
        rows.append((label, {"test_log_likelihood_nats": log_likelihood, "test_bits_per_dim": bits_per_dim(-log_likelihood, 784),
                             "train_seconds": time.perf_counter() - started}))
    return rows


def ddpm_rows(run_dir: Path, num_images: int, seed: int, device) -> list[tuple[str, dict]]:
    """Bits/dim of a DDPM run: full Pyro ELBO and probability-flow ODE, cached in ``run_dir/likelihood.json``."""
    from ppl_dgm.diffusion.experiment import evaluate_ddpm, load_ddpm_run
    from ppl_dgm.sde.experiment import ddpm_ode_bits_per_dim

    cache_path = run_dir / "likelihood.json"
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    key = f"{num_images}_seed{seed}"
    if key not in cache:
        net, config = load_ddpm_run(run_dir, device=device)
        elbo = evaluate_ddpm(net, config, num_images, progress=True)
        ode = ddpm_ode_bits_per_dim(run_dir, num_images, device=device, seed=seed, progress=True)
        cache[key] = {"elbo": elbo, "ode": ode, "num_steps": config.num_steps, "epochs": config.epochs}
        cache_path.write_text(json.dumps(cache, indent=2) + "\n")
    entry = cache[key]
    return [(f"DDPM T={entry['num_steps']}, Pyro ELBO", entry["elbo"]), ("same ε-net, VP-SDE prob-flow ODE", entry["ode"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--iwae-k", type=int, default=1000)
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--retrain", action="store_true", help="train even when a finished run exists")
    parser.add_argument("--latent-dim", type=int, default=50, help="latent dimension of PPCA and FA")
    parser.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS), help=f"VAE rows (default: {' '.join(DEFAULT_ROWS)})")
    parser.add_argument("--no-autoencoders", action="store_true")
    parser.add_argument("--ddpm", default=None, help="a DDPM run folder whose ELBO and ODE bits/dim join the 8-bit table")
    parser.add_argument("--ddpm-images", type=int, default=100, help="held-out digits the DDPM rows are evaluated on")
    args = parser.parse_args()
    device = resolve_device(args.device)
    runs = Path(args.runs_dir)
    pyro.set_rng_seed(args.seed)
    started = time.perf_counter()
    known = [key for _, key, _ in vae_rows(args.epochs, args.seed)]
    if unknown := sorted(set(args.rows) - set(known)):
        parser.error(f"--rows: unknown rows {unknown}; expected some of {known}")

    results = [
        (label, config.likelihood, config, vae_row(config, runs / f"table_{key}_{args.epochs}ep", args.iwae_k, device, args.retrain))
        for label, key, config in vae_rows(args.epochs, args.seed)
        if key in args.rows
    ]
    linear_gaussian = linear_gaussian_rows(args.latent_dim, args.seed, device)
    diffusion = ddpm_rows(Path(args.ddpm), args.ddpm_images, args.seed, device) if args.ddpm else []
    autoencoders = []
    for label, config in () if args.no_autoencoders else (
            ("AE MLP 784-400-50", AEConfig(epochs=args.epochs, seed=args.seed)),
            ("DAE MLP, 30% masking", AEConfig(corruption=0.3, epochs=args.epochs, seed=args.seed))):
        run_dir = runs / f"table_{'dae' if config.corruption else 'ae'}_mlp_{args.epochs}ep"
        autoencoders.append((label, train_autoencoder(config, run_dir, device=device)))

    print(f"\nHeld-out mnist5k, binarized (fixed seed), {args.epochs} epochs each, device {device}")
    print(f"{'model':<34}{'−ELBO nats':>12}{f'−IWAE k={args.iwae_k}':>16}{'train s':>9}   active units (Burda et al. 2016)")
    for label, likelihood, config, result in results:
        if likelihood == "bernoulli":
            print(f"{label:<34}{-result['test_elbo_nats']:>12.2f}{-result['test_iwae_nats']:>16.2f}{result['train_seconds']:>9.0f}   "
                  f"{active_units(result, config)}")
    print(f"\nHeld-out mnist5k, 8-bit: bits/dim from the IWAE bound (k={args.iwae_k}); Gaussian rows on uniformly dequantized data")
    print(f"{'model':<34}{'−ELBO nats':>12}{'bits/dim':>16}{'train s':>9}")
    for label, likelihood, config, result in results:
        if likelihood != "bernoulli":
            print(f"{label:<34}{-result['test_elbo_nats']:>12.2f}{result['test_bits_per_dim']:>16.3f}{result['train_seconds']:>9.0f}")
    for label, result in linear_gaussian:
        print(f"{label:<34}{-result['test_log_likelihood_nats']:>12.2f}{result['test_bits_per_dim']:>16.3f}{result['train_seconds']:>9.0f}"
              "   (exact −log p, not a bound)")
    for label, result in diffusion:
        print(f"{label:<34}{result['nll_nats']:>12.2f}{result['bits_per_dim']:>16.3f}{'':>9}"
              f"   ({result['num_images']} digits" + (f", ± {result['bits_per_dim_standard_error']:.3f})" if "bits_per_dim_standard_error" in result
                                                  else f", {result['nfe_per_batch']:.0f} NFE per batch)"))
    print("\nAutoencoders (no likelihood): held-out reconstruction error of binarized digits")
    print(f"{'model':<34}{'BCE nats/img':>12}{'MSE/pixel':>16}{'train s':>9}")
    for label, result in autoencoders:
        print(f"{label:<34}{result['test_reconstruction_nats']:>12.2f}{result['test_mse_per_pixel']:>16.4f}{result['train_seconds']:>9.0f}")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
