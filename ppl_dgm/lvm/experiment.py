"""Fit / load / evaluate a classical latent-variable model on flattened ``digits`` (what ``ppl-dgm train gmm|fa|ppca`` calls).

The 8x8 digits take 17 grey levels and several pixels are constant, so a density on the raw values
is degenerate (the log-likelihood grows without bound as a variance shrinks to 0). We fit the
uniformly dequantized values (k + u) / 16, u ~ U[0, 1), seeded, the convention of Theis et al. 2016;
every model, ours and scikit-learn's, sees the same dequantized split.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ppl_dgm._checks import check_positive_int, check_seed

__all__ = ["LVMConfig", "MODELS", "digits_vectors", "build_lvm", "fit_lvm", "train_lvm", "load_lvm_run"]

MODELS = ("gmm", "fa", "ppca")


@dataclass
class LVMConfig:
    """Everything that defines a run; saved as ``config.json``."""

    model: str = "gmm"
    components: int = 10
    latent_dim: int = 10
    covariance: str = field(default="full", metadata={"choices": ("full", "diag")})
    reg_covar: float = field(default=1e-3, metadata={"help": "added to covariance diagonals (as sklearn)"})
    max_iter: int = 300
    tol: float = field(default=1e-6, metadata={"help": "stop when the mean log-likelihood changes less (nats)"})
    seed: int = 0

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model={self.model!r} is not known; expected one of {MODELS}")
        for name in ("components", "latent_dim", "max_iter"):
            check_positive_int(name, getattr(self, name))
        check_seed(self.seed)


def digits_vectors(split: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Dequantized flattened digits (N, 64) float64 in [0, 17/16) and labels (N,), for the docs/design.md split."""
    from ppl_dgm.data import load_dataset

    x, y = load_dataset("digits", split).tensors
    generator = torch.Generator().manual_seed(seed + (0 if split == "train" else 1))
    noise = torch.rand(x.shape[0], 64, generator=generator, dtype=torch.float64)
    return x.flatten(1).double() + noise / 16, y


def build_lvm(config: LVMConfig, data_dim: int = 64):
    """The untrained float64 model a config names."""
    from ppl_dgm.lvm.factor_analysis import PPCA, FactorAnalysis
    from ppl_dgm.lvm.gmm import GaussianMixture

    if config.model == "gmm":
        return GaussianMixture(config.components, data_dim, config.covariance, reg_covar=config.reg_covar).double()
    cls = FactorAnalysis if config.model == "fa" else PPCA
    return cls(data_dim, config.latent_dim).double()


def fit_lvm(config: LVMConfig, x: torch.Tensor, device: str | torch.device = "cpu"):
    """(model, log-likelihood trace in nats per point, seconds) of exact EM on x (N, D)."""
    from ppl_dgm.train.device import resolve_device

    device = resolve_device(device)
    model = build_lvm(config, x.shape[1]).to(device)
    x = x.to(device)
    started = time.perf_counter()
    if config.model == "gmm":
        trace = model.fit_em(x, max_iter=config.max_iter, tol=config.tol, generator=torch.Generator().manual_seed(config.seed))
    else:
        trace = model.fit_em(x, max_iter=config.max_iter, tol=config.tol)
    return model, trace, time.perf_counter() - started


def train_lvm(config: LVMConfig, run_dir: str | os.PathLike, device: str | torch.device = "auto", *, resume: bool = False) -> dict[str, Any]:
    """Fit by exact EM on the digits train split into ``run_dir``; returns the per-point log-likelihoods (nats).

    ``resume`` continues a run from its checkpoint's float64 EM iterate: with a larger ``max_iter`` (a budget
    key) the run is extended, and N iterations extended to 2N equal 2N straight ones bit for bit (EM is a
    deterministic map of the iterate; the ``tol`` stop sees the same consecutive values).
    """
    from ppl_dgm.train.device import resolve_device
    from ppl_dgm.train.loop import write_metrics
    from ppl_dgm.train.runs import RunDir

    run = RunDir(run_dir)
    run.start(asdict(config), resume)
    device = resolve_device(device)
    train_x, _ = digits_vectors("train", config.seed)
    test_x, _ = digits_vectors("test", config.seed)
    started = time.perf_counter()
    if resume and run.checkpoint.exists():
        state = run.checkpoint.load(map_location="cpu")
        model = build_lvm(config, train_x.shape[1])
        model.load_state_dict(state["module"])
        model.to(device)
        trace = list(state["trace"])
        done = len(trace) - 1
        converged = len(trace) > 1 and abs(trace[-1] - trace[-2]) < config.tol and done < state["max_iter"]
        if done < config.max_iter and not converged:  # EM's trace restarts at the saved iterate's log-likelihood
            trace = trace[:-1] + model.fit_em(train_x.to(device), max_iter=config.max_iter - done, tol=config.tol, init="state",
                                              em_state=state["em_state"])
        else:
            model.em_state = state["em_state"]
    else:
        model, trace, _ = fit_lvm(config, train_x, device)
    seconds = time.perf_counter() - started
    write_metrics(run.metrics_path, [{"iteration": i, "train_log_likelihood": value} for i, value in enumerate(trace)])
    run.checkpoint.save({"module": model.state_dict(), "em_state": model.em_state, "trace": trace, "max_iter": config.max_iter})
    parameter = next(model.parameters())
    result = {
        "model": config.model,
        "train_log_likelihood_nats": model.log_likelihood(train_x.to(parameter.device)),
        "test_log_likelihood_nats": model.log_likelihood(test_x.to(parameter.device)),
        "em_iterations": len(trace) - 1,
        "seconds": seconds,
    }
    run.write_results(result)
    return result


def load_lvm_run(run_dir: str | os.PathLike, device: str | torch.device = "cpu"):
    """(model, config) of a run written by :func:`train_lvm`."""
    from ppl_dgm.train.device import resolve_device
    from ppl_dgm.train.runs import RunDir

    run = RunDir(run_dir)
    config = LVMConfig(**run.read_config())
    model = build_lvm(config)
    model.load_state_dict(run.checkpoint.load(map_location="cpu")["module"])
    return model.to(resolve_device(device)), config
