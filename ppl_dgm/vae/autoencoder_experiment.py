"""Train / evaluate plain and denoising autoencoders in ``runs/<name>/`` (``ppl-dgm train ae|dae``)."""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import torch
from torch.utils.data import TensorDataset

from ppl_dgm._checks import check_positive_int
from ppl_dgm.data import image_shape as dataset_image_shape
from ppl_dgm.train.device import resolve_device
from ppl_dgm.train.loop import evaluate_loss, fit
from ppl_dgm.train.runs import RunDir
from ppl_dgm.vae.autoencoder import NOISE_TYPES, RECONSTRUCTION_LOSSES, Autoencoder, conv_autoencoder, mlp_autoencoder
from ppl_dgm.vae.experiment import ARCHITECTURES, VAEConfig, vae_data, write_grids

__all__ = ["AEConfig", "build_autoencoder", "train_autoencoder", "evaluate_autoencoder"]


@dataclass
class AEConfig:
    """A (denoising) autoencoder run; ``loss="bce"`` trains on the binarized digits the Bernoulli VAEs use."""

    dataset: str = "mnist5k"
    arch: str = "mlp"
    latent_dim: int = 50
    hidden: int = 400
    channels: int = 32
    corruption: float = 0.0
    noise: str = "masking"
    loss: str = "bce"
    epochs: int = 50
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    data_root: str | None = None

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch={self.arch!r} is not known; expected one of {ARCHITECTURES}")
        if self.noise not in NOISE_TYPES:
            raise ValueError(f"noise={self.noise!r} is not known; expected one of {NOISE_TYPES}")
        if self.loss not in RECONSTRUCTION_LOSSES:
            raise ValueError(f"loss={self.loss!r} is not known; expected one of {RECONSTRUCTION_LOSSES}")
        for name in ("latent_dim", "hidden", "channels", "epochs", "batch_size"):
            check_positive_int(name, getattr(self, name))
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ValueError(f"lr must be a positive float, got {self.lr!r}")

    def data(self, split: str) -> TensorDataset:
        """Binarized images for BCE, 8-bit grey images for MSE (the same splits as the VAEs)."""
        likelihood = "bernoulli" if self.loss == "bce" else "gaussian"
        return vae_data(VAEConfig(dataset=self.dataset, likelihood=likelihood, data_root=self.data_root), split)


def build_autoencoder(config: AEConfig) -> Autoencoder:
    shape = dataset_image_shape(config.dataset)
    options = dict(corruption=config.corruption, noise=config.noise, loss=config.loss)
    if config.arch == "mlp":
        return mlp_autoencoder(shape, config.latent_dim, (config.hidden,), **options)
    return conv_autoencoder(shape, config.latent_dim, config.channels, **options)


@torch.no_grad()
def evaluate_autoencoder(model: Autoencoder, data: TensorDataset) -> dict[str, float]:
    """Held-out error of reconstructing clean inputs from clean inputs: per image (nats for BCE) and per pixel MSE."""
    device = next(model.parameters()).device
    x = data.tensors[0].to(device)
    model.eval()
    error = evaluate_loss(lambda batch: model.reconstruction_error(batch[0], corrupt=False).mean(), (x,), 500)
    squared = evaluate_loss(lambda batch: (model.reconstruct(batch[0]) - batch[0]).pow(2).mean(), (x,), 500)
    model.train()
    key = "test_reconstruction_nats" if model.loss_type == "bce" else "test_squared_error"
    return {key: error, "test_mse_per_pixel": squared}


def train_autoencoder(
    config: AEConfig,
    run_dir: str | os.PathLike,
    *,
    device: str | torch.device = "auto",
    resume: bool = False,
    progress: bool = True,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Train with the plain torch loop (checkpoints, exact resume, NaN stop) and report held-out errors."""
    run = RunDir(run_dir)
    if resume and (run.path / "config.json").is_file() and run.read_config() != asdict(config):
        raise ValueError(f"resume: config differs from the one saved in {str(run.path)!r}")
    run.write_config(asdict(config))
    device = resolve_device(device)
    torch.manual_seed(config.seed)
    train_data, test_data = config.data("train"), config.data("test")
    model = build_autoencoder(config).to(device)
    test_images = test_data.tensors[0].to(device)
    started = time.perf_counter()
    history = fit(
        model,
        model.loss,
        train_data,
        epochs=config.epochs,
        batch_size=config.batch_size,
        optim=partial(torch.optim.Adam, lr=config.lr),
        device=device,
        val_data=test_data,
        val_loss_fn=lambda batch: model.reconstruction_error(batch[0], corrupt=False).mean(),
        checkpoint=run.checkpoint,
        resume=resume,
        progress=progress,
        metrics_path=run.metrics_path,
        max_steps=max_steps,
        seed=config.seed,
        on_epoch_end=lambda epoch, record: write_grids(run, model, test_images, config.seed),
        description="dae" if config.corruption > 0 else "ae",
    )
    write_grids(run, model, test_images, config.seed)
    result = {"epochs_done": len(history), "train_seconds": time.perf_counter() - started, "device": str(device)}
    result.update(evaluate_autoencoder(model, test_data))
    return result
