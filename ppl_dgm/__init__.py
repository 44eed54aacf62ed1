"""ppl_dgm: deep generative models as Pyro programs and torch modules. ``ppl_dgm.load_run(path)`` reopens any trained run."""

__version__ = "0.1.0"
__all__ = ["load_run", "Run", "__version__"]


def __getattr__(name: str):
    # load_run / Run live in ppl_dgm.runs; imported on first use so `import ppl_dgm` stays light.
    if name in ("load_run", "Run"):
        from ppl_dgm import runs

        return getattr(runs, name)
    raise AttributeError(f"module 'ppl_dgm' has no attribute {name!r}")
