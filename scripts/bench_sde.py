"""Speed bars of the score-SDE samplers against named baselines, same network, same process, interleaved after warm-up.

(a) `sample_reverse_sde` (torchsde, Euler) vs a bare Euler–Maruyama loop, 200 steps, 10,000 2-D points.
(b) `ode_log_likelihood` (torchdiffeq dopri5, tuple state (x, Δlogp)) vs score_sde_pytorch's likelihood.py:
    scipy `solve_ivp(method="RK45")` on the flat float64 state [x, Δlogp] with torch↔numpy copies at every
    evaluation. Both integrate the same probability-flow field (`probability_flow_field`) over [eps, T] with
    the same rtol = atol and, for images, the same Rademacher vector.
    "score_sde" is score_sde_pytorch's ode_func as written: the drift from one forward pass, the divergence
    from a second one (Hutchinson–Skilling: one vjp of Σ f̃·ε; in 2-D exact: one backward pass per dimension).
    "shared pass" gives scipy our divergence functions (drift and divergence from one forward pass), so only
    the solver and the host copies differ.
    Both networks are trained here from fixed seeds (Adam, cosine decay; 1.3-2 minutes on one core), so the
    bench is self-contained and repeatable: 2,000 steps of a 3x128 MLP on checkerboard, 1,500 steps of a
    small U-Net on the 8x8 digits.

    python scripts/bench_sde.py                # 5 minutes on a quiet core, 9-11 with a training job beside it
    python scripts/bench_sde.py --converged    # + each solver's error against rtol = atol = 1e-8
    python scripts/bench_sde.py --tol 1e-5 1e-6   # the (b) rows at each common tolerance
    python scripts/bench_sde.py --device cuda     # networks and our solvers on the GPU; scipy copies device↔host
"""
import argparse
import math
import time

import numpy as np
import torch

from ppl_dgm.data import load_dataset, toy2d
from ppl_dgm.nn import TimeConditionedMLP, UNet
from ppl_dgm.sde import VPSDE, ode_log_likelihood, probability_flow_field, sample_reverse_sde, score_fn, score_sde_loss
from ppl_dgm.sde.flow import _exact_divergence, _hutchinson_divergence
from ppl_dgm.train.device import resolve_device


def train(net, data, sde, steps, batch_size, lr=2e-3, seed=0):
    """Adam with a cosine learning-rate decay to 0; batches and loss noise from one seeded generator on data's device."""
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator(device=data.device).manual_seed(seed)
    started, losses = time.perf_counter(), []
    for _ in range(steps):
        batch = data[torch.randint(0, data.shape[0], (batch_size,), generator=generator, device=data.device)]
        loss = score_sde_loss(net, sde, batch, generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    print(f"trained {type(net).__name__}: {steps} steps in {time.perf_counter() - started:.0f} s, "
          f"loss over the last 200 steps {np.mean(losses[-200:]):.4f}", flush=True)
    return net.eval().requires_grad_(False)


@torch.no_grad()
def bare_euler_maruyama(net, sde, x_T, steps, eps, generator):
    """Baseline: x ← x − f̄Δt + g√Δt z on t_i = T − iΔt, then a noise-free last step (what sample_reverse_sde does)."""
    reverse, dt, x = sde.reverse(score_fn(net, sde)), (sde.T - eps) / steps, x_T.clone()
    for i in range(steps):
        t = torch.full((x.shape[0],), sde.T - i * dt, dtype=torch.float64, device=x.device)
        drift, diffusion = reverse._drift_diffusion(x, t)
        x = x - drift * dt
        if i < steps - 1:
            x = x + diffusion.to(x.dtype)[:, None] * math.sqrt(dt) * torch.randn(x.shape, generator=generator, device=x.device)
    return x


def hutchinson_skilling(field, noise):
    """score_sde_pytorch's get_div_fn: ε·∇(Σ f̃·ε) with one vjp, returning (f̃, estimate (B,))."""

    def divergence(point, t):
        with torch.enable_grad():
            point = point.detach().requires_grad_(True)
            drift = field(point, t)
            (gradient,) = torch.autograd.grad((drift * noise).sum(), point)
        return drift.detach(), (gradient * noise).reshape(point.shape[0], -1).sum(1)

    return divergence


@torch.no_grad()
def scipy_rk45_log_likelihood(field, divergence, sde, x, eps, tol, separate_drift):
    """Baseline: scipy RK45 on the flat float64 state [x, Δlogp], torch↔numpy (device↔host) copies each evaluation.

    ``separate_drift``: the drift from its own forward pass before the divergence's (score_sde_pytorch's
    ode_func); otherwise the drift that ``divergence(point, t) -> (drift, div)`` computed on the way.
    Returns log p (B,) float64 nats and scipy's count of evaluations.
    """
    from scipy.integrate import solve_ivp

    shape, batch = x.shape, x.shape[0]

    def fun(t, state):
        point = torch.from_numpy(state[:-batch]).reshape(shape).to(device=x.device, dtype=x.dtype)
        time = torch.tensor(t, dtype=torch.float64, device=x.device)
        if separate_drift:
            drift = field(point, time)
            _, div = divergence(point, time)
        else:
            drift, div = divergence(point, time)
        return np.concatenate([drift.reshape(-1).double().cpu().numpy(), div.double().cpu().numpy()])

    start = np.concatenate([x.reshape(-1).double().cpu().numpy(), np.zeros(batch)])
    solution = solve_ivp(fun, (eps, sde.T), start, rtol=tol, atol=tol, method="RK45")
    z = torch.from_numpy(solution.y[:-batch, -1]).reshape(shape).to(x.device)
    return sde.prior_logp(z) + torch.from_numpy(solution.y[-batch:, -1]).to(x.device), solution.nfev


def synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def interleaved(functions: dict, repeats: int):
    """Best-of-``repeats`` wall time of each function (CUDA work synchronized), run round-robin after one warm-up each."""
    results = {name: fn() for name, fn in functions.items()}  # warm-up (and the values)
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            synchronize()
            start = time.perf_counter()
            fn()
            synchronize()
            times[name].append(time.perf_counter() - start)
    return results, {name: min(values) for name, values in times.items()}


def likelihood_rows(case, ours, results, seconds, to_value, unit, labels, converged=None):
    """One table row per baseline: times, NFE of both, |Δ| of the mean figure and the largest per-example |Δ| in nats.

    With a ``converged`` log-likelihood (ours at rtol = atol = 1e-8), one more row gives each solver's error against it.
    """
    rows = []
    if converged is not None:
        truth = to_value(converged)
        errors = {"ours": to_value(ours.log_likelihood) - truth, **{key: to_value(results[key][0]) - truth for key in labels}}
        rows.append((case, "error of the mean vs rtol = atol = 1e-8", math.nan, math.nan, "", "",
                     ", ".join(f"{key} {error:+.1e}" for key, error in errors.items()), "", ""))
    for key, label in labels.items():
        baseline, nfe = results[key]
        mean_difference = abs(to_value(ours.log_likelihood) - to_value(baseline))
        worst = float((ours.log_likelihood - baseline).abs().max())
        per_nfe = f"{1e3 * seconds[key] / nfe:.1f} / {1e3 * seconds['ours'] / ours.nfe:.1f}"
        rows.append((case, label, seconds[key], seconds["ours"], f"{nfe} / {ours.nfe}", per_nfe, f"{mean_difference:.1e} {unit}",
                     f"{worst:.1e} nats", f"{to_value(ours.log_likelihood):.4f} {unit}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto: networks and our solvers run there; the scipy baseline copies to the host")
    parser.add_argument("--seed", type=int, default=0, help="seeds the bench networks' training and every draw (seed + k)")
    parser.add_argument("--tol", type=float, nargs="+", default=[1e-5],
                        help="rtol = atol of both likelihood solvers; several give one pair of (b) rows each (default 1e-5, the issue's)")
    parser.add_argument("--converged", action="store_true", help="also solve at rtol = atol = 1e-8 and print each solver's error (+3 minutes)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    print(f"device: {device}", flush=True)
    sde = VPSDE()
    data = toy2d("checkerboard", 20000, torch.Generator().manual_seed(args.seed + 0)).to(device)
    net = train(TimeConditionedMLP(2, hidden=(128, 128, 128)).to(device), data, sde, steps=2000, batch_size=512, seed=args.seed)
    unet = UNet(1, 16, (1, 2), 1, (), 0.0, groups=8, image_size=8).to(device)
    digits = (load_dataset("digits", "train").tensors[0] * 2 - 1).to(device)
    unet = train(unet, digits, sde, steps=1500, batch_size=128, seed=args.seed)
    rows = []

    # (a) reverse SDE: torchsde Euler vs a bare loop, 200 steps, 10,000 points
    steps, eps = 200, 1e-3
    x_T = torch.randn(10000, 2, generator=torch.Generator().manual_seed(args.seed + 1)).to(device)
    _, seconds = interleaved({
        "bare": lambda: bare_euler_maruyama(net, sde, x_T, steps, eps, torch.Generator(device=device).manual_seed(args.seed + 2)),
        "torchsde": lambda: sample_reverse_sde(net, sde, x_T.shape, steps=steps, eps=eps, x_T=x_T,
                                               generator=torch.Generator(device=device).manual_seed(args.seed + 2)),
    }, args.repeats)
    rows.append(("(a) reverse SDE, Euler, 200 steps, 10k 2-D", "bare Euler–Maruyama loop", seconds["bare"], seconds["torchsde"], "", "", "", "", ""))

    eps, converged_2d, converged_digits = 1e-5, None, None
    for tol in args.tol:  # rtol = atol, the same for both solvers
        # (b) ODE NLL, 1,000 2-D points, exact divergence
        x = toy2d("checkerboard", 1000, torch.Generator().manual_seed(args.seed + 3)).to(device)
        field = probability_flow_field(net, sde, eps)
        exact = lambda point, t: _exact_divergence(field, point, t)  # noqa: E731
        results, seconds = interleaved({
            "score_sde": lambda: scipy_rk45_log_likelihood(field, exact, sde, x, eps, tol, separate_drift=True),
            "shared": lambda: scipy_rk45_log_likelihood(field, exact, sde, x, eps, tol, separate_drift=False),
            "ours": lambda: ode_log_likelihood(net, sde, x, eps=eps, rtol=tol, atol=tol, divergence="exact"),
        }, args.repeats)
        if args.converged and converged_2d is None:
            converged_2d = ode_log_likelihood(net, sde, x, eps=eps, rtol=1e-8, atol=1e-8, divergence="exact").log_likelihood
        rows += likelihood_rows(f"(b) ODE NLL, 1,000 2-D, exact, tol {tol:g}", results["ours"], results, seconds,
                                lambda log_likelihood: -float(log_likelihood.mean()), "nats",
                                {"score_sde": "scipy RK45 + copies, score_sde (2 passes)", "shared": "scipy RK45 + copies, shared pass"}, converged_2d)

        # (b') ODE bits/dim, 64 held-out 8x8 digits (not dequantized), Hutchinson with the same Rademacher vector
        x = (load_dataset("digits", "test").tensors[0][:64] * 2 - 1).to(device)
        noise = torch.randint(0, 2, x.shape, generator=torch.Generator(device=device).manual_seed(args.seed + 4),
                              device=device).to(x.dtype) * 2 - 1  # = ode_log_likelihood's draw
        field = probability_flow_field(unet, sde, eps)
        dims = x[0].numel()

        def to_bits(log_likelihood):
            return float(((-log_likelihood - dims * math.log(2.0)) / dims + math.log(256.0)).mean() / math.log(2.0))

        results, seconds = interleaved({
            "score_sde": lambda: scipy_rk45_log_likelihood(field, hutchinson_skilling(field, noise), sde, x, eps, tol, separate_drift=True),
            "shared": lambda: scipy_rk45_log_likelihood(field, lambda point, t: _hutchinson_divergence(field, point, t, noise), sde, x, eps, tol,
                                                        separate_drift=False),
            "ours": lambda: ode_log_likelihood(unet, sde, x, eps=eps, rtol=tol, atol=tol, divergence="hutchinson",
                                               generator=torch.Generator(device=device).manual_seed(args.seed + 4)),
        }, args.repeats)
        if args.converged and converged_digits is None:
            converged_digits = ode_log_likelihood(unet, sde, x, eps=eps, rtol=1e-8, atol=1e-8, divergence="hutchinson",
                                                  generator=torch.Generator(device=device).manual_seed(args.seed + 4)).log_likelihood
        rows += likelihood_rows(f"(b) ODE bits/dim, 64 digits 8x8, Hutch., tol {tol:g}", results["ours"], results, seconds, to_bits, "bits/dim",
                                {"score_sde": "scipy RK45 + copies, score_sde (2 passes)", "shared": "scipy RK45 + copies, shared pass"},
                                converged_digits)

    print(f"\nrtol = atol = tol, [eps, T] = [{eps:g}, 1], {device}, {args.threads} thread(s); best of {args.repeats} after a warm-up; "
          "ratio = ours / baseline; |Δ| of the mean figure and the largest per-example |Δ log p|")
    print(f"{'case':52s} {'baseline':42s} {'base s':>7s} {'ours s':>7s} {'ratio':>6s} {'NFE base/ours':>14s} {'ms/NFE b/o':>11s} "
          f"{'|Δ mean|':>17s} {'max |Δ|':>12s}  ours")
    for case, baseline, base_s, ours_s, nfe, per_nfe, difference, worst, value in rows:
        if math.isnan(base_s):  # the accuracy row of --converged
            print(f"{case:52s} {baseline:42s} {difference}")
            continue
        print(f"{case:52s} {baseline:42s} {base_s:7.2f} {ours_s:7.2f} {ours_s / base_s:5.2f}x {nfe:>14s} {per_nfe:>11s} {difference:>17s} "
              f"{worst:>12s}  {value}")


if __name__ == "__main__":
    main()
