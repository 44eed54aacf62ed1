"""Training machinery shared by every family: SVI, the plain loop, checkpoints, EMA, run folders."""
from ppl_dgm.train.checkpoint import Checkpoint, rng_state, set_rng_state
from ppl_dgm.train.device import resolve_device
from ppl_dgm.train.ema import make_ema
from ppl_dgm.train.loop import History, TrainingDiverged, cosine_lr, evaluate_loss, fit
from ppl_dgm.train.runs import RunDir

__all__ = [
    "Checkpoint",
    "History",
    "RunDir",
    "TrainingDiverged",
    "cosine_lr",
    "evaluate_elbo",
    "evaluate_loss",
    "fit",
    "fit_svi",
    "make_ema",
    "resolve_device",
    "rng_state",
    "set_rng_state",
]


def __getattr__(name: str):
    # fit_svi / evaluate_elbo import Pyro (~1 s); load them on first use only.
    if name in ("fit_svi", "evaluate_elbo"):
        from ppl_dgm.train import svi

        return getattr(svi, name)
    raise AttributeError(f"module 'ppl_dgm.train' has no attribute {name!r}")
