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
from ppl_dgm.train.distributed import all_reduce_mean, rank_and_world_size
from ppl_dgm.train.ema import make_ema

__all__ = ["History", "TrainingDiverged", "fit", "as_tensors", "iterate_minibatches", "check_finite_data", "check_grad_clip",
           "divergence_limit", "check_divergence_factor", "DIVERGENCE_FACTOR"]

Batch = tuple[torch.Tensor, ...]
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite, or grew past ``divergence_factor`` times its scale at the first step;
    the last good checkpoint (if any) is left untouched."""


DIVERGENCE_FACTOR = 100.0


def divergence_limit(reference: float, factor: float | None) -> float:
    """The largest |loss| a run may reach: ``factor`` · max(|loss at the first step|, 1) (docs/design.md, "Runs")."""
    return math.inf if factor is None else factor * max(abs(reference), 1.0)


def check_finite_data(tensors: Batch, name: str = "data") -> None:
    """Raise ValueError naming the first example (index along dim 0) holding NaN or ±inf; one host sync."""
    for position, tensor in enumerate(tensors):
        if not tensor.is_floating_point() or tensor.numel() == 0:
            continue
        bad = ~torch.isfinite(tensor.reshape(tensor.shape[0], -1)).all(dim=1)
        if bool(bad.any()):
            index = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"{name} holds NaN or inf: tensor {position}, example {index} (of {tensor.shape[0]}) is not finite; "
                "clean the data before training"
            )


def check_grad_clip(grad_clip: object) -> float | None:
    """``None`` or a finite max-norm > 0 (a negative one would flip every gradient)."""
    if grad_clip is None:
        return None
    if isinstance(grad_clip, bool) or not isinstance(grad_clip, (int, float)) or not math.isfinite(grad_clip) or grad_clip <= 0:
        raise ValueError(f"grad_clip must be None or a positive max-norm, got {grad_clip!r}")
    return float(grad_clip)


def check_divergence_factor(factor: object) -> float | None:
    if factor is None:
        return None
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 1:
        raise ValueError(f"divergence_factor must be None or a number > 1, got {factor!r}")
    return float(factor)


@dataclass
class History:
    """Per-epoch records (``epoch``, ``step``, ``loss``, ``val_loss``, ``seconds``) of one run."""

    records: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0  # optimizer steps taken when the loop returned (max_steps may stop it inside an epoch)

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
    size = tensors[0].shape[0] if order is None else order.shape[0]
    for begin in range(start * batch_size, size, batch_size):
        if order is None:
            yield tuple(t[begin : begin + batch_size] for t in tensors)
        else:
            index = order[begin : begin + batch_size]
            yield tuple(t[index] for t in tensors)


def write_metrics(path: Path, records: list[dict[str, Any]]) -> None:
    """Rewrite ``metrics.jsonl`` atomically from the records (so a resumed run never duplicates lines).

    Wall-clock fields (``seconds``) stay in the in-memory history only: two runs with the same seed
    write byte-identical files.
    """
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with open(tmp, "w") as file:
        for record in records:
            file.write(json.dumps({key: value for key, value in record.items() if key != "seconds"}) + "\n")
    os.replace(tmp, path)


@torch.no_grad()
def evaluate_loss(loss_fn: Callable[[Batch], torch.Tensor], tensors: Batch, batch_size: int) -> float:
    """Mean of ``loss_fn`` over ``tensors`` weighted by batch size (one host sync at the end)."""
    total = torch.zeros((), dtype=torch.float64, device=tensors[0].device)
    for batch in iterate_minibatches(tensors, batch_size):
        total += loss_fn(batch).detach().double() * batch[0].shape[0]
    return float(total) / tensors[0].shape[0]


class _LossModule(nn.Module):
    """What DDP wraps: owns the trained module, and its forward is the loss (docs/design.md, Runs)."""

    def __init__(self, module: nn.Module, loss_fn: Callable[[Batch], torch.Tensor]):
        super().__init__()
        self.module = module
        self.loss_fn = loss_fn

    def forward(self, *batch: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(batch)


def epoch_order(num_examples: int, epoch: int, seed: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """This process's example order for an epoch: ``DistributedSampler`` semantics (permutation seeded by
    seed + epoch, then every world_size-th index from rank), so one process with batch W·B visits
    exactly the union of W processes' batches of size B."""
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(num_examples), num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.long)


def steps_per_epoch(num_examples: int, batch_size: int, world_size: int = 1) -> int:
    """Optimizer steps in one epoch: each of ``world_size`` processes takes its ⌈N / world_size⌉ examples in minibatches
    of ``batch_size`` (the last one may be short)."""
    return math.ceil(math.ceil(num_examples / world_size) / batch_size)


def cosine_lr(lr: float, step: int, total_steps: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based) under cosine annealing to 0 over ``total_steps``:
    lr · ½(1 + cos(π · min(step, total_steps) / total_steps)) (Loshchilov & Hutter 2017, eq. 5 with η_min = 0, one cycle).

    A function of the step alone, so a run resumed from a checkpoint continues on the same curve (give it to
    :func:`fit` through ``on_step``). Extending a run to more epochs stretches the curve over the new total.
    """
    check_positive_int("total_steps", total_steps)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


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
    ema: nn.Module | None = None,
    max_steps: int | None = None,
    grad_clip: float | None = None,
    seed: int = 0,
    log_every: int = 50,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    on_step: Callable[[int], None] | None = None,
    description: str = "train",
    amp: str | None = None,
    divergence_factor: float | None = DIVERGENCE_FACTOR,
) -> History:
    """Minimize ``loss_fn(batch)`` (a scalar, mean per example) over the parameters of ``module``.

    The data live on ``device`` for the whole run; epoch e visits a permutation seeded by seed + e.
    Loss values are synchronized with the host every ``log_every`` steps and at epoch ends, where a
    NaN/inf raises :class:`TrainingDiverged` before any checkpoint is written, so the file on disk is
    always the last good state. With ``resume=True`` and an existing checkpoint the run continues
    exactly where it stopped (model, optimizer, EMA, RNGs, data order, partial epoch). ``max_steps``
    stops early (after a checkpoint) once that many optimizer steps have been taken. Inside a
    torch.distributed process group (torchrun), each process takes its ``DistributedSampler`` share
    of every epoch, gradients are averaged by ``DistributedDataParallel``, and only rank 0 writes
    checkpoints, metrics and calls ``on_epoch_end``; ``batch_size`` is per process. ``amp="bf16"`` runs
    the training loss under ``torch.autocast(dtype=torch.bfloat16)`` (weights, gradients and the
    optimizer stay float32; bf16 needs no loss scaling). ``transform`` is a training-batch augmentation
    (random binarization, dequantization, ...) applied on device to training batches only, so validation
    stays deterministic: give ``val_data`` already in the form ``val_loss_fn`` expects.

    Divergence: besides NaN/inf, training stops with :class:`TrainingDiverged` when the mean loss of an
    epoch so far exceeds ``divergence_factor`` · max(|loss of the first minibatch|, 1) in magnitude
    (default 100; ``None`` disables the check). The data are checked for NaN/inf once before training.
    EMA: pass ``ema`` (``make_ema(module, decay)``, so the caller can sample with it in callbacks) or
    ``ema_decay`` (the loop makes one); it is updated after every optimizer step, validates the model, and
    is checkpointed under ``"ema"``. Epoch end, in this order: record (loss, validation loss) → divergence
    check → ``on_epoch_end(epoch, record)`` (rank 0; it may add figures to the record; the RNG states are
    saved and restored around it, so what it draws never changes training) → history → checkpoint →
    ``metrics.jsonl``. The adversarial loop keeps the same order.
    Extending a run: resume with a larger ``epochs``; nothing in the loop depends on the total.
    ``on_step(step)`` runs before every training step with the number of optimizer steps already taken (restored on
    resume), for per-step schedules (a Gumbel-softmax temperature); a schedule that is a function of ``step`` alone
    resumes exactly.
    """
    check_positive_int("epochs", epochs)
    check_positive_int("batch_size", batch_size)
    if max_steps is not None:
        check_positive_int("max_steps", max_steps)
    check_positive_int("log_every", log_every)
    grad_clip = check_grad_clip(grad_clip)
    divergence_factor = check_divergence_factor(divergence_factor)
    if amp not in (None, "bf16"):
        raise ValueError(f"amp must be None or 'bf16', got {amp!r}")
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    rank, world_size = rank_and_world_size()
    main_process = rank == 0
    device = resolve_device(device)
    tensors = tuple(t.to(device) for t in as_tensors(data))
    val_tensors = None if val_data is None else tuple(t.to(device) for t in as_tensors(val_data, "val_data"))
    check_finite_data(tensors)
    if val_tensors is not None:
        check_finite_data(val_tensors, "val_data")
    val_loss_fn = val_loss_fn or loss_fn
    module.to(device)
    autocast = partial(torch.autocast, device.type, dtype=torch.bfloat16, enabled=amp == "bf16")
    parameters = [p for p in module.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError(f"module {type(module).__name__} has no trainable parameters")
    train_loss = loss_fn
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(_LossModule(module, loss_fn), device_ids=[device.index] if device.type == "cuda" else None)
        train_loss = lambda batch: wrapped(*batch)  # noqa: E731
    optimizer = (optim or partial(torch.optim.Adam, lr=1e-3))(parameters)
    if ema is not None and ema_decay is not None:
        raise ValueError(f"give ema (an EMA made by make_ema) or ema_decay, not both; got ema_decay={ema_decay!r}")
    if ema is not None and not isinstance(ema, torch.optim.swa_utils.AveragedModel):
        raise TypeError(f"ema must be made by ppl_dgm.train.make_ema(module, decay), got {type(ema).__name__}")
    ema = make_ema(module, ema_decay) if ema_decay is not None else ema
    if ema is not None:
        ema.to(device)
    if checkpoint is not None and not isinstance(checkpoint, Checkpoint):
        checkpoint = Checkpoint(checkpoint)
    metrics_path = Path(metrics_path) if metrics_path is not None and main_process else None

    num_examples = tensors[0].shape[0]
    epoch_steps = steps_per_epoch(num_examples, batch_size, world_size)
    history = History()
    start_epoch, start_batch, step = 0, 0, 0
    partial_sum, partial_count = 0.0, 0
    reference_loss: float | None = None  # |loss| scale at the first step, for the divergence check

    if resume and checkpoint is not None and checkpoint.exists():
        state = checkpoint.load(map_location=device, restore_rng=True)
        if state.get("rng_per_rank") is not None and len(state["rng_per_rank"]) == world_size:
            set_rng_state(state["rng_per_rank"][rank])
        module.load_state_dict(state["module"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        history = History(list(state["history"]))
        start_epoch, start_batch, step = state["epoch"], state["batch_in_epoch"], state["step"]
        partial_sum, partial_count = state["partial_loss_sum"], state["partial_loss_count"]
        reference_loss = state.get("reference_loss")
        if reference_loss is None and history.records:  # checkpoints written before the growth check
            reference_loss = history.records[0]["loss"]
        if metrics_path is not None:
            write_metrics(metrics_path, history.records)
    elif metrics_path is not None:
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        write_metrics(metrics_path, [])

    def save(epoch: int, batch_in_epoch: int, loss_sum: float, loss_count: int) -> None:
        if checkpoint is None:
            return
        rng_per_rank = [None] * world_size
        if world_size > 1:  # every process's RNG, so a resumed distributed run continues exactly
            torch.distributed.all_gather_object(rng_per_rank, rng_state())
        if not main_process:
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
                "rng": rng_state(),
                "rng_per_rank": rng_per_rank if world_size > 1 else None,
                "reference_loss": reference_loss,
            }
        )

    def global_mean(total: torch.Tensor, count: int) -> float:
        """Mean loss over the steps so far of this epoch, averaged over processes (one host sync)."""
        return float(all_reduce_mean((partial_sum + total) / (partial_count + count)))

    def check_finite(value: float, epoch: int, what: str = "loss") -> None:
        limit = math.inf if reference_loss is None else divergence_limit(reference_loss, divergence_factor)
        if math.isfinite(value) and abs(value) <= limit:
            return
        where = f"the last good checkpoint is {str(checkpoint.path)!r}" if checkpoint and checkpoint.exists() else "no checkpoint was written"
        why = "is not finite" if not math.isfinite(value) else (
            f"exceeds {divergence_factor:g} x its first-step scale {max(abs(reference_loss), 1.0):.4g} (divergence_factor)")
        raise TrainingDiverged(
            f"training diverged: {what} {value:.6g} {why} at epoch {epoch + 1}, step {step}; stopped, {where}. "
            "Lower the learning rate or clip gradients (grad_clip=...)."
        )

    total_steps = epochs * epoch_steps if max_steps is None else min(max_steps, epochs * epoch_steps)
    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=min(step, total_steps), desc=description, disable=not (progress and main_process), dynamic_ncols=True)
    module.train()
    try:
        for epoch in range(start_epoch, epochs):
            epoch_start = time.perf_counter()
            order = epoch_order(num_examples, epoch, seed, rank, world_size).to(device)
            running = torch.zeros((), dtype=torch.float64, device=device)
            running_count = 0
            batch_index = start_batch
            for batch in iterate_minibatches(tensors, batch_size, order, start=start_batch):
                if on_step is not None:
                    on_step(step)
                if transform is not None:
                    batch = transform(batch)
                with autocast():
                    loss = train_loss(batch).float()
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
                if reference_loss is None:  # one host sync per run: the scale the growth check compares with
                    reference_loss = float(all_reduce_mean(loss.detach().double()))
                    check_finite(reference_loss, epoch)
                bar.update(1)
                at_limit = max_steps is not None and step >= max_steps
                if running_count % log_every == 0 or at_limit:
                    mean = global_mean(running, running_count)
                    check_finite(mean, epoch)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{mean:.4g}")
                if at_limit and batch_index < epoch_steps:
                    save(epoch, batch_index, partial_sum + float(running), partial_count + running_count)
                    return history
            epoch_loss = global_mean(running, max(running_count, 1))
            check_finite(epoch_loss, epoch)
            record: dict[str, Any] = {"epoch": epoch + 1, "step": step, "loss": epoch_loss}
            if val_tensors is not None:
                evaluated = ema.module if ema is not None else module
                evaluated.eval()
                record["val_loss"] = float(all_reduce_mean(torch.tensor(evaluate_loss(val_loss_fn, val_tensors, batch_size))))
                evaluated.train()
                check_finite(record["val_loss"], epoch, "validation loss")
            record["seconds"] = time.perf_counter() - epoch_start
            if on_epoch_end is not None and main_process:  # before the checkpoint: figures it adds are saved too
                saved_rng = rng_state()
                on_epoch_end(epoch, record)
                set_rng_state(saved_rng)  # what a callback draws must not change training
            history.records.append(record)
            start_batch, partial_sum, partial_count = 0, 0.0, 0
            save(epoch + 1, 0, 0.0, 0)
            if metrics_path is not None:
                write_metrics(metrics_path, history.records)
            bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in record.items() if k != "seconds"})
            if max_steps is not None and step >= max_steps:
                return history
    finally:
        bar.close()
        history.steps = step
    return history


__all__ += ["evaluate_loss", "epoch_order", "write_metrics"]
