"""Train / load / evaluate a discrete VAE run in ``runs/<name>/`` (``ppl-dgm train|sample|eval dvae``).

Stage one of DALL-E in miniature (Ramesh et al. 2021): :class:`~ppl_dgm.vae.dvae.DiscreteVAE` trained by SVI on the
binarized digits through the Gumbel-softmax relaxation, its temperature annealed and its KL weight warmed up per
optimizer step (:func:`~ppl_dgm.vae.dvae.temperature_at`, :func:`~ppl_dgm.vae.kl_control.kl_weight_at`, set by the loop's
``on_step`` hook, so a resumed run continues on the same schedules). Held-out figures are for the discrete model with
its uniform prior at β = 1: ELBO and IWAE-k in nats per image (comparable to the Bernoulli VAE rows), the exact
KL(q(c | x) ‖ uniform), and the usage of the codes. Stage two,
``ppl-dgm train code-prior --source-run runs/<dvae run>``, replaces the uniform prior by a learned one.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, Callable

import pyro
import torch
from pyro.infer import Trace_ELBO
from torch.utils.data import TensorDataset

from ppl_dgm._checks import check_choice, check_positive_float, check_positive_int, check_seed
from ppl_dgm.data import image_shape as dataset_image_shape
from ppl_dgm.metrics.likelihood import iwae_log_likelihood
from ppl_dgm.train.device import resolve_device
from ppl_dgm.train.runs import RunDir
from ppl_dgm.train.svi import fit_svi
from ppl_dgm.vae.dvae import DiscreteVAE, temperature_at
from ppl_dgm.vae.experiment import binarized_data, write_reconstructions
from ppl_dgm.vae.kl_control import kl_weight_at

__all__ = ["DVAEConfig", "build_dvae", "dvae_data", "train_dvae", "load_dvae_run", "evaluate_dvae"]

DATASETS = ("mnist5k", "digits", "mnist", "fashion_mnist")  # one-channel images, binarized


@dataclass
class DVAEConfig:
    """Everything that defines a discrete-VAE run; saved as ``config.json``."""

    dataset: str = field(default="mnist5k", metadata={"choices": DATASETS})
    num_codes: int = field(default=64, metadata={"help": "categories K per latent cell"})
    code_dim: int = field(default=32, metadata={"help": "width D of the K×D codebook the decoder reads"})
    channels: int = field(default=32, metadata={"help": "conv base channels"})
    temperature_start: float = field(default=1.0, metadata={"help": "Gumbel-softmax temperature τ0 at step 0"})
    temperature_min: float = field(default=0.5, metadata={"help": "floor τ_min of the annealed temperature"})
    anneal_rate: float = field(default=1e-3, metadata={"help": "r in τ = max(τ_min, τ0·exp(−r·step)) (Jang et al. 2017)"})
    kl_weight: float = field(default=1.0, metadata={
        "help": "β the training KL weight reaches (β-VAE; < 1 gives peaked codes for stage two); held-out figures are at β = 1"})
    kl_warmup_steps: int = field(default=500, metadata={"help": "β ramps linearly over this many steps (0: constant)"})
    epochs: int = 50
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    data_root: str | None = field(default=None, metadata={
        "help": "folder with torchvision files (mnist, fashion_mnist); never downloads"})

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, DATASETS)
        for name in ("num_codes", "code_dim", "channels", "epochs", "batch_size"):
            check_positive_int(name, getattr(self, name))
        if isinstance(self.kl_warmup_steps, bool) or not isinstance(self.kl_warmup_steps, int) or self.kl_warmup_steps < 0:
            raise ValueError(f"kl_warmup_steps must be an int >= 0, got {self.kl_warmup_steps!r}")
        check_positive_float("temperature_start", self.temperature_start)
        check_positive_float("temperature_min", self.temperature_min)
        rate = self.anneal_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < math.inf:
            raise ValueError(f"anneal_rate must be a float >= 0, got {self.anneal_rate!r}")
        check_positive_float("kl_weight", self.kl_weight)
        check_positive_float("lr", self.lr)
        check_seed(self.seed)

    def temperature_at_step(self, step: int) -> float:
        """The relaxation's temperature after ``step`` optimizer steps."""
        return temperature_at(step, self.temperature_start, self.temperature_min, self.anneal_rate)

    def kl_weight_at_step(self, step: int) -> float:
        """The KL weight β of training step ``step``."""
        return kl_weight_at(step, self.kl_warmup_steps, self.kl_weight)

    def schedule(self, model: DiscreteVAE) -> Callable[[int], None]:
        """``fit``'s ``on_step``: sets τ and β of training step ``step`` (functions of the step alone: exact resume)."""

        def on_step(step: int) -> None:
            model.set_temperature(self.temperature_at_step(step))
            model.set_kl_weight(self.kl_weight_at_step(step))

        return on_step


def build_dvae(config: DVAEConfig) -> DiscreteVAE:
    """The (untrained) network a config describes, at the schedule's first temperature."""
    return DiscreteVAE(dataset_image_shape(config.dataset), config.num_codes, config.code_dim, config.channels,
                       temperature=config.temperature_at_step(0), kl_weight=config.kl_weight_at_step(0))


def dvae_data(config: DVAEConfig, split: str) -> TensorDataset:
    """The binarized split the run trains / evaluates on (the Bernoulli VAEs' data)."""
    return binarized_data(config.dataset, split, config.data_root)


@torch.no_grad()
def evaluate_dvae(model: DiscreteVAE, data: TensorDataset, k: int | None = None, *, batch_size: int = 500,
                  seed: int = 0) -> dict[str, Any]:
    """Held-out figures of the discrete model (uniform p(c), Bernoulli p(x | c), categorical q(c | x)) in nats per image.

    ELBO = E_q[log p(x | c)] − KL(q(c | x) ‖ p(c)) with the KL exact, Σ_cells (log K − H(q_cell)), and the expectation
    from one code grid per image drawn with a generator seeded by ``seed``; with ``k`` the IWAE bound (Burda et al. 2016,
    eq. 8) of the same model and guide; the codebook usage of the argmax codes (perplexity exp H(usage), codes used).
    """
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    x = data.tensors[0].to(device)
    reconstruction, kl = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    counts = torch.zeros(model.num_codes, dtype=torch.float64)
    for chunk in x.split(batch_size):
        log_q = model.posterior_logits(chunk).log_softmax(-1)  # (B, h, w, K)
        entropy = -(log_q.exp() * log_q).sum(-1)  # per cell
        kl += (math.log(model.num_codes) - entropy).flatten(1).sum(1).double().sum().cpu()
        drawn = torch.multinomial(log_q.exp().flatten(0, -2), 1, generator=generator).view(log_q.shape[:-1])
        reconstruction += model.log_likelihood(chunk, drawn).double().sum().cpu()
        counts += torch.bincount(log_q.argmax(-1).flatten(), minlength=model.num_codes).double().cpu()
    usage = counts / counts.sum()
    result: dict[str, Any] = {
        "test_elbo_nats": float(reconstruction - kl) / x.shape[0],
        "test_reconstruction_nats": float(-reconstruction) / x.shape[0],
        "test_kl_nats": float(kl) / x.shape[0],
        "test_perplexity": float(torch.exp(-(usage * torch.log(usage.clamp(min=1e-30))).sum())),
        "codes_used": int((counts > 0).sum()),
        "num_codes": model.num_codes,
    }
    if k is not None:
        check_positive_int("iwae_k", k)
        bounds = [iwae_log_likelihood(model.discrete_model, model.discrete_guide, chunk, k) for chunk in x.split(100)]
        result["test_iwae_nats"] = torch.cat(bounds).mean().item()
        result["iwae_k"] = k
    return result


def _write_grids(run: RunDir, model: DiscreteVAE, test_images: torch.Tensor, seed: int) -> None:
    """reconstructions.png and uniform_prior_samples.png (codes drawn uniformly: stage one's prior, not digits)."""
    model.eval()
    generator = torch.Generator(device=test_images.device).manual_seed(seed)
    run.save_grid(model.sample(64, generator=generator), "uniform_prior_samples.png", nrow=8)
    write_reconstructions(run, model, test_images)
    model.train()


def train_dvae(
    config: DVAEConfig,
    run_dir: str | os.PathLike,
    *,
    device: str | torch.device = "auto",
    resume: bool = False,
    progress: bool = True,
    max_steps: int | None = None,
    iwae_k: int | None = None,
) -> dict[str, Any]:
    """Train a discrete VAE by SVI on the relaxed ELBO into ``run_dir``; returns the held-out figures of
    :func:`evaluate_dvae` (with ``iwae_k``, the IWAE bound too). Validation losses are the discrete −ELBO."""
    if iwae_k is not None:
        check_positive_int("iwae_k", iwae_k)
    run = RunDir(run_dir)
    run.start(asdict(config), resume)
    device = resolve_device(device)
    pyro.set_rng_seed(config.seed)
    pyro.clear_param_store()
    train_data, test_data = dvae_data(config, "train"), dvae_data(config, "test")
    model = build_dvae(config).to(device)
    test_images = test_data.tensors[0].to(device)

    started = time.perf_counter()
    history = fit_svi(
        model.model,
        model.guide,
        train_data,
        loss=Trace_ELBO(),  # training: the relaxed pair, pathwise gradients; validation (eval mode): the discrete pair
        optim=partial(torch.optim.Adam, lr=config.lr),
        epochs=config.epochs,
        batch_size=config.batch_size,
        device=device,
        val_data=test_data,
        checkpoint=run.checkpoint,
        resume=resume,
        progress=progress,
        metrics_path=run.metrics_path,
        max_steps=max_steps,
        seed=config.seed,
        on_step=config.schedule(model),
        on_epoch_end=lambda epoch, record: _write_grids(run, model, test_images, config.seed),
        description=f"dvae {config.dataset}",
    )
    seconds = time.perf_counter() - started
    _write_grids(run, model, test_images, config.seed)
    result: dict[str, Any] = {"epochs_done": len(history), "steps": history.steps, "train_seconds": seconds,
                              "device": str(device), "final_temperature": config.temperature_at_step(history.steps),
                              "final_kl_weight": config.kl_weight_at_step(history.steps)}
    if history.records:
        result["train_loss"] = history.loss[-1]
    result.update(evaluate_dvae(model, test_data, k=iwae_k))
    return result


def load_dvae_run(run_dir: str | os.PathLike, device: str | torch.device = "auto") -> tuple[DiscreteVAE, DVAEConfig]:
    """The trained discrete VAE (eval mode) and its config from a run folder written by :func:`train_dvae`."""
    run = RunDir(run_dir)
    config = DVAEConfig(**run.read_config())
    model = build_dvae(config)
    model.load_state_dict(run.checkpoint.load(map_location="cpu")["module"])
    return model.to(resolve_device(device)).eval(), config
