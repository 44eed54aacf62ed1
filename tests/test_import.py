import subprocess
import sys

import pytest

CHECK = """
import sys, time
import torch
started = time.perf_counter()
import ppl_dgm, ppl_dgm.data, ppl_dgm.nn, ppl_dgm.train, ppl_dgm.metrics
elapsed = time.perf_counter() - started
heavy = [m for m in ("torchsde", "torchdiffeq", "arviz", "pyro", "sklearn", "mlxtend", "matplotlib") if m in sys.modules]
print(elapsed, ",".join(heavy))
"""


def test_import_is_fast_and_lean():
    output = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True).stdout.split()
    elapsed = float(output[0])
    heavy = output[1] if len(output) > 1 else ""
    assert heavy == "", f"import ppl_dgm pulled in {heavy}"
    assert elapsed < 1.0, f"import ppl_dgm took {elapsed:.2f} s beyond torch"


def test_version():
    import ppl_dgm

    assert ppl_dgm.__version__ == "0.1.0"


def test_train_lazy_attribute_error():
    import ppl_dgm.train

    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        ppl_dgm.train.nope


def test_load_run_is_reachable_from_the_top_level():
    import ppl_dgm
    from ppl_dgm.runs import Run, load_run

    assert ppl_dgm.load_run is load_run and ppl_dgm.Run is Run
