"""Train / evaluate autoencoders, denoising autoencoders and VQ-VAEs in ``runs/<name>/`` (``ppl-dgm train ae|dae|vqvae``)."""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import torch
from torch.utils.data import TensorDataset

from ppl_dgm._checks import check_choice, check_positive_float, check_positive_int, check_seed
from ppl_dgm.data import image_shape as dataset_image_shape
from ppl_dgm.data import load_dataset
from ppl_dgm.train.device import resolve_device
from ppl_dgm.train.loop import evaluate_loss, fit
from ppl_dgm.train.runs import RunDir
from ppl_dgm.vae.autoencoder import NOISE_TYPES, RECONSTRUCTION_LOSSES, Autoencoder, conv_autoencoder, mlp_autoencoder
from ppl_dgm.vae.experiment import ARCHITECTURES, DATASETS, VAEConfig, vae_data, write_grids
from ppl_dgm.vae.vqvae import VQVAE

__all__ = ["AEConfig", "VQVAEConfig", "build_autoencoder", "build_vqvae", "train_autoencoder", "evaluate_autoencoder", "train_vqvae",
           "evaluate_vqvae", "load_autoencoder_run"]


@dataclass
class AEConfig:
    """A (denoising) autoencoder run; ``loss="bce"`` trains on the binarized digits the Bernoulli VAEs use."""

    dataset: str = field(default="mnist5k", metadata={"choices": DATASETS})
    arch: str = field(default="mlp", metadata={"choices": ARCHITECTURES})
    latent_dim: int = 50
    hidden: int = 400
    channels: int = 32
    corruption: float = field(default=0.0, metadata={"help": "masking probability or Gaussian noise std"})
    noise: str = field(default="masking", metadata={"choices": NOISE_TYPES})
    loss: str = field(default="bce", metadata={"choices": RECONSTRUCTION_LOSSES, "help": "bce on binarized digits or mse on grey levels"})
    epochs: int = 50
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    data_root: str | None = field(default=None, metadata={"help": "folder with torchvision files; never downloads"})

    def __post_init__(self) -> None:
        check_choice("arch", self.arch, ARCHITECTURES)
        check_choice("noise", self.noise, NOISE_TYPES)
        check_choice("loss", self.loss, RECONSTRUCTION_LOSSES)
        for name in ("latent_dim", "hidden", "channels", "epochs", "batch_size"):
            check_positive_int(name, getattr(self, name))
        check_positive_float("lr", self.lr)
        check_seed(self.seed)

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


def _train_deterministic(model, config, run_dir, train_data, test_data, val_loss_fn, *, device, resume, progress, max_steps, description):
    """The run mechanics shared by autoencoders and VQ-VAEs: config, plain loop, grids."""
    run = RunDir(run_dir)
    run.start(asdict(config), resume)
    model = model.to(device)
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
        val_loss_fn=val_loss_fn,
        checkpoint=run.checkpoint,
        resume=resume,
        progress=progress,
        metrics_path=run.metrics_path,
        max_steps=max_steps,
        seed=config.seed,
        on_epoch_end=lambda epoch, record: write_grids(run, model, test_images, config.seed),
        description=description,
    )
    write_grids(run, model, test_images, config.seed)
    return {"epochs_done": len(history), "train_seconds": time.perf_counter() - started, "device": str(device)}


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
    device = resolve_device(device)
    torch.manual_seed(config.seed)
    train_data, test_data = config.data("train"), config.data("test")
    model = build_autoencoder(config)
    result = _train_deterministic(
        model, config, run_dir, train_data, test_data,
        lambda batch: model.reconstruction_error(batch[0], corrupt=False).mean(),
        device=device, resume=resume, progress=progress, max_steps=max_steps,
        description="dae" if config.corruption > 0 else "ae",
    )
    result.update(evaluate_autoencoder(model, test_data))
    return result


@dataclass
class VQVAEConfig:
    """A VQ-VAE run on 8-bit grey images (van den Oord et al. 2017 defaults: β = 0.25, EMA decay 0.99)."""

    dataset: str = field(default="mnist5k", metadata={"choices": DATASETS})
    num_codes: int = 128
    code_dim: int = 16
    channels: int = 32
    beta: float = field(default=0.25, metadata={"help": "commitment weight"})
    ema_decay: float | None = field(default=0.99, metadata={"help": "EMA codebook decay; 0 for the codebook loss instead"})
    restart_dead_codes: bool = True
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    data_root: str | None = field(default=None, metadata={"help": "folder with torchvision files; never downloads"})

    def __post_init__(self) -> None:
        for name in ("num_codes", "code_dim", "channels", "epochs", "batch_size"):
            check_positive_int(name, getattr(self, name))
        check_positive_float("lr", self.lr)
        check_seed(self.seed)


@torch.no_grad()
def evaluate_vqvae(model: VQVAE, data: TensorDataset) -> dict[str, float]:
    """Held-out reconstruction MSE per pixel and codebook perplexity over all held-out latents."""
    device = next(model.parameters()).device
    x = data.tensors[0].to(device)
    model.eval()
    mse = evaluate_loss(lambda batch: model.losses(batch[0])["reconstruction"], (x,), 500)
    codes = torch.cat([model.codes(chunk) for chunk in x.split(500)]).flatten()
    usage = torch.bincount(codes, minlength=model.quantizer.num_codes).double() / codes.numel()
    perplexity = torch.exp(-(usage * torch.log(usage + 1e-12)).sum()).item()
    model.train()
    return {"test_mse_per_pixel": mse, "test_perplexity": perplexity, "codes_used": int((usage > 0).sum())}


def train_vqvae(
    config: VQVAEConfig,
    run_dir: str | os.PathLike,
    *,
    device: str | torch.device = "auto",
    resume: bool = False,
    progress: bool = True,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Train a VQ-VAE with the plain loop; report held-out MSE and codebook perplexity."""
    device = resolve_device(device)
    torch.manual_seed(config.seed)
    train_data = load_dataset(config.dataset, "train", root=config.data_root)
    test_data = load_dataset(config.dataset, "test", root=config.data_root)
    model = build_vqvae(config)
    result = _train_deterministic(
        model, config, run_dir, train_data, test_data, lambda batch: model.losses(batch[0])["reconstruction"],
        device=device, resume=resume, progress=progress, max_steps=max_steps, description="vqvae",
    )
    result.update(evaluate_vqvae(model, test_data))
    return result


def build_vqvae(config: VQVAEConfig) -> VQVAE:
    return VQVAE(dataset_image_shape(config.dataset), config.num_codes, config.code_dim, config.channels,
                 config.beta, config.ema_decay, config.restart_dead_codes)


def load_autoencoder_run(run_dir: str | os.PathLike, device: str | torch.device = "auto") -> tuple[Autoencoder | VQVAE, AEConfig | VQVAEConfig]:
    """The trained (denoising) autoencoder or VQ-VAE (eval mode) and its config, from a run folder."""
    run = RunDir(run_dir)
    saved = run.read_config()
    config = VQVAEConfig(**saved) if "num_codes" in saved else AEConfig(**saved)
    model = build_vqvae(config) if isinstance(config, VQVAEConfig) else build_autoencoder(config)
    model.load_state_dict(run.checkpoint.load(map_location="cpu")["module"])
    return model.to(resolve_device(device)).eval(), config
