"""Speed bars of the score-SDE samplers against named baselines, same network, same process, interleaved after warm-up.

(a) `sample_reverse_sde` (torchsde, Euler) vs a bare Euler–Maruyama loop, 200 steps, 10,000 2-D points.
(b) `ode_log_likelihood` (torchdiffeq dopri5) vs scipy `solve_ivp(method="RK45")` with a torch↔numpy copy per
    evaluation (score_sde_pytorch's likelihood.py), same rtol = atol, on 1,000 2-D points (exact divergence) and
    on 8x8 digits (Hutchinson, the same Rademacher vector for both). The reference baseline computes the
    divergence by reverse mode, one backward pass per dimension; "same field" gives scipy our forward-mode field.

    python scripts/bench_sde.py            # about 3 minutes on 2 CPU cores
"""
import argparse
import math
import time

import numpy as np
import torch

from ppl_dgm.data import load_dataset, toy2d
from ppl_dgm.nn import TimeConditionedMLP, UNet
from ppl_dgm.sde import VPSDE, ode_log_likelihood, probability_flow_field, sample_reverse_sde, score_fn, score_sde_loss
from ppl_dgm.sde.flow import _exact_divergence


def train_briefly(net, data, sde, steps, batch_size=512, lr=2e-3):
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = data[torch.randint(0, data.shape[0], (batch_size,), generator=generator)]
        loss = score_sde_loss(net, sde, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net.eval().requires_grad_(False)


@torch.no_grad()
def bare_euler_maruyama(net, sde, x_T, steps, eps, generator):
    """Baseline: x ← x − f̄Δt + g√Δt z on t_i = T − iΔt, then a noise-free last step (what sample_reverse_sde does)."""
    reverse, dt, x = sde.reverse(score_fn(net, sde)), (sde.T - eps) / steps, x_T.clone()
    for i in range(steps):
        t = torch.full((x.shape[0],), sde.T - i * dt, dtype=torch.float64)
        drift, diffusion = reverse._drift_diffusion(x, t)
        x = x - drift * dt
        if i < steps - 1:
            x = x + diffusion.to(x.dtype)[:, None] * math.sqrt(dt) * torch.randn(x.shape, generator=generator)
    return x


def scipy_rk45_log_likelihood(net, sde, x, eps, tol, divergence, noise=None, field=None):
    """Baseline: scipy RK45 on the flat state [x, Δlogp] with torch↔numpy copies each evaluation (score_sde_pytorch)."""
    from scipy.integrate import solve_ivp

    field = field or probability_flow_field(net, sde, eps)
    shape, batch = x.shape, x.shape[0]

    def reference_divergence(point, t):
        with torch.enable_grad():
            point = point.detach().requires_grad_(True)
            drift = field(point, t)
            if noise is not None:  # Hutchinson: one backward pass
                (vjp,) = torch.autograd.grad(drift, point, noise)
                return drift.detach(), (vjp * noise).reshape(batch, -1).sum(1)
            total = torch.zeros(batch, dtype=point.dtype)
            for i in range(point.shape[1]):  # exact: one backward pass per dimension
                (column,) = torch.autograd.grad(drift[:, i].sum(), point, retain_graph=i < point.shape[1] - 1)
                total = total + column[:, i]
            return drift.detach(), total

    def fun(t, state):
        point = torch.from_numpy(state[: -batch]).reshape(shape).to(x.dtype)
        time = torch.tensor(t, dtype=torch.float64)
        drift, div = divergence(point, time) if divergence is not None else reference_divergence(point, time)
        return np.concatenate([drift.reshape(-1).double().numpy(), div.double().numpy()])

    start = np.concatenate([x.reshape(-1).double().numpy(), np.zeros(batch)])
    solution = solve_ivp(fun, (eps, sde.T), start, rtol=tol, atol=tol, method="RK45")
    z = torch.from_numpy(solution.y[:-batch, -1]).reshape(shape)
    return sde.prior_logp(z) + torch.from_numpy(solution.y[-batch:, -1]), solution.nfev


def interleaved(functions: dict, repeats: int):
    """Best-of-``repeats`` wall time of each function, run round-robin after one warm-up each."""
    results = {name: fn() for name, fn in functions.items()}  # warm-up (and the values)
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return results, {name: min(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sde = VPSDE()
    data = toy2d("checkerboard", 20000, torch.Generator().manual_seed(0))
    net = train_briefly(TimeConditionedMLP(2, hidden=(128, 128, 128)), data, sde, steps=300, batch_size=256)
    rows = []

    # (a) reverse SDE: torchsde Euler vs a bare loop, 500 steps, 10,000 points
    steps, eps = 200, 1e-3
    x_T = torch.randn(10000, 2, generator=torch.Generator().manual_seed(1))
    _, seconds = interleaved({
        "bare": lambda: bare_euler_maruyama(net, sde, x_T, steps, eps, torch.Generator().manual_seed(2)),
        "torchsde": lambda: sample_reverse_sde(net, sde, x_T.shape, steps=steps, eps=eps, x_T=x_T, generator=torch.Generator().manual_seed(2)),
    }, args.repeats)
    rows.append(("(a) reverse SDE, Euler, 200 steps, 10k 2-D", "bare Euler–Maruyama loop", seconds["bare"], seconds["torchsde"], "", "", ""))

    # (b) ODE likelihood, 2-D, exact divergence
    tol, eps = 1e-5, 1e-5
    x = toy2d("checkerboard", 1000, torch.Generator().manual_seed(3))
    field = probability_flow_field(net, sde, eps)
    results, seconds = interleaved({
        "scipy": lambda: scipy_rk45_log_likelihood(net, sde, x, eps, tol, None),
        
        "torchdiffeq": lambda: ode_log_likelihood(net, sde, x, eps=eps, rtol=tol, atol=tol, divergence="exact"),
    }, args.repeats)
    ours = results["torchdiffeq"]
    for key, label in (("scipy", "scipy RK45 + host copies"),):
        baseline, nfe = results[key]
        difference = float((ours.log_likelihood - baseline).abs().max())
        rows.append(("(b) ODE NLL, 1,000 2-D, exact div", label, seconds[key], seconds["torchdiffeq"], f"{nfe} vs {ours.nfe}",
                     f"{difference:.1e} nats", f"{-float(ours.log_likelihood.mean()):.4f} nats"))

    # (b') ODE bits/dim on 8x8 digits, Hutchinson, the same Rademacher vector for both
    images = load_dataset("digits", "test").tensors[0][:64]
    unet = UNet(1, 16, (1, 2), 1, (), 0.0, groups=8, image_size=8)
    digits = load_dataset("digits", "train").tensors[0] * 2 - 1
    unet = train_briefly(unet, digits, sde, steps=60, batch_size=128)
    x = images * 2 - 1
    noise = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(4)).float() * 2 - 1
    dims = x[0].numel()

    def to_bits(log_likelihood):
        return float(((-log_likelihood - dims * math.log(2.0)) / dims + math.log(256.0)).mean() / math.log(2.0))

    results, seconds = interleaved({
        "scipy": lambda: scipy_rk45_log_likelihood(unet, sde, x, eps, tol, None, noise=noise),
        "torchdiffeq": lambda: ode_log_likelihood(unet, sde, x, eps=eps, rtol=tol, atol=tol, divergence="hutchinson",
                                                  generator=torch.Generator().manual_seed(4)),
    }, args.repeats)
    ours, (baseline, nfe) = results["torchdiffeq"], results["scipy"]
    rows.append(("(b) ODE bits/dim, 64 digits 8x8, Hutchinson", "scipy RK45 + host copies", seconds["scipy"], seconds["torchdiffeq"],
                 f"{nfe} vs {ours.nfe}", f"{abs(to_bits(ours.log_likelihood) - to_bits(baseline)):.1e} bits/dim", f"{to_bits(ours.log_likelihood):.3f} bits/dim"))

    print(f"{'case':46s} {'baseline':48s} {'base s':>8s} {'ours s':>8s} {'ratio':>6s}  {'NFE base vs ours':>16s}  {'|Δ|':>16s}  value")
    for case, baseline, base_s, ours_s, nfe, diff, value in rows:
        print(f"{case:46s} {baseline:48s} {base_s:8.3f} {ours_s:8.3f} {ours_s / base_s:5.2f}x  {nfe:>16s}  {diff:>16s}  {value}")


if __name__ == "__main__":
    main()
