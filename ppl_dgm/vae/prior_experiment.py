"""Train / load / sample / evaluate an autoregressive code prior over a trained VQ-VAE or dVAE run (``ppl-dgm train code-prior``).

Stage two of a VQ-VAE (van den Oord et al. 2017, sec. 3.3) or of a discrete VAE (DALL-E's transformer, Ramesh et al.
2021, sec. 2.2): the source model is frozen, its codes of the training images are the data (with ``class_conditional``
the label is the first token, "text-to-image" in miniature), and :class:`~ppl_dgm.vae.prior.CodePrior` is fit by
maximum likelihood. Samples are code grids drawn from the prior and decoded by the source (``decode_codes``). The
held-out likelihood is the two-stage bound

    log p(x) ≥ log p_prior(c(x)) + log p(x | c(x)),

the ELBO of the point-mass posterior q(c | x) = 1[c = c(x)] (its entropy is 0), c(x) the source's codes (``codes``:
nearest codebook entries for a VQ-VAE, the argmax of q(c | x) for a dVAE); for a class-conditional prior it bounds
log p(x | y). The decoder term depends on the source:

- VQ-VAE: p(x | c) = N(decoder(c), diag σ²) on uniformly dequantized 8-bit pixels, σ² per pixel the maximum-likelihood
  fit to the training digits' reconstruction errors (floored at the variance of a uniform bin, (1/256)²/12); reported
  in bits/dim of the 8-bit image (docs/design.md, bits/dim convention).
- dVAE: its own Bernoulli decoder on the binarized digits it was trained on; reported in nats per image, comparable
  to the dVAE's uniform-prior ELBO/IWAE and to the Bernoulli VAE rows.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ppl_dgm._checks import check_positive_float, check_positive_int, check_seed
from ppl_dgm.data import load_dataset
from ppl_dgm.train.device import resolve_device
from ppl_dgm.train.loop import fit
from ppl_dgm.train.runs import RunDir
from ppl_dgm.vae.prior import CodePrior

__all__ = ["CodePriorConfig", "CodePriorModel", "train_code_prior", "load_code_prior_run", "evaluate_code_prior", "two_stage_bound", "gaussian_decoder_variance", "load_source_run",
           "source_data", "SOURCE_FAMILIES"]

SOURCE_FAMILIES = ("vqvae", "dvae")  # run families with codes(x) and decode_codes(codes)


@dataclass
class CodePriorConfig:
    """A code-prior run over the VQ-VAE or dVAE run ``source_run``; saved as ``config.json``."""

    source_run: str = field(default="", metadata={"help": "the VQ-VAE or dVAE run folder whose codes the prior models"})
    class_conditional: bool = field(default=False, metadata={"help": "start each sequence with the class token: p(c | y)"})
    dim: int = field(default=128, metadata={"help": "transformer width"})
    depth: int = field(default=4, metadata={"help": "transformer layers"})
    heads: int = 4
    dropout: float = 0.1
    epochs: int = 40
    batch_size: int = 64
    lr: float = 5e-4
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.source_run, str) or not self.source_run:
            raise ValueError(f"source_run must name a VQ-VAE run folder or a dVAE run folder, got {self.source_run!r}")
        for name in ("dim", "depth", "heads", "epochs", "batch_size"):
            check_positive_int(name, getattr(self, name))
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        check_positive_float("lr", self.lr)
        check_seed(self.seed)


def load_source_run(source_run: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, Any]:
    """The frozen VQ-VAE or dVAE (eval mode) of ``source_run`` and its config; a missing folder or another family is an
    error."""
    from ppl_dgm.runs import load_run

    path = Path(source_run)
    if not (path / "config.json").is_file() or not (path / "checkpoint.pt").is_file():
        raise FileNotFoundError(f"source_run={str(path)!r} is not a trained run folder (config.json and checkpoint.pt); "
                                f"train one with `ppl-dgm train vqvae` or `ppl-dgm train dvae`")
    run = load_run(path, device=device, family=SOURCE_FAMILIES)
    return run.model.requires_grad_(False).eval(), run.config


def _is_dvae(source_config: Any) -> bool:
    from ppl_dgm.vae.dvae_experiment import DVAEConfig

    return isinstance(source_config, DVAEConfig)


def source_data(source_config: Any, split: str) -> tuple[Tensor, Tensor]:
    """Images and labels of the split the source run trained on: the binarized digits for a dVAE, the grey levels for a
    VQ-VAE."""
    if _is_dvae(source_config):
        from ppl_dgm.vae.dvae_experiment import dvae_data

        return tuple(dvae_data(source_config, split).tensors[:2])
    return tuple(load_dataset(source_config.dataset, split, root=source_config.data_root).tensors[:2])


@torch.no_grad()
def codes_of(source: nn.Module, images: Tensor, batch_size: int = 500) -> Tensor:
    """Code grids (N, h, w) of images (N, C, H, W) by ``source.codes``, in batches on the source's device."""
    device = next(source.parameters()).device
    return torch.cat([source.codes(images[i : i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)])


class CodePriorModel(nn.Module):
    """The trained prior and the frozen source (VQ-VAE or dVAE) that decodes its samples (what ``load_run`` returns)."""

    def __init__(self, prior: CodePrior, source: nn.Module):
        super().__init__()
        self.prior, self.source = prior, source

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | int | None = None, *, generator: torch.Generator | None = None, temperature: float = 1.0,
               progress: bool = False) -> Tensor:
        """n images in [0, 1]: code grids from the prior (of class ``y`` when class-conditional), decoded by the source."""
        return self.source.decode_codes(self.prior.sample(n, y, generator=generator, temperature=temperature, progress=progress))


def _build_prior(config: CodePriorConfig, num_codes: int, grid: tuple[int, int]) -> CodePrior:
    return CodePrior(num_codes, grid, num_classes=10 if config.class_conditional else None, dim=config.dim, depth=config.depth,
                     heads=config.heads, dropout=config.dropout)


def _code_data(source: nn.Module, source_config: Any, split: str) -> tuple[Tensor, Tensor]:
    images, labels = source_data(source_config, split)
    return codes_of(source, images), labels


def train_code_prior(config: CodePriorConfig, run_dir: str | os.PathLike, *, device: str | torch.device = "auto",
                     resume: bool = False, progress: bool = True, max_steps: int | None = None, num_samples: int = 1000,
                     cache_dir: str | os.PathLike = "runs") -> dict[str, Any]:
    """Fit the prior to the codes of the source run's training images (held-out codes for validation) into ``run_dir``;
    returns held-out nats per code, the two-stage bound (bits/dim for a VQ-VAE source, nats for a dVAE) and FD/KID of
    ``num_samples`` decoded samples (the digit classifier cached under ``cache_dir``)."""
    device = resolve_device(device)
    source, source_config = load_source_run(config.source_run, device)
    train_codes, train_labels = _code_data(source, source_config, "train")
    test_codes, test_labels = _code_data(source, source_config, "test")
    run = RunDir(run_dir)
    run.start(asdict(config), resume)
    torch.manual_seed(config.seed)
    prior = _build_prior(config, source.num_codes, tuple(train_codes.shape[1:])).to(device)
    started = time.perf_counter()
    model = CodePriorModel(prior, source)

    def write_samples(epoch: int, record: dict[str, Any]) -> None:
        prior.eval()
        generator = torch.Generator(device=device).manual_seed(config.seed)
        y = torch.arange(10, device=device).repeat_interleave(8) if config.class_conditional else None
        images = model.sample(80 if config.class_conditional else 64, y, generator=generator)
        run.save_grid(images, "samples.png", nrow=8)
        prior.train()

    history = fit(prior, prior.loss, (train_codes, train_labels), epochs=config.epochs, batch_size=config.batch_size,
                  optim=partial(torch.optim.AdamW, lr=config.lr, weight_decay=0.01), device=device,
                  val_data=(test_codes, test_labels), checkpoint=run.checkpoint, resume=resume, metrics_path=run.metrics_path,
                  max_steps=max_steps, seed=config.seed, progress=progress, on_epoch_end=write_samples,
                  description="code prior", grad_clip=1.0)
    result: dict[str, Any] = {"epochs_done": len(history), "train_seconds": time.perf_counter() - started, "device": str(device)}
    prior.eval()
    result.update(evaluate_code_prior(model, config, source_config, num_samples=num_samples, cache_dir=cache_dir))
    run.write_results(result)
    return result


@torch.no_grad()
def evaluate_code_prior(model: CodePriorModel, config: CodePriorConfig, source_config: Any, *, num_samples: int = 1000, seed: int = 0,
                        cache_dir: str | os.PathLike = "runs") -> dict[str, Any]:
    """Held-out nats per code, the two-stage bound −log p(x) ≤ −log p(c(x)) − log p(x | c(x)) (module docstring: bits/dim
    for a VQ-VAE source, nats per binarized image for a dVAE), and FD/KID of ``num_samples`` decoded samples against the
    test digits (class-conditional runs: an equal number per class, and the digit classifier's accuracy on the intended
    class)."""
    from ppl_dgm.metrics.frechet import feature_classifier, sample_quality
    from ppl_dgm.metrics.likelihood import bits_per_dim

    prior, source = model.prior.eval(), model.source
    device = next(prior.parameters()).device
    test_images, test_labels = source_data(source_config, "test")
    y = test_labels if prior.num_classes else None
    generator = torch.Generator().manual_seed(seed)
    is_dvae = _is_dvae(source_config)
    variance = None
    if not is_dvae:
        train_images = load_dataset(source_config.dataset, "train", root=source_config.data_root).tensors[0]
        variance = gaussian_decoder_variance(source, train_images, generator=generator)
    terms = two_stage_bound(model, test_images, y, decoder_variance=variance, generator=generator)
    log_prior, log_likelihood = terms["log_prior"], terms["log_likelihood"]
    nll_bound = -(log_prior + log_likelihood).mean()
    if is_dvae:  # nats per binarized image
        bound = {"test_nll_bound_nats": float(nll_bound)}
    else:
        bound = {"test_bits_per_dim": float(bits_per_dim(nll_bound, test_images[0].numel()))}
    result: dict[str, Any] = {
        "test_nats_per_code": float(-log_prior.mean() / prior.length),
        "test_prior_nats": float(-log_prior.mean()),
        "test_decoder_nats": float(-log_likelihood.mean()),
        **bound,
        "num_codes": prior.num_codes, "grid": list(prior.grid),
    }
    sample_generator = torch.Generator(device=device).manual_seed(seed)
    classifier = feature_classifier(source_config.dataset, cache_dir=cache_dir, device="cpu")
    if prior.num_classes:
        intended = torch.arange(10, device=device).repeat_interleave(num_samples // 10)
        samples = torch.cat([model.sample(len(chunk), chunk, generator=sample_generator).cpu() for chunk in intended.split(250)])
        predicted = classifier(samples.to(next(classifier.parameters()).device) * 1.0).argmax(-1).cpu()
        result["class_accuracy"] = float((predicted == intended.cpu()).float().mean())
    else:
        samples = torch.cat([model.sample(min(250, num_samples - i), generator=sample_generator).cpu() for i in range(0, num_samples, 250)])
    result.update({f"sample_{key}": value for key, value in sample_quality(samples.clamp(0, 1), source_config.dataset, classifier=classifier, seed=seed).items()})
    return result


@torch.no_grad()
def gaussian_decoder_variance(vqvae: nn.Module, train_images: Tensor, *, generator: torch.Generator | None = None,
                              batch_size: int = 500) -> Tensor:
    """σ² per pixel (C, H, W) of a VQ-VAE's decoder density p(x | c) = N(decoder(c(x)), diag σ²): the maximum-likelihood
    fit to the uniformly dequantized training images' reconstruction errors, floored at the variance of one uniform
    bin, (1/256)²/12 (module docstring)."""
    from ppl_dgm.metrics.likelihood import dequantize

    device = next(vqvae.parameters()).device
    train_x = dequantize(train_images, generator=generator)
    train_recon = torch.cat([vqvae.decode_codes(codes_of(vqvae, chunk).to(device)).cpu() for chunk in train_images.split(batch_size)])
    return ((train_x - train_recon) ** 2).mean(0).clamp(min=(1 / 256) ** 2 / 12)


@torch.no_grad()
def two_stage_bound(model: CodePriorModel, images: Tensor, y: Tensor | None = None, *, decoder_variance: Tensor | None = None,
                    generator: torch.Generator | None = None, batch_size: int = 500) -> dict[str, Tensor]:
    """The two terms of log p(x) ≥ log p_prior(c(x)) + log p(x | c(x)) (module docstring), per image, in nats:
    ``{"log_prior": (B,), "log_likelihood": (B,)}``; −(their sum) bounds −log p(x), or −log p(x | y) with labels ``y``
    for a class-conditional prior.

    A dVAE source scores binary ``images`` with its Bernoulli decoder. A VQ-VAE source scores the uniformly dequantized
    8-bit ``images`` (dequantized here with ``generator``) under N(decoder(c), diag ``decoder_variance``), the
    variance from :func:`gaussian_decoder_variance` on its training images.
    """
    from ppl_dgm.metrics.likelihood import dequantize
    from ppl_dgm.vae.dvae import DiscreteVAE

    prior, source = model.prior, model.source
    if (y is None) != (prior.num_classes is None):
        raise ValueError(f"y must be given exactly when the prior is class-conditional (num_classes={prior.num_classes}), "
                         f"got y={'None' if y is None else 'labels'}")
    is_dvae = isinstance(source, DiscreteVAE)
    if not is_dvae and decoder_variance is None:
        raise ValueError("a VQ-VAE source needs decoder_variance (σ² per pixel, from gaussian_decoder_variance on its training images)")
    device = next(prior.parameters()).device
    codes = codes_of(source, images, batch_size)
    log_prior = torch.cat([prior.log_prob(chunk.to(device), None if y is None else y[i : i + batch_size].to(device)).cpu()
                           for i, chunk in zip(range(0, len(codes), batch_size), codes.split(batch_size))])
    if is_dvae:
        log_likelihood = torch.cat([source.log_likelihood(x.to(device), c.to(device)).cpu()
                                    for x, c in zip(images.split(batch_size), codes.split(batch_size))])
    else:
        x = dequantize(images, generator=generator)
        reconstruction = torch.cat([source.decode_codes(c.to(device)).cpu() for c in codes.split(batch_size)])
        log_likelihood = torch.distributions.Normal(reconstruction, decoder_variance.sqrt()).log_prob(x).flatten(1).sum(1)
    return {"log_prior": log_prior, "log_likelihood": log_likelihood}


def load_code_prior_run(run_dir: str | os.PathLike, device: str | torch.device = "auto") -> tuple[CodePriorModel, CodePriorConfig]:
    """The trained prior with its source VQ-VAE or dVAE (eval mode) and the config; a source whose codebook size or grid
    differs from the prior's is an error (the prior would index codes that do not exist)."""
    run = RunDir(run_dir)
    config = CodePriorConfig(**run.read_config())
    device = resolve_device(device)
    source, source_config = load_source_run(config.source_run, device)
    state = run.checkpoint.load(map_location="cpu")["module"]
    num_codes, length = state["head.weight"].shape[0], state["position"].shape[0]
    side = math.isqrt(length)
    if num_codes != source.num_codes:
        raise ValueError(f"the prior in {str(run.path)!r} models {num_codes} codes but source_run={config.source_run!r} has a "
                         f"codebook of {source.num_codes}; train a prior for that run")
    grid = tuple(codes_of(source, source_data(source_config, "test")[0][:1]).shape[1:])
    if grid[0] * grid[1] != length:
        raise ValueError(f"the prior in {str(run.path)!r} models {side}x{side} code grids but source_run={config.source_run!r} "
                         f"gives {grid[0]}x{grid[1]}")
    prior = _build_prior(config, num_codes, grid)
    prior.load_state_dict(state)
    return CodePriorModel(prior, source).to(device).eval(), config
