import math

import pytest
import torch

from ppl_dgm.train import cosine_lr


def test_cosine_lr_matches_torch_cosine_annealing_and_stays_at_zero_after_the_end():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10, eta_min=0.0)
    for step in range(11):
        assert cosine_lr(0.1, step, 10) == pytest.approx(optimizer.param_groups[0]["lr"], abs=1e-12), step
        optimizer.step(), schedule.step()
    assert cosine_lr(0.1, 0, 10) == 0.1 and cosine_lr(0.1, 5, 10) == pytest.approx(0.05) and cosine_lr(0.1, 25, 10) == 0.0
    assert cosine_lr(1.0, 1, 4) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_cosine_lr_rejects_bad_steps():
    with pytest.raises(ValueError, match="total_steps must be"):
        cosine_lr(0.1, 0, 0)
    with pytest.raises(ValueError, match="step must be an int >= 0, got -1"):
        cosine_lr(0.1, -1, 10)
