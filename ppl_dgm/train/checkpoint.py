"""Atomic checkpoints holding everything needed to resume a run exactly, loaded without running code."""
from __future__ import annotations

import contextlib
import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["Checkpoint", "UnsafeFileError", "CorruptFileError", "safe_torch_load", "forced_weights_only", "remove_stale_temporaries",
           "rng_state", "set_rng_state"]


class UnsafeFileError(ValueError):
    """A file we were asked to load holds a pickled object that would import or call code."""


class CorruptFileError(ValueError):
    """A file we were asked to load is truncated, not a torch file, or not in the expected layout."""


def safe_torch_load(path: str | os.PathLike, map_location: str | torch.device | None = "cpu", what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)``: tensors, state dicts and plain Python values only.

    A pickle that would import a global (``os.system``, a class, NumPy's RNG state) is refused with
    :class:`UnsafeFileError`, a truncated or foreign file with :class:`CorruptFileError`; both name the file.
    Nothing in the file is executed either way (docs/design.md, "Runs").
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        global_lines = [line for line in lines if "GLOBAL" in line]
        if global_lines:
            raise UnsafeFileError(
                f"refused to load {what} {str(path)!r}: it holds a pickled object that would run code "
                f"({global_lines[0][:200]}); only tensors and plain Python values are loaded"
            ) from None
        detail = next((line for line in lines if line.startswith("Unsupported")), lines[-1] if lines else "")
        calls = _pickled_calls(path)
        if calls:
            raise UnsafeFileError(
                f"refused to load {what} {str(path)!r}: it is a plain pickle that imports and calls objects "
                f"({', '.join(calls)}); only torch.save files of tensors and plain Python values are loaded"
            ) from None
        raise CorruptFileError(
            f"{what} {str(path)!r} is not a file torch.save wrote, or uses pickle features that safe loading "
            f"refuses ({detail[:200]})"
        ) from None
    except (RuntimeError, EOFError, UnicodeDecodeError, OSError, ValueError, KeyError, AttributeError, IndexError) as error:
        raise CorruptFileError(f"{what} {str(path)!r} is truncated or not a torch file ({type(error).__name__}: {str(error)[:200]})") from None


@contextlib.contextmanager
def forced_weights_only():
    """Inside, every ``torch.load`` runs with ``weights_only=True`` whatever its caller passes (torch's
    ``TORCH_FORCE_WEIGHTS_ONLY_LOAD``): for third-party code that loads with ``weights_only=False``."""
    saved = {name: os.environ.pop(name, None) for name in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value


def _pickled_calls(path: Path) -> list[str]:
    """The opcodes of a plain (non-zip) pickle that import or call objects; read with ``pickletools``, which runs nothing."""
    import pickletools
    import zipfile

    if zipfile.is_zipfile(path):
        return []
    found: list[str] = []
    try:
        with open(path, "rb") as file:
            for opcode, _, _ in pickletools.genops(file):
                if opcode.name in ("GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX") and opcode.name not in found:
                    found.append(opcode.name)
    except Exception:  # not a pickle at all: corrupt, not unsafe
        return []
    return found


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete ``*.tmp`` files a killed atomic write left in ``folder``; returns what was removed."""
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for stale in folder.glob("*.tmp"):
            if stale.is_file():
                stale.unlink(missing_ok=True)
                removed.append(stale)
    return removed


def rng_state() -> dict[str, Any]:
    """Snapshot of every global RNG a training step may draw from (Python, NumPy, torch CPU and CUDA),
    as tensors and plain Python values so that ``weights_only`` loading accepts it."""
    key, words, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"key": str(key), "words": torch.from_numpy(words.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a snapshot taken by :func:`rng_state`."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["key"], numpy_state["words"].numpy().astype(np.uint32), numpy_state["position"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


class Checkpoint:
    """A checkpoint file written atomically (temp file in the same folder, then ``os.replace``).

    A reader never sees a half-written file: after a crash either the old or the new checkpoint is
    there (a killed write leaves a ``*.tmp`` file, removed by :func:`remove_stale_temporaries` at the
    next start). ``save`` adds the global RNG states. Model parameters live in modules, not in Pyro's
    global param store, which is therefore not saved.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def exists(self) -> bool:
        return self.path.is_file()

    def save(self, state: dict[str, Any]) -> None:
        state = dict(state)
        state.setdefault("rng", rng_state())
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
        """Read the checkpoint (``weights_only``: nothing in it runs); with ``restore_rng`` also restore the global RNGs."""
        state = safe_torch_load(self.path, map_location=map_location)
        if not isinstance(state, dict):
            raise CorruptFileError(f"checkpoint {str(self.path)!r} holds a {type(state).__name__}, expected a dict of states")
        if restore_rng:
            if "rng" not in state:
                raise CorruptFileError(f"checkpoint {str(self.path)!r} has no 'rng' entry: it was not written by a ppl_dgm trainer")
            set_rng_state(state["rng"])
        return state

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r})"
