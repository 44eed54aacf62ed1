"""Every test starts from a clean Pyro param store, with validation on and seeded RNGs."""
import pyro
import pytest
import torch


@pytest.fixture(autouse=True)
def _clean_pyro_and_seed():
    pyro.clear_param_store()
    pyro.enable_validation(True)
    pyro.set_rng_seed(0)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    yield
    pyro.clear_param_store()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
