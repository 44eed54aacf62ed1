"""Latent diffusion (Rombach et al. 2022): a DDPM over the standardized latents of a trained VAE.

The VAE of a ``runs/<vae run>/`` folder is frozen. Training images are encoded by its guide q(z|x):
``latents="mean"`` trains on the posterior means E_q[z|x] (one fixed latent per image, the default: its
decodings are the VAE's reconstructions), ``latents="sample"`` on a fresh z ~ q(z|x) per minibatch
(what Rombach et al. do with their KL-regularized autoencoder). Each latent coordinate is standardized
to zero mean and unit variance over the training set before the ε-network (``TimeConditionedMLP``) is
trained with L_simple (Ho et al. 2020, Alg. 1); samples from either sampler are un-standardized and
decoded by the VAE's decoder (mean of p(x|z)) into images in [0, 1]. With ``class_conditional`` the ε-network also
takes the image's label, dropped to the null label with probability ``p_uncond`` in training, and samples take
classifier-free guidance (Ho & Salimans 2022) as the pixel DDPM's do.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from ppl_dgm._checks import check_choice, check_positive_float, check_positive_int, check_positive_int_sequence, check_seed
from ppl_dgm.diffusion.ddpm import VARIANCES, simple_loss
from ppl_dgm.diffusion.guidance import check_guidance_scale, drop_labels
from ppl_dgm.diffusion.experiment import SAMPLERS, SCHEDULES, build_schedule
from ppl_dgm.diffusion.schedules import NoiseSchedule
from ppl_dgm.nn import TimeConditionedMLP
from ppl_dgm.train.device import resolve_device
from ppl_dgm.train.ema import make_ema
from ppl_dgm.train.loop import fit
from ppl_dgm.train.runs import RunDir
from ppl_dgm.vae.likelihoods import CONTINUOUS_LIKELIHOODS

__all__ = [
    "LatentDDPMConfig",
    "LatentDDPM",
    "latent_statistics",
    "standardize_latents",
    "unstandardize_latents",
    "encode_images",
    "train_latent_ddpm",
    "load_latent_ddpm_run",
    "sample_latent_ddpm",
]

LATENTS = ("mean", "sample")
GRID_EVERY = 25  # epochs between samples.png refreshes during training (and always after the last one)


@dataclass
class LatentDDPMConfig:
    """Everything that defines a latent-DDPM run except the VAE run folder; saved as ``config.json`` (with ``vae_run``)."""

    latents: str = field(default="mean", metadata={"choices": LATENTS, "help": "posterior mean E[z|x] or a fresh z ~ q(z|x) per batch"})
    hidden: tuple[int, ...] = field(default=(512, 512, 512), metadata={"help": "widths of the ε-MLP"})
    time_embedding_dim: int = 128
    schedule: str = field(default="linear", metadata={"choices": SCHEDULES})
    num_steps: int = field(default=1000, metadata={"help": "diffusion steps T"})
    variance: str = field(default="beta", metadata={"choices": VARIANCES, "help": "reverse variance σ_t²"})
    epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    sampler: str = field(default="ancestral", metadata={"choices": SAMPLERS, "help": "sampler of samples.png"})
    sample_steps: int = field(default=50, metadata={"help": "DDIM steps of samples.png"})
    seed: int = 0
    class_conditional: bool = field(default=False, metadata={"help": "ε-network conditioned on the image's class"})
    p_uncond: float = field(default=0.1, metadata={"help": "label dropout probability (Ho & Salimans 2022)"})
    guidance_scale: float = field(default=0.0, metadata={"help": "classifier-free guidance w of samples.png"})

    def __post_init__(self) -> None:
        check_choice("latents", self.latents, LATENTS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("variance", self.variance, VARIANCES)
        check_choice("sampler", self.sampler, SAMPLERS)
        self.hidden = check_positive_int_sequence("hidden", self.hidden)
        for name in ("time_embedding_dim", "num_steps", "epochs", "batch_size", "sample_steps"):
            check_positive_int(name, getattr(self, name))
        check_positive_float("lr", self.lr)
        check_positive_float("grad_clip", self.grad_clip)
        check_seed(self.seed)
        if not isinstance(self.class_conditional, bool):
            raise TypeError(f"class_conditional must be a bool, got {self.class_conditional!r}")
        if isinstance(self.p_uncond, bool) or not isinstance(self.p_uncond, (int, float)) or not 0.0 <= self.p_uncond <= 1.0:
            raise ValueError(f"p_uncond must be a probability in [0, 1], got {self.p_uncond!r}")
        check_guidance_scale(self.guidance_scale)
        if self.guidance_scale and not self.class_conditional:
            raise ValueError(f"guidance_scale={self.guidance_scale!r} needs class_conditional=True")
        if isinstance(self.ema_decay, bool) or not isinstance(self.ema_decay, (int, float)) or not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in (0, 1), got {self.ema_decay!r}")
        if self.sample_steps > self.num_steps:
            raise ValueError(f"sample_steps must be at most num_steps={self.num_steps}, got {self.sample_steps}")

    def as_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))


# ---- standardization ---------------------------------------------------------------------------------
def latent_statistics(loc: Tensor, posterior_scale: Tensor | None = None, min_scale: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Per-coordinate shift and scale (D,) that map the training latents to zero mean, unit variance.

    With ``posterior_scale`` (the guide's std, like ``loc`` (N, D)) the statistics are those of the
    aggregate posterior q(z) = (1/N) Σ_n q(z|x_n): mean = mean of loc, variance = Var(loc) + mean(scale²)
    (law of total variance). Rombach et al. 2022 (sec. 4.3.2) rescale by one scalar; we standardize each
    coordinate, so the schedule's signal-to-noise ratio is the same in every one. Scales are floored at
    ``min_scale`` (a constant coordinate stays finite).
    """
    if not isinstance(loc, Tensor) or loc.ndim != 2 or loc.shape[0] < 2:
        raise ValueError(f"loc must be a (N, D) tensor of latents with N >= 2, got {_describe(loc)}")
    if posterior_scale is not None and (not isinstance(posterior_scale, Tensor) or posterior_scale.shape != loc.shape):
        raise ValueError(f"posterior_scale must be a tensor shaped like loc {tuple(loc.shape)}, got {_describe(posterior_scale)}")
    values = loc.double()
    shift = values.mean(0)
    variance = values.var(0, unbiased=False)
    if posterior_scale is not None:
        variance = variance + posterior_scale.double().pow(2).mean(0)  # Var[z] = Var[E[z|x]] + E[Var[z|x]]
    scale = variance.sqrt().clamp(min=min_scale)
    return shift.to(loc.dtype), scale.to(loc.dtype)


def standardize_latents(z: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """(z − shift) / scale: VAE latents (B, D) → the diffusion model's data space."""
    return (z - shift) / scale


def unstandardize_latents(u: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """u · scale + shift: the inverse of :func:`standardize_latents`."""
    return u * scale + shift


def _describe(value: object) -> str:
    return f"shape {tuple(value.shape)}" if isinstance(value, Tensor) else f"{value!r} of type {type(value).__name__}"


# ---- the VAE side ------------------------------------------------------------------------------------
def _load_vae(vae_run: str | os.PathLike, device: torch.device):
    """The frozen VAE of a run folder, checked to be a single-latent ``model='vae'`` run."""
    from ppl_dgm.vae.experiment import load_vae_run

    path = Path(vae_run)
    if not (path / "config.json").is_file() or not (path / "checkpoint.pt").is_file():
        what = "does not exist" if not path.exists() else "has no config.json and checkpoint.pt"
        raise FileNotFoundError(
            f"vae_run={str(path)!r} {what}; expected a VAE run folder written by train_vae / `ppl-dgm train vae` "
            "(config.json, checkpoint.pt), e.g. runs/table_vae_mlp_bernoulli_50ep"
        )
    model = json.loads((path / "config.json").read_text()).get("model", "vae")
    if model != "vae":
        raise ValueError(f"vae_run={str(path)!r} is a model={model!r} run; latent diffusion needs model='vae' (one latent z)")
    vae, vae_config = load_vae_run(path, device=device)
    return vae.requires_grad_(False).eval(), vae_config


@torch.no_grad()
def encode_images(vae: nn.Module, images: Tensor, batch_size: int = 500) -> tuple[Tensor, Tensor]:
    """Posterior parameters (loc, scale) of q(z|x), each (N, D), of images (N, C, H, W), in batches on the VAE's device."""
    device = next(vae.parameters()).device
    parts = [vae.encode(images[i : i + batch_size].to(device)) for i in range(0, images.shape[0], batch_size)]
    return torch.cat([loc for loc, _ in parts]), torch.cat([scale for _, scale in parts])


def _vae_inputs(vae_config, split: str) -> Tensor:
    """The images the VAE was trained on (binarized for Bernoulli), with one fixed dequantization for a Gaussian decoder."""
    from ppl_dgm.metrics.likelihood import dequantize
    from ppl_dgm.vae.experiment import vae_data

    images = vae_data(vae_config, split).tensors[0]
    if vae_config.likelihood in CONTINUOUS_LIKELIHOODS:  # its encoder saw (k + u)/256 (vae.experiment, docs/design.md bits/dim)
        images = dequantize(images, generator=torch.Generator().manual_seed(vae_config.seed))
    return images


def _vae_labels(vae_config, split: str) -> Tensor:
    from ppl_dgm.vae.experiment import vae_data

    return vae_data(vae_config, split).tensors[1].long()


def _num_classes(vae_config) -> int:
    from ppl_dgm.data import num_classes

    return num_classes(vae_config.dataset)


class LatentDDPM(nn.Module):
    """An ε-network over standardized latents, the frozen VAE that decodes them, and the (D,) shift/scale between."""

    def __init__(self, eps_model: nn.Module, vae: nn.Module, latent_shift: Tensor, latent_scale: Tensor):
        super().__init__()
        self.eps_model = eps_model  # .num_classes: None, or the classes a conditional network takes
        self.vae = vae
        self.register_buffer("latent_shift", latent_shift.detach().clone())
        self.register_buffer("latent_scale", latent_scale.detach().clone())

    @property
    def latent_dim(self) -> int:
        return self.latent_shift.shape[0]

    def encode(self, images: Tensor) -> Tensor:
        """Standardized posterior means (B, D) of images (B, C, H, W)."""
        loc, _ = encode_images(self.vae, images)
        return standardize_latents(loc, self.latent_shift, self.latent_scale)

    @torch.no_grad()
    def decode(self, u: Tensor) -> Tensor:
        """Images (B, C, H, W) in [0, 1]: the mean of p(x|z) at z = u · scale + shift."""
        return self.vae.decode(unstandardize_latents(u, self.latent_shift, self.latent_scale)).clamp(0.0, 1.0)


class _LatentNetwork(nn.Module):
    """The trained ε-network and the standardization buffers: one checkpointed module (its EMA copy is the loop's)."""

    def __init__(self, net: nn.Module, latent_shift: Tensor, latent_scale: Tensor):
        super().__init__()
        self.net = net
        self.register_buffer("latent_shift", latent_shift.detach().clone())
        self.register_buffer("latent_scale", latent_scale.detach().clone())


def _split_states(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(module, EMA) state dicts of a checkpoint; runs written before the loop owned the EMA kept the EMA of the
    ε-network inside the module under ``"ema."``."""
    if state.get("ema") is not None:
        return state["module"], state["ema"]
    module = {key: value for key, value in state["module"].items() if not key.startswith("ema.")}
    ema = {"module." + key: value for key, value in module.items() if not key.startswith("net.")}
    for key, value in state["module"].items():
        if key.startswith("ema.module."):
            ema["module.net." + key[len("ema.module."):]] = value
        elif key == "ema.n_averaged":
            ema["n_averaged"] = value
    return module, ema


def _build_network(config: LatentDDPMConfig, latent_dim: int, num_classes: int | None) -> TimeConditionedMLP:
    return TimeConditionedMLP(latent_dim, config.hidden, config.time_embedding_dim,
                              num_classes=num_classes if config.class_conditional else None)


@torch.no_grad()
def sample_latent_ddpm(
    model: LatentDDPM,
    schedule: NoiseSchedule,
    n: int,
    *,
    sampler: str = "ancestral",
    steps: int | None = 50,
    eta: float = 0.0,
    variance: str = "beta",
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback=None,
    y: Tensor | None = None,
    guidance_scale: float = 0.0,
) -> Tensor:
    """n images (n, C, H, W) in [0, 1]: latents from ancestral sampling (Ho et al. 2020, Alg. 2), DDIM (``steps``,
    ``eta``; Song et al. 2021) or a fast solver (DPM-Solver++(2M), its SDE variant, Heun, Euler ancestral) over the
    (n, D) latent space, un-standardized and decoded by the VAE. The ancestral sampler ignores ``steps`` (always T).

    A class-conditional model takes labels ``y`` (n,) (default: n // classes per class, labels in order, so n is
    rounded down to a multiple of the classes) and classifier-free guidance w = ``guidance_scale``."""
    from ppl_dgm.diffusion.sampling import sample_by_name

    if not isinstance(model, LatentDDPM):
        raise TypeError(f"model must be a LatentDDPM (from load_latent_ddpm_run), got {type(model).__name__}")
    n = check_positive_int("n", n)
    check_choice("sampler", sampler, SAMPLERS)
    classes = getattr(model.eps_model, "num_classes", None)
    if classes is None and (y is not None or guidance_scale):
        raise ValueError(f"y and guidance_scale={guidance_scale!r} need a class-conditional latent DDPM; this one is unconditional")
    if classes is not None and y is None:
        if n < classes:
            raise ValueError(f"n={n}: a class-conditional latent DDPM draws n // {classes} per class; ask for at least {classes}")
        y = torch.arange(classes).repeat_interleave(n // classes)
    if y is not None:
        if not isinstance(y, Tensor) or y.dtype != torch.long or y.ndim != 1 or not ((y >= 0) & (y < classes)).all():
            raise ValueError(f"y must be a (n,) int64 tensor of labels in [0, {classes}), got {y!r}")
        y = y.to(model.latent_shift.device)
        n = y.shape[0]
    shape = (n, model.latent_dim)
    was_training = model.training
    model.eval()
    try:
        latents = sample_by_name(sampler, model.eps_model, schedule, shape, steps=None if sampler == "ancestral" else steps, eta=eta,
                                 variance=variance, generator=generator, progress=progress, callback=callback, y=y,
                                 guidance_scale=guidance_scale)
        return model.decode(latents)
    finally:
        model.train(was_training)


def train_latent_ddpm(
    config: LatentDDPMConfig,
    run_dir: str | os.PathLike,
    vae_run_dir: str | os.PathLike,
    *,
    device: str | torch.device = "auto",
    resume: bool = False,
    progress: bool = True,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Train an ε-network on the VAE's standardized latents with L_simple (Ho et al. 2020, Alg. 1) into ``run_dir``.

    Writes config.json (with ``vae_run``), metrics.jsonl, checkpoint.pt (network, EMA, shift/scale; exact
    resume) and samples.png (64 decoded EMA samples). Returns the final losses and timings.
    """
    if not isinstance(config, LatentDDPMConfig):
        raise TypeError(f"config must be a LatentDDPMConfig, got {type(config).__name__}")
    device = resolve_device(device)
    vae, vae_config = _load_vae(vae_run_dir, device)  # before RunDir: a bad vae_run leaves no empty run folder
    run = RunDir(run_dir)
    run.start({**config.as_json(), "vae_run": str(vae_run_dir)}, resume)
    torch.manual_seed(config.seed)
    train_loc, train_scale = encode_images(vae, _vae_inputs(vae_config, "train"))
    test_loc, test_scale = encode_images(vae, _vae_inputs(vae_config, "test"))
    train_labels, test_labels = _vae_labels(vae_config, "train"), _vae_labels(vae_config, "test")
    sampled = config.latents == "sample"
    shift, scale = latent_statistics(train_loc, train_scale if sampled else None)
    schedule = build_schedule(config)
    module = _LatentNetwork(_build_network(config, train_loc.shape[1], _num_classes(vae_config)), shift, scale).to(device)
    ema = make_ema(module, config.ema_decay)

    def to_diffusion_space(batch):
        loc, posterior_scale, labels = batch
        z = loc + posterior_scale * torch.randn_like(loc) if sampled else loc  # z ~ q(z|x) (Kingma & Welling 2014, eq. 10)
        return standardize_latents(z, module.latent_shift, module.latent_scale), labels

    def loss_fn(batch):  # Ho et al. 2020, Alg. 1 on latents (Rombach et al. 2022, eq. 2)
        u, labels = batch
        if not config.class_conditional:
            return simple_loss(module.net, schedule, u)
        return simple_loss(module.net, schedule, u, drop_labels(labels, config.p_uncond))  # Ho & Salimans 2022, Alg. 1

    def val_loss_fn(batch):  # fit does not apply ``transform`` to validation batches
        u, labels = to_diffusion_space(batch)
        return simple_loss(ema.module.net, schedule, u, labels if config.class_conditional else None)

    def latent_model() -> LatentDDPM:
        return LatentDDPM(ema.module.net, vae, module.latent_shift, module.latent_scale).eval()

    def write_samples() -> None:
        generator = torch.Generator(device=device).manual_seed(config.seed)
        n = 8 * _num_classes(vae_config) if config.class_conditional else 64  # conditional: a row of 8 per class
        images = sample_latent_ddpm(latent_model(), schedule, n, sampler=config.sampler, steps=config.sample_steps,
                                    variance=config.variance, generator=generator, guidance_scale=config.guidance_scale)
        run.save_grid(images, "samples.png", nrow=8)

    def on_epoch_end(epoch: int, record: dict[str, Any]) -> None:
        if (epoch + 1) % GRID_EVERY == 0 and epoch + 1 < config.epochs:
            write_samples()

    started = time.perf_counter()
    history = fit(
        module,
        loss_fn,
        TensorDataset(train_loc, train_scale, train_labels),
        epochs=config.epochs,
        batch_size=config.batch_size,
        optim=lambda parameters: torch.optim.Adam(parameters, lr=config.lr),
        ema=ema,
        device=device,
        val_data=TensorDataset(test_loc, test_scale, test_labels),
        val_loss_fn=val_loss_fn,
        transform=to_diffusion_space,
        checkpoint=run.checkpoint,
        resume=resume,
        metrics_path=run.metrics_path,
        max_steps=max_steps,
        grad_clip=config.grad_clip,
        seed=config.seed,
        progress=progress,
        on_epoch_end=on_epoch_end,
        description="latent ddpm",
    )
    seconds = time.perf_counter() - started
    write_samples()  # the final EMA weights (also after a max_steps stop)
    result: dict[str, Any] = {"epochs_done": len(history), "steps": history.records[-1]["step"] if history.records else 0,
                              "train_seconds": seconds, "device": str(device), "latent_dim": train_loc.shape[1],
                              "vae_run": str(vae_run_dir)}
    if history.records:
        result["train_loss"] = history.loss[-1]
        result["val_loss"] = history.val_loss[-1]
    return result


def load_latent_ddpm_run(run_dir: str | os.PathLike, device: str | torch.device = "auto") -> tuple[LatentDDPM, LatentDDPMConfig]:
    """The EMA ε-network with its VAE and standardization (eval mode), and the config, of a run written by
    :func:`train_latent_ddpm`. The VAE is re-read from the ``vae_run`` folder saved in config.json."""
    path = Path(run_dir)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"run_dir={str(path)!r} has no config.json; expected a folder written by train_latent_ddpm")
    run = RunDir(path)
    saved = run.read_config()
    vae_run = saved.pop("vae_run")
    config = LatentDDPMConfig(**saved)
    device = resolve_device(device)
    vae, vae_config = _load_vae(vae_run, device)
    latent_dim = vae.latent_dim
    zeros = torch.zeros(latent_dim)
    module = _LatentNetwork(_build_network(config, latent_dim, _num_classes(vae_config)), zeros, zeros)
    ema = make_ema(module, config.ema_decay)
    module_state, ema_state = _split_states(run.checkpoint.load(map_location="cpu"))
    module.load_state_dict(module_state)
    ema.load_state_dict(ema_state)
    model = LatentDDPM(ema.module.net, vae, module.latent_shift, module.latent_scale)
    return model.to(device).eval(), config
