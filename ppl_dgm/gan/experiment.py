"""Train / load / sample / evaluate an image GAN run in ``runs/<name>/`` (what ``ppl-dgm train gan`` calls).

DCGAN (Radford et al. 2016), class-conditional DCGAN (Mirza & Osindero 2014) or the style-based generator
(Karras et al. 2019) against a DCGAN discriminator or StyleGAN2's residual one (``discriminator="residual"``), through :func:`ppl_dgm.gan.trainer.fit_gan`; the
generator EMA draws the per-epoch grids and the FD/KID samples.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn

from ppl_dgm._checks import check_positive_int, check_seed
from ppl_dgm.data import image_shape as dataset_image_shape
from ppl_dgm.data import load_dataset
from ppl_dgm.data import num_classes as dataset_num_classes
from ppl_dgm.gan.losses import OBJECTIVE_NAMES, Objective, apply_spectral_norm, objective, with_r1
from ppl_dgm.gan.nets import DCGANDiscriminator, DCGANGenerator
from ppl_dgm.gan.stylegan import ResidualDiscriminator, StyleGenerator
from ppl_dgm.gan.trainer import check_n_critic, fit_gan
from ppl_dgm.train.device import resolve_device
from ppl_dgm.train.ema import make_ema
from ppl_dgm.train.runs import RunDir

__all__ = ["ARCHITECTURES", "GANConfig", "build_networks", "train_gan", "load_gan_run", "sample_gan", "evaluate_gan"]

ARCHITECTURES = ("dcgan", "cgan", "stylegan")
DISCRIMINATORS = ("dcgan", "residual")
DATASETS = ("mnist5k", "mnist", "fashion_mnist", "cifar10")
_CRITIC_LOSSES = ("wasserstein", "wasserstein_gp")  # no batchnorm in the critic (Gulrajani et al. 2017, sec. 4)


@dataclass
class GANConfig:
    """Everything that defines an image GAN run; saved as ``config.json``. ``None`` = the objective's recipe."""

    arch: str = field(default="dcgan", metadata={"choices": ARCHITECTURES})
    discriminator: str = field(default="dcgan", metadata={"choices": DISCRIMINATORS, "help": "residual: StyleGAN2's equalized-lr "
                               "residual discriminator (Karras et al. 2020), not for cgan"})
    loss: str = field(default="non_saturating", metadata={"choices": OBJECTIVE_NAMES})
    dataset: str = field(default="mnist5k", metadata={"choices": DATASETS})
    latent_dim: int = 64
    channels: int = 64
    epochs: int = 10
    batch_size: int | None = field(default=None, metadata={"help": "default: the objective's recipe (64)"})
    lr: float | None = field(default=None, metadata={"help": "default: the objective's recipe"})
    generator_lr: float | None = field(default=None, metadata={"help": "the generator's own lr (default: --lr; two time-scale updates, Heusel et al. 2017)"})
    beta1: float | None = field(default=None, metadata={"help": "Adam β₁ of both players (default: the recipe's; StyleGAN: 0)"})
    beta2: float | None = field(default=None, metadata={"help": "Adam β₂ of both players (default: the recipe's; StyleGAN: 0.99)"})
    n_critic: int | None = field(default=None, metadata={"help": "discriminator steps per generator step (default: recipe)"})
    ema_decay: float = 0.995  # half-life ~140 generator steps (~9k images at batch 64)
    spectral_norm: bool = field(default=False, metadata={"help": "spectral normalization in D (Miyato et al. 2018)"})
    minibatch_std: bool = field(default=False, metadata={"help": "minibatch std feature in D (Karras et al. 2018)"})
    mixing_probability: float = field(default=0.9, metadata={"help": "style mixing (stylegan)"})
    tanh_output: bool = field(default=False, metadata={"help": "stylegan: tanh on the generator's output, as DCGAN's (data in [−1, 1])"})
    r1_gamma: float = field(default=0.0, metadata={"help": "γ of the R1 penalty γ/2·E‖∇D(x)‖² on real data (Mescheder et al. 2018)"})
    seed: int = 0
    data_root: str | None = field(default=None, metadata={"help": "folder with torchvision files; never downloads"})

    def __post_init__(self) -> None:
        for name, known in (("arch", ARCHITECTURES), ("discriminator", DISCRIMINATORS), ("loss", OBJECTIVE_NAMES), ("dataset", DATASETS)):
            if getattr(self, name) not in known:
                raise ValueError(f"{name}={getattr(self, name)!r} is not known; expected one of {known}")
        for name in ("latent_dim", "channels", "epochs"):
            check_positive_int(name, getattr(self, name))
        check_seed(self.seed)
        if self.batch_size is not None:
            check_positive_int("batch_size", self.batch_size)
        if self.n_critic is not None:
            check_n_critic(self.n_critic)
        for name in ("lr", "generator_lr"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive float, got {value!r}")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value < 1.0):
                raise ValueError(f"{name} must be a float in [0, 1) (an Adam β), got {value!r}")
        if self.discriminator == "residual" and (self.arch == "cgan" or self.spectral_norm):
            raise ValueError(f"discriminator='residual' takes no labels and no spectral norm (it has the equalized lr), got arch={self.arch!r}, "
                             f"spectral_norm={self.spectral_norm!r}; use discriminator='dcgan'")
        if not (isinstance(self.r1_gamma, (int, float)) and math.isfinite(self.r1_gamma) and self.r1_gamma >= 0):
            raise ValueError(f"r1_gamma must be a finite float >= 0, got {self.r1_gamma!r}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in (0, 1), got {self.ema_decay!r}")

    def as_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))


def build_networks(config: GANConfig) -> tuple[nn.Module, nn.Module]:
    """Untrained (generator, discriminator) of a config."""
    shape = dataset_image_shape(config.dataset)
    classes = dataset_num_classes(config.dataset) if config.arch == "cgan" else None
    if config.arch == "stylegan":
        generator: nn.Module = StyleGenerator(config.latent_dim, shape, config.channels, mixing_probability=config.mixing_probability,
                                                  tanh=config.tanh_output)
    else:
        generator = DCGANGenerator(config.latent_dim, shape, config.channels, num_classes=classes)
    # batchnorm in D only for DCGAN-style runs: not in a WGAN critic (Gulrajani et al. 2017, sec. 4), not with
    # spectral norm, not against the style-based generator (Karras et al. 2019 use none; with it G collapsed here)
    batch_norm = config.loss not in _CRITIC_LOSSES and not config.spectral_norm and config.arch != "stylegan"
    if config.discriminator == "residual":
        discriminator: nn.Module = ResidualDiscriminator(shape, config.channels, minibatch_std=config.minibatch_std)
    else:
        discriminator = DCGANDiscriminator(shape, config.channels, num_classes=classes, batch_norm=batch_norm,
                                           minibatch_std=config.minibatch_std)
    if config.spectral_norm:
        apply_spectral_norm(discriminator)
    return generator, discriminator


@torch.no_grad()
def sample_gan(generator: nn.Module, config: GANConfig, n: int, *, generator_rng: torch.Generator | None = None,
               truncation: float = 1.0) -> tuple[torch.Tensor, int]:
    """Images (n, C, H, W) in [0, 1] from a generator in eval mode, and a grid row length; a cGAN gives one
    row per class (labels 0..9, n // 10 each)."""
    device = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    try:
        nrow, condition = 8, ()
        if config.arch == "cgan":
            classes = dataset_num_classes(config.dataset)
            nrow = max(1, n // classes)
            condition = (torch.arange(classes, device=device).repeat_interleave(nrow),)
            n = condition[0].numel()
        z = torch.randn(n, config.latent_dim, generator=generator_rng, device=device)
        kwargs = {"truncation": truncation} if config.arch == "stylegan" else {}
        images = generator(z, *condition, **kwargs)
    finally:
        generator.train(was_training)
    return ((images + 1) / 2).clamp(0, 1), nrow


def evaluate_gan(generator: nn.Module, config: GANConfig, num_samples: int = 1000, *, cache_dir: str | os.PathLike = "runs",
                 seed: int = 0, inception_weights: str | os.PathLike | None = None) -> dict[str, Any]:
    """FD and KID of ``num_samples`` samples against the test split (features of the library's digit classifier);
    with ``inception_weights`` (a local FID Inception-v3 file) also the standard ``inception_fid``."""
    from ppl_dgm.metrics.frechet import sample_quality

    check_positive_int("num_samples", num_samples)
    rng = torch.Generator(device=next(generator.parameters()).device).manual_seed(seed)
    chunks, labels_needed = [], config.arch == "cgan"
    remaining = num_samples
    while remaining > 0:
        size = min(500, remaining)
        images, _ = sample_gan(generator, config, size if not labels_needed else max(size, 10), generator_rng=rng)
        chunks.append(images[:remaining].cpu())
        remaining -= len(chunks[-1])
    samples = torch.cat(chunks)
    if labels_needed:  # one row per class: shuffle so a truncated set is still class-balanced
        samples = samples[torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed))]
    return sample_quality(samples, config.dataset, cache_dir=cache_dir, seed=0, inception_weights=inception_weights)


def config_objective(config: GANConfig) -> Objective:
    """The run's objective: the recipe of ``config.loss`` with R1 at ``config.r1_gamma`` and the Adam β's of the config."""
    recipe = with_r1(objective(config.loss), config.r1_gamma)
    if config.beta1 is not None or config.beta2 is not None:
        recipe = replace(recipe, betas=(recipe.betas[0] if config.beta1 is None else float(config.beta1),
                                         recipe.betas[1] if config.beta2 is None else float(config.beta2)))
    return recipe


def generator_optimizer(config: GANConfig, recipe: Objective | None = None):
    """The objective's optimizer at ``config.generator_lr`` for the generator (the discriminator keeps ``config.lr``)."""
    recipe = config_objective(config) if recipe is None else recipe
    return lambda parameters: recipe.make_optimizer(parameters, config.generator_lr)


def train_gan(config: GANConfig, run_dir: str | os.PathLike, *, device: str | torch.device = "auto", resume: bool = False,
              progress: bool = True, max_steps: int | None = None, eval_samples: int = 0,
              classifier_dir: str | os.PathLike = "runs") -> dict[str, Any]:
    """Train a GAN into ``run_dir`` (config, metrics, checkpoint, samples.png per epoch); FD/KID when ``eval_samples``."""
    run = RunDir(run_dir)
    run.start(config.as_json(), resume)
    device = resolve_device(device)
    torch.manual_seed(config.seed)
    images, labels = load_dataset(config.dataset, "train", root=config.data_root).tensors
    generator, discriminator = build_networks(config)
    ema = make_ema(generator, config.ema_decay)

    def write_samples(epoch: int, record: dict[str, Any]) -> None:
        grid, nrow = sample_gan(ema.module, config, 100 if config.arch == "cgan" else 64,
                                generator_rng=torch.Generator(device=device).manual_seed(config.seed))
        run.save_grid(grid, "samples.png", nrow=nrow)

    recipe = config_objective(config)
    started = time.perf_counter()
    history = fit_gan(
        generator, discriminator, (images * 2 - 1, labels), loss=recipe, latent_dim=config.latent_dim,
        n_critic=config.n_critic, conditional=config.arch == "cgan", epochs=config.epochs, batch_size=config.batch_size,
        lr=config.lr, generator_optim=None if config.generator_lr is None else generator_optimizer(config, recipe), ema=ema, device=device, checkpoint=run.checkpoint, resume=resume, metrics_path=run.metrics_path,
        max_steps=max_steps, seed=config.seed, progress=progress, on_epoch_end=write_samples,
        description=f"{config.arch} {config.loss} {config.dataset}",
    )
    result: dict[str, Any] = {"epochs_done": len(history), "steps": history.steps,
                              "train_seconds": time.perf_counter() - started, "device": str(device)}
    if history.records:
        result.update(d_loss=history["d_loss"][-1], g_loss=history["g_loss"][-1])
    if eval_samples:
        result.update(evaluate_gan(ema.module, config, eval_samples, cache_dir=classifier_dir, seed=config.seed))
    return result


def load_gan_run(run_dir: str | os.PathLike, device: str | torch.device = "auto") -> tuple[nn.Module, GANConfig]:
    """The EMA generator (eval mode) and config of a run folder written by :func:`train_gan`."""
    run = RunDir(run_dir)
    config = GANConfig(**run.read_config())
    generator, _ = build_networks(config)
    ema = make_ema(generator, config.ema_decay)
    ema.load_state_dict(run.checkpoint.load(map_location="cpu")["ema"])
    return ema.module.to(resolve_device(device)).eval(), config
