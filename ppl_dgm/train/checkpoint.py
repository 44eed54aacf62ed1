"""Atomic checkpoints holding everything needed to resume a run exactly."""
from __future__ import annotations

import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["Checkpoint", "rng_state", "set_rng_state"]


def rng_state() -> dict[str, Any]:
    """Snapshot of every global RNG a training step may draw from (Python, NumPy, torch CPU and CUDA)."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a snapshot taken by :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


class Checkpoint:
    """A checkpoint file written atomically (temp file in the same folder, then ``os.replace``).

    A reader never sees a half-written file: after a crash either the old or the new checkpoint is
    there. ``save`` adds the Pyro param store (when Pyro is in use) and the global RNG states.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def exists(self) -> bool:
        return self.path.is_file()

    def save(self, state: dict[str, Any]) -> None:
        state = dict(state)
        state.setdefault("rng", rng_state())
        if "pyro" in sys.modules:  # Pyro is imported only by code that uses it
            import pyro

            state.setdefault("param_store", pyro.get_param_store().get_state())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp_name = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save(state, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp_name, self.path)
        except BaseException:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
            raise

    def load(self, map_location: str | torch.device | None = "cpu", restore_rng: bool = False) -> dict[str, Any]:
        """Read the checkpoint; with ``restore_rng`` also restore the global RNGs and the Pyro param store."""
        if not self.exists():
            raise FileNotFoundError(f"checkpoint {str(self.path)!r} does not exist")
        state = torch.load(self.path, map_location=map_location, weights_only=False)
        if restore_rng:
            set_rng_state(state["rng"])
            if state.get("param_store") is not None:
                import pyro

                pyro.get_param_store().set_state(state["param_store"])
        return state

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r})"
