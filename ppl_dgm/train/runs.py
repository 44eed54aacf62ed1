"""The ``runs/<name>/`` folder every trainer writes: config, metrics, checkpoint, image grids."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ppl_dgm.train.checkpoint import Checkpoint
from ppl_dgm.train.distributed import is_main_process

__all__ = ["RunDir"]


class RunDir:
    """``config.json``, ``metrics.jsonl``, ``checkpoint.pt`` and PNG grids of one run.

    In a distributed run only rank 0 writes (the other processes' writes are no-ops).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    @property
    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.path / "checkpoint.pt")

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def start(self, config: dict[str, Any], resume: bool = False) -> None:
        """Write ``config.json``; when resuming, first check it equals the saved one (ValueError naming the keys)."""
        if resume and (self.path / "config.json").is_file():
            saved = self.read_config()
            if saved != config:
                changed = sorted(key for key in set(saved) | set(config) if saved.get(key) != config.get(key))
                raise ValueError(f"resume: config differs from the one saved in {str(self.path)!r} in {changed}")
        self.write_config(config)

    def write_config(self, config: dict[str, Any]) -> None:
        if not is_main_process():
            return
        tmp = self.path / "config.json.tmp"
        tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.path / "config.json")

    def read_config(self) -> dict[str, Any]:
        path = self.path / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"{str(path)!r} not found: {str(self.path)!r} is not a ppl_dgm run folder")
        return json.loads(path.read_text())

    def write_results(self, results: dict[str, Any]) -> None:
        """``results.json``: the run's final figures (rank 0 only)."""
        if is_main_process():
            (self.path / "results.json").write_text(json.dumps(results, indent=2) + "\n")

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
        save_image(images.detach().float().clamp(0, 1).cpu(), path, nrow=nrow, padding=2, pad_value=1.0)
        return path
