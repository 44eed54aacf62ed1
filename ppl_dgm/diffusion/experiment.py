"""Train / load / sample / evaluate a DDPM run in ``runs/<name>/`` (what ``ppl-dgm train ddpm`` calls).

Training is Ho et al. 2020's Alg. 1 (L_simple) through :func:`ppl_dgm.train.fit`; the EMA weights
(Ho et al. 2020, App. B) sample the per-epoch grids and give the bits/dim of the Pyro ELBO.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from ppl_dgm._checks import check_positive_int, check_positive_int_sequence, check_seed
from ppl_dgm.data import image_shape as dataset_image_shape
from ppl_dgm.data import load_dataset
from ppl_dgm.data import num_classes as dataset_num_classes
from ppl_dgm.diffusion.ddpm import DDPM, VARIANCES, ddpm_bits_per_dim, simple_loss, to_image_space, to_model_space
from ppl_dgm.diffusion.guidance import drop_labels
from ppl_dgm.diffusion.samplers import sample_ancestral, sample_ddim
from ppl_dgm.diffusion.schedules import NoiseSchedule, cosine_schedule, linear_schedule
from ppl_dgm.nn import UNet
from ppl_dgm.train.device import resolve_device
from ppl_dgm.train.ema import make_ema
from ppl_dgm.train.loop import fit
from ppl_dgm.train.runs import RunDir

__all__ = ["DDPMConfig", "build_unet", "build_schedule", "train_ddpm", "load_ddpm_run", "sample_run", "evaluate_ddpm"]

DATASETS = ("mnist5k", "digits", "cifar10")
SCHEDULES = ("linear", "cosine")
# the latent DDPM's samplers (no SDE reading of its MLP); a DDPM run takes every name of diffusion.sampling.SAMPLER_NAMES
SAMPLERS = ("ancestral", "ddim", "dpmpp-2m", "dpmpp-2m-sde", "heun", "euler-ancestral")


@dataclass
class DDPMConfig:
    """Everything that defines a DDPM run; saved as ``config.json``."""

    dataset: str = field(default="mnist5k", metadata={"choices": DATASETS})
    channels: int = field(default=32, metadata={"help": "U-Net base channels"})
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    # self-attention at the lowest resolution (and always in the middle)
    attention: bool = field(default=True, metadata={"help": "no self-attention at the lowest level"})
    dropout: float = 0.1
    schedule: str = field(default="linear", metadata={"choices": SCHEDULES})
    num_steps: int = field(default=1000, metadata={"help": "diffusion steps T"})
    variance: str = field(default="beta", metadata={"choices": VARIANCES, "help": "reverse variance σ_t²"})
    class_conditional: bool = field(default=False, metadata={"help": "condition on labels, dropped with --p-uncond"})
    p_uncond: float = 0.1
    epochs: int = 20
    batch_size: int = 128
    lr: float = 2e-4
    ema_decay: float = 0.9999
    grad_clip: float = 1.0
    sample_steps: int = field(default=50, metadata={"help": "DDIM steps of the per-epoch grid"})
    guidance_scale: float = field(default=1.0, metadata={"help": "w of classifier-free guidance for grids"})
    seed: int = 0
    data_root: str | None = field(default=None, metadata={"help": "folder with the cifar10 files; never downloads"})

    def __post_init__(self) -> None:
        self.channel_mults = check_positive_int_sequence("channel_mults", tuple(self.channel_mults))
        choices = {"dataset": DATASETS, "schedule": SCHEDULES, "variance": VARIANCES}
        for name, known in choices.items():
            if getattr(self, name) not in known:
                raise ValueError(f"{name}={getattr(self, name)!r} is not known; expected one of {known}")
        for name in ("channels", "num_res_blocks", "num_steps", "epochs", "batch_size", "sample_steps"):
            check_positive_int(name, getattr(self, name))
        check_seed(self.seed)
        for name, low, high in (("dropout", 0.0, 1.0), ("p_uncond", 0.0, 1.0), ("ema_decay", 0.0, 1.0)):
            value = getattr(self, name)
            if not (low <= value < high if name != "ema_decay" else low < value < high):
                raise ValueError(f"{name} must lie in [{low}, {high}), got {value!r}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ValueError(f"lr must be a positive float, got {self.lr!r}")
        if not self.guidance_scale >= 0:
            raise ValueError(f"guidance_scale must be >= 0, got {self.guidance_scale!r}")
        if self.sample_steps > self.num_steps:
            raise ValueError(f"sample_steps must be at most num_steps={self.num_steps}, got {self.sample_steps}")
        side = dataset_image_shape(self.dataset)[-1]
        factor = 2 ** (len(self.channel_mults) - 1)
        if side % factor:
            raise ValueError(
                f"image size {side} of dataset {self.dataset!r} is not divisible by {factor}, the U-Net's total "
                f"downsampling for channel_mults={self.channel_mults}; use fewer levels"
            )

    def as_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))


def build_unet(config: DDPMConfig) -> UNet:
    """The ε-network a config describes (untrained): attention at the lowest level when ``config.attention``."""
    channels, side, _ = dataset_image_shape(config.dataset)
    lowest_side = side // 2 ** (len(config.channel_mults) - 1)
    return UNet(
        channels,
        config.channels,
        config.channel_mults,
        config.num_res_blocks,
        (lowest_side,) if config.attention else (),
        config.dropout,
        dataset_num_classes(config.dataset) if config.class_conditional else None,
        groups=min(8, config.channels),
        image_size=side,
    )


def build_schedule(config: DDPMConfig) -> NoiseSchedule:
    return linear_schedule(config.num_steps) if config.schedule == "linear" else cosine_schedule(config.num_steps)


def ema_state(state: dict[str, Any]) -> dict[str, Any]:
    """The EMA state dict of a checkpoint. Runs written before the loop owned the EMA kept it inside the
    trained module, under ``"ema."``."""
    if state.get("ema") is not None:
        return state["ema"]
    return {key[len("ema."):]: value for key, value in state["module"].items() if key.startswith("ema.")}


def _to_model_space_batch(batch):
    return (to_model_space(batch[0]),) + tuple(batch[1:])


def check_run_sampler(config, sampler: str, steps: int | None, eta: float):
    """Checks a sampler choice against a run's config (a DDPM or Palette run: ``num_steps``, ``schedule``) and returns the
    VP SDE the SDE samplers read the network as (VPSDE(0.1, 20), linear T = 1000 only), else None."""
    from ppl_dgm.diffusion.sampling import SAMPLER_NAMES, SDE_SAMPLER_NAMES

    if sampler not in SAMPLER_NAMES:
        raise ValueError(f"sampler={sampler!r} is not known; expected one of {SAMPLER_NAMES}")
    if steps is not None:
        check_positive_int("steps", steps)
        if steps > config.num_steps and sampler not in SDE_SAMPLER_NAMES:
            raise ValueError(f"steps must be at most the run's num_steps={config.num_steps}, got {steps}")
    if not (isinstance(eta, (int, float)) and 0.0 <= eta <= 1.0):
        raise ValueError(f"eta must lie in [0, 1], got {eta!r}")
    if sampler not in SDE_SAMPLER_NAMES:
        return None
    if config.schedule != "linear" or config.num_steps != 1000:
        raise ValueError(f"sampler={sampler!r} reads the network as VPSDE(0.1, 20), the limit of the linear T = 1000 schedule; "
                         f"this run has schedule={config.schedule!r}, num_steps={config.num_steps}")
    from ppl_dgm.sde import VPSDE

    return VPSDE(0.1, 20.0)


def sample_run(ema_net: nn.Module, config: DDPMConfig, n: int, *, sampler: str = "ddim", steps: int | None = None, eta: float = 0.0,
               guidance_scale: float | None = None, classifier: nn.Module | None = None, classifier_scale: float | None = None,
               generator: torch.Generator | None = None, progress: bool = False, callback=None) -> tuple[torch.Tensor, int]:
    """Images in [0, 1] from a run's network by any sampler of :data:`ppl_dgm.diffusion.sampling.SAMPLER_NAMES` (predicted
    x_0 clipped to [−1, 1]), and the grid row length; class-conditional runs give one row per class (labels 0..9,
    n // 10 each). DDIM defaults to the run's ``sample_steps``; the SDE samplers read the network as VPSDE(0.1, 20).
    ``classifier`` (a noise-aware p_φ(y | x_t, t) of the same forward process, see ``classifier_experiment``) guides
    toward the same per-class rows with scale ``classifier_scale`` (default 1; Dhariwal & Nichol 2021)."""
    from ppl_dgm.diffusion.sampling import sample_by_name

    sde = check_run_sampler(config, sampler, steps, eta)
    n = check_positive_int("n", n)
    if guidance_scale is not None and not config.class_conditional:
        raise ValueError(f"guidance_scale={guidance_scale!r}: classifier-free guidance needs a class-conditional run "
                         "(trained with --class-conditional); this run is unconditional")
    if guidance_scale is not None and not (isinstance(guidance_scale, (int, float)) and guidance_scale >= 0):
        raise ValueError(f"guidance_scale must be a number >= 0, got {guidance_scale!r}")
    if classifier_scale is not None and classifier is None:
        raise ValueError(f"classifier_scale={classifier_scale!r} needs a classifier (a noisy-classifier run), got classifier=None")
    device = next(ema_net.parameters()).device
    shape = dataset_image_shape(config.dataset)
    y, labels, nrow = None, None, 8
    guidance_scale = config.guidance_scale if guidance_scale is None else guidance_scale
    if config.class_conditional or classifier is not None:  # one row per class, for the network or the classifier
        classes = dataset_num_classes(config.dataset)
        nrow = max(1, n // classes)
        labels = torch.arange(classes, device=device).repeat_interleave(nrow)
        n = labels.numel()
        y = labels if config.class_conditional else None
    if not config.class_conditional:
        guidance_scale = 0.0
    if sampler == "ddim" and steps is None:
        steps = config.sample_steps
    guided = {} if classifier is None else {"classifier": classifier, "classifier_y": labels,
                                            "classifier_scale": 1.0 if classifier_scale is None else classifier_scale}
    networks = [ema_net] + ([classifier] if isinstance(classifier, nn.Module) else [])
    was_training = [network.training for network in networks]
    for network in networks:
        network.eval()
    try:
        x = sample_by_name(sampler, ema_net, build_schedule(config), (n, *shape), steps=steps, eta=eta, variance=config.variance,
                           sde=sde, generator=generator, y=y, guidance_scale=guidance_scale, clip_x0=True, progress=progress,
                           callback=callback, **guided)
    finally:
        for network, mode in zip(networks, was_training):
            network.train(mode)
    return to_image_space(x), nrow


def evaluate_ddpm(ema_net: nn.Module, config: DDPMConfig, num_images: int = 16, batch_size: int = 16, progress: bool = False) -> dict[str, float]:
    """Bits/dim of the full Pyro ELBO on the first ``num_images`` held-out images (8-bit)."""
    check_positive_int("num_images", num_images)
    x, y = load_dataset(config.dataset, "test", root=config.data_root).tensors
    ddpm = DDPM(ema_net, build_schedule(config), variance=config.variance, estimator="full")
    labels = y[:num_images] if config.class_conditional else None
    return ddpm_bits_per_dim(ddpm, x[:num_images], y=labels, batch_size=batch_size, progress=progress)


def train_ddpm(
    config: DDPMConfig,
    run_dir: str | os.PathLike,
    *,
    device: str | torch.device = "auto",
    resume: bool = False,
    progress: bool = True,
    max_steps: int | None = None,
    eval_images: int = 0,
    amp: str | None = None,
) -> dict[str, Any]:
    """Train an ε-network with L_simple into ``run_dir`` (config, metrics, checkpoint, samples.png per epoch);
    ``amp="bf16"`` trains under bf16 autocast (a runtime option, not part of the config)."""
    run = RunDir(run_dir)
    run.start(config.as_json(), resume)
    device = resolve_device(device)
    torch.manual_seed(config.seed)
    train_data = load_dataset(config.dataset, "train", root=config.data_root)
    test_data = load_dataset(config.dataset, "test", root=config.data_root)
    schedule = build_schedule(config)
    net = build_unet(config).to(device)
    ema = make_ema(net, config.ema_decay)  # Ho et al. 2020, App. B: samples and evaluation use the EMA weights

    def loss_fn(batch):  # Ho et al. 2020, Alg. 1; labels dropped to ∅ with p_uncond (Ho & Salimans 2022, Alg. 1)
        x0, y = batch[0], batch[1]
        if not config.class_conditional:
            return simple_loss(net, schedule, x0)
        return simple_loss(net, schedule, x0, drop_labels(y, config.p_uncond))

    def val_loss_fn(batch):
        return simple_loss(ema.module, schedule, batch[0], batch[1] if config.class_conditional else None)

    def write_samples(epoch: int, record: dict[str, Any]) -> None:
        generator = torch.Generator(device=device).manual_seed(config.seed)
        images, nrow = sample_run(ema.module, config, 80 if config.class_conditional else 64, generator=generator)
        run.save_grid(images, "samples.png", nrow=nrow)

    started = time.perf_counter()
    history = fit(
        net,
        loss_fn,
        train_data,
        epochs=config.epochs,
        batch_size=config.batch_size,
        optim=lambda parameters: torch.optim.Adam(parameters, lr=config.lr),
        ema=ema,
        device=device,
        val_data=TensorDataset(to_model_space(test_data.tensors[0]), *test_data.tensors[1:]),  # fit transforms only training batches
        val_loss_fn=val_loss_fn,
        transform=_to_model_space_batch,
        checkpoint=run.checkpoint,
        resume=resume,
        metrics_path=run.metrics_path,
        max_steps=max_steps,
        grad_clip=config.grad_clip,
        seed=config.seed,
        progress=progress,
        on_epoch_end=write_samples,
        description=f"ddpm {config.dataset}",
        amp=amp,
    )
    seconds = time.perf_counter() - started
    steps = history.records[-1]["step"] if history.records else 0
    result: dict[str, Any] = {"epochs_done": len(history), "steps": steps, "train_seconds": seconds, "device": str(device)}
    if history.records:
        result["train_loss"] = history.loss[-1]
        result["val_loss"] = history.val_loss[-1]
    if eval_images:
        result.update({f"test_{k}": v for k, v in evaluate_ddpm(ema.module, config, eval_images, progress=progress).items()})
    return result


def load_ddpm_run(run_dir: str | os.PathLike, device: str | torch.device = "auto") -> tuple[nn.Module, DDPMConfig]:
    """The EMA ε-network (eval mode) and config of a run folder written by :func:`train_ddpm`."""
    run = RunDir(run_dir)
    config = DDPMConfig(**run.read_config())
    ema = make_ema(build_unet(config), config.ema_decay)
    ema.load_state_dict(ema_state(run.checkpoint.load(map_location="cpu")))
    return ema.module.to(resolve_device(device)).eval(), config
