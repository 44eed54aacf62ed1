import pytest
import torch


@pytest.fixture(scope="package", autouse=True)
def single_intra_op_thread():
    # Module fixtures too (the root conftest's is per test): on the busy 2-core machine two threads made
    # an Inception FID call 8x slower (test_fid.py) and the feature classifier slower (test_frechet.py).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
