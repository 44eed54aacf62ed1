"""Train / load / evaluate a VAE run in ``runs/<name>/`` (what ``ppl-dgm train vae`` and the scripts call)."""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, Callable

import pyro
import torch
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO
from torch import nn
from torch.utils.data import TensorDataset

from ppl_dgm._checks import check_choice, check_positive_float, check_positive_int, check_seed
from ppl_dgm.data import image_shape as dataset_image_shape
from ppl_dgm.data import load_dataset
from ppl_dgm.metrics.likelihood import bits_per_dim, dequantize, iwae_log_likelihood
from ppl_dgm.train.device import resolve_device
from ppl_dgm.train.runs import RunDir
from ppl_dgm.train.svi import evaluate_elbo, fit_svi
from ppl_dgm.vae.hvae import HVAE, INFERENCE, mlp_hvae
from ppl_dgm.vae.kl_control import FreeBitsELBO, kl_weight_at
from ppl_dgm.vae.likelihoods import CONTINUOUS_LIKELIHOODS, LIKELIHOOD_NAMES
from ppl_dgm.vae.manifold import interpolate, latent_manifold
from ppl_dgm.vae.vae import POSTERIORS, VAE, conv_vae, mlp_vae

__all__ = ["VAEConfig", "build_vae", "training_objective", "binarized_data", "vae_data", "train_vae", "load_vae_run", "evaluate_vae",
           "latent_usage", "write_grids", "write_reconstructions"]

ARCHITECTURES = ("mlp", "conv")
MODELS = ("vae", "hvae")
DATASETS = ("mnist5k", "digits", "shapes", "mnist", "fashion_mnist", "cifar10")
ELBOS = {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO}


@dataclass
class VAEConfig:
    """Everything that defines a VAE run; saved as ``config.json``."""

    dataset: str = field(default="mnist5k", metadata={"choices": DATASETS})
    model: str = "vae"
    likelihood: str = field(default="bernoulli", metadata={"choices": LIKELIHOOD_NAMES})
    arch: str = field(default="mlp", metadata={"choices": ARCHITECTURES})
    latent_dim: int = field(default=50, metadata={"help": "z (VAE) or z1 (HVAE) size"})
    hidden: int = field(default=400, metadata={"help": "MLP hidden width (next to x)"})
    latent_dim2: int = field(default=32, metadata={"help": "z2 size"})
    hidden2: int = field(default=256, metadata={"help": "hidden width between z1 and z2"})
    depth: int = field(default=2, metadata={"help": "hidden layers in each of the HVAE's four MLPs (the VAE's MLP has one)"})
    channels: int = field(default=32, metadata={"help": "conv base channels"})
    beta: float = field(default=1.0, metadata={"help": "KL weight (beta-VAE, Higgins et al. 2017)"})
    posterior: str = field(default="diagonal", metadata={"choices": POSTERIORS, "help": "covariance of q(z|x): diagonal or full (VAE)"})
    min_scale: float = field(default=1e-3, metadata={"help": "σ floor of likelihood gaussian_network"})
    inference: str = field(default="bottom_up", metadata={
        "choices": INFERENCE, "help": "HVAE guide: bottom_up q(z1|x) q(z2|z1), or top_down (Ladder VAE, Sønderby et al. 2016)"})
    elbo: str = field(default="auto", metadata={
        "choices": (*ELBOS, "auto"),
        "help": "trace: Trace_ELBO; meanfield: TraceMeanField_ELBO (analytic KL); auto: meanfield for VAE and top-down HVAE, trace "
                "for bottom-up HVAE"})
    kl_warmup_steps: int = field(default=0, metadata={
        "help": "training KL weight rises linearly to 1 over this many optimizer steps (0: none); held-out figures are at β = 1"})
    free_bits: float = field(default=0.0, metadata={
        "help": "training objective floors each latent dimension's minibatch-mean KL at this many nats (Kingma et al. 2016); 0: none"})
    epochs: int = 50
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    data_root: str | None = field(default=None, metadata={"help": "folder with torchvision files (mnist, fashion_mnist, cifar10); never downloads"})

    def __post_init__(self) -> None:
        check_choice("likelihood", self.likelihood, LIKELIHOOD_NAMES)
        check_choice("arch", self.arch, ARCHITECTURES)
        check_choice("model", self.model, MODELS)
        check_choice("inference", self.inference, INFERENCE)
        if self.model == "vae" and self.inference != "bottom_up":
            raise ValueError(f"inference={self.inference!r} is an HVAE option (model='hvae'); the VAE has one latent layer")
        bottom_up_hvae = self.model == "hvae" and self.inference == "bottom_up"
        if self.elbo == "auto":  # analytic KL where it is exact; the bottom-up HVAE's q(z2|z1) rules it out
            self.elbo = "trace" if bottom_up_hvae else "meanfield"
        if self.elbo not in ELBOS:
            raise ValueError(f"elbo={self.elbo!r} is not known; expected one of {tuple(ELBOS) + ('auto',)}")
        if self.model == "hvae" and (self.arch != "mlp" or self.beta != 1.0):
            raise ValueError(f"model='hvae' needs arch='mlp' and beta=1, got arch={self.arch!r}, beta={self.beta!r}")
        if bottom_up_hvae and self.elbo != "trace":
            raise ValueError(
                f"model='hvae' with inference='bottom_up' needs elbo='trace', got elbo={self.elbo!r}: q(z2|z1) depends on z1, "
                "so the mean-field analytic KL would be biased (inference='top_down' samples in the model's order)"
            )
        check_choice("posterior", self.posterior, POSTERIORS)
        if self.model == "hvae" and self.posterior != "diagonal":
            raise ValueError(f"posterior={self.posterior!r} is implemented for model='vae'; the HVAE's guide is diagonal")
        check_positive_float("beta", self.beta)
        check_positive_float("min_scale", self.min_scale)
        for name in ("latent_dim", "hidden", "latent_dim2", "hidden2", "depth", "channels", "epochs", "batch_size"):
            check_positive_int(name, getattr(self, name))
        check_positive_float("lr", self.lr)
        check_seed(self.seed)
        steps = self.kl_warmup_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"kl_warmup_steps must be an int >= 0, got {steps!r}")
        bits = self.free_bits
        if isinstance(bits, bool) or not isinstance(bits, (int, float)) or not 0 <= bits < math.inf:
            raise ValueError(f"free_bits must be a float >= 0 (nats per latent dimension), got {bits!r}")

    def kl_weight_at_step(self, step: int) -> float:
        """The training KL weight β of optimizer step ``step`` (:func:`~ppl_dgm.vae.kl_control.kl_weight_at`)."""
        return kl_weight_at(step, self.kl_warmup_steps)


def training_objective(config: VAEConfig) -> tuple[ELBO, Callable[[int], None] | None]:
    """The training loss and ``fit``'s ``on_step`` for it.

    Without warm-up and free bits: the plain estimator ``config.elbo`` names and no hook (the true −ELBO). Otherwise a
    :class:`~ppl_dgm.vae.kl_control.FreeBitsELBO` (analytic KLs for ``elbo="meanfield"``, one-sample ones for
    ``"trace"``) whose KL weight the hook sets before every step from the step alone, so a resumed run continues on the
    same schedule.
    """
    if config.kl_warmup_steps == 0 and config.free_bits == 0:
        return ELBOS[config.elbo](), None
    loss = FreeBitsELBO(config.free_bits, config.kl_weight_at_step(0), analytic_kl=config.elbo == "meanfield")

    def on_step(step: int) -> None:
        loss.kl_weight = config.kl_weight_at_step(step)

    return loss, on_step


def build_vae(config: VAEConfig) -> VAE | HVAE:
    """The network a config describes (untrained)."""
    shape = dataset_image_shape(config.dataset)
    if config.model == "hvae":
        return mlp_hvae(shape, (config.latent_dim, config.latent_dim2), (config.hidden, config.hidden2), config.likelihood,
                        min_scale=config.min_scale, inference=config.inference, depth=config.depth)
    if config.arch == "mlp":
        return mlp_vae(shape, config.latent_dim, (config.hidden,), config.likelihood, config.beta, config.posterior, config.min_scale)
    return conv_vae(shape, config.latent_dim, config.channels, config.likelihood, config.beta, config.posterior, config.min_scale)


def _binarize(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """One fixed stochastic binarization (Salakhutdinov & Murray 2008) seeded so runs compare."""
    return torch.bernoulli(images, generator=torch.Generator().manual_seed(seed))


def binarized_data(dataset: str, split: str, root: str | None = None) -> TensorDataset:
    """The binarized split every Bernoulli model trains/evaluates on: ``binarized_mnist5k`` for mnist5k, else one
    fixed seeded binarization of the grey levels."""
    if dataset == "mnist5k":
        return load_dataset("binarized_mnist5k", split)
    x, y = load_dataset(dataset, split, root=root).tensors
    return TensorDataset(_binarize(x), y)


def vae_data(config: VAEConfig, split: str) -> TensorDataset:
    """The split a config trains/evaluates on: binarized images for Bernoulli, 8-bit images (k/255) otherwise."""
    if config.likelihood == "bernoulli":
        return binarized_data(config.dataset, split, config.data_root)
    return load_dataset(config.dataset, split, root=config.data_root)


def _dequantize_batch(batch):
    return (dequantize(batch[0]),) + tuple(batch[1:])


def _transform(config: VAEConfig):
    # Gaussian densities are only honest on dequantized 8-bit data (docs/design.md, bits/dim convention).
    return _dequantize_batch if config.likelihood in CONTINUOUS_LIKELIHOODS else None


def evaluate_vae(vae: VAE | HVAE, config: VAEConfig, data: TensorDataset, k: int | None = None) -> dict[str, float]:
    """Held-out ELBO (and with ``k`` the IWAE bound, Burda et al. 2016) in nats per image; bits/dim for 8-bit data.

    Bits/dim use the tightest bound computed; for the Gaussian decoder they include the
    dequantization change of variables (docs/design.md), with one fixed dequantization draw.
    """
    transform = _transform(config)
    if transform is not None:  # one fixed dequantization so the ELBO and IWAE see the same data
        data = TensorDataset(dequantize(data.tensors[0], generator=torch.Generator().manual_seed(config.seed)), *data.tensors[1:])
    elbo = evaluate_elbo(vae.model, vae.guide, data, loss=ELBOS[config.elbo]())
    result = {"test_elbo_nats": elbo}
    best = elbo
    if k is not None:
        device = next(vae.parameters()).device
        x = data.tensors[0].to(device)
        bounds = [iwae_log_likelihood(vae.model, vae.guide, chunk, k) for chunk in x.split(100)]
        best = result["test_iwae_nats"] = torch.cat(bounds).mean().item()
        result["iwae_k"] = k
    result.update(latent_usage(vae, data.tensors[0]))
    num_dims = data.tensors[0][0].numel()
    if config.likelihood in CONTINUOUS_LIKELIHOODS:  # a density of (k + u)/256: add D·log 256 (change of variables)
        result["test_bits_per_dim"] = bits_per_dim(-best, num_dims)
    elif config.likelihood == "discretized_gaussian":  # already a probability of the 8-bit image
        result["test_bits_per_dim"] = bits_per_dim(-best, num_dims, data_scale=1.0)
    return result


def write_reconstructions(run: RunDir, model: nn.Module, test_images: torch.Tensor) -> None:
    """reconstructions.png: rows alternate 8 held-out images and their 8 ``model.reconstruct`` images."""
    originals = test_images[:32]
    reconstructions = model.reconstruct(originals)
    pairs = torch.stack([originals.view(4, 8, *originals.shape[1:]), reconstructions.view(4, 8, *originals.shape[1:])], 1)
    run.save_grid(pairs.flatten(0, 2), "reconstructions.png", nrow=8)


@torch.no_grad()
def latent_usage(vae: VAE | HVAE, x: torch.Tensor, threshold: float = 0.01, batch_size: int = 500) -> dict[str, Any]:
    """Active units per latent layer, A_u = Cov_x(E_q[u | x]) > ``threshold`` (Burda et al. 2016, sec. 5.2), and the
    held-out mean KL(q(u | x) ‖ N(0, 1)) of each dimension in nats (the VAE's z; the HVAE's top layer z2, whose prior is
    N(0, I); for a full-covariance guide, of its marginals). The HVAE's layers are read along the guide's mean path
    (:meth:`~ppl_dgm.vae.hvae.HVAE.encode_layers`: E_q[u | x] with the other layer at its mean). Posterior collapse
    shows as dimensions with near-zero KL and variance."""
    device = next(vae.parameters()).device
    layers: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for chunk in x.split(batch_size):
        if isinstance(vae, HVAE):
            first, second = vae.encode_layers(chunk.to(device))
            layers.setdefault("z1", []).append(first)
            layers.setdefault("z2", []).append(second)
        else:
            layers.setdefault("z", []).append(vae.encode(chunk.to(device)))
    result: dict[str, Any] = {}
    for name, parts in layers.items():
        loc, scale = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        result[f"active_units_{name}"] = int((loc.var(0) > threshold).sum())
        if name in ("z", "z2"):
            posterior = torch.distributions.Normal(loc, scale)
            standard = torch.distributions.Normal(torch.zeros_like(loc), torch.ones_like(loc))
            result[f"kl_per_dim_{name}"] = torch.distributions.kl_divergence(posterior, standard).mean(0).tolist()
    return result


def write_grids(run: RunDir, model: nn.Module, test_images: torch.Tensor, seed: int) -> None:
    """samples.png (models that sample), reconstructions.png, interpolations.png, manifold.png (2-D VAEs)."""
    model.eval()
    if hasattr(model, "sample"):
        samples = model.sample(64, generator=torch.Generator(device=test_images.device).manual_seed(seed))
        run.save_grid(samples, "samples.png", nrow=8)
    write_reconstructions(run, model, test_images)
    # four interpolations between pairs of held-out digits, one per row
    rows = [interpolate(model, test_images[2 * i], test_images[2 * i + 1], steps=10) for i in range(4)]
    run.save_grid(torch.cat(rows), "interpolations.png", nrow=10)
    if isinstance(model, VAE) and model.latent_dim == 2:
        run.save_grid(latent_manifold(model, n=20), "manifold.png", nrow=20)
    model.train()


def train_vae(
    config: VAEConfig,
    run_dir: str | os.PathLike,
    *,
    device: str | torch.device = "auto",
    resume: bool = False,
    progress: bool = True,
    max_steps: int | None = None,
    iwae_k: int | None = None,
) -> dict[str, Any]:
    """Train a VAE by SVI into ``run_dir`` (config, metrics, checkpoint, grids); returns held-out figures.

    With ``iwae_k`` the held-out importance-weighted bound with k samples is reported too.
    """
    if iwae_k is not None:
        check_positive_int("iwae_k", iwae_k)
    run = RunDir(run_dir)
    run.start(asdict(config), resume)
    device = resolve_device(device)
    pyro.set_rng_seed(config.seed)
    pyro.clear_param_store()
    train_data, test_data = vae_data(config, "train"), vae_data(config, "test")
    vae = build_vae(config).to(device)
    test_images = test_data.tensors[0].to(device)

    loss, on_step = training_objective(config)
    started = time.perf_counter()
    history = fit_svi(
        vae.model,
        vae.guide,
        train_data,
        loss=loss,
        optim=partial(torch.optim.Adam, lr=config.lr),
        epochs=config.epochs,
        batch_size=config.batch_size,
        device=device,
        val_data=test_data,
        val_loss=ELBOS[config.elbo](),  # validation losses: the true −ELBO at β = 1, no free bits
        checkpoint=run.checkpoint,
        resume=resume,
        progress=progress,
        metrics_path=run.metrics_path,
        transform=_transform(config),
        max_steps=max_steps,
        seed=config.seed,
        on_step=on_step,
        on_epoch_end=lambda epoch, record: write_grids(run, vae, test_images, config.seed),
        description=f"vae {config.dataset}",
    )
    seconds = time.perf_counter() - started
    write_grids(run, vae, test_images, config.seed)
    result = {"epochs_done": len(history), "steps": history.steps, "train_seconds": seconds, "device": str(device),
              "final_kl_weight": config.kl_weight_at_step(history.steps)}
    if history.records:
        result["train_loss"] = history.loss[-1]
    result.update(evaluate_vae(vae, config, test_data, k=iwae_k))
    return result


def load_vae_run(run_dir: str | os.PathLike, device: str | torch.device = "auto") -> tuple[VAE | HVAE, VAEConfig]:
    """The trained VAE and its config from a run folder written by :func:`train_vae`."""
    run = RunDir(run_dir)
    config = VAEConfig(**run.read_config())
    vae = build_vae(config)
    state = run.checkpoint.load(map_location="cpu")
    vae.load_state_dict(state["module"])
    return vae.to(resolve_device(device)).eval(), config

