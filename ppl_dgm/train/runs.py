"""The ``runs/<name>/`` folder every trainer writes: config, metrics, checkpoint, image grids."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ppl_dgm.train.checkpoint import Checkpoint, remove_stale_temporaries
from ppl_dgm.train.distributed import is_main_process

__all__ = ["RunDir", "BUDGET_KEYS", "write_json_atomically"]

# Config keys that only say how long to train: they may change on --resume (extending a run).
BUDGET_KEYS = ("epochs", "max_steps", "steps", "max_iter")


def write_json_atomically(path: Path, value: Any) -> None:
    """``path`` holds either its old content or all of ``value`` as JSON, never half of it."""
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


class RunDir:
    """``config.json``, ``metrics.jsonl``, ``checkpoint.pt`` and PNG grids of one run.

    In a distributed run only rank 0 writes (the other processes' writes are no-ops). Creating a
    ``RunDir`` touches nothing on disk: :meth:`start` creates the folder, readers never do.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @property
    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.path / "checkpoint.pt")

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def start(self, config: dict[str, Any], resume: bool = False) -> None:
        """Create the folder, remove ``*.tmp`` files a killed write left, and write ``config.json``.

        When resuming, the saved config must equal ``config`` except for the budget keys
        (:data:`BUDGET_KEYS`: a run is extended by resuming with more epochs); a ValueError names
        every other differing key with both values.
        """
        if resume and (self.path / "config.json").is_file():
            saved = self.read_config()
            changed = sorted(key for key in set(saved) | set(config) if key not in BUDGET_KEYS and saved.get(key) != config.get(key))
            if changed:
                values = ", ".join(f"{key}: saved {saved.get(key)!r}, now {config.get(key)!r}" for key in changed)
                raise ValueError(
                    f"resume: config differs from the one saved in {str(self.path)!r} in {changed} ({values}); "
                    f"only {list(BUDGET_KEYS)} may change when a run is resumed or extended"
                )
        if is_main_process():
            self.path.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.path)
        self.write_config(config)

    def write_config(self, config: dict[str, Any]) -> None:
        if is_main_process():
            self.path.mkdir(parents=True, exist_ok=True)
            write_json_atomically(self.path / "config.json", config)

    def read_config(self) -> dict[str, Any]:
        path = self.path / "config.json"
        if not self.path.is_dir():
            raise FileNotFoundError(f"run folder {str(self.path)!r} does not exist")
        if not path.is_file():
            raise FileNotFoundError(f"{str(path)!r} not found: {str(self.path)!r} is not a ppl_dgm run folder")
        try:
            config = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{str(path)!r} is not valid JSON ({error})") from None
        if not isinstance(config, dict):
            raise ValueError(f"{str(path)!r} holds a {type(config).__name__}, expected a JSON object")
        return config

    def write_results(self, results: dict[str, Any]) -> None:
        """``results.json``: the run's final figures (rank 0 only)."""
        if is_main_process():
            self.path.mkdir(parents=True, exist_ok=True)
            write_json_atomically(self.path / "results.json", results)

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.is_file():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def save_grid(self, images: torch.Tensor, name: str, nrow: int = 8) -> Path:
        """Write images (B, C, H, W) in [0, 1] as one PNG grid (torchvision ``save_image``)."""
        from torchvision.utils import save_image

        path = self.path / name
        if not is_main_process():
            return path
        self.path.mkdir(parents=True, exist_ok=True)
        save_image(images.detach().float().clamp(0, 1).cpu(), path, nrow=nrow, padding=2, pad_value=1.0)
        return path
