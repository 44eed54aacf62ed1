"""SVI through Pyro's PyTorch-native path: the differentiable negative ELBO stepped by ``torch.optim``.

Parameters live in the ``PyroModule`` (not the global param store), so checkpoints are plain
``state_dict`` s and the same loop (:func:`ppl_dgm.train.fit`) serves every family.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import pyro
import torch
from pyro.infer import ELBO, Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO
from pyro.poutine.messenger import Messenger
from torch import nn
from torch.utils.data import TensorDataset

from ppl_dgm.train.checkpoint import Checkpoint
from ppl_dgm.train.device import resolve_device
from ppl_dgm.train.loop import Batch, History, OptimizerFactory, as_tensors, check_finite_data, evaluate_loss, fit

__all__ = ["fit_svi", "evaluate_elbo", "elbo_loss_fn", "differentiable_loss", "DataPlateScale", "owning_module"]


class DataPlateScale(Messenger):
    """Scale every sample site inside the plate named ``"data"`` by ``scale`` (= N / batch size).

    With it a minibatch ELBO is an unbiased estimate of the full-data ELBO (Hoffman et al. 2013),
    while sites outside the plate (global latents, their priors) keep weight one.
    """

    def __init__(self, scale: float, plate_name: str = "data"):
        super().__init__()
        self.scale = scale
        self.plate_name = plate_name

    def _process_message(self, msg: dict[str, Any]) -> None:
        if msg["type"] == "sample" and any(frame.name == self.plate_name for frame in msg["cond_indep_stack"]):
            msg["scale"] = self.scale * msg["scale"]


def owning_module(model: Callable, guide: Callable) -> nn.Module:
    """The module(s) holding the parameters of ``model`` and ``guide`` (modules or their bound methods)."""
    found: list[nn.Module] = []
    for name, fn in (("model", model), ("guide", guide)):
        owner = fn if isinstance(fn, nn.Module) else getattr(fn, "__self__", None)
        if not isinstance(owner, nn.Module):
            raise TypeError(
                f"{name} must be a torch/Pyro module or a bound method of one (e.g. vae.model), got {fn!r}; "
                "fit_svi trains the parameters that live in modules, not in the global param store"
            )
        if not any(owner is seen for seen in found):
            found.append(owner)
    return found[0] if len(found) == 1 else nn.ModuleList(found)


def differentiable_loss(loss: ELBO, model: Callable, guide: Callable, *args: Any) -> torch.Tensor:
    """−ELBO as a tensor whose gradient is the estimator's gradient.

    ``TraceGraph_ELBO`` has no ``differentiable_loss`` in Pyro 1.9: its gradient comes from a
    surrogate loss (score-function terms with Rao–Blackwellization), so the value returned is
    −ELBO carrying the surrogate's gradient: surrogate + (−ELBO − surrogate).detach().
    ``TraceEnum_ELBO`` also works under ``torch.no_grad`` (warm-up, evaluation).
    """
    if isinstance(loss, TraceGraph_ELBO):
        elbo, surrogate = loss._loss_and_surrogate_loss(model, guide, args, {})
        return surrogate + (-elbo - surrogate).detach()
    if isinstance(loss, TraceEnum_ELBO) and not torch.is_grad_enabled():
        # Pyro 1.9's TraceEnum_ELBO refuses to run without autograd; evaluate with it, return detached
        with torch.enable_grad():
            return loss.differentiable_loss(model, guide, *args).detach()
    return loss.differentiable_loss(model, guide, *args)


def elbo_loss_fn(model: Callable, guide: Callable, loss: ELBO, num_data: int) -> Callable[[Batch], torch.Tensor]:
    """``batch -> −ELBO / num_data``: the full-data negative ELBO estimate per example, in nats."""

    def loss_fn(batch: Batch) -> torch.Tensor:
        with DataPlateScale(num_data / batch[0].shape[0]):
            return differentiable_loss(loss, model, guide, *batch) / num_data

    return loss_fn


def _without_validation(loss_fn: Callable[[Batch], torch.Tensor]) -> Callable[[Batch], torch.Tensor]:
    def unchecked(batch: Batch) -> torch.Tensor:
        with pyro.validation_enabled(False):
            return loss_fn(batch)

    return unchecked


def fit_svi(
    model: Callable,
    guide: Callable,
    data: TensorDataset | Sequence[torch.Tensor] | torch.Tensor,
    *,
    loss: ELBO | None = None,
    optim: OptimizerFactory | None = None,
    epochs: int,
    batch_size: int,
    device: str | torch.device = "auto",
    val_data: TensorDataset | Sequence[torch.Tensor] | torch.Tensor | None = None,
    val_loss: ELBO | None = None,
    checkpoint: Checkpoint | str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    validate_every_step: bool = False,
    **fit_kwargs: Any,
) -> History:
    """Train ``model``/``guide`` by SVI on minibatches; losses are −ELBO per example in nats.

    ``model(*batch)`` and ``guide(*batch)`` must put per-example sites in ``pyro.plate("data", B)``;
    those sites are scaled by N/B. ``optim`` builds a ``torch.optim`` optimizer from parameters
    (default Adam, lr 1e-3). ``val_loss`` estimates the validation losses (default ``loss``): the true ELBO when
    ``loss`` is a training objective such as KL warm-up or free bits. Other keyword arguments go to
    :func:`ppl_dgm.train.fit` (``metrics_path``, ``ema_decay``, ``max_steps``, ``transform``, ``seed``, ...).

    The first minibatch is evaluated with Pyro's validation as the caller set it (shapes,
    supports, parameter constraints); later steps skip those checks unless
    ``validate_every_step`` (they cost ~7% of an MLP-VAE step, see ``scripts/bench_svi.py``).
    """
    from ppl_dgm._checks import check_positive_int

    check_positive_int("epochs", epochs)
    check_positive_int("batch_size", batch_size)
    loss = loss if loss is not None else Trace_ELBO()
    val_loss = val_loss if val_loss is not None else loss
    for name, value in (("loss", loss), ("val_loss", val_loss)):
        if not isinstance(value, ELBO):
            raise TypeError(f"{name} must be a pyro.infer ELBO instance (e.g. Trace_ELBO()), got {value!r}")
    module = owning_module(model, guide)
    tensors = as_tensors(data)
    check_finite_data(tensors)  # before the warm-up, so the message names the bad example
    device = resolve_device(device)
    module.to(device)
    # One evaluation creates lazily initialized parameters (e.g. AutoGuides) before the optimizer sees them.
    with torch.no_grad():
        warmup = tuple(t[: min(batch_size, t.shape[0])].to(device) for t in tensors)
        if fit_kwargs.get("transform") is not None:
            warmup = fit_kwargs["transform"](warmup)
        try:
            elbo_loss_fn(model, guide, loss, tensors[0].shape[0])(warmup)
        except (RuntimeError, ValueError) as error:
            shapes = [tuple(t.shape[1:]) for t in tensors]
            raise ValueError(
                f"model/guide cannot run on data whose examples have shapes {shapes} (does the network expect "
                f"this image size, and do the values lie in the likelihood's support?): {error}"
            ) from error
    val_loss_fn = None
    if val_data is not None:
        val_loss_fn = elbo_loss_fn(model, guide, val_loss, as_tensors(val_data, "val_data")[0].shape[0])
    fit_kwargs.setdefault("description", "svi")
    train_loss_fn = elbo_loss_fn(model, guide, loss, tensors[0].shape[0])
    if not validate_every_step:
        train_loss_fn = _without_validation(train_loss_fn)
    return fit(
        module,
        train_loss_fn,
        tensors,
        epochs=epochs,
        batch_size=batch_size,
        optim=optim,
        device=device,
        val_data=val_data,
        val_loss_fn=val_loss_fn,
        checkpoint=checkpoint,
        resume=resume,
        progress=progress,
        **fit_kwargs,
    )


def evaluate_elbo(
    model: Callable,
    guide: Callable,
    data: TensorDataset | Sequence[torch.Tensor] | torch.Tensor,
    *,
    loss: ELBO | None = None,
    batch_size: int = 500,
    transform: Callable[[Batch], Batch] | None = None,
) -> float:
    """Mean ELBO per example (nats, higher is better) of ``data``, on the device of the model's parameters."""
    loss = loss if loss is not None else Trace_ELBO()
    module = owning_module(model, guide)
    device = next(module.parameters()).device
    tensors = tuple(t.to(device) for t in as_tensors(data))
    loss_fn = elbo_loss_fn(model, guide, loss, tensors[0].shape[0])
    if transform is not None:
        inner = loss_fn
        loss_fn = lambda batch: inner(transform(batch))  # noqa: E731
    was_training = module.training
    module.eval()
    try:
        return -evaluate_loss(loss_fn, tensors, batch_size)
    finally:
        module.train(was_training)

