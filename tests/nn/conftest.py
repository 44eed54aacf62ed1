import pytest
import torch


@pytest.fixture(scope="package", autouse=True)
def single_intra_op_thread():
    # These tests use tiny tensors: threads buy nothing, and on a busy 2-core machine an OpenMP pool
    # of 2 made the folder 15x slower (37 s instead of 2.5 s).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

