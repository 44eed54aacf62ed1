import os

import pytest
import torch

from ppl_dgm.train import Checkpoint, make_ema, resolve_device, rng_state, set_rng_state


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


def test_ema_is_exponential_average():
    module = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.constant_(module.weight, 0.0)
    ema = make_ema(module, decay=0.9)
    for value in (1.0, 2.0):
        module.weight.data.fill_(value)
        ema.update_parameters(module)
    # torch's AveragedModel copies on the first update, then θ ← 0.9 θ + 0.1 x
    assert ema.module.weight.item() == pytest.approx(0.9 * 1.0 + 0.1 * 2.0)
    with pytest.raises(ValueError, match="decay must be a float in \\(0, 1\\), got 1.5"):
        make_ema(module, decay=1.5)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device='gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
