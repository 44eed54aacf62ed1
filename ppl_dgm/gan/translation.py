"""Image-to-image GANs on the digit tasks of :mod:`ppl_dgm.data.pairs`: pix2pix (paired) and CycleGAN (unpaired).

pix2pix: U-Net generator, PatchGAN discriminator on (source, output), cGAN loss + λ·L1, λ = 100
(Isola et al. 2017, eq. 4). CycleGAN: two ResNet generators, two PatchGANs, least-squares adversarial
losses + λ·cycle-consistency L1, λ = 10, optional identity loss (Zhu et al. 2017, eqs. 2–3, sec. 5.2).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ppl_dgm._checks import check_positive_int, check_seed
from ppl_dgm.data.pairs import PAIR_TASKS, load_pairs, load_unpaired
from ppl_dgm.gan.losses import least_squares_discriminator_loss, minimax_discriminator_loss, non_saturating_generator_loss
from ppl_dgm.gan.nets import PatchDiscriminator, Pix2PixGenerator, ResnetGenerator
from ppl_dgm.gan.trainer import train_adversarial
from ppl_dgm.train.device import resolve_device
from ppl_dgm.train.runs import RunDir

__all__ = ["PAIR_TASKS", "TranslationConfig", "build_translation_networks", "pix2pix_losses", "cyclegan_losses",
           "train_translation", "evaluate_translation"]

MODELS = ("pix2pix", "cyclegan")


@dataclass
class TranslationConfig:
    """A pix2pix or CycleGAN run; ``l1_weight`` is λ (100 pix2pix, 10 CycleGAN); identity loss weight × λ."""

    model: str = "pix2pix"
    task: str = field(default="edges2digit", metadata={"choices": PAIR_TASKS})
    channels: int = 32
    epochs: int = 5
    batch_size: int = 32
    lr: float = 2e-4
    l1_weight: float = field(default=100.0, metadata={"help": "λ: 100 for pix2pix, 10 for cyclegan's cycle loss"})
    identity_weight: float = field(default=0.0, metadata={"help": "cyclegan identity loss weight, times λ (0 = off)"})
    seed: int = 0

    def __post_init__(self) -> None:
        for name, known in (("model", MODELS), ("task", PAIR_TASKS)):
            if getattr(self, name) not in known:
                raise ValueError(f"{name}={getattr(self, name)!r} is not known; expected one of {known}")
        for name in ("channels", "epochs", "batch_size"):
            check_positive_int(name, getattr(self, name))
        check_seed(self.seed)
        for name in ("l1_weight", "identity_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a float >= 0 (λ of the L1 term), got {value!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive float, got {self.lr!r}")

    def as_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))


def build_translation_networks(config: TranslationConfig) -> tuple[nn.Module, nn.Module]:
    """(generator, discriminator); for CycleGAN ModuleDicts {"ab", "ba"} and {"a", "b"}."""
    if config.model == "pix2pix":
        return Pix2PixGenerator(1, 1, config.channels), PatchDiscriminator(2, config.channels)
    generators = nn.ModuleDict({"ab": ResnetGenerator(1, 1, config.channels), "ba": ResnetGenerator(1, 1, config.channels)})
    discriminators = nn.ModuleDict({"a": PatchDiscriminator(1, config.channels, norm="instance"),
                                    "b": PatchDiscriminator(1, config.channels, norm="instance")})
    return generators, discriminators


def pix2pix_losses(generator: nn.Module, discriminator: nn.Module, l1_weight: float):
    """(discriminator_loss, generator_loss) of batches (source, target) in [−1, 1] (Isola et al. 2017, eqs. 1–4)."""

    def discriminator_loss(batch):
        source, target = batch[0], batch[1]
        fake = generator(source).detach()
        real_scores = discriminator(torch.cat([source, target], 1))
        fake_scores = discriminator(torch.cat([source, fake], 1))
        return 0.5 * minimax_discriminator_loss(real_scores, fake_scores)  # D's objective halved (sec. 3.3)

    def generator_loss(batch):
        source, target = batch[0], batch[1]
        fake = generator(source)
        adversarial = non_saturating_generator_loss(discriminator(torch.cat([source, fake], 1)))
        return adversarial + l1_weight * F.l1_loss(fake, target)  # G* = arg min max L_cGAN + λ L_L1, eq. 4

    return discriminator_loss, generator_loss


def cyclegan_losses(generators: nn.ModuleDict, discriminators: nn.ModuleDict, cycle_weight: float, identity_weight: float):
    """(discriminator_loss, generator_loss) of batches (a, b) in [−1, 1] (Zhu et al. 2017, eqs. 1–3)."""

    def discriminator_loss(batch):
        a, b = batch[0], batch[1]
        fake_b, fake_a = generators["ab"](a).detach(), generators["ba"](b).detach()
        # least-squares D loss, ½ E (D(y) − 1)² + ½ E D(G(x))² (Zhu et al. 2017, sec. 4; Mao et al. 2017)
        return (least_squares_discriminator_loss(discriminators["b"](b), discriminators["b"](fake_b))
                + least_squares_discriminator_loss(discriminators["a"](a), discriminators["a"](fake_a)))

    def generator_loss(batch):
        a, b = batch[0], batch[1]
        fake_b, fake_a = generators["ab"](a), generators["ba"](b)
        adversarial = ((discriminators["b"](fake_b) - 1) ** 2).mean() + ((discriminators["a"](fake_a) - 1) ** 2).mean()
        cycle = F.l1_loss(generators["ba"](fake_b), a) + F.l1_loss(generators["ab"](fake_a), b)  # eq. 2
        loss = adversarial + cycle_weight * cycle  # eq. 3
        if identity_weight > 0:  # L_identity = E ‖G(y) − y‖₁ + E ‖F(x) − x‖₁, weighted identity_weight·λ (sec. 5.2)
            loss = loss + identity_weight * cycle_weight * (F.l1_loss(generators["ab"](b), b) + F.l1_loss(generators["ba"](a), a))
        return loss

    return discriminator_loss, generator_loss


@torch.no_grad()
def evaluate_translation(generator: nn.Module, config: TranslationConfig, device: torch.device) -> tuple[dict[str, float], Tensor]:
    """Held-out L1 in [0, 1] pixel units (translation vs the true target; CycleGAN also cycle error), and a grid
    (source | output | target rows of 10; CycleGAN adds a fourth row, the sources' cycle reconstructions F(G(a)))."""
    source, target, _ = (t.to(device) for t in load_pairs(config.task, "test").tensors)
    generator.eval()
    try:
        forward = generator if config.model == "pix2pix" else generator["ab"]
        output = torch.cat([(forward(source[i : i + 250] * 2 - 1) + 1) / 2 for i in range(0, len(source), 250)]).clamp(0, 1)
        metrics = {"test_l1": float((output - target).abs().mean()), "identity_l1": float((source - target).abs().mean())}
        if config.model == "cyclegan":
            a, b = (t.to(device) * 2 - 1 for t in load_unpaired(config.task, "test").tensors)
            cycle_a = generator["ba"](generator["ab"](a))
            cycle_b = generator["ab"](generator["ba"](b))
            metrics["cycle_l1_a"] = float(((cycle_a.clamp(-1, 1) - a).abs() / 2).mean())
            metrics["cycle_l1_b"] = float(((cycle_b.clamp(-1, 1) - b).abs() / 2).mean())
    finally:
        generator.train()
    grid = torch.cat([source[:10], output[:10], target[:10]])
    if config.model == "cyclegan":
        generator.eval()
        try:
            cycle = (generator["ba"](generator["ab"](source[:10] * 2 - 1)) + 1) / 2
        finally:
            generator.train()
        grid = torch.cat([grid, cycle.clamp(0, 1)])
    return metrics, grid


def train_translation(config: TranslationConfig, run_dir: str | os.PathLike, *, device: str | torch.device = "auto",
                      resume: bool = False, progress: bool = True, max_steps: int | None = None) -> dict[str, Any]:
    """Train pix2pix (paired) or CycleGAN (unpaired) into ``run_dir``; writes samples.png (source | output | target)."""
    run = RunDir(run_dir)
    run.start(config.as_json(), resume)
    device = resolve_device(device)
    torch.manual_seed(config.seed)
    generator, discriminator = build_translation_networks(config)
    if config.model == "pix2pix":
        source, target, _ = load_pairs(config.task, "train").tensors
        data = (source * 2 - 1, target * 2 - 1)
        d_loss, g_loss = pix2pix_losses(generator, discriminator, config.l1_weight)
    else:
        a, b = load_unpaired(config.task, "train").tensors
        data = (a * 2 - 1, b * 2 - 1)
        d_loss, g_loss = cyclegan_losses(generator, discriminator, config.l1_weight, config.identity_weight)

    def adam(parameters):  # Adam 2e-4, β₁ = 0.5 (Isola et al. 2017, sec. 3.3; Zhu et al. 2017, sec. 4)
        return torch.optim.Adam(parameters, lr=config.lr, betas=(0.5, 0.999))

    def write_grid(epoch: int, record: dict[str, Any]) -> None:
        metrics, grid = evaluate_translation(generator, config, device)
        record.update(metrics)
        run.save_grid(grid, "samples.png", nrow=10)

    started = time.perf_counter()
    history = train_adversarial(generator, discriminator, data, discriminator_loss=d_loss, generator_loss=g_loss,
                                generator_optim=adam, discriminator_optim=adam, epochs=config.epochs,
                                batch_size=config.batch_size, device=device, checkpoint=run.checkpoint, resume=resume,
                                metrics_path=run.metrics_path, max_steps=max_steps, seed=config.seed, progress=progress,
                                on_epoch_end=write_grid, description=f"{config.model} {config.task}")
    metrics, grid = evaluate_translation(generator, config, device)
    run.save_grid(grid, "samples.png", nrow=10)
    return {"epochs_done": len(history), "steps": history.steps,
            "train_seconds": time.perf_counter() - started, "device": str(device), **metrics}


@torch.no_grad()
def translate_test_sources(generator: nn.Module, config: TranslationConfig, n: int) -> Tensor:
    """The translations (n, 1, H, W) in [0, 1] of the first ``n`` held-out sources (A → B for CycleGAN)."""
    device = next(generator.parameters()).device
    source = load_pairs(config.task, "test").tensors[0]
    if n > len(source):
        raise ValueError(f"n={n} exceeds the {len(source)} held-out sources of task {config.task!r}")
    forward = generator if config.model == "pix2pix" else generator["ab"]
    was_training = generator.training
    generator.eval()
    try:
        return ((forward(source[:n].to(device) * 2 - 1) + 1) / 2).clamp(0, 1)
    finally:
        generator.train(was_training)


def load_translation_run(run_dir: str | os.PathLike, device: str | torch.device = "auto") -> tuple[nn.Module, TranslationConfig]:
    """The trained generator (CycleGAN: ModuleDict {"ab", "ba"}) in eval mode and the config of a run folder."""
    run = RunDir(run_dir)
    config = TranslationConfig(**run.read_config())
    generator, _ = build_translation_networks(config)
    generator.load_state_dict(run.checkpoint.load(map_location="cpu")["generator"])
    return generator.to(resolve_device(device)).eval(), config
