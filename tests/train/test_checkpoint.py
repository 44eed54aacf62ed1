import os

import pytest
import torch

from ppl_dgm.train import Checkpoint, resolve_device, rng_state, set_rng_state


def test_checkpoint_roundtrip_and_atomic_replace(tmp_path):
    checkpoint = Checkpoint(tmp_path / "sub" / "checkpoint.pt")
    assert not checkpoint.exists()
    checkpoint.save({"value": torch.arange(3)})
    checkpoint.save({"value": torch.arange(5)})
    assert torch.equal(checkpoint.load()["value"], torch.arange(5))
    # no temp files are left behind
    assert sorted(os.listdir(tmp_path / "sub")) == ["checkpoint.pt"]


def test_checkpoint_failed_write_keeps_previous_file(tmp_path):
    checkpoint = Checkpoint(tmp_path / "checkpoint.pt")
    checkpoint.save({"value": 1})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        checkpoint.save({"value": Unpicklable()})
    assert checkpoint.load()["value"] == 1
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


def test_missing_checkpoint_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        Checkpoint(tmp_path / "nothing.pt").load()


def test_rng_state_restores_every_generator():
    import random

    import numpy as np

    state = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(()).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(()).item()) == first


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device='gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_forced_weights_only_refuses_code_even_when_the_caller_asks_weights_only_false(tmp_path):
    import pickle

    from ppl_dgm.train.checkpoint import forced_weights_only

    marker = tmp_path / "marker"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"x": Payload()}, tmp_path / "payload.pt")
    with forced_weights_only(), pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "payload.pt", weights_only=False)
    assert not marker.exists() and "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ
