"""Train / load / sample / evaluate score-based runs in ``runs/<name>/`` (what ``ppl-dgm train score-sde|ncsn`` calls).

Score-SDE runs train an ε-network by the continuous DSM loss (Song et al. 2021, eq. 7); NCSN runs train
s_θ(x, σ) = −ε_θ(x, t(σ))/σ by the σ²-weighted DSM loss (Song & Ermon 2019). Toy 2-D data use a
TimeConditionedMLP, images ([−1, 1], 8-bit levels) a U-Net. EMA weights sample and evaluate.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ppl_dgm._checks import check_seed
from ppl_dgm.data import TOY2D_NAMES, load_dataset, toy2d
from ppl_dgm.data import image_shape as dataset_image_shape
from ppl_dgm.nn import TimeConditionedMLP, UNet
from ppl_dgm.sde.losses import dsm_loss, geometric_sigmas, score_sde_loss
from ppl_dgm.sde.ncsn import NoiseConditionalScoreNet
from ppl_dgm.sde.sdes import VESDE, VPSDE, SDE, SubVPSDE
from ppl_dgm.train.device import resolve_device
from ppl_dgm.train.distributed import rank_and_world_size
from ppl_dgm.train.ema import make_ema
from ppl_dgm.train.loop import cosine_lr, fit, steps_per_epoch
from ppl_dgm.train.runs import RunDir

__all__ = ["ScoreConfig", "build_network", "build_sde", "train_score", "load_score_run", "sample_score_run", "evaluate_score_run", "ddpm_ode_bits_per_dim"]

MODELS = ("score-sde", "ncsn")
SDE_NAMES = ("vp", "subvp", "ve")
LR_SCHEDULES = ("constant", "cosine")
IMAGE_DATASETS = ("mnist5k", "digits")
DATASETS = TOY2D_NAMES + IMAGE_DATASETS
SAMPLERS = ("reverse-sde", "pc", "ode", "langevin", "dpmpp-2m", "dpmpp-2m-sde", "heun", "euler-ancestral")  # solvers: VP runs


@dataclass
class ScoreConfig:
    """Everything that defines a score-model run; saved as ``config.json``."""

    model: str = "score-sde"
    sde: str = field(default="vp", metadata={"choices": SDE_NAMES})
    dataset: str = field(default="checkerboard", metadata={"choices": DATASETS, "help": "toy 2-D name, mnist5k or digits"})
    num_train: int = field(default=20000, metadata={"help": "toy 2-D training points"})  # drawn with the seed
    hidden: tuple[int, ...] = field(default=(256, 256, 256), metadata={"help": "MLP widths (toy 2-D)"})
    fourier_features: int = field(default=0, metadata={"help": "toy 2-D: random Fourier features of x before the MLP "
                                                                "(Tancik et al. 2020); 0: x as it is"})
    fourier_scale: float = field(default=1.0, metadata={"help": "std of the Fourier frequencies, in cycles per unit of x"})
    channels: int = field(default=32, metadata={"help": "U-Net base channels (images)"})
    channel_mults: tuple[int, ...] = (1, 2, 2)
    likelihood_weighting: bool = field(default=False, metadata={"help": "λ(t) = g(t)² instead of σ(t)²"})
    importance_sampling: bool = field(default=False, metadata={"help": "with --likelihood-weighting on the VP SDE: t ∝ g²/σ² (Song et al. 2021b)"})
    num_scales: int = field(default=10, metadata={"help": "NCSN: number of geometric σ's"})  # L
    sigma_min: float = field(default=0.01, metadata={"help": "NCSN σ_L / VE σ_min (mnist5k on [−1, 1]: 0.02, the paper's 0.01 on [0, 1] data)"})
    sigma_max: float = field(default=5.0, metadata={"help": "NCSN σ_1 / VE σ_max (mnist5k on [−1, 1]: 2, the paper's 1 on [0, 1] data)"})
    epochs: int = 20
    batch_size: int = 256
    lr: float = 2e-3
    lr_schedule: str = field(default="constant", metadata={"choices": LR_SCHEDULES, "help": "cosine: lr · ½(1 + cos(π s / S)) "
                             "at step s of S = epochs x steps per epoch (Loshchilov & Hutter 2017, eq. 5, η_min = 0)"})
    ema_decay: float = 0.999
    seed: int = 0

    def __post_init__(self) -> None:
        self.hidden, self.channel_mults = tuple(self.hidden), tuple(self.channel_mults)
        for name, known in (("model", MODELS), ("sde", SDE_NAMES), ("dataset", DATASETS), ("lr_schedule", LR_SCHEDULES)):
            if getattr(self, name) not in known:
                raise ValueError(f"{name}={getattr(self, name)!r} is not known; expected one of {known}")
        check_seed(self.seed)
        if self.fourier_features and self.is_image:
            raise ValueError(f"fourier_features={self.fourier_features!r} is for the toy 2-D MLP; dataset={self.dataset!r} uses a U-Net")
        if self.importance_sampling and not (self.likelihood_weighting and self.sde == "vp" and self.model == "score-sde"):
            raise ValueError("importance_sampling=True needs model='score-sde', sde='vp' and likelihood_weighting=True, got "
                             f"model={self.model!r}, sde={self.sde!r}, likelihood_weighting={self.likelihood_weighting!r}")

    @property
    def is_image(self) -> bool:
        return self.dataset in IMAGE_DATASETS

    @property
    def label(self) -> str:
        """E.g. "score-sde vp checkerboard" or "ncsn mnist5k" (NCSN runs use no SDE)."""
        return f"{self.model} {self.sde} {self.dataset}" if self.model == "score-sde" else f"{self.model} {self.dataset}"

    @property
    def default_sampler(self) -> str:
        return "langevin" if self.model == "ncsn" else "reverse-sde"

    def as_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))


def build_sde(config: ScoreConfig) -> SDE:
    return {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE(config.sigma_min, config.sigma_max)}[config.sde]


def build_network(config: ScoreConfig) -> nn.Module:
    """The untrained ε-network (NCSN: wrapped as s_θ(x, σ))."""
    if config.is_image:
        channels, side, _ = dataset_image_shape(config.dataset)
        net = UNet(channels, config.channels, config.channel_mults, 1, (), 0.0, groups=min(8, config.channels), image_size=side)
    else:
        net = TimeConditionedMLP(2, hidden=config.hidden, fourier_features=config.fourier_features, fourier_scale=config.fourier_scale)
    if config.model == "ncsn":
        return NoiseConditionalScoreNet(net, geometric_sigmas(config.sigma_max, config.sigma_min, config.num_scales))
    return net


def _data(config: ScoreConfig, split: str) -> torch.Tensor:
    if config.is_image:
        from ppl_dgm.diffusion.ddpm import to_model_space

        return to_model_space(load_dataset(config.dataset, split).tensors[0])
    seed = config.seed if split == "train" else config.seed + 1
    return toy2d(config.dataset, config.num_train if split == "train" else 2000, torch.Generator().manual_seed(seed))


def _save_samples(run: RunDir, config: ScoreConfig, samples: torch.Tensor, name: str = "samples.png") -> None:
    if config.is_image:
        run.save_grid((samples + 1) / 2, name)
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(4, 4))
    points = samples.detach().cpu()
    axis.scatter(points[:, 0], points[:, 1], s=1, alpha=0.5)
    axis.set(xlim=(-4.5, 4.5), ylim=(-4.5, 4.5), aspect="equal", title=config.label)
    figure.savefig(run.path / name, dpi=100)
    plt.close(figure)


DEFAULT_STEPS = {"reverse-sde": 500, "pc": 500, "langevin": 100}  # langevin: T per level (Song & Ermon 2019, §5)


def langevin_step_size(config: ScoreConfig) -> float:
    """ε of annealed Langevin for an NCSN run: the paper's ε = 2e-5 at σ_L = 0.01 (Song & Ermon 2019, §5),
    carried to this run's σ_L by keeping ε/σ_L² = α_i/σ_i² = 0.2 at every level, so each step moves about
    0.45 σ_i (e.g. [−1, 1] images with σ_L = 0.02 get ε = 8e-5)."""
    return 2e-5 * (config.sigma_min / 0.01) ** 2


def sample_score_run(net: nn.Module, config: ScoreConfig, n: int, *, sampler: str | None = None, steps: int | None = None,
                     step_size: float | None = None, generator: torch.Generator | None = None, progress: bool = False,
                     callback=None) -> torch.Tensor:
    """Samples (n, ...) in model space from a run's EMA network. ``sampler`` defaults to ``"langevin"`` (annealed
    Langevin, the only sampler of an NCSN run) for NCSN runs and ``"reverse-sde"`` otherwise.

    ``steps``: solver steps for reverse-sde / pc (default 500); for annealed Langevin the steps per noise level,
    T (default 100, as the paper); unused by the adaptive ODE. ``step_size``: Langevin's ε (default
    :func:`langevin_step_size`). The fast solvers (dpmpp-2m, ...) take a VP run's continuous noise levels.
    ``callback(call, x, denoised)`` sees every network call."""
    from ppl_dgm.diffusion.sampling import DEFAULT_STEPS as SOLVER_STEPS
    from ppl_dgm.diffusion.sampling import SOLVER_NAMES, sample_by_name
    from ppl_dgm.sde import annealed_langevin, sample_ode, sample_pc, sample_reverse_sde

    sampler = config.default_sampler if sampler is None else sampler
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r} is not known; expected one of {SAMPLERS}")
    if (config.model == "ncsn") != (sampler == "langevin"):
        raise ValueError(f"sampler='langevin' is the sampler of ncsn runs and only of them; got sampler={sampler!r} "
                         f"for a {config.model} run")
    shape = (n, *dataset_image_shape(config.dataset)) if config.is_image else (n, 2)
    if steps is not None and sampler == "ode":
        raise ValueError(f"steps={steps}: the probability-flow ODE chooses its own steps (adaptive dopri5)")
    if sampler in SOLVER_NAMES:
        if config.sde != "vp":
            raise ValueError(f"sampler={sampler!r} needs a VP SDE run (its α_t, σ_t), got sde={config.sde!r}")
        return sample_by_name(sampler, net, build_sde(config), shape, steps=steps or SOLVER_STEPS[sampler], generator=generator,
                              progress=progress, callback=callback)
    steps = DEFAULT_STEPS.get(sampler) if steps is None else steps
    if sampler == "langevin":
        device = next(net.parameters()).device
        low, high = (-1.0, 1.0) if config.is_image else (-4.0, 4.0)  # uniform start over the data range (Alg. 1)
        x_init = low + (high - low) * torch.rand(shape, generator=generator, device=device)
        return annealed_langevin(net, net.sigmas, shape, steps=steps, x_T=x_init,
                                 step_size=langevin_step_size(config) if step_size is None else step_size, generator=generator,
                                 denoise=True, progress=progress, callback=callback)
    sde = build_sde(config)
    if sampler == "reverse-sde":
        return sample_reverse_sde(net, sde, shape, steps=steps, generator=generator, progress=progress, callback=callback)
    if sampler == "pc":
        return sample_pc(net, sde, shape, steps=steps, generator=generator, progress=progress, callback=callback)
    return sample_ode(net, sde, shape, generator=generator, progress=progress, callback=callback)


def evaluate_score_run(net: nn.Module, config: ScoreConfig, num_examples: int = 500, *, batch_size: int = 250,
                       generator: torch.Generator | None = None, progress: bool = False) -> dict[str, float]:
    """Held-out ODE NLL: nats per point (toy 2-D) or bits/dim of 8-bit images (Hutchinson)."""
    from ppl_dgm.sde.flow import ode_bits_per_dim, ode_log_likelihood

    if config.model != "score-sde":
        raise ValueError(f"likelihoods need a score-sde run, got model={config.model!r}")
    sde = build_sde(config)
    device = next(net.parameters()).device
    if config.is_image:
        images = load_dataset(config.dataset, "test").tensors[0][:num_examples].to(device)
        return ode_bits_per_dim(net, sde, images, batch_size=batch_size, generator=generator, progress=progress)
    points = _data(config, "test")[:num_examples].to(device)
    results = [ode_log_likelihood(net, sde, chunk) for chunk in points.split(batch_size)]
    nll = -torch.cat([r.log_likelihood for r in results])
    return {"nll_nats": float(nll.mean()), "nll_standard_error": float(nll.std() / nll.numel() ** 0.5),
            "num_points": nll.numel(), "nfe_per_batch": sum(r.nfe for r in results) / len(results)}


def train_score(config: ScoreConfig, run_dir: str | os.PathLike, *, device: str | torch.device = "auto", resume: bool = False,
                progress: bool = True, max_steps: int | None = None, amp: str | None = None) -> dict[str, Any]:
    """Train into ``run_dir`` (config.json, metrics.jsonl, checkpoint.pt with EMA, samples.png) with exact resume;
    ``amp="bf16"`` trains under bf16 autocast."""
    run = RunDir(run_dir)
    run.start(config.as_json(), resume)
    device = resolve_device(device)
    torch.manual_seed(config.seed)
    net = build_network(config).to(device)
    sde = build_sde(config)
    if config.model == "ncsn":
        loss_fn = lambda batch: dsm_loss(net, batch[0], net.sigmas)  # noqa: E731 (Song & Ermon 2019, eq. 6)
    else:
        loss_fn = lambda batch: score_sde_loss(net, sde, batch[0], likelihood_weighting=config.likelihood_weighting,  # noqa: E731
                                                 importance_sampling=config.importance_sampling)

    ema = make_ema(net, config.ema_decay)

    def write_samples(epoch: int, record: dict[str, Any]) -> None:
        if epoch + 1 == config.epochs:
            samples = sample_score_run(ema.module.eval(), config, 64 if config.is_image else 2000, steps=None if config.model == "ncsn" else 200, generator=torch.Generator(device=device).manual_seed(config.seed))
            _save_samples(run, config, samples)

    train_data = _data(config, "train")
    optimizers: list[torch.optim.Optimizer] = []

    def make_optimizer(parameters) -> torch.optim.Optimizer:
        optimizers.append(torch.optim.Adam(parameters, lr=config.lr))
        return optimizers[-1]

    on_step = None
    if config.lr_schedule == "cosine":  # a function of the step alone, so a resumed run continues exactly
        _, world_size = rank_and_world_size()
        total_steps = config.epochs * steps_per_epoch(train_data.shape[0], config.batch_size, world_size)

        def on_step(step: int) -> None:
            for group in optimizers[0].param_groups:
                group["lr"] = cosine_lr(config.lr, step, total_steps)

    started = time.perf_counter()
    history = fit(net, loss_fn, (train_data,), epochs=config.epochs, batch_size=config.batch_size,
                  optim=make_optimizer, device=device, val_data=(_data(config, "test"),),
                  checkpoint=run.checkpoint, resume=resume, metrics_path=run.metrics_path, ema=ema,
                  max_steps=max_steps, seed=config.seed, progress=progress, on_epoch_end=write_samples, on_step=on_step,
                  description=config.label, amp=amp)
    result: dict[str, Any] = {"epochs_done": len(history), "train_seconds": time.perf_counter() - started, "device": str(device)}
    if history.records:
        result.update(steps=history.records[-1]["step"], train_loss=history.loss[-1], val_loss=history.val_loss[-1])
    return result


def load_score_run(run_dir: str | os.PathLike, device: str | torch.device = "auto") -> tuple[nn.Module, ScoreConfig]:
    """The EMA network (eval mode) and config of a run folder written by :func:`train_score`."""
    run = RunDir(run_dir)
    config = ScoreConfig(**run.read_config())
    ema = make_ema(build_network(config), config.ema_decay)
    ema.load_state_dict(run.checkpoint.load(map_location="cpu")["ema"])
    return ema.module.to(resolve_device(device)).eval(), config


def ddpm_ode_bits_per_dim(run_dir: str | os.PathLike, num_images: int = 100, *, batch_size: int = 50, device: str | torch.device = "auto",
                          rtol: float = 1e-5, atol: float = 1e-5, seed: int = 0, progress: bool = False) -> dict[str, float]:
    """ODE bits/dim of a DDPM run's EMA ε-network on its held-out images, read as VPSDE(0.1, 20) at t = i/T
    (Song et al. 2021, App. B: DDPM's linear schedule is the VP SDE's discretization); Hutchinson divergence."""
    from ppl_dgm.diffusion.experiment import load_ddpm_run
    from ppl_dgm.sde.flow import ode_bits_per_dim

    net, config = load_ddpm_run(run_dir, device=device)
    if config.schedule != "linear":
        raise ValueError(f"the VP SDE limit holds for DDPM's linear schedule, got schedule={config.schedule!r}")
    images = load_dataset(config.dataset, "test", root=config.data_root).tensors[0][:num_images]
    device = next(net.parameters()).device
    sde = VPSDE(0.1, 20.0)
    generator = torch.Generator(device=device).manual_seed(seed)
    return ode_bits_per_dim(net, sde, images.to(device), batch_size=batch_size, rtol=rtol, atol=atol, generator=generator, progress=progress)
