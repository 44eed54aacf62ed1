"""Two gloo processes on the CPU train exactly like one process on the concatenated batches."""
import json
import os
import shutil
import socket
import subprocess
import sys
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.multiprocessing as mp
from pyro.infer import Trace_ELBO
from pyro.nn import PyroModule, PyroParam

from ppl_dgm.train import Checkpoint, fit_svi
from ppl_dgm.train.distributed import cleanup_distributed, rank_and_world_size


class MarginalFactorModel(PyroModule):
    """x ~ N(μ, W Wᵀ + σ² I) with z integrated out: a deterministic ELBO, so runs can be compared exactly."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.loc = PyroParam(torch.zeros(3))
        self.weight = PyroParam(0.1 * torch.randn(3, 1, generator=generator))
        self.noise = PyroParam(torch.ones(3), constraint=dist.constraints.positive)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.LowRankMultivariateNormal(self.loc, self.weight, self.noise), obs=x)

    def guide(self, x):
        pass


def data():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(64, 1, generator=generator) @ torch.tensor([[1.0, -2.0, 0.5]]) + 0.3 * torch.randn(64, 3, generator=generator)


def train(batch_size, checkpoint):
    module = MarginalFactorModel()
    fit_svi(module.model, module.guide, (data(),), loss=Trace_ELBO(), epochs=3, batch_size=batch_size, device="cpu",
            optim=lambda p: torch.optim.Adam(p, lr=0.05), checkpoint=checkpoint, progress=False)
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def worker(rank, world_size, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        assert rank_and_world_size() == (rank, world_size)
        state = train(batch_size=8, checkpoint=os.path.join(out_dir, f"rank{rank}.pt"))
        torch.save(state, os.path.join(out_dir, f"params{rank}.pt"))
    finally:
        cleanup_distributed()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.timeout(120)
def test_two_process_ddp_equals_single_process_on_concatenated_batches(tmp_path):
    mp.spawn(worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    single = train(batch_size=16, checkpoint=None)  # 2 processes × 8 = 16 examples per step
    for rank in (0, 1):
        distributed = torch.load(tmp_path / f"params{rank}.pt", weights_only=True)
        for name, value in single.items():
            torch.testing.assert_close(distributed[name], value, rtol=1e-5, atol=1e-6)
    assert (tmp_path / "rank0.pt").is_file() and not (tmp_path / "rank1.pt").exists()  # only rank 0 writes


TEARDOWN_ABORT = "terminate called without an active exception"


def run_torchrun(command):
    """Run a torchrun command line; once more if gloo aborted a process with no Python error.

    In about one CI run in many (never in 45 local repeats) a rank died of SIGABRT with only
    "terminate called without an active exception" from C++ and no Python traceback, the
    signature of gloo threads torn down out of order (pytorch/pytorch#190489). The run folder is
    written afresh by the second attempt (same --name, not --resume); any other failure, or the
    abort twice, fails the test.
    """
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    finished = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=130)
    if finished.returncode != 0 and TEARDOWN_ABORT in finished.stderr and "Traceback (most recent call last)" not in finished.stderr.split(TEARDOWN_ABORT)[0]:
        warnings.warn(f"torchrun: a rank aborted ({TEARDOWN_ABORT!r}); ran the command again")
        runs_dir = command[command.index("--runs-dir") + 1]
        shutil.rmtree(os.path.join(runs_dir, command[command.index("--name") + 1]), ignore_errors=True)
        finished = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=130)
    return finished


@pytest.mark.timeout(300)
@pytest.mark.parametrize("family", ["vae", "ddpm", "score-sde"])
def test_torchrun_cli_trains_with_two_processes(tmp_path, family):
    options = {
        "vae": ["--latent-dim", "4", "--hidden", "32", "--batch-size", "50"],
        "ddpm": ["--channels", "8", "--channel-mults", "1", "2", "--num-res-blocks", "1", "--no-attention", "--num-steps", "50",
                 "--batch-size", "50", "--sample-steps", "5"],
        "score-sde": ["--channels", "8", "--channel-mults", "1", "2", "--batch-size", "50"],
    }[family]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "ppl_dgm.cli",
               "train", family, "--dataset", "digits", "--epochs", "2", "--max-steps", "20", "--runs-dir", str(tmp_path),
               "--name", "run", "--device", "cpu", "--no-progress", "--distributed", *options]
    finished = run_torchrun(command)
    assert finished.returncode == 0, finished.stderr[-3000:]
    run = tmp_path / "run"
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1]  # 1,500 digits / (2 × 50) = 15 steps an epoch
    assert json.loads(lines[0])["step"] == 15
    assert (run / "checkpoint.pt").is_file() and (run / "results.json").is_file()
    assert not list(run.glob("*.tmp"))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("loss", ["non_saturating", "wasserstein_gp"])
def test_torchrun_gan_trains_with_two_processes(tmp_path, loss):
    """Both players' gradients are all-reduced (gradient penalty included); 4,000 digits / (2 × 250) = 8 steps an epoch."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "ppl_dgm.cli",
               "train", "gan", "--loss", loss, "--latent-dim", "8", "--channels", "8", "--batch-size", "250", "--epochs", "1",
               "--runs-dir", str(tmp_path), "--name", "run", "--device", "cpu", "--no-progress", "--distributed"]
    finished = run_torchrun(command)
    assert finished.returncode == 0, finished.stderr[-3000:]
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["step"]) for r in records] == [(1, 8)]
    state = Checkpoint(run / "checkpoint.pt").load()
    assert len(state["rng_per_rank"]) == 2 and not torch.equal(state["rng_per_rank"][0]["torch"], state["rng_per_rank"][1]["torch"])
    assert (run / "results.json").is_file() and not list(run.glob("*.tmp"))
