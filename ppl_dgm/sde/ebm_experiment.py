"""Train / load / sample / evaluate energy-based runs on the 2-D toys in ``runs/<name>/`` (``ppl-dgm train ebm``).

An :class:`~ppl_dgm.sde.ebm.EnergyModel` E_θ(x, σ) over geometric σ's is trained by denoising, sliced or implicit
score matching (σ²-weighted, one σ per example); the EMA weights sample (annealed or plain Langevin) and evaluate:
the held-out NLL −log p_θ(x) with p_θ = exp(−E_θ(x, σ_L))/Z on [−bound, bound]², Z by quadrature on a grid.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ppl_dgm._checks import check_choice, check_positive_float, check_positive_int, check_seed
from ppl_dgm.data import TOY2D_NAMES, toy2d
from ppl_dgm.sde.ebm import OBJECTIVES, EnergyModel, energy_loss, log_partition, quadrature_log_prob, sample_langevin
from ppl_dgm.sde.langevin import annealed_langevin
from ppl_dgm.sde.losses import geometric_sigmas
from ppl_dgm.train.device import resolve_device
from ppl_dgm.train.ema import make_ema
from ppl_dgm.train.loop import fit
from ppl_dgm.train.runs import RunDir

__all__ = ["EBMConfig", "SAMPLERS", "build_energy_model", "train_ebm", "load_ebm_run", "sample_ebm_run", "evaluate_ebm_run"]

SAMPLERS = ("annealed-langevin", "langevin")
DEFAULT_STEPS = {"annealed-langevin": 100, "langevin": 1000}  # annealed: per level; equal network calls at L = 10


@dataclass
class EBMConfig:
    """Everything that defines an energy-based run; saved as ``config.json``."""

    objective: str = field(default="dsm", metadata={"choices": OBJECTIVES, "help": "denoising (Vincent 2011), sliced "
                                                    "(Song et al. 2019) or implicit (Hyvärinen 2005) score matching"})
    dataset: str = field(default="8gaussians", metadata={"choices": TOY2D_NAMES, "help": "toy 2-D density"})
    num_train: int = field(default=20000, metadata={"help": "training points"})  # drawn with the seed
    hidden: tuple[int, ...] = field(default=(128, 128, 128), metadata={"help": "MLP widths of the energy"})
    num_scales: int = field(default=10, metadata={"help": "geometric σ's L (1: one energy at σ_min, no annealing)"})
    sigma_max: float = field(default=3.0, metadata={"help": "σ_1, the largest noise level"})
    sigma_min: float = field(default=0.1, metadata={"help": "σ_L: the model's density is exp(−E(x, σ_L))/Z"})
    num_projections: int = field(default=1, metadata={"help": "sliced: projections v per example"})
    bound: float = field(default=6.0, metadata={"help": "the density lives on [−bound, bound]² (Z by quadrature there)"})
    quadrature_points: int = field(default=512, metadata={"help": "grid points per side for Z (midpoint rule)"})
    epochs: int = 20
    batch_size: int = 500
    lr: float = 2e-3
    ema_decay: float = 0.995
    seed: int = 0

    def __post_init__(self) -> None:
        self.hidden = tuple(self.hidden)
        check_choice("objective", self.objective, OBJECTIVES)
        check_choice("dataset", self.dataset, TOY2D_NAMES)
        for name in ("num_train", "num_scales", "num_projections", "epochs", "batch_size"):
            check_positive_int(name, getattr(self, name))
        for name in ("sigma_min", "bound", "lr"):
            check_positive_float(name, getattr(self, name))
        if self.num_scales > 1 and not (isinstance(self.sigma_max, (int, float)) and self.sigma_max > self.sigma_min):
            raise ValueError(f"sigma_max must exceed sigma_min={self.sigma_min!r} when num_scales > 1, got {self.sigma_max!r}")
        if isinstance(self.quadrature_points, bool) or not isinstance(self.quadrature_points, int) or self.quadrature_points < 2:
            raise ValueError(f"quadrature_points must be an int >= 2, got {self.quadrature_points!r}")
        check_seed(self.seed)

    is_image = False  # for the shared 2-D scatter of ppl_dgm.sde.experiment

    @property
    def label(self) -> str:
        return f"ebm {self.objective} {self.dataset}"

    @property
    def default_sampler(self) -> str:
        return "annealed-langevin" if self.num_scales > 1 else "langevin"

    @property
    def sigmas(self) -> torch.Tensor:
        if self.num_scales == 1:
            return torch.tensor([self.sigma_min], dtype=torch.float64)
        return geometric_sigmas(self.sigma_max, self.sigma_min, self.num_scales)

    def as_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))


def build_energy_model(config: EBMConfig) -> EnergyModel:
    return EnergyModel(2, config.hidden, config.sigmas)


def _data(config: EBMConfig, split: str) -> torch.Tensor:
    seed = config.seed if split == "train" else config.seed + 1
    return toy2d(config.dataset, config.num_train if split == "train" else 2000, torch.Generator().manual_seed(seed))


def sample_ebm_run(model: EnergyModel, config: EBMConfig, n: int, *, sampler: str | None = None, steps: int | None = None,
                   step_size: float | None = None, generator: torch.Generator | None = None, progress: bool = False,
                   callback=None) -> torch.Tensor:
    """Points (n, 2) from a run's EMA energy, started uniformly on [−4, 4]². ``sampler``: ``"annealed-langevin"`` (Song &
    Ermon 2019, Alg. 1, ``steps`` per level, default 100; the default when num_scales > 1) or ``"langevin"`` at σ_L
    (``steps`` default 1,000). ``step_size`` ε defaults to 0.2 σ_L² (α_i = ε σ_i²/σ_L² for annealed Langevin)."""
    check_choice("sampler", sampler or config.default_sampler, SAMPLERS)
    sampler = sampler or config.default_sampler
    if sampler == "annealed-langevin" and config.num_scales < 2:
        raise ValueError(f"sampler='annealed-langevin' needs noise levels to anneal: this run has num_scales={config.num_scales}; "
                         "use sampler='langevin'")
    steps = DEFAULT_STEPS[sampler] if steps is None else check_positive_int("steps", steps)
    step_size = 0.2 * config.sigma_min**2 if step_size is None else check_positive_float("step_size", step_size)
    device = next(model.parameters()).device
    start = -4.0 + 8.0 * torch.rand((n, 2), generator=generator, device=device)
    if sampler == "langevin":
        return sample_langevin(model, (n, 2), steps=steps, step_size=step_size, generator=generator, x_T=start,
                               progress=progress, callback=callback)
    return annealed_langevin(model.score, model.sigmas, (n, 2), steps=steps, step_size=step_size, generator=generator,
                             device=device, x_T=start, progress=progress, callback=callback)


def evaluate_ebm_run(model: EnergyModel, config: EBMConfig, num_examples: int = 2000) -> dict[str, float]:
    """Held-out NLL in nats per point, −log p_θ(x) = E_θ(x, σ_L) + log Z, on the first ``num_examples`` of the 2,000 test points;
    log Z by the midpoint rule on the run's grid, with ``quadrature_error`` = |log Z(n) − log Z(n/2)|/3, the
    Richardson estimate of the O(h²) rule's error. Points outside the box would count as +inf (``outside_box``)."""
    num_examples = check_positive_int("num_examples", num_examples)
    points = _data(config, "test")[:num_examples]
    log_z = log_partition(model, bound=config.bound, points=config.quadrature_points)
    coarse = log_partition(model, bound=config.bound, points=max(2, config.quadrature_points // 2))
    nll = -quadrature_log_prob(model, points, bound=config.bound, log_z=log_z)
    return {"nll_nats": float(nll.mean()), "nll_standard_error": float(nll.std() / nll.numel() ** 0.5), "num_points": nll.numel(),
            "log_partition": float(log_z), "quadrature_error": float((log_z - coarse).abs() / 3),
            "outside_box": int(torch.isinf(nll).sum())}


def train_ebm(config: EBMConfig, run_dir: str | os.PathLike, *, device: str | torch.device = "auto", resume: bool = False,
              progress: bool = True, max_steps: int | None = None) -> dict[str, Any]:
    """Train into ``run_dir`` (config.json, metrics.jsonl, checkpoint.pt with EMA, samples.png) with exact resume; the
    result holds the final losses and :func:`evaluate_ebm_run`'s quadrature NLL of the EMA energy."""
    from ppl_dgm.sde.experiment import _save_samples

    run = RunDir(run_dir)
    run.start(config.as_json(), resume)
    device = resolve_device(device)
    torch.manual_seed(config.seed)
    model = build_energy_model(config).to(device)
    ema = make_ema(model, config.ema_decay)

    def loss_fn(batch):
        return energy_loss(model, batch[0], config.objective, num_projections=config.num_projections)

    def write_samples(epoch: int, record: dict[str, Any]) -> None:
        if epoch + 1 == config.epochs:
            generator = torch.Generator(device=device).manual_seed(config.seed)
            _save_samples(run, config, sample_ebm_run(ema.module.eval(), config, 2000, generator=generator))

    started = time.perf_counter()
    history = fit(model, loss_fn, (_data(config, "train"),), epochs=config.epochs, batch_size=config.batch_size,
                  optim=lambda p: torch.optim.Adam(p, lr=config.lr), device=device, val_data=(_data(config, "test"),),
                  checkpoint=run.checkpoint, resume=resume, metrics_path=run.metrics_path, ema=ema, max_steps=max_steps,
                  seed=config.seed, progress=progress, on_epoch_end=write_samples, description=config.label)
    result: dict[str, Any] = {"epochs_done": len(history), "train_seconds": time.perf_counter() - started, "device": str(device)}
    if history.records:
        result.update(steps=history.records[-1]["step"], train_loss=history.loss[-1], val_loss=history.val_loss[-1])
    result.update(evaluate_ebm_run(ema.module.eval(), config))
    return result


def load_ebm_run(run_dir: str | os.PathLike, device: str | torch.device = "auto") -> tuple[EnergyModel, EBMConfig]:
    """The EMA energy (eval mode) and config of a run folder written by :func:`train_ebm`."""
    run = RunDir(run_dir)
    config = EBMConfig(**run.read_config())
    ema = make_ema(build_energy_model(config), config.ema_decay)
    ema.load_state_dict(run.checkpoint.load(map_location="cpu")["ema"])
    return ema.module.to(resolve_device(device)).eval(), config
