"""Inverse problems on held-out mnist5k digits with a trained unconditional DDPM, no retraining: PSNR and L1 against the
truth, next to simple baselines, and a picture per task.

Tasks (images in [0, 1]; the network works in [−1, 1]):
  inpainting, the lower half of each digit missing: RePaint (Lugmayr et al. 2022; ``--repaint-steps`` respaced steps,
      ``--resample`` U), SMCDiff (Trippe et al. 2022; ``--repaint-steps`` steps, ``--smc-particles`` particles per digit)
      and DDRM (Kawar et al. 2022) against filling with the training mean image, and with the nearest known row copied
      down;
  2x super-resolution from 14x14 average-pooled digits: DDRM against nearest and bicubic upsampling;
  denoising of y = x + 0.2 z: DDRM (σ_y = 0.4 in [−1, 1] units) against the noisy input and a 3x3 Gaussian blur.
Scores are per-image PSNR (peak 1) and L1 averaged over ``--num-images`` held-out digits; restoration draws one
posterior sample per digit (seeded). Writes docs/images/inverse_problems.png (rows: truth, observation, baselines,
diffusion) and prints a markdown table.

    python scripts/inverse_problems.py runs/ddpm_mnist5k_ref --num-images 100
"""
import argparse
import math
import time
from pathlib import Path

import torch
from torch.nn import functional as F
from torchvision.transforms.functional import gaussian_blur
from torchvision.utils import save_image

from ppl_dgm.data import load_dataset
from ppl_dgm.diffusion.ddpm import to_image_space, to_model_space
from ppl_dgm.diffusion.experiment import build_schedule, load_ddpm_run
from ppl_dgm.diffusion.inverse import Denoising, Inpainting, SuperResolution, ddrm, inpaint, inpaint_smc


def psnr(estimate: torch.Tensor, truth: torch.Tensor) -> float:
    mse = ((estimate.clamp(0, 1) - truth) ** 2).flatten(1).mean(1)
    return float((10 * torch.log10(1.0 / mse.clamp(min=1e-10))).mean())


def l1(estimate: torch.Tensor, truth: torch.Tensor) -> float:
    return float((estimate.clamp(0, 1) - truth).abs().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a DDPM run folder (ppl-dgm train ddpm --dataset mnist5k)")
    parser.add_argument("--num-images", type=int, default=100)
    parser.add_argument("--repaint-steps", type=int, default=100)
    parser.add_argument("--resample", type=int, default=5)
    parser.add_argument("--ddrm-steps", type=int, default=20)
    parser.add_argument("--smc-particles", type=int, default=8, help="SMCDiff particles per digit (0: no SMC row)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/images/inverse_problems.png")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    net, config = load_ddpm_run(args.run, device="cpu")
    schedule = build_schedule(config)
    truth = load_dataset("mnist5k", "test").tensors[0][: args.num_images]
    train_mean = load_dataset("mnist5k", "train").tensors[0].mean(0, keepdim=True)
    n = len(truth)
    rows, pictures = [], [truth[:10]]

    def seeded() -> torch.Generator:
        return torch.Generator().manual_seed(args.seed)

    def record(task, method, estimate, seconds=None, calls=None):
        rows.append((task, method, psnr(estimate, truth), l1(estimate, truth), seconds, calls))
        pictures.append(estimate[:10].clamp(0, 1))

    # inpainting: the lower half missing
    mask = torch.ones(1, 1, 28, 28)
    mask[..., 14:, :] = 0
    observed = truth * mask
    pictures.append(observed[:10] + (1 - mask) * 0.5)
    record("inpainting (lower half)", "training-mean fill", observed + (1 - mask) * train_mean)
    record("inpainting (lower half)", "nearest known row copied down", observed + (1 - mask) * truth[..., 13:14, :])
    started = time.perf_counter()
    estimate = inpaint(net, schedule, to_model_space(truth), mask, steps=args.repaint_steps, resample=args.resample, generator=seeded(),
                       progress=True)
    record("inpainting (lower half)", f"RePaint, {args.repaint_steps} steps × U = {args.resample}", to_image_space(estimate),
           time.perf_counter() - started, args.repaint_steps * args.resample)
    if args.smc_particles:
        started = time.perf_counter()
        estimate = inpaint_smc(net, schedule, to_model_space(truth), mask, steps=args.repaint_steps, num_particles=args.smc_particles,
                               generator=seeded(), progress=True)
        record("inpainting (lower half)", f"SMCDiff, {args.repaint_steps} steps × {args.smc_particles} particles",
               to_image_space(estimate), time.perf_counter() - started, args.repaint_steps * args.smc_particles)
    started = time.perf_counter()
    estimate = ddrm(net, schedule, Inpainting(mask), to_model_space(truth) * mask, truth.shape, steps=args.ddrm_steps, generator=seeded(),
                    progress=True)
    record("inpainting (lower half)", f"DDRM, {args.ddrm_steps} steps", to_image_space(estimate), time.perf_counter() - started, args.ddrm_steps)

    # 2x super-resolution from 14x14 average-pooled digits
    low = F.avg_pool2d(truth, 2)
    pictures.append(F.interpolate(low[:10], scale_factor=2, mode="nearest"))
    record("2x super-resolution", "nearest upsampling", F.interpolate(low, scale_factor=2, mode="nearest"))
    record("2x super-resolution", "bicubic upsampling", F.interpolate(low, scale_factor=2, mode="bicubic", align_corners=False))
    started = time.perf_counter()
    estimate = ddrm(net, schedule, SuperResolution(2), F.avg_pool2d(to_model_space(truth), 2), truth.shape, steps=args.ddrm_steps,
                    generator=seeded(), progress=True)
    record("2x super-resolution", f"DDRM, {args.ddrm_steps} steps", to_image_space(estimate), time.perf_counter() - started, args.ddrm_steps)

    # denoising: y = x + 0.2 z in [0, 1] (σ_y = 0.4 in the network's [−1, 1])
    noisy = truth + 0.2 * torch.randn(truth.shape, generator=seeded())
    pictures.append(noisy[:10].clamp(0, 1))
    record("denoising (σ = 0.2)", "noisy input", noisy)
    record("denoising (σ = 0.2)", "3x3 Gaussian blur (σ = 1)", gaussian_blur(noisy, [3, 3], [1.0, 1.0]))
    started = time.perf_counter()
    estimate = ddrm(net, schedule, Denoising(), noisy * 2 - 1, truth.shape, noise_std=0.4, steps=args.ddrm_steps,
                    generator=seeded(), progress=True)
    record("denoising (σ = 0.2)", f"DDRM, {args.ddrm_steps} steps", to_image_space(estimate), time.perf_counter() - started, args.ddrm_steps)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_image(torch.cat(pictures), args.out, nrow=10, padding=2, pad_value=1.0)
    print(f"{n} held-out mnist5k digits, {Path(args.run).name}; PSNR (peak 1) and L1 per pixel in [0, 1]; one posterior sample each")
    print("| task | method | PSNR (dB) | L1 | network evaluations per image | seconds |")
    print("|---|---|---:|---:|---:|---:|")
    for task, method, p, e, seconds, calls in rows:
        print(f"| {task} | {method} | {p:.2f} | {e:.4f} | {calls or '–'} | {f'{seconds:.0f}' if seconds else '–'} |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
