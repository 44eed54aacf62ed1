"""FD and KID against mnist5k's test split for trained GAN, DDPM and NCSN runs, with real digits as the floor.

GAN runs give ``--num-samples`` samples each. A DDPM run (``--ddpm RUN``) is sampled by ancestral sampling
over all T steps (Ho et al. 2020, Alg. 2) and by DDIM with 100 and 50 steps (Song, Meng & Ermon 2021,
η = 0) and, with ``--score-samplers``, as a VP SDE by torchsde, PC and the probability-flow ODE (one
network, every sampler), ``--ddpm-samples`` images each from the same seed; samples are cached in the run folder
(``samples_<sampler>_<n>_seed<s>.pt``) and shown in ``fd_<sampler>.png``. FD is biased in N, so each
sample count gets its own data-vs-data floor (N real training digits against the test split).

    python scripts/frechet_table.py runs/dcgan_non_saturating_mnist5k runs/cgan_non_saturating_mnist5k --num-samples 1000
    python scripts/frechet_table.py --ddpm runs/ddpm_mnist5k_40ep --ddpm-samples 250 --score-samplers
    python scripts/frechet_table.py --ncsn runs/ncsn_mnist5k --ddpm-samples 250
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torchvision.utils import save_image

from ppl_dgm.data import load_dataset
from ppl_dgm.metrics.frechet import feature_classifier, sample_quality
from ppl_dgm.train.checkpoint import safe_torch_load

DDPM_SAMPLERS = (("ancestral", None), ("ddim", 100), ("ddim", 50))
# the same ε-network read as VPSDE(0.1, 20) at t = i/T (Song et al. 2021, App. B), through the score-SDE samplers
SCORE_SAMPLERS = (("reverse-sde", 250), ("pc", 100), ("ode", None))  # PC: 2 network calls per step
def nfe_grid(budgets=(10, 20, 50, 100), samplers=None) -> tuple[tuple[str, int | None], ...]:
    """--nfe-table: every sampler at about each budget of network calls (Heun: 2·steps − 1; PC: 2 per step, ≥ 20 steps on
    the VP SDE), plus 1,000-step ancestral and the adaptive ODE; ``samplers`` keeps only those names."""
    grid = (("ancestral", None), ("ode", None)) + tuple(
        (sampler, steps) for budget in budgets for sampler, steps in (
            ("ddim", budget), ("dpmpp-2m", budget), ("dpmpp-2m-sde", budget), ("heun", (budget + 1) // 2),
            ("euler-ancestral", budget), ("pc", budget // 2), ("reverse-sde", budget)) if sampler != "pc" or budget >= 40)
    return tuple(row for row in grid if samplers is None or row[0] in samplers)
LABELS = {"ancestral": "ancestral, all T steps", "ddim": "DDIM {} steps", "reverse-sde": "reverse SDE (torchsde EM) {} steps",
          "pc": "PC (reverse diffusion + Langevin) {} steps", "ode": "probability-flow ODE (dopri5)",
          "dpmpp-2m": "DPM-Solver++(2M) {} steps", "dpmpp-2m-sde": "DPM-Solver++(2M) SDE {} steps",
          "heun": "Heun (Karras σ, ρ = 7) {} steps", "euler-ancestral": "Euler ancestral {} steps"}


def trained_steps(run: Path) -> int:
    """Optimizer steps behind the run's checkpoint (its last metrics record), so a cache never outlives an extension."""
    from ppl_dgm.train.runs import RunDir

    records = RunDir(run).read_metrics()
    if not records:
        raise ValueError(f"run {str(run)!r} has no metrics records; train it first")
    return int(records[-1]["step"])


def cached_samples(run: Path, name: str, num_samples: int, seed: int, device: str, batch_size: int, draw) -> tuple[torch.Tensor, float, int | None]:
    """Images in [0, 1] from ``draw(size, generator, callback)`` in batches, cached as
    ``samples_<name>_<n>_seed<s>_step<k>.pt`` in the run folder (k: the checkpoint's optimizer steps) with the first 64
    in ``fd_<name>.png``; also the seconds sampling took and the network calls per sample (counted by the sampler's
    callback on the first batch)."""
    cache = run / f"samples_{name}_{num_samples}_seed{seed}_step{trained_steps(run)}.pt"
    if cache.is_file():
        saved = safe_torch_load(cache, what="sample cache")
        return (saved["samples"], saved["seconds"], saved["nfe"]) if isinstance(saved, dict) else (saved, 0.0, None)
    generator = torch.Generator(device=device).manual_seed(seed)
    calls = []
    started = time.perf_counter()
    chunks = []
    for begin in range(0, num_samples, batch_size):
        callback = (lambda call, x, denoised: calls.append(call)) if begin == 0 else None
        chunks.append(draw(min(batch_size, num_samples - begin), generator, callback).cpu())
    samples, seconds = torch.cat(chunks), time.perf_counter() - started
    torch.save({"samples": samples, "seconds": seconds, "nfe": len(calls)}, cache)
    save_image(samples[:64], run / f"fd_{name}.png", nrow=8)
    return samples, seconds, len(calls)


def ddpm_samples(run: Path, sampler: str, steps: int | None, num_samples: int, seed: int, device: str, batch_size: int):
    """Images in [0, 1] of a DDPM run's EMA network by any sampler of ``SAMPLER_NAMES`` (the SDE ones read it as a VP SDE)."""
    from ppl_dgm.diffusion.experiment import load_ddpm_run, sample_run

    net, config = load_ddpm_run(run, device=device)

    def draw(size: int, generator: torch.Generator, callback) -> torch.Tensor:
        return sample_run(net, config, size, sampler=sampler, steps=steps, generator=generator, progress=True, callback=callback)[0]

    return cached_samples(run, f"{sampler}{steps or ''}", num_samples, seed, device, batch_size, draw)


def ncsn_samples(run: Path, num_samples: int, seed: int, device: str, batch_size: int) -> tuple[torch.Tensor, float]:
    """Images in [0, 1] of an NCSN run by annealed Langevin with the paper's T = 100 steps per level and denoising."""
    from ppl_dgm.sde.experiment import load_score_run, sample_score_run

    net, config = load_score_run(run, device=device)

    def draw(size: int, generator: torch.Generator, callback) -> torch.Tensor:
        samples = sample_score_run(net, config, size, sampler="langevin", generator=generator, progress=True, callback=callback)
        return ((samples + 1) / 2).clamp(0, 1)

    return cached_samples(run, "langevin", num_samples, seed, device, batch_size, draw)


def timing(seconds: float, nfe: int | None, num_samples: int) -> dict:
    """Network calls per sample and wall seconds per sample, where known (a cache from an older version lacks them)."""
    return ({"nfe": nfe} if nfe is not None else {}) | ({"seconds_per_sample": seconds / num_samples} if seconds else {})


def write_table(table: str, rows: dict, markdown_path: str, json_path: str) -> None:
    """Print a markdown table and write it and its rows (JSON) to the two paths."""
    print(table)
    for path, text in ((markdown_path, table + "\n"), (json_path, json.dumps(rows, indent=2) + "\n")):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
        print(f"wrote {path}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help="GAN run folders")
    parser.add_argument("--num-samples", type=int, default=1000, help="samples per GAN run")
    parser.add_argument("--ddpm", nargs="*", default=[], help="DDPM run folders (ancestral, DDIM 100, DDIM 50)")
    parser.add_argument("--ncsn", nargs="*", default=[], help="NCSN run folders (annealed Langevin, T = 100 per level)")
    parser.add_argument("--ddpm-samples", type=int, default=250, help="samples per DDPM sampler and per NCSN run")
    parser.add_argument("--score-samplers", action="store_true",
                        help="also sample the DDPM network by the reverse SDE, PC and the probability-flow ODE")
    parser.add_argument("--nfe-table", action="store_true",
                        help="sample each DDPM run by every sampler at about 10/20/50/100 network calls (and ancestral, ODE)")
    parser.add_argument("--nfe-budgets", type=int, nargs="+", default=[10, 20, 50, 100], help="network-call budgets of --nfe-table")
    parser.add_argument("--samplers", nargs="+", default=None, help="keep only these samplers in --nfe-table")
    parser.add_argument("--batch-size", type=int, default=250, help="DDPM images sampled at once")
    parser.add_argument("--classifier-dir", default="runs")
    parser.add_argument("--inception-weights", default=None, help="also the standard FID from this local Inception-v3 weights file")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--floor-spread", action="store_true",
                        help="also the FD of every disjoint set of N real training digits: how much FD moves at this N")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    classifier = feature_classifier("mnist5k", cache_dir=args.classifier_dir, device=args.device)
    print(f"feature classifier: test accuracy {classifier.test_accuracy:.4f} ({classifier.cache_path})")
    train = load_dataset("mnist5k", "train").tensors[0]
    rows = {}
    diffusion = args.ddpm or args.ncsn
    sizes = sorted(({args.num_samples} if args.runs or not diffusion else set()) | ({args.ddpm_samples} if diffusion else set()))
    for n in sizes:
        rows[f"floor: {n} real training digits"] = sample_quality(train[:n], classifier=classifier, seed=args.seed, inception_weights=args.inception_weights)
        noisy = (train[:n] + 0.2 * torch.randn(train[:n].shape, generator=torch.Generator().manual_seed(args.seed))).clamp(0, 1)
        rows[f"{n} real digits + N(0, 0.2²) noise"] = sample_quality(noisy, classifier=classifier, seed=args.seed)
        if args.floor_spread:
            fds = torch.tensor([sample_quality(train[i : i + n], classifier=classifier, kid_subsets=1)["fd"]
                                for i in range(0, len(train) - n + 1, n)], dtype=torch.float64)
            print(f"floor spread: FD of {len(fds)} disjoint sets of {n} training digits: mean {fds.mean():.2f}, "
                  f"sd {fds.std():.2f}, range {fds.min():.2f}-{fds.max():.2f}")
    if args.runs:
        from ppl_dgm.gan.experiment import evaluate_gan, load_gan_run

        for run in args.runs:
            generator, config = load_gan_run(run, device=args.device)
            rows[run] = evaluate_gan(generator, config, args.num_samples, cache_dir=args.classifier_dir, seed=args.seed,
                                     inception_weights=args.inception_weights)
    for run in map(Path, args.ddpm):
        grid = nfe_grid(args.nfe_budgets, args.samplers) if args.nfe_table else DDPM_SAMPLERS + (SCORE_SAMPLERS if args.score_samplers else ())
        for sampler, steps in grid:
            samples, seconds, nfe = ddpm_samples(run, sampler, steps, args.ddpm_samples, args.seed, args.device, args.batch_size)
            label = f"{run.name} {LABELS[sampler].format(steps)}"
            rows[label] = sample_quality(samples, classifier=classifier, seed=args.seed, inception_weights=args.inception_weights) | timing(seconds, nfe, len(samples))
    for run in map(Path, args.ncsn):
        samples, seconds, nfe = ncsn_samples(run, args.ddpm_samples, args.seed, args.device, args.batch_size)
        rows[f"{run.name} annealed Langevin (T = 100 per level, denoised)"] = (
            sample_quality(samples, classifier=classifier, seed=args.seed, inception_weights=args.inception_weights) | timing(seconds, nfe, len(samples)))
    print(f"{'samples':64} {'N':>5} {'NFE':>5} {'FD':>9} {'KID':>9} {'± std':>8} {'s/sample':>9}")
    for name, result in rows.items():
        nfe, per_sample = result.get("nfe"), result.get("seconds_per_sample")
        print(f"{name:64} {result['num_samples']:5d} {nfe if nfe is not None else '':>5} {result['fd']:9.3f} {result['kid']:9.4f} "
              f"{result['kid_std']:8.4f} {f'{per_sample:.3f}' if per_sample else '':>9}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
