"""Bad input at the run layer and the command line: refused at the entry point, with a message naming the
argument or file and the value.

Part 1: every path that reads a checkpoint or a pickle refuses a file whose unpickling would run code
(and the code does not run: the marker file it would create stays absent), and names truncated, empty,
random or wrongly shaped files. Part 2: bad calls of ``load_run``/``Run``, of ``ppl-dgm sample|eval|train``
and of the training loops (``fit``, ``fit_svi``, ``train_adversarial``, ``RunDir``).
"""
import json
import os
import pickle
import re
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ppl_dgm.cli import main
from ppl_dgm.data import load_dataset
from ppl_dgm.metrics.frechet import feature_classifier
from ppl_dgm.runs import WrongFamilyError, load_run
from ppl_dgm.train import Checkpoint, RunDir, fit, fit_svi
from ppl_dgm.train.checkpoint import CorruptFileError, UnsafeFileError

# A VAE run on the 8x8 digits that trains in about a second; `train vae *VAE_ARGS --resume` rebuilds exactly its config.
VAE_ARGS = ["--dataset", "digits", "--latent-dim", "4", "--hidden", "32", "--batch-size", "250", "--epochs", "1",
            "--device", "cpu", "--no-progress"]


def quoted(path) -> str:
    """The file as messages name it (``repr`` of its string), as a regex."""
    return re.escape(repr(str(path)))


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("vae_runs")
    assert main(["train", "vae", *VAE_ARGS, "--runs-dir", str(runs), "--name", "vae"]) == 0
    return runs / "vae"


@pytest.fixture(scope="module")
def ddpm_run(tmp_path_factory):
    from ppl_dgm.diffusion.experiment import DDPMConfig, train_ddpm

    config = DDPMConfig(dataset="digits", channels=8, channel_mults=(1, 2), num_steps=20, sample_steps=4, batch_size=500,
                        epochs=1)
    path = tmp_path_factory.mktemp("ddpm_runs") / "ddpm"
    train_ddpm(config, path, device="cpu", progress=False)
    return path


@pytest.fixture
def vae_copy(tmp_path, vae_run):
    """A private copy of the trained VAE run, free to be damaged."""
    return Path(shutil.copytree(vae_run, tmp_path / "runs" / "vae"))


# ---------------------------------------------------------------- part 1: files that would run code, broken files


class RunsCode:
    """Unpickling this calls ``os.system(command)``."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def write_torch_payload(path: Path, marker: Path) -> None:
    torch.save({"module": {"weight": torch.zeros(2)}, "epoch": 1, "payload": RunsCode(f"touch {marker}")}, path)


def write_pickle_payload(path: Path, marker: Path, protocol: int = pickle.DEFAULT_PROTOCOL) -> None:
    with open(path, "wb") as file:
        pickle.dump({"module": {}, "payload": RunsCode(f"touch {marker}")}, file, protocol=protocol)


def write_truncated(path: Path, _marker: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def write_random_bytes(path: Path, _marker: Path) -> None:
    path.write_bytes(np.random.RandomState(0).bytes(4096))


def write_empty(path: Path, _marker: Path) -> None:
    path.write_bytes(b"")


def write_torch_list(path: Path, _marker: Path) -> None:
    torch.save([torch.zeros(3), 1, "two"], path)


# (writer, error, message after the file's name). A protocol-2 pickle reaches its GLOBAL opcode inside torch's safe
# unpickler; protocols 4/5 (pickle's default) stop earlier, at FRAME, and are then scanned with pickletools.
UNSAFE = {
    "torch.save": (write_torch_payload, UnsafeFileError, "it holds a pickled object that would run code"),
    "pickle.dump protocol 2": (partial(write_pickle_payload, protocol=2), UnsafeFileError,
                               "it holds a pickled object that would run code"),
    "pickle.dump default protocol": (write_pickle_payload, UnsafeFileError,
                                     "it is a plain pickle that imports and calls objects (STACK_GLOBAL"),
}
CORRUPT = {"truncated": write_truncated, "random bytes": write_random_bytes, "empty": write_empty, "torch list": write_torch_list}

# Every way a run folder's checkpoint.pt is read; each takes the folder (runs/vae).
LOADING_PATHS = {
    "Checkpoint.load": lambda folder: Checkpoint(folder / "checkpoint.pt").load(),
    "load_run": lambda folder: load_run(folder, device="cpu"),
    "load_run family=vae": lambda folder: load_run(folder, device="cpu", family="vae"),
    "train_vae resume": lambda folder: _train_vae_resume(folder),
    "cli train --resume": lambda folder: main(["train", "vae", *VAE_ARGS, "--runs-dir", str(folder.parent), "--name",
                                               folder.name, "--resume"]),
    "cli sample vae": lambda folder: main(["sample", "vae", str(folder), "--n", "4", "--device", "cpu"]),
    "cli eval vae": lambda folder: main(["eval", "vae", str(folder), "--device", "cpu"]),
    "feature_classifier": lambda folder: feature_classifier("mnist5k", path=folder / "checkpoint.pt"),
}


def _train_vae_resume(folder: Path):
    from ppl_dgm.vae.experiment import VAEConfig, train_vae

    config = VAEConfig(**json.loads((folder / "config.json").read_text()))
    return train_vae(config, folder, device="cpu", progress=False, resume=True)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("payload", list(UNSAFE))
@pytest.mark.parametrize("path", list(LOADING_PATHS))
def test_a_checkpoint_that_would_run_code_is_refused_on_every_path(vae_copy, tmp_path, path, payload):
    marker = tmp_path / "code_ran"
    checkpoint = vae_copy / "checkpoint.pt"
    write, error, message = UNSAFE[payload]
    write(checkpoint, marker)
    with pytest.raises(error, match=rf"{quoted(checkpoint)}:? {re.escape(message)}"):
        LOADING_PATHS[path](vae_copy)
    assert not marker.exists()


@pytest.mark.parametrize("damage", list(CORRUPT))
@pytest.mark.parametrize("path", list(LOADING_PATHS))
def test_a_broken_checkpoint_is_a_corrupt_file_error_naming_it_on_every_path(vae_copy, path, damage):
    checkpoint = vae_copy / "checkpoint.pt"
    CORRUPT[damage](checkpoint, None)
    with pytest.raises(CorruptFileError, match=quoted(checkpoint)):
        LOADING_PATHS[path](vae_copy)


def test_the_payload_would_run_code_under_a_plain_load(tmp_path):
    """The marker test above can fail: an unrestricted load of the same file does create the marker."""
    marker, path = tmp_path / "code_ran", tmp_path / "payload.pt"
    write_pickle_payload(path, marker)
    with open(path, "rb") as file:
        pickle.load(file)
    assert marker.exists()


def write_cifar10(root: Path) -> Path:
    """Six valid two-image batches in the python format (dict of b'data' uint8 (n, 3072) and b'labels')."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.RandomState(1)
    for name in [f"data_batch_{index}" for index in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as file:
            pickle.dump({b"data": rng.randint(0, 256, size=(2, 3072)).astype(np.uint8), b"labels": [0, 1]}, file)
    return folder


def test_a_cifar10_batch_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    folder = write_cifar10(tmp_path / "cifar")
    batch = folder / "data_batch_1"
    with open(batch, "wb") as file:
        pickle.dump({b"data": RunsCode(f"touch {marker}"), b"labels": [0, 1]}, file)
    with pytest.raises(ValueError, match=rf"{quoted(batch)} refused: it would import (posix|os|nt)\.system"):
        load_dataset("cifar10", "train", root=tmp_path / "cifar")
    assert not marker.exists()


def test_a_truncated_cifar10_batch_names_the_file(tmp_path):
    folder = write_cifar10(tmp_path / "cifar")
    batch = folder / "test_batch"
    batch.write_bytes(batch.read_bytes()[:100])
    with pytest.raises(ValueError, match=rf"{quoted(batch)} is truncated or not a pickled batch"):
        load_dataset("cifar10", "test", root=tmp_path / "cifar")


# ---------------------------------------------------------------- part 2: run folders and the command line

# (argv with {vae}/{ddpm} standing for the trained runs' folders, the family found, the families the command expects)
WRONG_FAMILY = [
    (["sample", "ddpm", "{vae}"], "vae", "ddpm"),
    (["eval", "ddpm", "{vae}"], "vae", "ddpm"),
    (["sample", "gan", "{vae}"], "vae", "gan"),
    (["eval", "gan", "{vae}"], "vae", "gan"),
    (["eval", "hvae", "{vae}"], "vae", "hvae"),
    (["eval", "ae", "{vae}"], "vae", "ae"),
    (["sample", "score-sde", "{vae}"], "vae", "score-sde or ncsn"),
    (["sample", "latent-ddpm", "{vae}"], "vae", "latent-ddpm"),
    (["sample", "pix2pix", "{vae}"], "vae", "pix2pix"),
    (["eval", "gmm", "{vae}"], "vae", "lvm"),
    (["sample", "vae", "{ddpm}"], "ddpm", "vae"),
    (["eval", "vae", "{ddpm}"], "ddpm", "vae"),
]


def _fill(argv, runs):
    return [item.format(**{name: str(path) for name, path in runs.items()}) for item in argv]


@pytest.mark.parametrize("argv, found, expected", WRONG_FAMILY, ids=[" ".join(row[0][:2]) + f" <{row[1]} run>" for row in WRONG_FAMILY])
def test_a_run_of_another_family_is_refused_naming_folder_and_both_families(vae_run, ddpm_run, argv, found, expected):
    runs = {"vae": vae_run, "ddpm": ddpm_run}
    folder = runs[found]
    with pytest.raises(WrongFamilyError, match=rf"{quoted(folder)} is a {found} run, not a {expected} run"):
        main(_fill(argv, runs) + ["--device", "cpu"])


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_a_missing_run_folder_is_file_not_found_and_creates_nothing(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="run folder 'typo' does not exist"):
        main([command, "vae", "typo/", "--device", "cpu"])
    assert list(tmp_path.iterdir()) == []


# (config.json's text or None for no file, error, regex with {folder} and {config} for the quoted paths)
BROKEN_CONFIGS = {
    "no config.json": (None, FileNotFoundError, "{config} not found: {folder} is not a ppl_dgm run folder"),
    "garbage JSON": ("{epochs: 3,", ValueError, r"{config} is not valid JSON \(Expecting property name"),
    "a JSON list": ("[1, 2, 3]", ValueError, "{config} holds a list, expected a JSON object"),
    "no family's keys": ('{"colour": "blue"}', ValueError, r"run folder {folder}: config\.json matches no ppl_dgm family \(keys \['colour'\]\)"),
}


@pytest.mark.parametrize("case", list(BROKEN_CONFIGS))
def test_a_folder_with_a_broken_config_is_refused_naming_it(tmp_path, case):
    text, error, message = BROKEN_CONFIGS[case]
    folder = tmp_path / "run"
    folder.mkdir()
    if text is not None:
        (folder / "config.json").write_text(text)
    with pytest.raises(error, match=message.format(folder=quoted(folder), config=quoted(folder / "config.json"))):
        main(["sample", "vae", str(folder), "--device", "cpu"])


def test_a_config_json_with_an_invalid_value_names_the_file(vae_copy):
    config = json.loads((vae_copy / "config.json").read_text())
    (vae_copy / "config.json").write_text(json.dumps({**config, "latent_dim": 0}))
    with pytest.raises(ValueError, match=rf"{quoted(vae_copy / 'config.json')}.*latent_dim must be a positive int, got 0"):
        load_run(vae_copy, device="cpu")


def test_load_run_with_an_unknown_family_name(vae_run):
    with pytest.raises(ValueError, match=r"family='vea' is not known; expected one of \('vae'"):
        load_run(vae_run, family="vea")


RUN_SAMPLE_CASES = [
    (dict(n=0), ValueError, "n must be a positive int, got 0"),
    (dict(n=-3), ValueError, "n must be a positive int, got -3"),
    (dict(n=2.5), TypeError, "n must be an int, got 2.5 of type float"),
    (dict(n=4, steps=0), ValueError, "steps must be a positive int, got 0"),
    (dict(n=4, seed=-1), ValueError, "seed must be an int >= 0, got -1"),
    (dict(n=4, seed=1.5), ValueError, "seed must be an int >= 0, got 1.5"),
    (dict(n=4, temperature=0.5), ValueError, "temperature=0.5 is not an option of a vae run; its options are none"),
    (dict(n=4, sampler="ddim"), ValueError, "sampler='ddim': a vae run has no sampler to choose"),
    (dict(n=4, steps=10), ValueError, "steps=10: a vae run has no steps to choose"),
]


@pytest.mark.parametrize("options, error, message", RUN_SAMPLE_CASES, ids=[repr(row[0]) for row in RUN_SAMPLE_CASES])
def test_run_sample_refuses_bad_arguments(vae_run, options, error, message):
    run = load_run(vae_run, device="cpu")
    n = options.pop("n")
    with pytest.raises(error, match=re.escape(message)):
        run.sample(n, **options)


def test_run_evaluate_refuses_an_unknown_option(vae_run):
    with pytest.raises(ValueError, match=re.escape("num_images=3 is not an option of a vae run; its options are ['iwae_k']")):
        load_run(vae_run, device="cpu").evaluate(num_images=3)


@pytest.mark.parametrize("call", ["Run.evaluate", "cli eval vae --iwae-k"])
def test_evaluate_names_iwae_k(vae_run, call):
    with pytest.raises(ValueError, match=re.escape("iwae_k must be a positive int, got 0")):
        if call == "Run.evaluate":
            load_run(vae_run, device="cpu").evaluate(iwae_k=0)
        else:
            main(["eval", "vae", str(vae_run), "--iwae-k", "0", "--device", "cpu"])


DDPM_SAMPLE_CASES = [
    (["--steps", "0"], "steps must be a positive int, got 0"),
    (["--steps", "21"], "steps must be at most the run's num_steps=20, got 21"),
    (["--guidance-scale", "2"], "guidance_scale=2.0: classifier-free guidance needs a class-conditional run"),
    (["--eta", "2"], "eta must lie in [0, 1], got 2.0"),
    (["--eta", "-0.5"], "eta must lie in [0, 1], got -0.5"),
    (["--eta", "nan"], "eta must lie in [0, 1], got nan"),
    (["--sampler", "ancestral", "--steps", "5"], "steps=5: the ancestral sampler always takes the schedule's T=20 steps"),
    (["--sampler", "ancestral", "--eta", "0.5"], "eta=0.5 is an option of the ddim sampler, got sampler='ancestral'"),
    (["--n", "0"], "n must be a positive int, got 0"),
    (["--seed", "-1"], "seed must be an int >= 0, got -1"),
]


@pytest.mark.parametrize("options, message", DDPM_SAMPLE_CASES, ids=[" ".join(row[0]) for row in DDPM_SAMPLE_CASES])
def test_sample_ddpm_refuses_bad_options_and_writes_nothing(ddpm_run, tmp_path, options, message):
    out = tmp_path / "samples.png"
    with pytest.raises(ValueError, match=re.escape(message)):
        main(["sample", "ddpm", str(ddpm_run), "--device", "cpu", "--no-progress", "--out", str(out), *options])
    assert not out.exists()


def test_sample_ddpm_with_an_unknown_sampler_option(ddpm_run):
    options = "['eta', 'guidance_scale', 'callback', 'classifier', 'classifier_scale', 'inpaint', 'upsample', 'method', 'resample', " \
              "'num_particles', 'images']"
    with pytest.raises(ValueError, match=re.escape(f"truncation=0.5 is not an option of a ddpm run; its options are {options}")):
        load_run(ddpm_run, device="cpu").sample(4, truncation=0.5)


# (extra argv for `train vae`, regex). The config is checked before the run folder is touched.
TRAIN_VAE_CASES = [
    (["--epochs", "0"], "epochs must be a positive int, got 0"),
    (["--batch-size", "0"], "batch_size must be a positive int, got 0"),
    (["--latent-dim", "0"], "latent_dim must be a positive int, got 0"),
    (["--hidden", "-4"], "hidden must be a positive int, got -4"),
    (["--lr", "-0.001"], "lr must be a positive float, got -0.001"),
    (["--lr", "nan"], "lr must be a positive float, got nan"),
    (["--beta", "0"], "beta must be a positive float, got 0.0"),
    (["--free-bits", "-1"], "free_bits must be a float >= 0 (nats per latent dimension), got -1.0"),
    (["--kl-warmup-steps", "-5"], "kl_warmup_steps must be an int >= 0, got -5"),
    (["--seed", "-1"], "seed must be an int >= 0, got -1"),
    (["--iwae-k", "0"], "iwae_k must be a positive int, got 0"),
    (["--max-steps", "0"], "max-steps must be a positive int, got 0"),
]


@pytest.mark.parametrize("options, message", TRAIN_VAE_CASES, ids=[" ".join(row[0]) for row in TRAIN_VAE_CASES])
def test_train_vae_refuses_a_bad_config_before_creating_the_run(tmp_path, options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        main(["train", "vae", *VAE_ARGS, "--runs-dir", str(tmp_path / "runs"), "--name", "bad", *options])
    assert not (tmp_path / "runs").exists()


CONFIG_CLASSES = ["ppl_dgm.vae.experiment:VAEConfig", "ppl_dgm.vae.autoencoder_experiment:AEConfig",
                  "ppl_dgm.vae.autoencoder_experiment:VQVAEConfig", "ppl_dgm.diffusion.experiment:DDPMConfig",
                  "ppl_dgm.diffusion.latent:LatentDDPMConfig", "ppl_dgm.sde.experiment:ScoreConfig",
                  "ppl_dgm.gan.experiment:GANConfig", "ppl_dgm.gan.translation:TranslationConfig", "ppl_dgm.lvm.experiment:LVMConfig"]


# Before the check: -1 and 2**32 reached NumPy's "Seed must be between 0 and 2**32 - 1" inside training (no name, after
# the run folder was created); 1.5 trained with a float seed.
@pytest.mark.parametrize("seed, error, message", [(-1, ValueError, "seed must be an int >= 0, got -1"),
                                                  (1.5, TypeError, "seed must be an int, got 1.5 of type float"),
                                                  (2**32, ValueError, "seed must be an int below 2**32 (NumPy's seed range), got 4294967296")])
@pytest.mark.parametrize("config", CONFIG_CLASSES, ids=lambda config: config.split(":")[1])
def test_every_config_refuses_a_bad_seed(config, seed, error, message):
    import importlib

    module, name = config.split(":")
    with pytest.raises(error, match=re.escape(message)):
        getattr(importlib.import_module(module), name)(seed=seed)


def test_train_vae_at_a_huge_learning_rate_exits_3_and_keeps_no_checkpoint(tmp_path, capsys):
    runs = tmp_path / "runs"
    argv = ["train", "vae", *VAE_ARGS, "--lr", "1e3", "--epochs", "3", "--runs-dir", str(runs), "--name", "diverged"]
    assert main(argv) == 3
    assert "training diverged: loss" in capsys.readouterr().err
    assert not (runs / "diverged" / "checkpoint.pt").exists()


def test_train_gan_at_a_huge_learning_rate_exits_3(tmp_path, capsys):
    argv = ["train", "gan", "--dataset", "mnist5k", "--lr", "1e3", "--epochs", "1", "--latent-dim", "4", "--channels", "4",
            "--batch-size", "1000", "--runs-dir", str(tmp_path / "runs"), "--name", "diverged", "--device", "cpu", "--no-progress"]
    assert main(argv) == 3
    assert "training diverged: discriminator/generator losses" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "diverged" / "checkpoint.pt").exists()


# ---------------------------------------------------------------- part 2: the training loops


def _linear_fit(**overrides):
    module = nn.Linear(2, 1)
    data = overrides.pop("data", torch.linspace(-1, 1, 16).reshape(8, 2))
    trained = overrides.pop("module", module)
    kwargs = dict(epochs=1, batch_size=4, device="cpu", progress=False)
    kwargs.update(overrides)
    return fit(trained, lambda batch: module(batch[0]).pow(2).mean(), data, **kwargs)


def _with_nan(index, size=8):
    data = torch.linspace(-1, 1, 2 * size).reshape(size, 2)
    data[index, 1] = float("nan")
    return data


FIT_CASES = [
    (dict(batch_size=0), ValueError, "batch_size must be a positive int, got 0"),
    (dict(epochs=0), ValueError, "epochs must be a positive int, got 0"),
    (dict(epochs=2.0), TypeError, "epochs must be an int, got 2.0"),
    (dict(grad_clip=-1.0), ValueError, "grad_clip must be None or a positive max-norm, got -1.0"),
    (dict(grad_clip=float("inf")), ValueError, "grad_clip must be None or a positive max-norm, got inf"),
    (dict(divergence_factor=0.5), ValueError, "divergence_factor must be None or a number > 1, got 0.5"),
    (dict(max_steps=0), ValueError, "max_steps must be a positive int, got 0"),
    (dict(log_every=0), ValueError, "log_every must be a positive int, got 0"),
    (dict(amp="fp16"), ValueError, "amp must be None or 'bf16', got 'fp16'"),
    (dict(data=_with_nan(5)), ValueError, "data holds NaN or inf: tensor 0, example 5 (of 8) is not finite"),
    (dict(data=torch.full((3, 2), float("inf"))), ValueError, "data holds NaN or inf: tensor 0, example 0 (of 3)"),
    (dict(val_data=_with_nan(2, 4)), ValueError, "val_data holds NaN or inf: tensor 0, example 2 (of 4)"),
    (dict(data=torch.zeros(0, 2)), ValueError, "data is empty; expected at least one example"),
    (dict(data=(torch.zeros(8, 2), torch.zeros(7))), ValueError, "data tensors disagree in their first dimension: [8, 7]"),
    (dict(data=[[1.0, 2.0]]), TypeError, "data must be a TensorDataset, a tensor or a tuple of tensors, got list"),
    (dict(module=lambda x: x), TypeError, "module must be a torch.nn.Module, got function"),
]


@pytest.mark.parametrize("overrides, error, message", FIT_CASES, ids=[next(iter(row[0])) + f"#{i}" for i, row in enumerate(FIT_CASES)])
def test_fit_refuses_bad_arguments(overrides, error, message):
    with pytest.raises(error, match=re.escape(message)):
        _linear_fit(**overrides)


def _tiny_vae():
    from ppl_dgm.vae import mlp_vae

    return mlp_vae((1, 2, 2), latent_dim=2, hidden=(4,))


def _svi_data(size=8):
    """Binary 2x2 images: in the support of the Bernoulli decoder."""
    return (torch.arange(4 * size) % 3 == 0).float().reshape(size, 1, 2, 2)


def _svi_with_nan(index):
    data = _svi_data()
    data[index, 0, 1, 1] = float("nan")
    return data


FIT_SVI_CASES = [
    (dict(batch_size=0), ValueError, "batch_size must be a positive int, got 0"),
    (dict(epochs=0), ValueError, "epochs must be a positive int, got 0"),
    (dict(grad_clip=-1.0), ValueError, "grad_clip must be None or a positive max-norm, got -1.0"),
    (dict(divergence_factor=0.5), ValueError, "divergence_factor must be None or a number > 1, got 0.5"),
    (dict(loss="trace"), TypeError, "loss must be a pyro.infer ELBO instance (e.g. Trace_ELBO()), got 'trace'"),
    (dict(model=lambda: None), TypeError, "model must be a torch/Pyro module or a bound method of one (e.g. vae.model), got <function"),
    (dict(guide=lambda: None), TypeError, "guide must be a torch/Pyro module or a bound method of one (e.g. vae.model), got <function"),
]


@pytest.mark.parametrize("overrides, error, message", FIT_SVI_CASES, ids=[next(iter(row[0])) for row in FIT_SVI_CASES])
def test_fit_svi_refuses_bad_arguments(overrides, error, message):
    vae = _tiny_vae()
    model, guide = overrides.pop("model", vae.model), overrides.pop("guide", vae.guide)
    kwargs = dict(epochs=1, batch_size=4, device="cpu", progress=False)
    kwargs.update(overrides)
    with pytest.raises(error, match=re.escape(message)):
        fit_svi(model, guide, _svi_data(), **kwargs)


def test_fit_svi_names_the_example_holding_nan():
    vae = _tiny_vae()
    with pytest.raises(ValueError, match=re.escape("data holds NaN or inf: tensor 0, example 6 (of 8)")):
        fit_svi(vae.model, vae.guide, _svi_with_nan(6), epochs=1, batch_size=4, device="cpu", progress=False)


def test_fit_svi_names_the_example_holding_nan_in_the_first_batch():
    vae = _tiny_vae()
    with pytest.raises(ValueError, match=re.escape("data holds NaN or inf: tensor 0, example 1 (of 8)")):
        fit_svi(vae.model, vae.guide, _svi_with_nan(1), epochs=1, batch_size=4, device="cpu", progress=False)


def _adversarial(**overrides):
    from ppl_dgm.gan.trainer import train_adversarial

    generator, discriminator = nn.Linear(2, 2), nn.Linear(2, 1)
    kwargs = dict(
        discriminator_loss=lambda batch: discriminator(batch[0]).mean() - discriminator(generator(batch[0])).mean(),
        generator_loss=lambda batch: discriminator(generator(batch[0])).mean(),
        generator_optim=partial(torch.optim.SGD, lr=1e-3),
        discriminator_optim=partial(torch.optim.SGD, lr=1e-3),
        epochs=1, batch_size=4, device="cpu", progress=False,
    )
    data = overrides.pop("data", torch.linspace(-1, 1, 16).reshape(8, 2))
    generator = overrides.pop("generator", generator)
    discriminator = overrides.pop("discriminator", discriminator)
    kwargs.update(overrides)
    return train_adversarial(generator, discriminator, data, **kwargs)


ADVERSARIAL_CASES = [
    (dict(batch_size=0), ValueError, "batch_size must be a positive int, got 0"),
    (dict(epochs=0), ValueError, "epochs must be a positive int, got 0"),
    (dict(n_critic=0), ValueError, "n_critic must be an int >= 1 (discriminator steps per generator step), got 0"),
    (dict(weight_clip=-1.0), ValueError, "weight_clip must be a float > 0 (clip the critic to [-c, c]), got -1.0"),
    (dict(max_steps=0), ValueError, "max_steps must be a positive int, got 0"),
    (dict(divergence_factor=0.5), ValueError, "divergence_factor must be None or a number > 1, got 0.5"),
    (dict(data=_with_nan(3)), ValueError, "data holds NaN or inf: tensor 0, example 3 (of 8) is not finite"),
    (dict(generator=lambda z: z), TypeError, "generator must be a torch.nn.Module, got function"),
    (dict(discriminator="critic"), TypeError, "discriminator must be a torch.nn.Module, got str"),
]


@pytest.mark.parametrize("overrides, error, message", ADVERSARIAL_CASES, ids=[next(iter(row[0])) for row in ADVERSARIAL_CASES])
def test_train_adversarial_refuses_bad_arguments(overrides, error, message):
    with pytest.raises(error, match=re.escape(message)):
        _adversarial(**overrides)


# ---------------------------------------------------------------- part 2: run folders on resume


def test_resume_with_a_changed_key_names_it_and_both_values_while_epochs_may_change(tmp_path):
    saved = {"lr": 0.001, "epochs": 2, "hidden": 32}
    run = RunDir(tmp_path / "run")
    run.start(saved)
    with pytest.raises(ValueError, match=re.escape("in ['lr'] (lr: saved 0.001, now 0.01)")):
        run.start({**saved, "lr": 0.01}, resume=True)
    with pytest.raises(ValueError, match=re.escape("in ['beta'] (beta: saved None, now 2.0)")):
        run.start({**saved, "beta": 2.0}, resume=True)
    with pytest.raises(ValueError, match=re.escape("in ['hidden', 'lr'] (hidden: saved 32, now 64, lr: saved 0.001, now 0.1)")):
        run.start({**saved, "lr": 0.1, "hidden": 64}, resume=True)
    assert run.read_config() == saved  # a refused resume leaves the saved config alone
    run.start({**saved, "epochs": 5}, resume=True)
    assert run.read_config()["epochs"] == 5


def test_a_restarted_run_removes_the_temporaries_a_killed_write_left(vae_copy):
    stale = [vae_copy / "checkpoint.pt.123.tmp", vae_copy / "metrics.jsonl.4567.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    _train_vae_resume(vae_copy)
    assert not any(path.exists() for path in stale)
    assert load_run(vae_copy, device="cpu").sample(2).shape[0] == 2
