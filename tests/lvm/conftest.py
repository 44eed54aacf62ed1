"""The latent-variable tests use tiny tensors: one intra-op thread avoids oversubscribing shared CPUs.

Measured: NUTS on a 4-D factor model ran 13x slower with 2 threads than with 1 on a loaded 2-core machine.
"""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
