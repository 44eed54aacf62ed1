"""Two-player training loop: alternating discriminator / generator steps with the machinery of ``ppl_dgm.train``.

Minibatches on device in ``epoch_order``, tqdm progress, losses synchronized every ``log_every`` steps,
NaN stop before any checkpoint, atomic checkpoints with RNG states, exact resume, generator EMA.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from ppl_dgm._checks import check_positive_int
from ppl_dgm.gan.losses import Objective, clip_weights, gradient_penalty, r1_penalty
from ppl_dgm.train.checkpoint import Checkpoint, rng_state, set_rng_state
from ppl_dgm.train.device import resolve_device
from ppl_dgm.train.distributed import all_reduce_mean, rank_and_world_size
from ppl_dgm.train.loop import (DIVERGENCE_FACTOR, History, TrainingDiverged, _LossModule, as_tensors, check_divergence_factor,
                                check_finite_data, divergence_limit, epoch_order, iterate_minibatches, steps_per_epoch,
                                write_metrics)

__all__ = ["train_adversarial", "fit_gan", "check_n_critic"]

Batch = tuple[Tensor, ...]
OptimizerFactory = Callable[[Sequence[nn.Parameter]], torch.optim.Optimizer]


def check_n_critic(n_critic: object) -> int:
    if isinstance(n_critic, bool) or not isinstance(n_critic, int) or n_critic < 1:
        raise ValueError(f"n_critic must be an int >= 1 (discriminator steps per generator step), got {n_critic!r}")
    return n_critic


def train_adversarial(
    generator: nn.Module,
    discriminator: nn.Module,
    data: TensorDataset | Sequence[Tensor] | Tensor,
    *,
    discriminator_loss: Callable[[Batch], Tensor],
    generator_loss: Callable[[Batch], Tensor],
    generator_optim: OptimizerFactory,
    discriminator_optim: OptimizerFactory,
    epochs: int,
    batch_size: int,
    n_critic: int = 1,
    weight_clip: float | None = None,
    lr_factor: Callable[[float], float] | None = None,
    device: str | torch.device = "auto",
    transform: Callable[[Batch], Batch] | None = None,
    checkpoint: Checkpoint | str | os.PathLike | None = None,
    resume: bool = False,
    metrics_path: str | os.PathLike | None = None,
    ema: nn.Module | None = None,
    max_steps: int | None = None,
    seed: int = 0,
    log_every: int = 50,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    description: str = "gan",
    divergence_factor: float | None = DIVERGENCE_FACTOR,
) -> History:
    """Each minibatch takes one discriminator step on ``discriminator_loss(batch)``; every ``n_critic``-th is
    followed by a generator step on ``generator_loss(batch)`` (Arjovsky et al. 2017, Alg. 1). Steps count
    discriminator updates. ``ema`` (``ppl_dgm.train.make_ema(generator, decay)``) is updated after each
    generator step and checkpointed with the rest. ``lr_factor(fraction of training done)`` scales both initial
    learning rates (e.g. ``lambda f: 1 - f``, the linear decay of Isola et al. 2017 / Zhu et al. 2017); the fraction
    is of ``epochs``, so extending a run (resuming with more epochs) stretches the remaining schedule.
    Divergence as in :func:`ppl_dgm.train.fit`: NaN/inf, or either mean loss past ``divergence_factor`` ·
    max(|its first-step value|, 1), stops with :class:`TrainingDiverged` before any checkpoint is written.
    """
    for name, network in (("generator", generator), ("discriminator", discriminator)):
        if not isinstance(network, nn.Module):
            raise TypeError(f"{name} must be a torch.nn.Module, got {type(network).__name__}")
    check_positive_int("epochs", epochs)
    check_positive_int("batch_size", batch_size)
    check_n_critic(n_critic)
    check_positive_int("log_every", log_every)
    if max_steps is not None:
        check_positive_int("max_steps", max_steps)
    if weight_clip is not None and not weight_clip > 0:
        raise ValueError(f"weight_clip must be a float > 0 (clip the critic to [-c, c]), got {weight_clip!r}")
    divergence_factor = check_divergence_factor(divergence_factor)
    device = resolve_device(device)
    tensors = tuple(t.to(device) for t in as_tensors(data))
    check_finite_data(tensors)
    generator.to(device)
    discriminator.to(device)
    g_optimizer = generator_optim([p for p in generator.parameters() if p.requires_grad])
    d_optimizer = discriminator_optim([p for p in discriminator.parameters() if p.requires_grad])
    if ema is not None:
        ema.to(device)
    rank, world_size = rank_and_world_size()
    main_process = rank == 0
    train_d, train_g = discriminator_loss, generator_loss
    if world_size > 1:  # each player's loss module in DDP, so each step all-reduces that player's gradients
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [device.index] if device.type == "cuda" else None
        d_wrapped = DistributedDataParallel(_LossModule(discriminator, discriminator_loss), device_ids=device_ids)
        g_wrapped = DistributedDataParallel(_LossModule(generator, generator_loss), device_ids=device_ids)
        train_d = lambda batch: d_wrapped(*batch)  # noqa: E731
        train_g = lambda batch: g_wrapped(*batch)  # noqa: E731
    if checkpoint is not None and not isinstance(checkpoint, Checkpoint):
        checkpoint = Checkpoint(checkpoint)
    metrics_path = Path(metrics_path) if metrics_path is not None and main_process else None

    num_examples = tensors[0].shape[0]
    epoch_steps = steps_per_epoch(num_examples, batch_size, world_size)
    history = History()
    start_epoch, start_batch, step = 0, 0, 0
    partial = torch.zeros(2, dtype=torch.float64)  # running sums of (d_loss, g_loss) of the current epoch
    partial_counts = [0, 0]
    reference = [None, None]  # |d_loss|, |g_loss| scale at their first steps, for the divergence check

    if resume and checkpoint is not None and checkpoint.exists():
        state = checkpoint.load(map_location=device, restore_rng=True)
        if state.get("rng_per_rank") is not None and len(state["rng_per_rank"]) == world_size:
            set_rng_state(state["rng_per_rank"][rank])
        generator.load_state_dict(state["generator"])
        discriminator.load_state_dict(state["discriminator"])
        g_optimizer.load_state_dict(state["generator_optimizer"])
        d_optimizer.load_state_dict(state["discriminator_optimizer"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        history = History(list(state["history"]))
        start_epoch, start_batch, step = state["epoch"], state["batch_in_epoch"], state["step"]
        partial, partial_counts = state["partial_sums"].clone(), list(state["partial_counts"])
        reference = list(state.get("reference_losses") or [None, None])
        if reference[0] is None and history.records:  # checkpoints written before the growth check
            reference = [history.records[0]["d_loss"], history.records[0]["g_loss"]]
        if metrics_path is not None:
            write_metrics(metrics_path, history.records)
    else:
        if world_size > 1:  # every process draws its own latents z (same seed everywhere otherwise)
            torch.manual_seed(torch.initial_seed() + rank)
        if metrics_path is not None:
            metrics_path.parent.mkdir(parents=True, exist_ok=True)
            write_metrics(metrics_path, [])

    def save(epoch: int, batch_in_epoch: int, sums: Tensor, counts: list[int]) -> None:
        if checkpoint is None:
            return
        rng_per_rank = [None] * world_size
        if world_size > 1:  # every process's RNG, so a resumed distributed run continues exactly
            torch.distributed.all_gather_object(rng_per_rank, rng_state())
        if not main_process:
            return
        checkpoint.save({
            "generator": generator.state_dict(), "discriminator": discriminator.state_dict(),
            "generator_optimizer": g_optimizer.state_dict(), "discriminator_optimizer": d_optimizer.state_dict(),
            "ema": None if ema is None else ema.state_dict(), "history": history.records, "epoch": epoch,
            "batch_in_epoch": batch_in_epoch, "step": step, "partial_sums": sums, "partial_counts": counts,
            "rng": rng_state(), "rng_per_rank": rng_per_rank if world_size > 1 else None, "reference_losses": reference,
        })

    def check_finite(values: Tensor, epoch: int) -> None:
        limits = [math.inf if r is None else divergence_limit(r, divergence_factor) for r in reference]
        if torch.isfinite(values).all() and all(abs(float(v)) <= limit for v, limit in zip(values, limits)):
            return
        where = f"the last good checkpoint is {str(checkpoint.path)!r}" if checkpoint and checkpoint.exists() else "no checkpoint was written"
        why = "are not finite" if not torch.isfinite(values).all() else \
            f"exceed {divergence_factor:g} x their first-step scales {[max(abs(r or 0.0), 1.0) for r in reference]} (divergence_factor)"
        raise TrainingDiverged(
            f"training diverged: discriminator/generator losses {values.tolist()} {why} at epoch {epoch + 1}, step {step}; "
            f"stopped, {where}. Lower the learning rates or regularize the discriminator."
        )

    total_steps = epochs * epoch_steps if max_steps is None else min(max_steps, epochs * epoch_steps)
    from tqdm.auto import tqdm

    for group in (*g_optimizer.param_groups, *d_optimizer.param_groups):
        group.setdefault("initial_lr", group["lr"])

    def set_learning_rates() -> None:
        factor = lr_factor(step / (epochs * epoch_steps))  # independent of max_steps, so resume is exact
        for group in (*g_optimizer.param_groups, *d_optimizer.param_groups):
            group["lr"] = group["initial_lr"] * factor

    bar = tqdm(total=total_steps, initial=min(step, total_steps), desc=description, disable=not (progress and main_process), dynamic_ncols=True)

    def epoch_means(running: Tensor, counts: list[int]) -> Tensor:
        """Mean (d_loss, g_loss) of the epoch so far, averaged over processes (one host sync)."""
        totals = torch.tensor([max(partial_counts[i] + counts[i], 1) for i in (0, 1)], dtype=torch.float64, device=running.device)
        return all_reduce_mean((partial.to(running.device) + running) / totals).cpu()

    generator.train()
    discriminator.train()
    try:
        for epoch in range(start_epoch, epochs):
            epoch_start = time.perf_counter()
            order = epoch_order(num_examples, epoch, seed, rank, world_size).to(device)
            running = torch.zeros(2, dtype=torch.float64, device=device)
            counts = [0, 0]
            batch_index = start_batch
            for batch in iterate_minibatches(tensors, batch_size, order, start=start_batch):
                if transform is not None:
                    batch = transform(batch)
                if lr_factor is not None:
                    set_learning_rates()
                d_loss = train_d(batch)
                d_optimizer.zero_grad(set_to_none=True)
                d_loss.backward()
                d_optimizer.step()
                if weight_clip is not None:
                    clip_weights(discriminator, weight_clip)
                running[0] += d_loss.detach().double()
                counts[0] += 1
                step += 1
                if reference[0] is None:  # one host sync per run
                    reference[0] = float(all_reduce_mean(d_loss.detach().double()))
                if step % n_critic == 0:
                    discriminator.requires_grad_(False)  # no D gradients on the generator step
                    g_loss = train_g(batch)
                    g_optimizer.zero_grad(set_to_none=True)
                    g_loss.backward()
                    g_optimizer.step()
                    discriminator.requires_grad_(True)
                    if ema is not None:
                        ema.update_parameters(generator)
                    running[1] += g_loss.detach().double()
                    counts[1] += 1
                    if reference[1] is None:
                        reference[1] = float(all_reduce_mean(g_loss.detach().double()))
                batch_index += 1
                bar.update(1)
                at_limit = max_steps is not None and step >= max_steps
                if step % log_every == 0 or at_limit:
                    means = epoch_means(running, counts)
                    check_finite(means, epoch)
                    bar.set_postfix(epoch=epoch + 1, d_loss=f"{means[0]:.4g}", g_loss=f"{means[1]:.4g}")
                if at_limit and batch_index < epoch_steps:
                    save(epoch, batch_index, partial + running.cpu(), [partial_counts[i] + counts[i] for i in (0, 1)])
                    return history
            totals = [partial_counts[i] + counts[i] for i in (0, 1)]
            means = epoch_means(running, counts)
            check_finite(means, epoch)
            record: dict[str, Any] = {"epoch": epoch + 1, "step": step, "d_loss": float(means[0]),
                                      "g_loss": float(means[1]) if totals[1] else None}
            record["seconds"] = time.perf_counter() - epoch_start
            if on_epoch_end is not None and main_process:
                saved_rng = rng_state()
                on_epoch_end(epoch, record)
                set_rng_state(saved_rng)  # what a callback draws must not change training
            history.records.append(record)
            start_batch, partial, partial_counts = 0, torch.zeros(2, dtype=torch.float64), [0, 0]
            save(epoch + 1, 0, partial, partial_counts)
            if metrics_path is not None:
                write_metrics(metrics_path, history.records)
            if max_steps is not None and step >= max_steps:
                return history
    finally:
        bar.close()
        history.steps = step
    return history


def fit_gan(
    generator: nn.Module,
    discriminator: nn.Module,
    data: TensorDataset | Sequence[Tensor] | Tensor,
    *,
    loss: Objective,
    latent_dim: int,
    n_critic: int | None = None,
    conditional: bool = False,
    epochs: int,
    batch_size: int | None = None,
    lr: float | None = None,
    generator_optim: OptimizerFactory | None = None,
    discriminator_optim: OptimizerFactory | None = None,
    **kwargs: Any,
) -> History:
    """Train ``generator(z[, y])`` against ``discriminator(x[, y])`` on real examples ``data[0]`` (labels ``data[1]``
    when ``conditional``) with objective ``loss``; z ~ N(0, I) of size ``latent_dim`` from the global RNG.

    Defaults follow the objective's recipe (optimizer, lr, betas, n_critic, batch size); ``kwargs`` go to
    :func:`train_adversarial` (device, checkpoint, resume, metrics_path, ema, max_steps, ...).
    """
    if not isinstance(loss, Objective):
        raise TypeError(f"loss must be a ppl_dgm.gan.losses.Objective (e.g. losses.non_saturating()), got {loss!r}")
    latent_dim = check_positive_int("latent_dim", latent_dim)
    n_critic = check_n_critic(loss.n_critic if n_critic is None else n_critic)
    batch_size = loss.batch_size if batch_size is None else batch_size
    generator_optim = generator_optim or (lambda parameters: loss.make_optimizer(parameters, lr))
    discriminator_optim = discriminator_optim or (lambda parameters: loss.make_optimizer(parameters, lr))

    def fake_and_condition(batch: Batch) -> tuple[Tensor, tuple[Tensor, ...]]:
        real = batch[0]
        z = torch.randn(real.shape[0], latent_dim, device=real.device, dtype=real.dtype)
        condition = (batch[1],) if conditional else ()
        return generator(z, *condition), condition

    def discriminator_loss(batch: Batch) -> Tensor:
        real = batch[0]
        fake, condition = fake_and_condition(batch)
        fake = fake.detach()
        value = loss.discriminator_loss(discriminator(real, *condition), discriminator(fake, *condition))
        if loss.penalty_weight:
            # Gulrajani et al. 2017, eq. 3: L = E D(x̃) − E D(x) + λ E (‖∇D(x̂)‖₂ − 1)²
            value = value + loss.penalty_weight * gradient_penalty(discriminator, real, fake, *condition)
        if loss.r1_weight:
            value = value + 0.5 * loss.r1_weight * r1_penalty(discriminator, real, *condition)  # Mescheder et al. 2018, eq. 9
        return value

    def generator_loss(batch: Batch) -> Tensor:
        fake, condition = fake_and_condition(batch)
        return loss.generator_loss(discriminator(fake, *condition))

    return train_adversarial(
        generator, discriminator, data, discriminator_loss=discriminator_loss, generator_loss=generator_loss,
        generator_optim=generator_optim, discriminator_optim=discriminator_optim, epochs=epochs,
        batch_size=batch_size, n_critic=n_critic, weight_clip=loss.weight_clip, **kwargs,
    )
