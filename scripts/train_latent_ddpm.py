"""Latent diffusion on mnist5k (Rombach et al. 2022): a DDPM on the latents of a trained VAE, and its Fréchet distance.

Trains on ``--vae-run`` (default runs/table_vae_mlp_bernoulli_50ep; trained first with the default VAEConfig when
missing), writes runs/latent_ddpm_<vae run>_<latents>_seed<seed>/ (samples.png, checkpoint, fd.json) and prints FD/KID
against the 1,000 held-out digits for: decoded latent-diffusion samples (ancestral, T steps; DDIM 50), the VAE's own
prior samples z ~ N(0, I) decoded (the baseline latent diffusion must beat), the VAE's reconstructions of the
held-out digits (the decoder's floor) and real training digits. Same N for every row (FD is biased in N).

    python scripts/train_latent_ddpm.py --seed 0            # ~10 min on 2 CPU cores
"""
import argparse
import json
import sys
from pathlib import Path

import torch

from ppl_dgm.data import load_dataset
from ppl_dgm.diffusion.experiment import build_schedule
from ppl_dgm.diffusion.latent import LatentDDPMConfig, load_latent_ddpm_run, sample_latent_ddpm, train_latent_ddpm
from ppl_dgm.metrics.frechet import feature_classifier, sample_quality
from ppl_dgm.train.runs import RunDir
from ppl_dgm.vae.experiment import VAEConfig, train_vae


def main(argv=None) -> int:
    defaults = LatentDDPMConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vae-run", default="runs/table_vae_mlp_bernoulli_50ep")
    parser.add_argument("--vae-epochs", type=int, default=50, help="epochs of the VAE trained when --vae-run is missing")
    parser.add_argument("--latents", default=defaults.latents, choices=("mean", "sample"))
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--num-samples", type=int, default=1000, help="images per FD row")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--classifier-dir", default="runs", help="where the FD feature classifier is cached (or trained once)")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    vae_run = Path(args.vae_run)
    if not (vae_run / "checkpoint.pt").is_file():
        print(f"{vae_run} not found: training the default MLP VAE ({args.vae_epochs} epochs) there first")
        RunDir(vae_run).write_results(train_vae(VAEConfig(epochs=args.vae_epochs), vae_run, device=args.device, progress=not args.no_progress))
    config = LatentDDPMConfig(latents=args.latents, epochs=args.epochs, seed=args.seed)
    run_dir = Path(args.runs_dir) / f"latent_ddpm_{vae_run.name}_{args.latents}_seed{args.seed}"
    result = train_latent_ddpm(config, run_dir, vae_run, device=args.device, resume=args.resume, progress=not args.no_progress)
    RunDir(run_dir).write_results(result)

    model, config = load_latent_ddpm_run(run_dir, device=args.device)
    device, n = model.latent_shift.device, args.num_samples
    schedule = build_schedule(config)
    classifier = feature_classifier("mnist5k", cache_dir=args.classifier_dir, device=device)
    test_images = load_dataset("mnist5k", "test").tensors[0]
    seeded = lambda offset: torch.Generator(device=device).manual_seed(args.seed + offset)  # noqa: E731
    samples = {
        f"latent DDPM, ancestral {config.num_steps} steps": sample_latent_ddpm(model, schedule, n, sampler="ancestral", generator=seeded(1)),
        "latent DDPM, DDIM 50 steps (η = 0)": sample_latent_ddpm(model, schedule, n, sampler="ddim", steps=50, generator=seeded(2)),
        "VAE prior z ~ N(0, I), decoded (baseline)": model.vae.sample(n, generator=seeded(3)),
        "VAE reconstructions of test digits": model.vae.reconstruct(test_images[:n].to(device)).clamp(0, 1),
        "mnist5k train digits (real)": load_dataset("mnist5k", "train").tensors[0][:n],
    }
    rows = {name: sample_quality(images.cpu(), classifier=classifier, seed=args.seed) for name, images in samples.items()}
    baseline = rows["VAE prior z ~ N(0, I), decoded (baseline)"]["fd"]
    print(f"\nFréchet distance to mnist5k test ({rows[next(iter(rows))]['num_reference']} digits) on the features of the library's "
          f"digit classifier (test accuracy {classifier.test_accuracy:.4f}); N = {n} images per row; VAE {vae_run}")
    print(f"{'samples':48} {'FD':>9} {'÷ prior':>8} {'KID':>9} {'± std':>8}")
    for name, row in rows.items():
        print(f"{name:48} {row['fd']:9.3f} {row['fd'] / baseline:8.3f} {row['kid']:9.4f} {row['kid_std']:8.4f}")
    (run_dir / "fd.json").write_text(json.dumps({"vae_run": str(vae_run), "train": result, "rows": rows}, indent=2) + "\n")
    print(f"wrote {run_dir}/ (samples.png, fd.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
