"""Every test starts from a clean Pyro param store, with validation on, seeded RNGs and one torch thread.

One intra-op thread: the tests use small tensors, where an OpenMP pool buys little and, on a busy
2-core machine, oversubscription made some tests 10x slower (NUTS 13x, U-Net steps 15x).
"""
import pyro
import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_intra_op_thread():
    # session-wide, so module- and package-scoped fixtures (a trained run, the Inception extractor) get it too
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _clean_pyro_and_seed():
    pyro.clear_param_store()
    pyro.enable_validation(True)
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
