"""Train / load / evaluate a noise-aware classifier run in ``runs/<name>/`` (``ppl-dgm train|eval noisy-classifier``), and
hand it to a DDPM run for classifier guidance (``ppl-dgm sample ddpm RUN --classifier CLASSIFIER_RUN``).

The classifier p_φ(y | x_t, t) is trained by cross-entropy on the forward process of the DDPM it will guide (same
dataset, schedule and T; Dhariwal & Nichol 2021, sec. 4), with the held-out accuracy at a few noise levels per epoch.
"""
from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from ppl_dgm._checks import check_positive_int, check_positive_int_sequence, check_seed
from ppl_dgm.data import image_shape as dataset_image_shape
from ppl_dgm.data import load_dataset
from ppl_dgm.data import num_classes as dataset_num_classes
from ppl_dgm.diffusion.classifier_guidance import NoisyClassifier, noisy_accuracy, noisy_classifier_loss
from ppl_dgm.diffusion.ddpm import to_model_space
from ppl_dgm.diffusion.experiment import DATASETS, SCHEDULES, _to_model_space_batch, build_schedule
from ppl_dgm.train.device import resolve_device
from ppl_dgm.train.loop import fit
from ppl_dgm.train.runs import RunDir

__all__ = ["NoisyClassifierConfig", "EVALUATION_TIMES", "build_noisy_classifier", "train_noisy_classifier",
           "load_noisy_classifier_run", "evaluate_noisy_classifier", "check_classifier_matches", "guiding_classifier"]

EVALUATION_TIMES = tuple(k / 10 for k in range(11))  # `ppl-dgm eval noisy-classifier`: t = 0 (step 1), 0.1, ..., 1


@dataclass
class NoisyClassifierConfig:
    """Everything that defines a noise-aware classifier run; saved as ``config.json``. ``dataset``, ``schedule`` and
    ``num_steps`` must equal those of the DDPM run it guides."""

    dataset: str = field(default="mnist5k", metadata={"choices": DATASETS})
    channels: int = field(default=32, metadata={"help": "base channels of the U-Net encoder"})
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    dropout: float = 0.0
    schedule: str = field(default="linear", metadata={"choices": SCHEDULES, "help": "the guided DDPM run's schedule"})
    num_steps: int = field(default=1000, metadata={"help": "diffusion steps T of the guided DDPM run"})
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    eval_times: tuple[float, ...] = field(default=(0.0, 0.25, 0.5, 0.75), metadata={
        "help": "times t of the held-out accuracy in metrics.jsonl, each snapped to the step max(1, round(tT))"})
    seed: int = 0
    data_root: str | None = field(default=None, metadata={"help": "folder with the cifar10 files; never downloads"})

    def __post_init__(self) -> None:
        self.channel_mults = check_positive_int_sequence("channel_mults", tuple(self.channel_mults))
        self.eval_times = tuple(self.eval_times)
        for name, known in (("dataset", DATASETS), ("schedule", SCHEDULES)):
            if getattr(self, name) not in known:
                raise ValueError(f"{name}={getattr(self, name)!r} is not known; expected one of {known}")
        for name in ("channels", "num_res_blocks", "num_steps", "epochs", "batch_size"):
            check_positive_int(name, getattr(self, name))
        check_seed(self.seed)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout!r}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ValueError(f"lr must be a positive float, got {self.lr!r}")
        bad = [t for t in self.eval_times if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0]
        if bad:
            raise ValueError(f"eval_times must be times in [0, 1], got {bad[0]!r} in {self.eval_times}")

    def as_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))


def _step(t: float, num_steps: int) -> int:
    return max(1, round(t * num_steps))


def _accuracy_key(step: int, num_steps: int) -> str:
    return f"test_accuracy_t{step / num_steps:g}"


def build_noisy_classifier(config: NoisyClassifierConfig) -> NoisyClassifier:
    """The untrained classifier a config describes, for its dataset's image channels and classes."""
    return NoisyClassifier(dataset_image_shape(config.dataset)[0], dataset_num_classes(config.dataset), config.channels,
                           config.channel_mults, config.num_res_blocks, config.dropout, groups=min(8, config.channels))


def _test_data(config: NoisyClassifierConfig, num_examples: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = load_dataset(config.dataset, "test", root=config.data_root).tensors[:2]
    return to_model_space(images[:num_examples]), labels[:num_examples]


@torch.no_grad()
def evaluate_noisy_classifier(model: NoisyClassifier, config: NoisyClassifierConfig, *, times=EVALUATION_TIMES,
                              num_examples: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Held-out accuracy of p_φ(y | x_t, t) at each t of ``times`` (snapped to the step max(1, round(tT))), and accuracy
    and cross-entropy (nats) at a uniform step per image (the training distribution); noise seeded by ``seed``."""
    if num_examples is not None:
        check_positive_int("num_examples", num_examples)
    device = next(model.parameters()).device
    x0, y = (tensor.to(device) for tensor in _test_data(config, num_examples))
    schedule = build_schedule(config)
    was_training = model.training
    model.eval()
    try:
        result: dict[str, Any] = {}
        for t in times:
            step = _step(t, config.num_steps)
            generator = torch.Generator(device=device).manual_seed(seed)
            result[_accuracy_key(step, config.num_steps)] = noisy_accuracy(model, schedule, x0, y, step, generator=generator)[0]
        accuracy, nats = noisy_accuracy(model, schedule, x0, y, None, generator=torch.Generator(device=device).manual_seed(seed))
    finally:
        model.train(was_training)
    return result | {"test_accuracy_uniform_t": accuracy, "test_cross_entropy_nats": nats, "num_examples": int(y.shape[0])}


def train_noisy_classifier(config: NoisyClassifierConfig, run_dir: str | os.PathLike, *, device: str | torch.device = "auto",
                           resume: bool = False, progress: bool = True, max_steps: int | None = None) -> dict[str, Any]:
    """Train p_φ(y | x_t, t) by :func:`~ppl_dgm.diffusion.classifier_guidance.noisy_classifier_loss` into ``run_dir``
    (config.json, metrics.jsonl with the held-out accuracy at ``config.eval_times``, checkpoint.pt); exact resume. The
    result holds the final losses and :func:`evaluate_noisy_classifier` of the trained network."""
    run = RunDir(run_dir)
    run.start(config.as_json(), resume)
    device = resolve_device(device)
    torch.manual_seed(config.seed)
    train_data = load_dataset(config.dataset, "train", root=config.data_root)
    test_x, test_y = _test_data(config)
    schedule = build_schedule(config)
    model = build_noisy_classifier(config).to(device)

    def loss_fn(batch):
        return noisy_classifier_loss(model, schedule, batch[0], batch[1])

    def record_accuracy(epoch: int, record: dict[str, Any]) -> None:
        record.update(evaluate_noisy_classifier(model, config, times=config.eval_times, seed=config.seed))

    started = time.perf_counter()
    history = fit(model, loss_fn, train_data, epochs=config.epochs, batch_size=config.batch_size,
                  optim=lambda parameters: torch.optim.Adam(parameters, lr=config.lr), device=device,
                  val_data=TensorDataset(test_x, test_y), transform=_to_model_space_batch, checkpoint=run.checkpoint, resume=resume,
                  metrics_path=run.metrics_path, max_steps=max_steps, seed=config.seed, progress=progress,
                  on_epoch_end=record_accuracy, description=f"noisy classifier {config.dataset}")
    result: dict[str, Any] = {"epochs_done": len(history), "train_seconds": time.perf_counter() - started, "device": str(device)}
    if history.records:
        result.update(steps=history.records[-1]["step"], train_loss=history.loss[-1], val_loss=history.val_loss[-1])
    result.update(evaluate_noisy_classifier(model.eval(), config, seed=config.seed))
    return result


def load_noisy_classifier_run(run_dir: str | os.PathLike,
                              device: str | torch.device = "auto") -> tuple[NoisyClassifier, NoisyClassifierConfig]:
    """The trained classifier (eval mode) and config of a run folder written by :func:`train_noisy_classifier`."""
    run = RunDir(run_dir)
    config = NoisyClassifierConfig(**run.read_config())
    model = build_noisy_classifier(config)
    model.load_state_dict(run.checkpoint.load(map_location="cpu")["module"])
    return model.to(resolve_device(device)).eval(), config


def check_classifier_matches(classifier_config: NoisyClassifierConfig, ddpm_config: Any, classifier_name: str = "classifier",
                             ddpm_name: str = "DDPM run") -> None:
    """Raise ValueError naming both runs unless the classifier was trained on the DDPM's dataset (so image shape and
    classes), schedule and T: p_φ(y | x_t, t) is only meaningful at the times t = i/T of the same forward process."""
    def described(config):
        return {"dataset": config.dataset, "image shape": dataset_image_shape(config.dataset), "schedule": config.schedule,
                "num_steps": config.num_steps}

    ours, theirs = described(classifier_config), described(ddpm_config)
    differing = [f"{key} {ours[key]!r} vs {theirs[key]!r}" for key in ours if ours[key] != theirs[key]]
    if differing:
        raise ValueError(f"the classifier {classifier_name} was trained for another forward process than the DDPM run "
                         f"{ddpm_name}: {'; '.join(differing)}; train one with `ppl-dgm train noisy-classifier --dataset "
                         f"{ddpm_config.dataset} --schedule {ddpm_config.schedule} --num-steps {ddpm_config.num_steps}`")


def guiding_classifier(classifier: Any, ddpm_config: Any, *, ddpm_name: str = "DDPM run", device: str | torch.device = "cpu") -> nn.Module:
    """The network of a noisy-classifier run (a folder, or a :class:`~ppl_dgm.runs.Run` from ``load_run``), checked by
    :func:`check_classifier_matches` against the DDPM config, on ``device`` (a copy if the Run's model lives elsewhere)."""
    from ppl_dgm.runs import Run, WrongFamilyError, load_run

    if isinstance(classifier, Run):
        if classifier.family != "noisy-classifier":
            raise WrongFamilyError(f"classifier={str(classifier.path)!r} is a {classifier.family} run, not a noisy-classifier run")
        run = classifier
    elif isinstance(classifier, (str, os.PathLike)):
        run = load_run(classifier, device=device, family="noisy-classifier")
    else:
        raise TypeError(f"classifier must be a noisy-classifier run folder or its Run (load_run), got {type(classifier).__name__}")
    check_classifier_matches(run.config, ddpm_config, repr(str(run.path)), ddpm_name)
    model = run.model
    if next(model.parameters()).device != torch.device(device):
        model = copy.deepcopy(model).to(device)
    return model
