"""The one training loop: minibatches on device, tqdm progress, NaN stop, atomic checkpoints, exact resume.

Pyro models reach it through :func:`ppl_dgm.train.fit_svi`; plain torch models (GANs, score nets,
autoencoders) call :func:`fit` with their own loss function.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn
from torch.utils.data import TensorDataset

from ppl_dgm._checks import check_positive_int
from ppl_dgm.train.checkpoint import Checkpoint, rng_state, set_rng_state
from ppl_dgm.train.device import resolve_device
from ppl_dgm.train.ema import make_ema

__all__ = ["History", "TrainingDiverged", "fit", "as_tensors", "iterate_minibatches"]

Batch = tuple[torch.Tensor, ...]
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint (if any) is left untouched."""


@dataclass
class History:
    """Per-epoch records (``epoch``, ``step``, ``loss``, ``val_loss``, ``seconds``) of one run."""

    records: list[dict[str, Any]] = field(default_factory=list)

    def __getitem__(self, key: str) -> list[Any]:
        return [record.get(key) for record in self.records]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def loss(self) -> list[float]:
        return self["loss"]

    @property
    def val_loss(self) -> list[float | None]:
        return self["val_loss"]


def as_tensors(data: TensorDataset | Sequence[torch.Tensor] | torch.Tensor, name: str = "data") -> Batch:
    """The tensors of a ``TensorDataset`` / tuple / single tensor, checked to share their first dimension."""
    if isinstance(data, TensorDataset):
        tensors = tuple(data.tensors)
    elif isinstance(data, torch.Tensor):
        tensors = (data,)
    elif isinstance(data, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in data):
        tensors = tuple(data)
    else:
        raise TypeError(f"{name} must be a TensorDataset, a tensor or a tuple of tensors, got {type(data).__name__}")
    if not tensors or tensors[0].dim() == 0 or tensors[0].shape[0] == 0:
        raise ValueError(f"{name} is empty; expected at least one example")
    size = tensors[0].shape[0]
    if any(t.shape[0] != size for t in tensors):
        raise ValueError(f"{name} tensors disagree in their first dimension: {[t.shape[0] for t in tensors]}")
    return tensors


def iterate_minibatches(tensors: Batch, batch_size: int, order: torch.Tensor | None = None, start: int = 0):
    """Yield minibatches of ``tensors`` in ``order`` (default: as stored), from batch number ``start``."""
    size = tensors[0].shape[0]
    for begin in range(start * batch_size, size, batch_size):
        if order is None:
            yield tuple(t[begin : begin + batch_size] for t in tensors)
        else:
            index = order[begin : begin + batch_size]
            yield tuple(t[index] for t in tensors)


def _write_metrics(path: Path, records: list[dict[str, Any]]) -> None:
    """Rewrite ``metrics.jsonl`` atomically from the records (so a resumed run never duplicates lines)."""
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with open(tmp, "w") as file:
        for record in records:
            file.write(json.dumps(record) + "\n")
    os.replace(tmp, path)


@torch.no_grad()
def evaluate_loss(loss_fn: Callable[[Batch], torch.Tensor], tensors: Batch, batch_size: int) -> float:
    """Mean of ``loss_fn`` over ``tensors`` weighted by batch size (one host sync at the end)."""
    total = torch.zeros((), dtype=torch.float64, device=tensors[0].device)
    for batch in iterate_minibatches(tensors, batch_size):
        total += loss_fn(batch).detach().double() * batch[0].shape[0]
    return float(total) / tensors[0].shape[0]


def fit(
    module: nn.Module,
    loss_fn: Callable[[Batch], torch.Tensor],
    data: TensorDataset | Sequence[torch.Tensor] | torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    optim: OptimizerFactory | None = None,
    device: str | torch.device = "auto",
    val_data: TensorDataset | Sequence[torch.Tensor] | torch.Tensor | None = None,
    val_loss_fn: Callable[[Batch], torch.Tensor] | None = None,
    transform: Callable[[Batch], Batch] | None = None,
    checkpoint: Checkpoint | str | os.PathLike | None = None,
    resume: bool = False,
    metrics_path: str | os.PathLike | None = None,
    ema_decay: float | None = None,
    max_steps: int | None = None,
    grad_clip: float | None = None,
    seed: int = 0,
    log_every: int = 50,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    description: str = "train",
) -> History:
    """Minimize ``loss_fn(batch)`` (a scalar, mean per example) over the parameters of ``module``.

    The data live on ``device`` for the whole run; each epoch shuffles with a generator seeded by
    ``seed``. Loss values are synchronized with the host every ``log_every`` steps and at epoch ends,
    where a NaN/inf raises :class:`TrainingDiverged` before any checkpoint is written, so the file on
    disk is always the last good state. With ``resume=True`` and an existing checkpoint the run
    continues exactly where it stopped (model, optimizer, EMA, RNGs, data order, partial epoch).
    ``max_steps`` stops early (after a checkpoint) once that many optimizer steps have been taken.
    """
    check_positive_int("epochs", epochs)
    check_positive_int("batch_size", batch_size)
    if max_steps is not None:
        check_positive_int("max_steps", max_steps)
    check_positive_int("log_every", log_every)
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    device = resolve_device(device)
    tensors = tuple(t.to(device) for t in as_tensors(data))
    val_tensors = None if val_data is None else tuple(t.to(device) for t in as_tensors(val_data, "val_data"))
    val_loss_fn = val_loss_fn or loss_fn
    module.to(device)
    parameters = [p for p in module.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError(f"module {type(module).__name__} has no trainable parameters")
    optimizer = (optim or partial(torch.optim.Adam, lr=1e-3))(parameters)
    ema = make_ema(module, ema_decay) if ema_decay is not None else None
    if checkpoint is not None and not isinstance(checkpoint, Checkpoint):
        checkpoint = Checkpoint(checkpoint)
    metrics_path = Path(metrics_path) if metrics_path is not None else None

    num_examples = tensors[0].shape[0]
    steps_per_epoch = math.ceil(num_examples / batch_size)
    shuffle_generator = torch.Generator().manual_seed(seed)
    history = History()
    start_epoch, start_batch, step = 0, 0, 0
    partial_sum, partial_count = 0.0, 0
    epoch_shuffle_state = shuffle_generator.get_state()

    if resume and checkpoint is not None and checkpoint.exists():
        state = checkpoint.load(map_location=device, restore_rng=True)
        module.load_state_dict(state["module"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        history = History(list(state["history"]))
        start_epoch, start_batch, step = state["epoch"], state["batch_in_epoch"], state["step"]
        partial_sum, partial_count = state["partial_loss_sum"], state["partial_loss_count"]
        epoch_shuffle_state = state["epoch_shuffle_state"]
        if metrics_path is not None:
            _write_metrics(metrics_path, history.records)
    elif metrics_path is not None:
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        _write_metrics(metrics_path, [])

    def save(epoch: int, batch_in_epoch: int, loss_sum: float, loss_count: int, shuffle_state) -> None:
        if checkpoint is None:
            return
        checkpoint.save(
            {
                "module": module.state_dict(),
                "optimizer": optimizer.state_dict(),
                "ema": None if ema is None else ema.state_dict(),
                "history": history.records,
                "epoch": epoch,
                "batch_in_epoch": batch_in_epoch,
                "step": step,
                "partial_loss_sum": loss_sum,
                "partial_loss_count": loss_count,
                "epoch_shuffle_state": shuffle_state,
                "rng": rng_state(),
            }
        )

    def check_finite(value: float, epoch: int) -> None:
        if not math.isfinite(value):
            where = f"the last good checkpoint is {str(checkpoint.path)!r}" if checkpoint and checkpoint.exists() else "no checkpoint was written"
            raise TrainingDiverged(
                f"training diverged: loss is {value} at epoch {epoch + 1}, step {step}; stopped, {where}. "
                "Lower the learning rate or clip gradients (grad_clip=...)."
            )

    total_steps = epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=min(step, total_steps), desc=description, disable=not progress, dynamic_ncols=True)
    module.train()
    try:
        for epoch in range(start_epoch, epochs):
            epoch_start = time.perf_counter()
            shuffle_generator.set_state(epoch_shuffle_state)
            order = torch.randperm(num_examples, generator=shuffle_generator).to(device)
            next_shuffle_state = shuffle_generator.get_state()
            running = torch.zeros((), dtype=torch.float64, device=device)
            running_count = 0
            batch_index = start_batch
            for batch in iterate_minibatches(tensors, batch_size, order, start=start_batch):
                if transform is not None:
                    batch = transform(batch)
                loss = loss_fn(batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip is not None:
                    nn.utils.clip_grad_norm_(parameters, grad_clip)
                optimizer.step()
                if ema is not None:
                    ema.update_parameters(module)
                running += loss.detach().double()
                running_count += 1
                batch_index += 1
                step += 1
                bar.update(1)
                at_limit = max_steps is not None and step >= max_steps
                if running_count % log_every == 0 or at_limit:
                    mean = (partial_sum + float(running)) / (partial_count + running_count)
                    check_finite(mean, epoch)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{mean:.4g}")
                if at_limit and batch_index < steps_per_epoch:
                    save(epoch, batch_index, partial_sum + float(running), partial_count + running_count, epoch_shuffle_state)
                    return history
            epoch_loss = (partial_sum + float(running)) / max(partial_count + running_count, 1)
            check_finite(epoch_loss, epoch)
            record: dict[str, Any] = {"epoch": epoch + 1, "step": step, "loss": epoch_loss}
            if val_tensors is not None:
                evaluated = ema.module if ema is not None else module
                evaluated.eval()
                record["val_loss"] = evaluate_loss(val_loss_fn, val_tensors, batch_size)
                evaluated.train()
                check_finite(record["val_loss"], epoch)
            record["seconds"] = time.perf_counter() - epoch_start
            history.records.append(record)
            if on_epoch_end is not None:
                on_epoch_end(epoch, record)
            start_batch, partial_sum, partial_count = 0, 0.0, 0
            epoch_shuffle_state = next_shuffle_state
            save(epoch + 1, 0, 0.0, 0, epoch_shuffle_state)
            if metrics_path is not None:
                _write_metrics(metrics_path, history.records)
            bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in record.items() if k != "seconds"})
            if max_steps is not None and step >= max_steps:
                return history
    finally:
        bar.close()
    return history


__all__ += ["evaluate_loss"]
