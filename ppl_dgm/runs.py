"""``ppl_dgm.load_run``: one way back into every trained run folder (docs/design.md, "Runs").

A run folder holds ``config.json`` (the family's config dataclass), ``checkpoint.pt`` (loaded with
``weights_only=True``), ``metrics.jsonl`` and ``results.json``. :func:`load_run` recognizes the family
from the config's fields, rebuilds the network, loads the weights the family samples with (EMA where it
keeps them) and returns a :class:`Run` whose ``sample`` and ``evaluate`` are what ``ppl-dgm sample|eval``
call. Families are listed once, in :data:`FAMILIES`; each entry names the config class and the loader of its
experiment module; the sample and evaluate functions below do the rest.
"""
from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

import torch

from ppl_dgm._checks import check_positive_int

__all__ = ["Run", "load_run", "run_family", "FAMILIES", "WrongFamilyError"]


class WrongFamilyError(ValueError):
    """A run folder of one family was given where another was expected."""


@dataclass(frozen=True)
class Family:
    """Where a family's config class and loader live, and which value of its ``kind_field`` (if any) selects it."""

    name: str
    config: str  # "module:Class"
    loader: str  # "module:function", function(path, device=...) -> (model it samples with, config)
    kind_field: str | None = None
    kind_values: tuple[Any, ...] = ()

    def config_class(self) -> type:
        return _resolve(self.config)

    def load(self, path: Path, device: torch.device) -> tuple[Any, Any]:
        return _resolve(self.loader)(path, device=device)


def _resolve(where: str) -> Any:
    module, name = where.split(":")  # imported on first use: `import ppl_dgm` stays light
    return getattr(importlib.import_module(module), name)


_VAE, _AE = "ppl_dgm.vae.experiment", "ppl_dgm.vae.autoencoder_experiment"
_SCORE, _TRANSLATION = "ppl_dgm.sde.experiment", "ppl_dgm.gan.translation"
FAMILIES: tuple[Family, ...] = (
    Family("vae", f"{_VAE}:VAEConfig", f"{_VAE}:load_vae_run", "model", ("vae",)),
    Family("hvae", f"{_VAE}:VAEConfig", f"{_VAE}:load_vae_run", "model", ("hvae",)),
    Family("ae", f"{_AE}:AEConfig", f"{_AE}:load_autoencoder_run", "corruption", (0, 0.0)),
    Family("dae", f"{_AE}:AEConfig", f"{_AE}:load_autoencoder_run"),  # corruption > 0
    Family("vqvae", f"{_AE}:VQVAEConfig", f"{_AE}:load_autoencoder_run"),
    Family("dvae", "ppl_dgm.vae.dvae_experiment:DVAEConfig", "ppl_dgm.vae.dvae_experiment:load_dvae_run"),
    Family("code-prior", "ppl_dgm.vae.prior_experiment:CodePriorConfig", "ppl_dgm.vae.prior_experiment:load_code_prior_run"),
    Family("ddpm", "ppl_dgm.diffusion.experiment:DDPMConfig", "ppl_dgm.diffusion.experiment:load_ddpm_run"),
    Family("latent-ddpm", "ppl_dgm.diffusion.latent:LatentDDPMConfig", "ppl_dgm.diffusion.latent:load_latent_ddpm_run"),
    Family("palette", "ppl_dgm.diffusion.palette:PaletteConfig", "ppl_dgm.diffusion.palette:load_palette_run"),
    Family("score-sde", f"{_SCORE}:ScoreConfig", f"{_SCORE}:load_score_run", "model", ("score-sde",)),
    Family("ncsn", f"{_SCORE}:ScoreConfig", f"{_SCORE}:load_score_run", "model", ("ncsn",)),
    Family("ebm", "ppl_dgm.sde.ebm_experiment:EBMConfig", "ppl_dgm.sde.ebm_experiment:load_ebm_run"),
    Family("gan", "ppl_dgm.gan.experiment:GANConfig", "ppl_dgm.gan.experiment:load_gan_run"),
    Family("pix2pix", f"{_TRANSLATION}:TranslationConfig", f"{_TRANSLATION}:load_translation_run", "model", ("pix2pix",)),
    Family("cyclegan", f"{_TRANSLATION}:TranslationConfig", f"{_TRANSLATION}:load_translation_run", "model", ("cyclegan",)),
    Family("lvm", "ppl_dgm.lvm.experiment:LVMConfig", "ppl_dgm.lvm.experiment:load_lvm_run"),
    Family("noisy-classifier", "ppl_dgm.diffusion.classifier_experiment:NoisyClassifierConfig",
           "ppl_dgm.diffusion.classifier_experiment:load_noisy_classifier_run"),
)
FAMILY_NAMES = tuple(family.name for family in FAMILIES)
_EXTRA_KEYS = {"latent-ddpm": {"vae_run"}}  # saved next to the config's own fields


def _read_config(path: Path) -> dict[str, Any]:
    from ppl_dgm.train.runs import RunDir

    return RunDir(path).read_config()


def run_family(path: str | os.PathLike) -> str:
    """The family name (``"vae"``, ``"ddpm"``, ...) of the run folder ``path``, from its config.json's fields."""
    path = Path(path)
    saved = _read_config(path)
    keys = set(saved)
    best, best_missing = None, None
    for family in FAMILIES:
        names = {f.name for f in fields(family.config_class())} | _EXTRA_KEYS.get(family.name, set())
        if not keys <= names:
            continue
        missing = len(names - keys)  # fields added after the run was written take their defaults
        if family.kind_field is not None and family.kind_values and saved.get(family.kind_field, None) not in family.kind_values:
            continue
        if best_missing is None or missing < best_missing:
            best, best_missing = family, missing
    if best is None:
        raise ValueError(f"run folder {str(path)!r}: config.json matches no ppl_dgm family (keys {sorted(keys)}); "
                         f"known families: {FAMILY_NAMES}")
    return best.name


def _image_grid_rows(family: str, config: Any, n: int) -> int:
    conditional = ((family in ("ddpm", "code-prior", "latent-ddpm") and config.class_conditional)
                   or (family == "gan" and config.arch == "cgan"))
    return max(1, n // 10) if conditional else 8


class Run:
    """A trained run: ``config``, ``model`` (the weights it samples with; EMA where the family keeps one),
    ``metrics`` (metrics.jsonl records), ``results`` (results.json), ``sample`` and ``evaluate``."""

    def __init__(self, path: Path, family: str, config: Any, model: Any, device: torch.device):
        self.path, self.family, self.config, self.model, self.device = path, family, config, model, device

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, family={self.family!r})"

    @property
    def metrics(self) -> list[dict[str, Any]]:
        from ppl_dgm.train.runs import RunDir

        return RunDir(self.path).read_metrics()

    @property
    def results(self) -> dict[str, Any]:
        path = self.path / "results.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def sample(self, n: int, *, sampler: str | None = None, steps: int | None = None, seed: int = 0, progress: bool = False,
               **options: Any) -> torch.Tensor:
        """``n`` samples: images (n, C, H, W) in [0, 1], or points (n, 2) for toy 2-D runs. Class-conditional runs
        give n // 10 per class (labels 0..9 in order); translation runs translate the first n held-out sources (a palette
        run also takes ``source=`` images (n, 1, 28, 28) in [0, 1] to translate instead).

        ``sampler``/``steps`` choose the family's sampler and its number of steps (``None``: the run's default);
        ``seed`` seeds a ``torch.Generator`` on the run's device; other ``options`` go to the family's sampler
        (``eta``, ``guidance_scale``, ``step_size``, ``truncation``; a DDPM run also takes ``classifier``, a noisy-classifier
        run folder or Run, and ``classifier_scale`` s: classifier guidance, n // 10 per class; or ``inpaint=MASK`` /
        ``upsample=FACTOR`` with ``method``, ``resample``, ``num_particles``, ``images``: its first n held-out test images
        restored, see :func:`ppl_dgm.diffusion.inverse.restore_run`). A family without that choice says so.
        """
        n = check_positive_int("n", n)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        if steps is not None:
            check_positive_int("steps", steps)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        return _SAMPLE[_group(self.family)](self, n, sampler, steps, generator, progress, options)

    def evaluate(self, *, progress: bool = False, **options: Any) -> dict[str, Any]:
        """The family's held-out figures (ELBO/IWAE nats, bits/dim, ODE NLL, FD/KID, L1, log-likelihood)."""
        if self.family in ("ddpm", "score-sde", "palette"):
            options["progress"] = progress
        return _EVALUATE[_group(self.family)](self, options)

    def grid_rows(self, n: int) -> int:
        """Images per row of a sample grid: one row per class for class-conditional runs, else 8."""
        return _image_grid_rows(self.family, self.config, n)


def load_run(path: str | os.PathLike, *, device: str | torch.device = "auto", family: str | tuple[str, ...] | None = None) -> Run:
    """The run in folder ``path``; with ``family`` (a name or a tuple of names) set, a folder of another family raises
    :class:`WrongFamilyError` naming what it is. Checkpoints are read with ``weights_only=True``: a file that would
    run code is refused."""
    from ppl_dgm.train.device import resolve_device

    path = Path(path)
    expected = (family,) if isinstance(family, str) else family
    for name in expected or ():
        if name not in FAMILY_NAMES:
            raise ValueError(f"family={name!r} is not known; expected one of {FAMILY_NAMES}")
    found = run_family(path)
    if expected is not None and found not in expected:
        raise WrongFamilyError(f"{str(path)!r} is a {found} run, not a {' or '.join(expected)} run; "
                               f"use `ppl-dgm sample|eval {found} {path}`")
    family_entry = next(entry for entry in FAMILIES if entry.name == found)
    saved = {key: value for key, value in _read_config(path).items() if key not in _EXTRA_KEYS.get(found, set())}
    try:  # validate the saved config first, so a bad value names the file it came from
        family_entry.config_class()(**saved)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{str(path / 'config.json')!r} holds an invalid {found} config: {error}") from None
    device = resolve_device(device)
    model, config = family_entry.load(path, device)
    return Run(path, found, config, model, device)


# ---------------------------------------------------------------- per-family pieces (one place for all)


def _group(family: str) -> str:
    return {"hvae": "vae", "dae": "ae", "ncsn": "score-sde", "cyclegan": "pix2pix"}.get(family, family)


def _refuse(run: Run, what: str, value: Any) -> None:
    if value is not None:
        raise ValueError(f"{what}={value!r}: a {run.family} run has no {what} to choose")


def _no_options(run: Run, options: dict[str, Any], allowed: tuple[str, ...] = ()) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"{unknown[0]}={options[unknown[0]]!r} is not an option of a {run.family} run; "
                         f"its options are {list(allowed) or 'none'}")



def _sample_model(run, n, sampler, steps, generator, progress, options):
    """Families whose model samples itself, ``model.sample(n, generator=)``, with no sampler to choose (VAE, HVAE, LVM;
    dVAE: codes from its uniform prior, decoded — stage one's model, not digits)."""
    _refuse(run, "sampler", sampler), _refuse(run, "steps", steps), _no_options(run, options)
    return run.model.sample(n, generator=generator)


def _evaluate_vae(run, options):
    from ppl_dgm.vae.experiment import evaluate_vae, vae_data

    _no_options(run, options, ("iwae_k",))
    if options.get("iwae_k") is not None:
        check_positive_int("iwae_k", options["iwae_k"])
    return evaluate_vae(run.model, run.config, vae_data(run.config, "test"), k=options.get("iwae_k"))



def _evaluate_dvae(run, options):
    from ppl_dgm.vae.dvae_experiment import dvae_data, evaluate_dvae

    _no_options(run, options, ("iwae_k",))
    if options.get("iwae_k") is not None:
        check_positive_int("iwae_k", options["iwae_k"])
    return evaluate_dvae(run.model, dvae_data(run.config, "test"), k=options.get("iwae_k"))


def _sample_not_generative(run, n, sampler, steps, generator, progress, options):
    raise ValueError(f"a {run.family} run is not a generative model: it reconstructs, it does not sample "
                     f"(`ppl-dgm eval {run.family} {run.path}` reports its reconstruction error)")


def _evaluate_ae(run, options):
    from ppl_dgm.vae.autoencoder_experiment import evaluate_autoencoder, evaluate_vqvae

    _no_options(run, options)
    if run.family == "vqvae":
        from ppl_dgm.data import load_dataset

        return evaluate_vqvae(run.model, load_dataset(run.config.dataset, "test", root=run.config.data_root))
    return evaluate_autoencoder(run.model, run.config.data("test"))



def _sample_ddpm(run, n, sampler, steps, generator, progress, options):
    from ppl_dgm.diffusion.experiment import sample_run

    _no_options(run, options, ("eta", "guidance_scale", "callback", "classifier", "classifier_scale") + _RESTORATION_OPTIONS)
    if options.get("inpaint") is not None or options.get("upsample") is not None:
        return _restore_ddpm(run, n, sampler, steps, generator, progress, options)
    if options.get("classifier") is not None:  # a noisy-classifier run (folder or Run) for classifier guidance
        from ppl_dgm.diffusion.classifier_experiment import guiding_classifier

        options["classifier"] = guiding_classifier(options["classifier"], run.config, ddpm_name=repr(str(run.path)), device=run.device)
    images, _ = sample_run(run.model, run.config, n, sampler=sampler or "ddim", steps=steps, generator=generator,
                           progress=progress, **options)
    return images


_RESTORATION_OPTIONS = ("inpaint", "upsample", "method", "resample", "num_particles", "images")


def _restore_ddpm(run, n, sampler, steps, generator, progress, options):
    """``inpaint=MASK`` or ``upsample=FACTOR``: the run's first n held-out test images (or ``images``) restored by its
    unconditional network (:func:`ppl_dgm.diffusion.inverse.restore_run`)."""
    from ppl_dgm.diffusion.inverse import restore_run

    if sampler is not None:
        raise ValueError(f"sampler={sampler!r}: restoration (inpaint/upsample) has its own samplers; choose one with method=")
    other = sorted(set(options) - set(_RESTORATION_OPTIONS) - {"callback"})
    if other:
        raise ValueError(f"{other[0]}={options[other[0]]!r} does not apply to restoration (inpaint/upsample)")
    restoration = {name: options[name] for name in ("method", "resample", "num_particles", "images") if options.get(name) is not None}
    return restore_run(run.model, run.config, n, inpaint_mask=options.get("inpaint"), upsample=options.get("upsample"), steps=steps,
                       generator=generator, progress=progress, callback=options.get("callback"), **restoration)


def _evaluate_ddpm(run, options):
    from ppl_dgm.diffusion.experiment import evaluate_ddpm

    _no_options(run, options, ("num_images", "batch_size", "progress"))
    return evaluate_ddpm(run.model, run.config, **options)



def _sample_palette(run, n, sampler, steps, generator, progress, options):
    """One translation per source: the first n held-out sources of the run's task, or ``source`` (n, 1, 28, 28)."""
    from ppl_dgm.data.pairs import load_pairs
    from ppl_dgm.diffusion.palette import sample_palette

    _no_options(run, options, ("eta", "callback", "source"))
    source = options.pop("source", None)
    if source is None:
        held_out = load_pairs(run.config.task, "test").tensors[0]
        if n > len(held_out):
            raise ValueError(f"n={n} exceeds the {len(held_out)} held-out sources of task {run.config.task!r}")
        source = held_out[:n]
    elif not isinstance(source, torch.Tensor) or source.ndim < 1 or source.shape[0] != n:
        raise ValueError(f"source must hold n={n} images (n, 1, 28, 28), got {tuple(source.shape) if isinstance(source, torch.Tensor) else source!r}")
    return sample_palette(run.model, run.config, source, sampler=sampler or "ddim", steps=steps, generator=generator,
                          progress=progress, **options)


def _evaluate_palette(run, options):
    from ppl_dgm.diffusion.palette import evaluate_palette

    _no_options(run, options, ("num_images", "batch_size", "seed", "cache_dir", "sampler", "steps", "eta", "progress"))
    return evaluate_palette(run.model, run.config, **options)



def _sample_latent(run, n, sampler, steps, generator, progress, options):
    from ppl_dgm.diffusion.experiment import build_schedule
    from ppl_dgm.diffusion.latent import sample_latent_ddpm

    _no_options(run, options, ("eta", "callback", "guidance_scale"))
    if options.get("guidance_scale") is None:
        options.pop("guidance_scale", None)
        if run.config.class_conditional:
            options["guidance_scale"] = run.config.guidance_scale
    sampler = sampler or run.config.sampler
    if steps is not None and sampler == "ancestral":
        raise ValueError(f"steps={steps}: the ancestral sampler always takes the run's num_steps={run.config.num_steps} steps; "
                         "use sampler='ddim' or a solver for fewer network calls")
    return sample_latent_ddpm(run.model, build_schedule(run.config), n, sampler=sampler, steps=steps or run.config.sample_steps,
                              variance=run.config.variance, generator=generator, progress=progress, **options)


def _evaluate_by_samples(run, options):
    """FD/KID of samples against the test digits (features of the library's digit classifier)."""
    from ppl_dgm.metrics.frechet import sample_quality

    _no_options(run, options, ("num_samples", "seed", "cache_dir", "inception_weights"))
    num_samples = check_positive_int("num_samples", options.get("num_samples", 1000))
    samples = run.sample(num_samples, seed=options.get("seed", 0))
    return sample_quality(samples.cpu(), "mnist5k", cache_dir=options.get("cache_dir", "runs"), seed=0,
                          inception_weights=options.get("inception_weights"))



def _sample_score(run, n, sampler, steps, generator, progress, options):
    from ppl_dgm.sde.experiment import sample_score_run

    _no_options(run, options, ("step_size", "callback"))
    samples = sample_score_run(run.model, run.config, n, sampler=sampler, steps=steps, generator=generator, progress=progress,
                               **options)
    return (samples + 1) / 2 if run.config.is_image else samples


def _evaluate_score(run, options):
    from ppl_dgm.sde.experiment import evaluate_score_run

    _no_options(run, options, ("num_examples", "batch_size", "seed", "progress"))
    seed = options.pop("seed", 0)
    return evaluate_score_run(run.model, run.config, generator=torch.Generator(device=run.device).manual_seed(seed), **options)



def _sample_ebm(run, n, sampler, steps, generator, progress, options):
    from ppl_dgm.sde.ebm_experiment import sample_ebm_run

    _no_options(run, options, ("step_size", "callback"))
    return sample_ebm_run(run.model, run.config, n, sampler=sampler, steps=steps, generator=generator, progress=progress, **options)


def _evaluate_ebm(run, options):
    from ppl_dgm.sde.ebm_experiment import evaluate_ebm_run

    _no_options(run, options, ("num_examples",))
    return evaluate_ebm_run(run.model, run.config, **options)



def _sample_gan(run, n, sampler, steps, generator, progress, options):
    from ppl_dgm.gan.experiment import sample_gan

    _refuse(run, "sampler", sampler), _refuse(run, "steps", steps), _no_options(run, options, ("truncation",))
    images, _ = sample_gan(run.model, run.config, n, generator_rng=generator, **options)
    return images


def _evaluate_gan(run, options):
    from ppl_dgm.gan.experiment import evaluate_gan

    _no_options(run, options, ("num_samples", "cache_dir", "seed", "inception_weights"))
    return evaluate_gan(run.model, run.config, **options)



def _sample_translation(run, n, sampler, steps, generator, progress, options):
    from ppl_dgm.gan.translation import translate_test_sources

    _refuse(run, "sampler", sampler), _refuse(run, "steps", steps), _no_options(run, options)
    return translate_test_sources(run.model, run.config, n)


def _evaluate_translation(run, options):
    from ppl_dgm.gan.translation import evaluate_translation

    _no_options(run, options)
    return evaluate_translation(run.model, run.config, run.device)[0]



def _evaluate_lvm(run, options):
    from ppl_dgm.lvm.experiment import digits_vectors

    _no_options(run, options)
    parameter = next(run.model.parameters())
    x, _ = digits_vectors("test", run.config.seed)
    return {"test_log_likelihood_nats": run.model.log_likelihood(x.to(parameter.device))}


def _sample_code_prior(run, n, sampler, steps, generator, progress, options):
    """Decoded code grids; class-conditional priors give n // 10 per class (labels 0..9 in order)."""
    _refuse(run, "sampler", sampler), _refuse(run, "steps", steps), _no_options(run, options, ("temperature",))
    y = None
    if run.config.class_conditional:
        if n % 10:
            raise ValueError(f"n={n}: a class-conditional prior samples n // 10 per class; give a multiple of 10")
        y = torch.arange(10, device=run.device).repeat_interleave(n // 10)
    return run.model.sample(n, y, generator=generator, temperature=options.get("temperature") or 1.0, progress=progress)


def _evaluate_code_prior(run, options):
    from ppl_dgm.vae.prior_experiment import evaluate_code_prior, load_source_run

    _no_options(run, options, ("num_samples", "seed", "cache_dir"))
    _, source_config = load_source_run(run.config.source_run, run.device)
    return evaluate_code_prior(run.model, run.config, source_config, **options)


def _sample_classifier(run, n, sampler, steps, generator, progress, options):
    raise ValueError(f"a noisy-classifier run is a classifier p_φ(y | x_t, t), not a generative model: it guides a DDPM run "
                     f"(`ppl-dgm sample ddpm DDPM_RUN --classifier {run.path} --classifier-scale S`)")


def _evaluate_noisy_classifier(run, options):
    from ppl_dgm.diffusion.classifier_experiment import evaluate_noisy_classifier

    _no_options(run, options, ("num_examples", "seed"))
    return evaluate_noisy_classifier(run.model, run.config, **options)


_SAMPLE: dict[str, Callable] = {"vae": _sample_model, "ae": _sample_not_generative, "vqvae": _sample_not_generative,
                                "ddpm": _sample_ddpm, "latent-ddpm": _sample_latent, "score-sde": _sample_score,
                                "ebm": _sample_ebm, "gan": _sample_gan, "pix2pix": _sample_translation, "lvm": _sample_model,
                                "code-prior": _sample_code_prior, "dvae": _sample_model, "noisy-classifier": _sample_classifier,
                                "palette": _sample_palette}
_EVALUATE: dict[str, Callable] = {"vae": _evaluate_vae, "ae": _evaluate_ae, "vqvae": _evaluate_ae, "ddpm": _evaluate_ddpm,
                                  "latent-ddpm": _evaluate_by_samples, "score-sde": _evaluate_score, "ebm": _evaluate_ebm,
                                  "gan": _evaluate_gan,
                                  "pix2pix": _evaluate_translation, "lvm": _evaluate_lvm, "code-prior": _evaluate_code_prior,
                                  "dvae": _evaluate_dvae, "noisy-classifier": _evaluate_noisy_classifier,
                                  "palette": _evaluate_palette}
