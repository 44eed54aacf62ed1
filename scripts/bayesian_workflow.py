"""The Bayesian workflow tables: r̂ / ESS of every NUTS run, PSIS-LOO and WAIC of FA vs PPCA vs GMM on the digits,
and SVI autoguides against NUTS on the Bayesian factor model; figures go to docs/images/.

    nice -n 15 .venv/bin/python scripts/bayesian_workflow.py

Data: the dequantized 8x8 digits ((k + u)/16, ppl_dgm/lvm/experiment.py), average-pooled to 4x4 (16 pixels, so
NUTS over every parameter stays affordable) and standardized with the training mean and sd; ``--train-size``
training digits drawn from the seeded train split, all 297 test digits held out; the pixels are permuted so that
well-loaded ones come first for each FA / PPCA size (``founders_first``). Each model is sampled by NUTS (``run_nuts``, chains from the EM
optimum; for the GMM the best of 10 random EM starts; one extra GMM run starts its chains at different optima),
LOO / WAIC by ``arviz.loo`` / ``arviz.waic`` / ``arviz.compare``, the held-out column is the log pointwise
predictive density log (1/S) Σ_s p(x̃ | θ_s) of the test digits. The Bayesian GMM is also checked against
exact EM on a well-separated 2-D toy (posterior means, infer_discrete assignments).
"""
from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import pyro
import torch


def pooled_digits(train_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train (train_size, 16), test (297, 16)) float64: 2x2-average-pooled dequantized digits, standardized on train."""
    from ppl_dgm.lvm.experiment import digits_vectors

    def pool(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x.reshape(-1, 1, 8, 8), 2).flatten(1)

    train, _ = digits_vectors("train", seed)
    test, _ = digits_vectors("test", seed)
    train = pool(train)[torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(seed))[:train_size]]
    mean, sd = train.mean(0), train.std(0)
    return (train - mean) / sd, (pool(test) - mean) / sd


def founders_first(x: torch.Tensor, latent_dim: int) -> torch.Tensor:
    """A permutation of the pixels that puts ``latent_dim`` well-loaded, mutually independent pixels first.

    The lower-triangular W identifies FA only if its top K x K block is well conditioned (Lopes & West 2004 call
    those variables the founders); pivoted QR of the K-factor EM loadings Wᵀ picks them (Golub & Van Loan, §5.4.1).
    The permutation changes no model's likelihood, only where the identifying constraint sits; it depends on K (a
    pixel can load on the fourth factor and hardly on the first two).
    """
    import scipy.linalg

    from ppl_dgm.lvm import FactorAnalysis

    fa = FactorAnalysis(x.shape[1], latent_dim).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        fa.fit_em(x, tol=1e-6, max_iter=1000)
    pivots = scipy.linalg.qr(fa.weight.detach().numpy().T, pivoting=True)[2]
    return torch.as_tensor(pivots)


def order_coordinate(x: torch.Tensor, num_components: int, seed: int) -> int:
    """The pixel in which EM's component means are farthest apart (largest smallest gap): the GMM's relabelling key."""
    from ppl_dgm.lvm import BayesianGaussianMixture

    locs = BayesianGaussianMixture(num_components, x.shape[1]).em_initial_values(x, seed=seed)["locs"]
    if num_components == 1:
        return 0
    return int(locs.sort(0).values.diff(dim=0).min(0).values.argmax())


def nuts_row(name: str, inference_data, seconds: float) -> dict:
    from ppl_dgm.analysis import diagnostics

    report = diagnostics(inference_data)
    divergences = int(np.asarray(inference_data.sample_stats["diverging"]).sum())
    return {"model": name, "r_hat_max": max(v["r_hat"] for v in report.values()), "ess_bulk_min": min(v["ess_bulk"] for v in report.values()),
            "ess_tail_min": min(v["ess_tail"] for v in report.values()), "divergences": divergences, "seconds": seconds}


def markdown(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """A markdown table from dict rows; columns are (key, header, format)."""
    lines = ["| " + " | ".join(header for _, header, _ in columns) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(format(row[key], spec) for key, _, spec in columns) + " |")
    return "\n".join(lines)


def toy_gmm(args, nuts_rows: list[dict]) -> str:
    """The well-separated 2-D toy: NUTS with the assignment enumerated against exact EM."""
    from ppl_dgm.analysis import posterior_draws, to_inference_data
    from ppl_dgm.lvm import BayesianGaussianMixture, GaussianMixture, run_nuts

    g = torch.Generator().manual_seed(args.seed)
    centres = torch.tensor([[-4.0, 0.0], [0.0, 3.0], [4.0, -1.0]])
    labels = torch.arange(300) % 3
    x = (centres[labels] + 0.7 * torch.randn(300, 2, generator=g)).double()
    model = BayesianGaussianMixture(3, 2)
    started = time.perf_counter()
    runs = run_nuts(model.model, x, num_samples=args.draws, warmup_steps=args.warmup, num_chains=args.chains, seed=args.seed, jit_compile=True,
                    init_values=[model.em_initial_values(x, seed=chain) for chain in range(args.chains)])
    seconds = time.perf_counter() - started
    inference_data = to_inference_data(runs, x, model=model.model, relabel=model.relabel)
    nuts_rows.append(nuts_row("toy GMM, K = 3, 2-D, N = 300", inference_data, seconds))
    em = GaussianMixture(3, 2, "diag", reg_covar=0.0).double()
    em.fit_em(x, tol=1e-10, max_iter=2000, generator=torch.Generator().manual_seed(0))
    order = em.locs[:, 0].argsort()
    draws = posterior_draws(inference_data)
    lines = []
    for name, mle in (("weights", em.weights[order]), ("locs", em.locs[order]), ("scales", em.scales[order])):
        gap = (draws[name].mean(0) - mle.detach()).abs()
        lines.append(f"{name}: max |posterior mean − EM| = {float(gap.max()):.4f} ({float((gap / draws[name].std(0)).max()):.2f} posterior sd)")
    assignments = model.sample_assignments(draws, x)
    agreement = float((torch.nn.functional.one_hot(assignments, 3).double().mean(0).argmax(1) == labels).double().mean())
    lines.append(f"infer_discrete: the most frequent assignment is the true cluster for {agreement:.1%} of the 300 points")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-size", type=int, default=300)
    parser.add_argument("--latent-sizes", type=int, nargs="+", default=[1, 2, 4], help="q of FA and PPCA")
    parser.add_argument("--components", type=int, nargs="+", default=[2, 4, 6], help="K of the GMM")
    parser.add_argument("--draws", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--svi-latent-dim", type=int, default=2, help="the FA whose NUTS posterior the guides are compared with")
    parser.add_argument("--svi-steps", type=int, default=3000, help="Adam steps at lr 0.02, then half as many at 0.002, then as many at 0.0003")
    parser.add_argument("--reference-draws", type=int, default=1000, help="NUTS draws per chain of the SVI reference")
    parser.add_argument("--guide-draws", type=int, default=1000)
    parser.add_argument("--images", default="docs/images")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ppl_dgm.analysis import compare_models, heldout_log_predictive_density, posterior_errors, to_inference_data
    from ppl_dgm.analysis.arviz import import_arviz
    from ppl_dgm.lvm import AUTOGUIDES, BayesianFactorAnalysis, BayesianGaussianMixture, BayesianPPCA, fit_autoguide, run_nuts

    az = import_arviz()
    torch.set_num_threads(1)
    pyro.enable_validation(False)
    os.makedirs(args.images, exist_ok=True)
    started_all = time.perf_counter()
    nuts_rows: list[dict] = []
    toy_report = toy_gmm(args, nuts_rows)

    x_digits, x_test_digits = pooled_digits(args.train_size, args.seed)
    models, columns = {}, {}  # columns: the pixel order each model sees (FA / PPCA: its founders first)
    for q in args.latent_sizes:
        columns[f"FA q={q}"] = columns[f"PPCA q={q}"] = founders_first(x_digits, q)
        models[f"FA q={q}"] = BayesianFactorAnalysis(16, q)
        models[f"PPCA q={q}"] = BayesianPPCA(16, q)
    for k in args.components:
        columns[f"GMM K={k}"] = torch.arange(16)
        models[f"GMM K={k}"] = BayesianGaussianMixture(k, 16, order_by=order_coordinate(x_digits, k, args.seed))
    inference_data, heldout = {}, {}
    for name, model in models.items():
        x, x_test = x_digits[:, columns[name]], x_test_digits[:, columns[name]]  # rows (the points LOO leaves out) unchanged
        if isinstance(model, BayesianGaussianMixture):
            # every chain starts at the best of 10 EM optima: on the digits the posterior has several modes (different
            # partitions) that NUTS does not cross, so r̂ here checks the mixing within the best one (see the extra row)
            init = model.em_initial_values(x, seed=args.seed, restarts=10)
        else:
            init = model.em_initial_values(x)
        started = time.perf_counter()
        runs = run_nuts(model.model, x, num_samples=args.draws, warmup_steps=args.warmup, num_chains=args.chains, seed=args.seed,
                        jit_compile=True, init_values=init)
        seconds = time.perf_counter() - started
        inference_data[name] = to_inference_data(runs, x, model=model.model, relabel=getattr(model, "relabel", None))
        heldout[name] = float(heldout_log_predictive_density(inference_data[name], model.model, x_test).sum())
        nuts_rows.append(nuts_row(f"digits {name}", inference_data[name], seconds))
        print(f"{name}: {seconds:.0f} s, r̂ max {nuts_rows[-1]['r_hat_max']:.3f}, held-out {heldout[name] / x_test.shape[0]:.3f} nats/digit", flush=True)
    # the multimodality the common start hides: chains from the best of 5 EM starts with different seeds
    k = args.components[0]
    model, x = BayesianGaussianMixture(k, 16, order_by=models[f"GMM K={k}"].order_by), x_digits
    started = time.perf_counter()
    runs = run_nuts(model.model, x, num_samples=args.draws, warmup_steps=args.warmup, num_chains=args.chains, seed=args.seed, jit_compile=True,
                    init_values=[model.em_initial_values(x, seed=args.seed + chain) for chain in range(args.chains)])
    separate = to_inference_data(runs, x, model=model.model, relabel=model.relabel, posterior_predictive=False, log_likelihood=False)
    nuts_rows.append(nuts_row(f"digits GMM K={k}, chains from different EM optima (not in the LOO table)", separate, time.perf_counter() - started))

    table = compare_models(inference_data, heldout)
    loo_rows = [{"model": name, "elpd_loo": row["elpd_loo"], "se": row["se"], "p_loo": row["p_loo"], "elpd_waic": row["elpd_waic"],
                 "p_waic": row["p_waic"], "k_max": row["pareto_k_max"], "k_bad": int(row["pareto_k_bad"]),
                 "heldout": row["heldout_lppd"] / x_test_digits.shape[0], "loo_rank": int(row["rank"]) + 1, "heldout_rank": int(row["heldout_rank"]) + 1}
                for name, row in table.iterrows()]
    from scipy.stats import kendalltau

    tau = kendalltau(table["rank"], table["heldout_rank"]).statistic
    same = list(table["rank"]) == list(table["heldout_rank"])

    # SVI against NUTS on the Bayesian FA of the table, with a longer NUTS run as the reference
    reference_name = f"FA q={args.svi_latent_dim}"
    reference_model, x = models[reference_name], x_digits[:, columns[reference_name]]
    started = time.perf_counter()
    runs = run_nuts(reference_model.model, x, num_samples=args.reference_draws, warmup_steps=args.warmup, num_chains=args.chains, seed=args.seed + 1,
                    jit_compile=True, init_values=reference_model.em_initial_values(x))
    reference = to_inference_data(runs, x, model=reference_model.model, posterior_predictive=False, log_likelihood=False)
    nuts_rows.append(nuts_row(f"digits {reference_name}, {args.reference_draws} draws per chain (SVI reference)", reference, time.perf_counter() - started))
    approximations, svi_seconds = {}, {}
    # every guide starts at the EM optimum, as the chains do; the last row starts the full-rank guide at Pyro's default
    # (the prior's median), where SVI, being mode-seeking, can settle in another, weakly identified mode
    starts = [(name, name, reference_model.em_initial_values(x)) for name in AUTOGUIDES]
    starts.append(("AutoMultivariateNormal, Pyro's default start", "AutoMultivariateNormal", None))
    for label, guide_name, init in starts:
        started = time.perf_counter()
        # the last, small rate matters: with 0.002 last, the means kept ≈ 0.12 NUTS sds of Adam's iterate noise
        # (a second seed gave uncorrelated errors of the same size)
        schedule = ((0.02, args.svi_steps), (0.002, args.svi_steps // 2), (0.0003, args.svi_steps))
        guide = fit_autoguide(reference_model.model, x, guide_name, schedule=schedule, init_values=init, seed=args.seed)
        svi_seconds[label] = time.perf_counter() - started
        approximations[label] = to_inference_data(guide, x, model=reference_model.model, num_samples=args.guide_draws,
                                                  posterior_predictive=False, log_likelihood=False)
    errors = posterior_errors(reference, approximations)
    svi_rows = [{"guide": name, **row, "seconds": svi_seconds[name]} for name, row in errors.to_dict("index").items()]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        axes = az.plot_forest([reference, *(approximations[name] for name in AUTOGUIDES)], model_names=["NUTS", *AUTOGUIDES],
                              var_names=["weight_diag", "noise_variance"], combined=True, figsize=(7, 9))
        axes[0].set_title(f"Bayesian FA (q = {args.svi_latent_dim}) on 4x4 digits: NUTS and SVI guides, 94% intervals")
        plt.savefig(os.path.join(args.images, "bayesian_fa_forest.png"), dpi=100, bbox_inches="tight")
        plt.close("all")
        best = table.index[0]
        worst = table.index[-1]
        fig, axes = plt.subplots(2, 4, figsize=(14, 6))
        for row_axes, name in zip(axes, (best, worst)):
            for ax, pixel in zip(row_axes, (5, 6, 9, 10)):
                position = int((columns[name] == pixel).nonzero())
                az.plot_ppc(inference_data[name], coords={"x_dim_1": [position]}, flatten=["x_dim_0"], num_pp_samples=min(50, args.chains * args.draws), ax=ax, legend=False)
                ax.set_title(f"{name}, pixel {pixel}")
        fig.suptitle("posterior predictive check: the four centre pixels (standardized), best and worst model by LOO")
        plt.tight_layout()
        plt.savefig(os.path.join(args.images, "bayesian_ppc_digits.png"), dpi=100, bbox_inches="tight")
        plt.close("all")

    total = time.perf_counter() - started_all
    print("\n## Bayesian GMM on the 2-D toy against exact EM\n")
    print(toy_report)
    print(f"\n## r̂ and ESS ({args.chains} chains x {args.draws} draws after {args.warmup} warm-up)\n")
    print(markdown(nuts_rows, [("model", "NUTS run", "s"), ("r_hat_max", "max r̂", ".3f"), ("ess_bulk_min", "min bulk ESS", ".0f"),
                               ("ess_tail_min", "min tail ESS", ".0f"), ("divergences", "divergences", "d"), ("seconds", "seconds", ".0f")]))
    print(f"\n## PSIS-LOO and WAIC on {args.train_size} pooled digits, held-out density on {x_test.shape[0]}\n")
    print(markdown(loo_rows, [("model", "model", "s"), ("elpd_loo", "elpd_loo", ".1f"), ("se", "se", ".1f"), ("p_loo", "p_loo", ".1f"),
                              ("elpd_waic", "elpd_waic", ".1f"), ("p_waic", "p_waic", ".1f"), ("k_max", "max Pareto k", ".2f"),
                              ("k_bad", "k > good_k", "d"), ("heldout", "held-out lppd (nats/digit)", ".3f"), ("loo_rank", "LOO rank", "d"),
                              ("heldout_rank", "held-out rank", "d")]))
    print(f"\nLOO ranking {'equals' if same else 'differs from'} the held-out ranking (Kendall τ = {tau:.3f})")
    print(f"\n## SVI guides against NUTS: Bayesian FA q = {args.svi_latent_dim} (errors in NUTS posterior sds)\n")
    print(markdown(svi_rows, [("guide", "guide", "s"), ("mean_error", "RMS mean error", ".3f"), ("mean_error_max", "max mean error", ".3f"),
                              ("sd_error", "RMS log sd ratio", ".3f"), ("sd_ratio", "sd ratio (geometric mean)", ".3f"),
                              ("reference_mcse", "NUTS MCSE of means", ".3f"), ("reference_mcse_sd", "NUTS MCSE of sds", ".3f"),
                              ("seconds", "SVI seconds", ".0f")]))
    print(f"\nfigures: {args.images}/bayesian_fa_forest.png, {args.images}/bayesian_ppc_digits.png; total {total / 60:.1f} min")


if __name__ == "__main__":
    main()
