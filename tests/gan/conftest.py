import pytest
import torch


@pytest.fixture(scope="package", autouse=True)
def single_intra_op_thread():
    # Small networks: an OpenMP pool buys nothing and slows a busy 2-core machine down (as in tests/nn).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
