"""Image-conditioned diffusion, "Palette" (Saharia et al. 2022), on the paired digit tasks of :mod:`ppl_dgm.data.pairs`.

The ε-network sees the source image concatenated to the noisy target along the channels, ε_θ(cat[x_t, s], t)
(Saharia et al. 2022, Sec. 3 "Palette", after SR3), and is trained by L_simple on the target (their eq. 1 with p = 2). Any
sampler of the ε-network contract draws a translation: the source is bound to the network, so ``sample_by_name``
sees an ordinary ``eps_model(x, t)``. Runs live in ``runs/<name>/`` like DDPM runs; held-out L1 and FD/KID use the
same 1,000 test pairs as pix2pix (:mod:`ppl_dgm.gan.translation`).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ppl_dgm._checks import check_positive_int, check_positive_int_sequence, check_seed
from ppl_dgm.data.pairs import PAIR_TASKS, load_pairs
from ppl_dgm.diffusion.ddpm import simple_loss, to_image_space, to_model_space
from ppl_dgm.diffusion.experiment import SCHEDULES, build_schedule, check_run_sampler, ema_state
from ppl_dgm.diffusion.schedules import NoiseSchedule
from ppl_dgm.nn import UNet
from ppl_dgm.train.device import resolve_device
from ppl_dgm.train.ema import make_ema
from ppl_dgm.train.loop import fit
from ppl_dgm.train.runs import RunDir

__all__ = ["PaletteConfig", "ImageConditionedEps", "build_palette_net", "palette_loss", "sample_palette", "translate_held_out",
           "translation_quality", "evaluate_palette", "train_palette", "load_palette_run"]

IMAGE_SHAPE = (1, 28, 28)  # every task of data.pairs: mnist5k digits, one channel in and out
GRID_PAIRS = 10


@dataclass
class PaletteConfig:
    """Everything that defines a Palette run; saved as ``config.json``. The split is mnist5k's (4,000 / 1,000 pairs)."""

    task: str = field(default="edges2digit", metadata={"choices": PAIR_TASKS, "help": "paired task of data.pairs (source -> target)"})
    # smaller than the DDPM reference (32 channels): about 0.65x its training FLOPs per image, for CPU runs
    channels: int = field(default=24, metadata={"help": "U-Net base channels"})
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention: bool = field(default=True, metadata={"help": "no self-attention at the lowest level"})
    dropout: float = 0.1
    schedule: str = field(default="linear", metadata={"choices": SCHEDULES})
    num_steps: int = field(default=1000, metadata={"help": "diffusion steps T"})
    epochs: int = 30
    batch_size: int = 32
    lr: float = 2e-4
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    sample_steps: int = field(default=50, metadata={"help": "DDIM steps of the per-epoch grid and the default evaluation"})
    num_train: int | None = field(default=None, metadata={"help": "train on the first N of the 4,000 training pairs (default: all)"})
    seed: int = 0

    def __post_init__(self) -> None:
        self.channel_mults = check_positive_int_sequence("channel_mults", tuple(self.channel_mults))
        for name, known in (("task", PAIR_TASKS), ("schedule", SCHEDULES)):
            if getattr(self, name) not in known:
                raise ValueError(f"{name}={getattr(self, name)!r} is not known; expected one of {known}")
        for name in ("channels", "num_res_blocks", "num_steps", "epochs", "batch_size", "sample_steps"):
            check_positive_int(name, getattr(self, name))
        check_seed(self.seed)
        if self.num_train is not None:
            check_positive_int("num_train", self.num_train)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout!r}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in (0, 1), got {self.ema_decay!r}")
        for name in ("lr", "grad_clip"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise ValueError(f"{name} must be a positive float, got {getattr(self, name)!r}")
        if self.sample_steps > self.num_steps:
            raise ValueError(f"sample_steps must be at most num_steps={self.num_steps}, got {self.sample_steps}")
        factor = 2 ** (len(self.channel_mults) - 1)
        if IMAGE_SHAPE[-1] % factor:
            raise ValueError(f"image size {IMAGE_SHAPE[-1]} is not divisible by {factor}, the U-Net's total downsampling "
                             f"for channel_mults={self.channel_mults}; use fewer levels")

    def as_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))


class ImageConditionedEps(nn.Module):
    """ε_θ(x_t, t | source) = net(cat[x_t, source], t): x_t (B, target_channels, H, W), source (B, source_channels, H, W)
    -> (B, target_channels, H, W); ``net`` takes target_channels + source_channels channels in and gives target_channels
    out (conditioning by channel concatenation, Saharia et al. 2022, Sec. 3 "Palette"; Saharia et al. 2021, SR3)."""

    def __init__(self, net: nn.Module, target_channels: int, source_channels: int):
        super().__init__()
        self.net = net
        self.target_channels = check_positive_int("target_channels", target_channels)
        self.source_channels = check_positive_int("source_channels", source_channels)

    def forward(self, x: Tensor, t: float | Tensor, source: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.target_channels:
            raise ValueError(f"x must have shape (B, {self.target_channels}, H, W), got {tuple(x.shape)}")
        if not isinstance(source, Tensor) or source.shape != (x.shape[0], self.source_channels, *x.shape[2:]):
            got = tuple(source.shape) if isinstance(source, Tensor) else type(source).__name__
            raise ValueError(f"source must have shape {(x.shape[0], self.source_channels, *x.shape[2:])} to match x, got {got}")
        return self.net(torch.cat([x, source.to(x.dtype)], dim=1), t)


class _SourceBound(nn.Module):
    """The contract's ``eps_model(x, t, y=None)`` for one fixed batch of sources (model space): what the samplers call."""

    def __init__(self, model: ImageConditionedEps, source: Tensor):
        super().__init__()
        self.model, self.source = model, source

    def forward(self, x: Tensor, t: float | Tensor, y: Tensor | None = None) -> Tensor:
        if y is not None:
            raise ValueError("a Palette network is conditioned on its source image, not on class labels; got y")
        return self.model(x, t, self.source)


def build_palette_net(config: PaletteConfig) -> ImageConditionedEps:
    """The untrained ε-network of a config: a UNet with in_channels = target + source, out_channels = target."""
    channels = IMAGE_SHAPE[0]
    lowest_side = IMAGE_SHAPE[-1] // 2 ** (len(config.channel_mults) - 1)
    unet = UNet(2 * channels, config.channels, config.channel_mults, config.num_res_blocks, (lowest_side,) if config.attention else (),
                config.dropout, None, out_channels=channels, groups=min(8, config.channels), image_size=IMAGE_SHAPE[-1])
    return ImageConditionedEps(unet, channels, channels)


def palette_loss(model: ImageConditionedEps, schedule: NoiseSchedule, source: Tensor, target: Tensor) -> Tensor:
    """E_{t, ε} ‖ε − ε_θ(cat[√ᾱ_t y + √(1 − ᾱ_t) ε, x], t/T)‖², mean over pixels, for sources x and targets y in
    model space (Saharia et al. 2022, eq. 1 with p = 2, on Ho et al. 2020's discrete t)."""
    return simple_loss(lambda x, t: model(x, t, source), schedule, target)


@torch.no_grad()
def sample_palette(model: ImageConditionedEps, config: PaletteConfig, source: Tensor, *, sampler: str = "ddim",
                   steps: int | None = None, eta: float = 0.0, generator: torch.Generator | None = None, progress: bool = False,
                   callback: Callable | None = None) -> Tensor:
    """One translation per source: sources (B, 1, 28, 28) in [0, 1] -> targets (B, 1, 28, 28) in [0, 1], drawn by any
    sampler of :data:`ppl_dgm.diffusion.sampling.SAMPLER_NAMES` with predicted x_0 clipped to [−1, 1] (DDIM: the run's
    ``sample_steps`` by default; the SDE samplers read the network as VPSDE(0.1, 20)). ``callback`` as the contract's."""
    from ppl_dgm.diffusion.sampling import sample_by_name

    sde = check_run_sampler(config, sampler, steps, eta)
    if not isinstance(source, Tensor) or not source.is_floating_point() or source.ndim != 4 or tuple(source.shape[1:]) != IMAGE_SHAPE:
        got = f"shape {tuple(source.shape)}, dtype {source.dtype}" if isinstance(source, Tensor) else type(source).__name__
        raise ValueError(f"source must be a float tensor (B, {', '.join(map(str, IMAGE_SHAPE))}) of {config.task!r} sources "
                         f"in [0, 1], got {got}")
    if source.shape[0] == 0:
        raise ValueError("source must hold at least one image, got a batch of 0")
    if not (torch.isfinite(source).all() and source.min() >= 0 and source.max() <= 1):
        raise ValueError(f"source must hold images in [0, 1] (not model space), got values in [{float(source.min()):.3g}, "
                         f"{float(source.max()):.3g}]")
    parameter = next(model.parameters())
    bound = _SourceBound(model, source.to(parameter.device, parameter.dtype) * 2 - 1)  # sources in model space, not rounded
    if sampler == "ddim" and steps is None:
        steps = config.sample_steps
    was_training = model.training
    model.eval()
    try:
        x = sample_by_name(sampler, bound, build_schedule(config), (source.shape[0], *IMAGE_SHAPE), steps=steps, eta=eta, sde=sde,
                           generator=generator, clip_x0=True, progress=progress, callback=callback)
    finally:
        model.train(was_training)
    return to_image_space(x)


def translate_held_out(model: ImageConditionedEps, config: PaletteConfig, num_images: int = 1000, *, sampler: str = "ddim",
                       steps: int | None = None, eta: float = 0.0, batch_size: int = 250, seed: int = 0,
                       progress: bool = False) -> tuple[Tensor, Tensor, Tensor, int]:
    """(sources, translations, targets, network calls per image) for the first ``num_images`` held-out pairs of the run's
    task: one posterior sample per source, batches of ``batch_size`` drawn in order from one generator seeded ``seed``."""
    source, target, _ = load_pairs(config.task, "test").tensors
    num_images, batch_size = check_positive_int("num_images", num_images), check_positive_int("batch_size", batch_size)
    seed = check_seed(seed)
    if num_images > len(source):
        raise ValueError(f"num_images={num_images} exceeds the {len(source)} held-out pairs of task {config.task!r}")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    calls = [0]

    def count(call, x, denoised):
        calls[0] += 1

    outputs = []
    for start in range(0, num_images, batch_size):
        batch = source[start : min(start + batch_size, num_images)]
        outputs.append(sample_palette(model, config, batch, sampler=sampler, steps=steps, eta=eta, generator=generator,
                                      progress=progress, callback=count if start == 0 else None).cpu())
    return source[:num_images], torch.cat(outputs), target[:num_images], calls[0]


def translation_quality(outputs: Tensor, targets: Tensor, *, cache_dir: str | os.PathLike = "runs", seed: int = 0) -> dict[str, float]:
    """Held-out L1 (mean |output − target| in [0, 1] pixel units, as pix2pix's ``test_l1``) and FD / KID of the outputs
    against the targets, on features of the library's mnist5k digit classifier (:mod:`ppl_dgm.metrics.frechet`)."""
    from ppl_dgm.metrics.frechet import extract_features, feature_classifier, frechet_distance_of_features, kernel_distance

    if outputs.shape != targets.shape or outputs.ndim != 4:
        raise ValueError(f"outputs and targets must have the same shape (N, 1, 28, 28), got {tuple(outputs.shape)} and "
                         f"{tuple(targets.shape)}")
    classifier = feature_classifier("mnist5k", cache_dir=cache_dir, seed=seed)
    output_features, target_features = extract_features(classifier, outputs), extract_features(classifier, targets)
    kid, kid_std = kernel_distance(target_features, output_features, num_subsets=100, subset_size=min(500, len(outputs) - 1),
                                   generator=torch.Generator().manual_seed(seed))
    return {"test_l1": float((outputs.cpu() - targets.cpu()).abs().mean()),
            "fd": frechet_distance_of_features(target_features, output_features), "kid": kid, "kid_std": kid_std,
            "num_images": len(outputs)}


def evaluate_palette(model: ImageConditionedEps, config: PaletteConfig, *, num_images: int = 1000, sampler: str = "ddim",
                     steps: int | None = None, eta: float = 0.0, batch_size: int = 250, seed: int = 0,
                     cache_dir: str | os.PathLike = "runs", progress: bool = False) -> dict[str, Any]:
    """Held-out L1 and FD/KID (:func:`translation_quality`) of one sample per source on the first ``num_images`` test
    pairs (all 1,000 by default: pix2pix's ``test_l1`` set), with the network calls and seconds per image."""
    started = time.perf_counter()
    _, outputs, targets, calls = translate_held_out(model, config, num_images, sampler=sampler, steps=steps, eta=eta,
                                                    batch_size=batch_size, seed=seed, progress=progress)
    seconds = (time.perf_counter() - started) / len(outputs)
    return {**translation_quality(outputs, targets, cache_dir=cache_dir, seed=0), "sampler": sampler,
            "network_calls_per_image": calls, "seconds_per_image": seconds}


def train_palette(config: PaletteConfig, run_dir: str | os.PathLike, *, device: str | torch.device = "auto", resume: bool = False,
                  progress: bool = True, max_steps: int | None = None, eval_images: int = 0, amp: str | None = None) -> dict[str, Any]:
    """Train the image-conditioned ε-network by L_simple into ``run_dir`` (config, metrics with the held-out L_simple of
    the EMA weights, checkpoint, samples.png per epoch: source / sample / target rows of 10 held-out pairs);
    ``eval_images`` > 0 adds :func:`evaluate_palette` on that many held-out pairs; ``amp="bf16"``: bf16 autocast."""
    run = RunDir(run_dir)
    run.start(config.as_json(), resume)
    device = resolve_device(device)
    torch.manual_seed(config.seed)
    train_source, train_target, _ = (t[: config.num_train] for t in load_pairs(config.task, "train").tensors)
    test_source, test_target, _ = load_pairs(config.task, "test").tensors
    schedule = build_schedule(config)
    model = build_palette_net(config).to(device)
    ema = make_ema(model, config.ema_decay)  # samples and evaluation use the EMA weights (Ho et al. 2020, App. B)

    def write_samples(epoch: int, record: dict[str, Any]) -> None:
        generator = torch.Generator(device=device).manual_seed(config.seed)
        samples = sample_palette(ema.module, config, test_source[:GRID_PAIRS], generator=generator)
        run.save_grid(torch.cat([test_source[:GRID_PAIRS], samples.cpu(), test_target[:GRID_PAIRS]]), "samples.png", nrow=GRID_PAIRS)

    started = time.perf_counter()
    history = fit(
        model,
        lambda batch: palette_loss(model, schedule, batch[0], batch[1]),
        (train_source * 2 - 1, to_model_space(train_target)),  # sources x ↦ 2x − 1, targets on their 8-bit levels
        epochs=config.epochs,
        batch_size=config.batch_size,
        optim=lambda parameters: torch.optim.Adam(parameters, lr=config.lr),
        ema=ema,
        device=device,
        val_data=(test_source * 2 - 1, to_model_space(test_target)),
        val_loss_fn=lambda batch: palette_loss(ema.module, schedule, batch[0], batch[1]),
        checkpoint=run.checkpoint,
        resume=resume,
        metrics_path=run.metrics_path,
        max_steps=max_steps,
        grad_clip=config.grad_clip,
        seed=config.seed,
        progress=progress,
        on_epoch_end=write_samples,
        description=f"palette {config.task}",
        amp=amp,
    )
    result: dict[str, Any] = {"epochs_done": len(history), "steps": history.records[-1]["step"] if history.records else 0,
                              "train_seconds": time.perf_counter() - started, "device": str(device)}
    if history.records:
        result["train_loss"], result["val_loss"] = history.loss[-1], history.val_loss[-1]
    if eval_images:
        result.update(evaluate_palette(ema.module, config, num_images=eval_images, progress=progress))
    return result


def load_palette_run(run_dir: str | os.PathLike, device: str | torch.device = "auto") -> tuple[ImageConditionedEps, PaletteConfig]:
    """The EMA ε-network (eval mode) and config of a run folder written by :func:`train_palette`."""
    run = RunDir(run_dir)
    config = PaletteConfig(**run.read_config())
    ema = make_ema(build_palette_net(config), config.ema_decay)
    ema.load_state_dict(ema_state(run.checkpoint.load(map_location="cpu")))
    return ema.module.to(resolve_device(device)).eval(), config
