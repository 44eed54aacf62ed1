"""EM as a tool: the exact EM loop shared by GMM / FA / PPCA, and variational EM on any model/guide pair.

``variational_em`` alternates SVI steps on the guide's own parameters (E-step) and on the model's
parameters (M-step) through :func:`ppl_dgm.train.fit_svi`, so it keeps that loop's checkpoints,
exact resume, NaN stop and progress bar (Neal & Hinton 1998: EM as coordinate ascent on the ELBO).
"""
from __future__ import annotations

import math
import warnings
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import torch
from torch import nn
from torch.utils.data import TensorDataset

from ppl_dgm._checks import check_positive_int

if TYPE_CHECKING:
    from ppl_dgm.train.loop import History

__all__ = ["run_em", "split_parameters", "AlternatingOptimizer", "variational_em"]


def run_em(
    e_step: Callable[[], tuple[float, Any]],
    m_step: Callable[[Any], None],
    log_likelihood: Callable[[], float],
    *,
    max_iter: int,
    tol: float,
) -> list[float]:
    """Alternate ``e_step() -> (mean log-likelihood, statistics)`` and ``m_step(statistics)``.

    Stops when the mean log-likelihood per point (nats) changes by less than ``tol``; returns its
    trace, the first entry at the initial parameters. EM never decreases it (Bishop PRML §9.4).
    """
    check_positive_int("max_iter", max_iter)
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise ValueError(f"tol must be a non-negative float, got {tol!r}")
    trace: list[float] = []
    for _ in range(max_iter):
        value, statistics = e_step()
        trace.append(value)
        if not math.isfinite(value):
            raise FloatingPointError(f"EM log-likelihood became {value} after {len(trace) - 1} iterations")
        if len(trace) > 1 and abs(trace[-1] - trace[-2]) < tol:
            return trace
        m_step(statistics)
    trace.append(log_likelihood())
    warnings.warn(f"EM did not converge to tol={tol} within max_iter={max_iter} iterations", RuntimeWarning, stacklevel=4)
    return trace


def _used_parameters(value: torch.Tensor, parameters: list[nn.Parameter]) -> set[int]:
    gradients = torch.autograd.grad(value, parameters, allow_unused=True)
    return {id(p) for p, g in zip(parameters, gradients) if g is not None}


def split_parameters(model: Callable, guide: Callable, batch: Sequence[torch.Tensor], parameters: Iterable[nn.Parameter]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(guide's own parameters, model parameters) among ``parameters``, found by tracing on ``batch``.

    A parameter belongs to the model when log p(x, z) depends on it with z drawn from the guide and
    held fixed; to the guide when log q(z|x) depends on it and the model does not.
    """
    from pyro import poutine

    parameters = [p for p in parameters if p.requires_grad]
    with torch.random.fork_rng(devices=[p.device for p in parameters if p.device.type == "cuda"][:1]):
        guide_trace = poutine.trace(guide).get_trace(*batch)
        guide_used = _used_parameters(guide_trace.log_prob_sum(), parameters)
        with torch.no_grad():
            fixed_trace = poutine.trace(guide).get_trace(*batch)
        model_trace = poutine.trace(poutine.replay(model, trace=fixed_trace)).get_trace(*batch)
        model_used = _used_parameters(model_trace.log_prob_sum(), parameters)
    model_parameters = [p for p in parameters if id(p) in model_used]
    guide_parameters = [p for p in parameters if id(p) in guide_used and id(p) not in model_used]
    if not guide_parameters:
        raise ValueError("the guide has no parameters of its own (every parameter it uses belongs to the model); variational EM needs a guide with its own parameters")
    if not model_parameters:
        raise ValueError("the model has no parameters; variational EM needs model parameters for its M-step")
    return guide_parameters, model_parameters


class AlternatingOptimizer:
    """Steps ``e_optimizer`` for ``e_steps`` calls, then ``m_optimizer`` for ``m_steps`` calls, and so on.

    Its ``state_dict`` holds both inner optimizers and the phase counter, so a resumed run continues
    in the same phase at the same step.
    """

    def __init__(self, e_optimizer: torch.optim.Optimizer, m_optimizer: torch.optim.Optimizer, e_steps: int, m_steps: int):
        self.e_optimizer, self.m_optimizer = e_optimizer, m_optimizer
        self.e_steps = check_positive_int("e_steps", e_steps)
        self.m_steps = check_positive_int("m_steps", m_steps)
        self.phase, self.steps_in_phase = "E", 0

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.e_optimizer.param_groups + self.m_optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.e_optimizer.zero_grad(set_to_none=set_to_none)
        self.m_optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Callable | None = None) -> None:
        (self.e_optimizer if self.phase == "E" else self.m_optimizer).step()
        self.steps_in_phase += 1
        if self.steps_in_phase == (self.e_steps if self.phase == "E" else self.m_steps):
            self.phase, self.steps_in_phase = ("M" if self.phase == "E" else "E"), 0

    def state_dict(self) -> dict[str, Any]:
        return {"e": self.e_optimizer.state_dict(), "m": self.m_optimizer.state_dict(), "phase": self.phase, "steps_in_phase": self.steps_in_phase}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.e_optimizer.load_state_dict(state["e"])
        self.m_optimizer.load_state_dict(state["m"])
        self.phase, self.steps_in_phase = state["phase"], state["steps_in_phase"]


def variational_em(
    model: Callable,
    guide: Callable,
    data: TensorDataset | Sequence[torch.Tensor] | torch.Tensor,
    *,
    e_steps: int,
    m_steps: int,
    epochs: int,
    batch_size: int,
    loss: Any = None,
    e_optim: Callable[[list[nn.Parameter]], torch.optim.Optimizer] | None = None,
    m_optim: Callable[[list[nn.Parameter]], torch.optim.Optimizer] | None = None,
    device: str | torch.device = "auto",
    val_data: TensorDataset | Sequence[torch.Tensor] | torch.Tensor | None = None,
    checkpoint: Any = None,
    resume: bool = False,
    progress: bool = True,
    **fit_kwargs: Any,
) -> History:
    """Variational EM: ``e_steps`` SVI steps on the guide's parameters, then ``m_steps`` on the model's, repeated.

    Same contract as :func:`ppl_dgm.train.fit_svi` (losses are −ELBO per example, nats; checkpoints
    resume exactly, the phase included). ``e_optim``/``m_optim`` build each phase's optimizer
    (default Adam, lr 1e-3).
    """
    from ppl_dgm.train.loop import as_tensors
    from ppl_dgm.train.svi import fit_svi

    check_positive_int("e_steps", e_steps)
    check_positive_int("m_steps", m_steps)
    check_positive_int("batch_size", batch_size)
    tensors = as_tensors(data)
    default = partial(torch.optim.Adam, lr=1e-3)

    def make_optimizer(parameters: Iterable[nn.Parameter]) -> AlternatingOptimizer:
        parameters = list(parameters)
        batch = tuple(t[:batch_size].to(parameters[0].device) for t in tensors)
        if fit_kwargs.get("transform") is not None:
            batch = fit_kwargs["transform"](batch)
        guide_parameters, model_parameters = split_parameters(model, guide, batch, parameters)
        return AlternatingOptimizer((e_optim or default)(guide_parameters), (m_optim or default)(model_parameters), e_steps, m_steps)

    fit_kwargs.setdefault("description", "variational EM")
    return fit_svi(model, guide, tensors, loss=loss, optim=make_optimizer, epochs=epochs, batch_size=batch_size, device=device,
                   val_data=val_data, checkpoint=checkpoint, resume=resume, progress=progress, **fit_kwargs)
