"""Speed bars of the DDPM samplers and training step against hand-written torch loops, same network, same process.

Network: the default mnist5k U-Net, ``build_unet(DDPMConfig())`` (1.1 M parameters, untrained; timing only), in eval
mode for sampling. Each pair runs round-robin after a warm-up; the best of ``--repeats`` is reported.

(a) ``sample_ancestral`` vs a bare loop of Ho et al. 2020, Alg. 2, over the first ``--steps`` β's of the T = 1000
    linear schedule (the full schedule by default), ``--batch`` images; both from the same seeded generator, so
    the samples must agree exactly (max |Δ| printed).
(b) ``sample_ddim`` (η = 0, 50 steps) vs a bare loop of Song et al. 2021, eq. 12, likewise.
(a', b') The same pairs with a trivial ε-network (ε = w·x): the per-step overhead of the loops alone, the
    regime of a small network on a GPU.
(c) One L_simple training step (Ho et al. 2020, Alg. 1: loss, backward, Adam) at ``--train-batch`` images:
    ``simple_loss`` vs a hand-written loss; the ``train ddpm`` step (+ EMA + grad clip); on CUDA with
    ``--amp bf16`` the same step under ``torch.autocast(dtype=torch.bfloat16)``. Images/s = batch / step time.

    python scripts/bench_diffusion.py --seed 0 --threads 2             # ~6 min on 2 CPU cores
    python scripts/bench_diffusion.py --steps 20 --batch 8 --train-steps 1 --repeats 1   # a quick check
"""
import argparse
import time

import torch
from torch import nn

from ppl_dgm.diffusion import NoiseSchedule, linear_schedule, sample_ancestral, sample_ddim, simple_loss
from ppl_dgm.diffusion.experiment import DDPMConfig, build_unet
from ppl_dgm.train.device import resolve_device
from ppl_dgm.train.ema import make_ema


def best_of_interleaved(functions: dict, repeats: int, synchronize) -> tuple[dict, dict]:
    """Best-of-``repeats`` wall time of each function, run round-robin (call warm-ups first); returns (last values, seconds)."""
    values, times = {}, {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            synchronize()
            start = time.perf_counter()
            values[name] = fn()
            synchronize()
            times[name].append(time.perf_counter() - start)
    return values, {name: min(seconds) for name, seconds in times.items()}


@torch.no_grad()
def bare_ancestral(net: nn.Module, betas: torch.Tensor, shape, generator: torch.Generator) -> torch.Tensor:
    """Baseline: Ho et al. 2020, Alg. 2 written out, coefficients from float32 tables made once."""
    device = betas.device
    alphas = 1.0 - betas.double()
    alpha_bar = torch.cumprod(alphas, 0)
    betas, alphas, alpha_bar = betas.float(), alphas.float(), alpha_bar.float()
    num_steps = betas.shape[0]
    x = torch.randn(shape, generator=generator, device=device)  # line 1: x_T ~ N(0, I)
    for i in range(num_steps - 1, -1, -1):  # line 2: t = T, ..., 1 (index i = t − 1)
        t = torch.full((shape[0],), (i + 1) / num_steps, device=device)
        eps = net(x, t)
        x = (x - betas[i] / (1.0 - alpha_bar[i]).sqrt() * eps) / alphas[i].sqrt()  # line 4, σ_t = √β_t
        if i > 0:
            x = x + betas[i].sqrt() * torch.randn(shape, generator=generator, device=device)  # line 3: z = 0 at t = 1
    return x


@torch.no_grad()
def bare_ddim(net: nn.Module, betas: torch.Tensor, shape, steps: int, generator: torch.Generator) -> torch.Tensor:
    """Baseline: Song et al. 2021, eq. 12 with η = 0 over τ = round(1 + k (T − 1)/(S − 1)), written out."""
    device = betas.device
    num_steps = betas.shape[0]
    alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1.0 - betas.double().cpu(), 0)]).to(device, torch.float32)
    taus = sorted({round(1 + k * (num_steps - 1) / (steps - 1)) for k in range(steps)}) if steps > 1 else [num_steps]
    x = torch.randn(shape, generator=generator, device=device)
    for step, prev in zip(reversed(taus), reversed([0] + taus[:-1])):
        a_t, a_prev = alpha_bar[step], alpha_bar[prev]
        eps = net(x, torch.full((shape[0],), step / num_steps, device=device))
        x0 = (x - (1.0 - a_t).sqrt() * eps) / a_t.sqrt()
        x = a_prev.sqrt() * x0 + (1.0 - a_prev).sqrt() * eps
    return x


def bare_simple_loss(net: nn.Module, alpha_bar: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Baseline: Ho et al. 2020, Alg. 1 written out (same RNG calls in the same order as ``simple_loss``)."""
    num_steps = alpha_bar.shape[0]
    t = torch.randint(1, num_steps + 1, (x0.shape[0],), device=x0.device)
    noise = torch.randn_like(x0)
    a = alpha_bar[t - 1].view(-1, 1, 1, 1)
    prediction = net(a.sqrt() * x0 + (1.0 - a).sqrt() * noise, t.to(x0.dtype) / num_steps)
    return (noise - prediction).pow(2).mean()


def matmul_peak(device: torch.device, dtype: torch.dtype, synchronize, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of the best of ``repeats`` (size x size) @ (size x size) products in ``dtype``: the machine's matmul peak."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        synchronize()
        started = time.perf_counter()
        a @ b
        synchronize()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def training_step_flops(x0: torch.Tensor, schedule, device: torch.device) -> float:
    """FLOPs of one L_simple forward + backward of the default U-Net on ``x0`` (torch.utils.flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    net = build_unet(DDPMConfig()).to(device)
    torch.manual_seed(0)
    with FlopCounterMode(display=False) as counter:
        simple_loss(net, schedule, x0).backward()
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=1000, help="ancestral steps timed: the first STEPS β's of the T=1000 schedule")
    parser.add_argument("--batch", type=int, default=8, help="images per sampler call")
    parser.add_argument("--ddim-steps", type=int, default=50)
    parser.add_argument("--train-batch", type=int, default=128)
    parser.add_argument("--train-steps", type=int, default=5, help="training steps per timed call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--amp", default="bf16", choices=("none", "bf16"), help="add a bf16-autocast training row (CUDA only)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(args.seed)
    net = build_unet(DDPMConfig()).to(device).eval()
    full = linear_schedule(1000)
    if not 1 <= args.steps <= full.num_steps:
        raise SystemExit(f"--steps must lie in 1..{full.num_steps}, got {args.steps}")
    schedule = NoiseSchedule(full.betas[: args.steps])  # per-step cost does not depend on which β's
    betas = schedule.betas.to(device)
    shape = (args.batch, 1, 28, 28)
    seeded = lambda: torch.Generator(device=device).manual_seed(args.seed)  # noqa: E731
    rows = []
    print(f"device {device}, {torch.get_num_threads()} threads, U-Net {sum(p.numel() for p in net.parameters()):,} parameters, "
          f"torch {torch.__version__}")

    # (a) ancestral sampling (warm-up: a 5-step schedule for both)
    warm = NoiseSchedule(full.betas[:5])
    bare_ancestral(net, warm.betas.to(device), shape, seeded()), sample_ancestral(net, warm, shape, generator=seeded())
    values, seconds = best_of_interleaved({
        "bare": lambda: bare_ancestral(net, betas, shape, seeded()),
        "ours": lambda: sample_ancestral(net, schedule, shape, generator=seeded()),
    }, args.repeats, synchronize)
    difference = float((values["ours"] - values["bare"]).abs().max())
    rows.append((f"(a) ancestral, {args.steps} steps, batch {args.batch}", "bare Alg. 2 loop", seconds["bare"], seconds["ours"], f"{difference:.1e}"))

    # (b) DDIM, η = 0
    ddim_steps = min(args.ddim_steps, schedule.num_steps)
    values, seconds = best_of_interleaved({
        "bare": lambda: bare_ddim(net, betas, shape, ddim_steps, seeded()),
        "ours": lambda: sample_ddim(net, schedule, shape, steps=ddim_steps, generator=seeded()),
    }, args.repeats, synchronize)  # the network is warm from (a)
    difference = float((values["ours"] - values["bare"]).abs().max())
    rows.append((f"(b) DDIM η=0, {ddim_steps} steps, batch {args.batch}", "bare eq. 12 loop", seconds["bare"], seconds["ours"], f"{difference:.1e}"))

    # (a', b') the loops' own overhead: a trivial ε-network
    class ScaledInput(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.tensor(0.1, device=device))

        def forward(self, x, t):
            return self.weight * x

    trivial = ScaledInput()
    for name, bare, ours in (
        (f"(a') ancestral, trivial ε, {args.steps} steps", lambda: bare_ancestral(trivial, betas, shape, seeded()),
         lambda: sample_ancestral(trivial, schedule, shape, generator=seeded())),
        (f"(b') DDIM η=0, trivial ε, {ddim_steps} steps", lambda: bare_ddim(trivial, betas, shape, ddim_steps, seeded()),
         lambda: sample_ddim(trivial, schedule, shape, steps=ddim_steps, generator=seeded())),
    ):
        bare(), ours()  # warm-up
        values, seconds = best_of_interleaved({"bare": bare, "ours": ours}, max(args.repeats, 5), synchronize)
        difference = float((values["ours"] - values["bare"]).abs().max())
        rows.append((name, "the same bare loop", seconds["bare"], seconds["ours"], f"{difference:.1e}"))

    # (c) training steps: the same network weights and data for every variant
    x0 = torch.rand((args.train_batch, 1, 28, 28), generator=torch.Generator().manual_seed(args.seed)).to(device) * 2 - 1
    state = {k: v.clone() for k, v in build_unet(DDPMConfig()).state_dict().items()}
    alpha_bar = full.alpha_bar.to(device, torch.float32)

    def trainer(kind: str, autocast: bool = False):
        net = build_unet(DDPMConfig()).to(device)
        net.load_state_dict(state)
        net.train()
        ema = make_ema(net, 0.9999)
        parameters = list(net.parameters())
        optimizer = torch.optim.Adam(parameters, lr=2e-4)

        def run() -> float:
            torch.manual_seed(args.seed)
            for _ in range(args.train_steps):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    loss = bare_simple_loss(net, alpha_bar, x0) if kind == "bare" else simple_loss(net, full, x0)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if kind == "train ddpm":
                    nn.utils.clip_grad_norm_(parameters, 1.0)
                optimizer.step()
                if kind == "train ddpm":  # what fit does after each step of a DDPM run
                    ema.update_parameters(net)
            return loss.detach().float()

        return run

    variants = {"bare": trainer("bare"), "ours": trainer("ours"), "train ddpm": trainer("train ddpm")}
    if args.amp == "bf16":  # CUDA, and CPUs with bf16 matmul units (avx512_bf16 / AMX)
        variants["bf16"] = trainer("train ddpm", autocast=True)
    for run in variants.values():
        run()  # warm-up
    for name in variants:  # the same starting weights again for the timed rounds
        variants[name] = trainer(name if name != "bf16" else "train ddpm", autocast=name == "bf16")
    values, seconds = best_of_interleaved(variants, args.repeats, synchronize)
    per_step = {name: s / args.train_steps for name, s in seconds.items()}
    label = f"(c) L_simple step, batch {args.train_batch}"
    first_loss = abs(float(values["ours"] - values["bare"]))
    rows.append((f"{label}: simple_loss", "bare Alg. 1 step", per_step["bare"], per_step["ours"], f"{first_loss:.1e} (loss)"))
    rows.append((f"{label}: + EMA + clip (train ddpm)", "bare Alg. 1 step", per_step["bare"], per_step["train ddpm"], ""))
    if "bf16" in per_step:
        rows.append((f"{label}: train ddpm, bf16 autocast", "train ddpm step, fp32", per_step["train ddpm"], per_step["bf16"], ""))

    print(f"\n{'case':56s} {'baseline':24s} {'base s':>9s} {'ours s':>9s} {'ratio':>7s}  {'max |Δ|':>16s}")
    for case, baseline, base_s, ours_s, difference in rows:
        print(f"{case:56s} {baseline:24s} {base_s:9.4f} {ours_s:9.4f} {ours_s / base_s:6.3f}x  {difference:>16s}")
    print()
    step_flops = training_step_flops(x0, full, device)
    peaks = {dtype: matmul_peak(device, dtype, synchronize) for dtype in (torch.float32, torch.bfloat16)}
    for name, s in per_step.items():
        dtype = torch.bfloat16 if name == "bf16" else torch.float32
        achieved = step_flops / s
        print(f"training, {name:10s}: {s * 1000:8.1f} ms/step, {args.train_batch / s:8.1f} images/s, {achieved / 1e9:7.1f} GFLOP/s "
              f"= {100 * achieved / peaks[dtype]:4.1f}% of the measured {str(dtype).removeprefix('torch.')} matmul peak "
              f"({peaks[dtype] / 1e9:.0f} GFLOP/s)")
    print("ratio goal for the samplers: <= 1.05x")


if __name__ == "__main__":
    main()
