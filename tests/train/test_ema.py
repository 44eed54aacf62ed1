import pytest
import torch
from torch import nn

from ppl_dgm.train import make_ema
from ppl_dgm.train.ema import ema_decay_at


def _run(decay, warmup, values):
    module = nn.Linear(1, 1, bias=False)
    ema = make_ema(module, decay, warmup=warmup)
    for value in values:
        module.weight.data.fill_(value)
        ema.update_parameters(module)
    return float(ema.module.weight)


@pytest.mark.parametrize("warmup", [True, False])
def test_ema_follows_the_recurrence(warmup):
    values = [3.0, -1.0, 2.0, 5.0, 0.5]
    expected = values[0]  # the first update copies the weights
    for update, value in enumerate(values[1:], start=2):
        decay = min(0.9, (1 + update) / (10 + update)) if warmup else 0.9
        expected = decay * expected + (1 - decay) * value
    assert _run(0.9, warmup, values) == pytest.approx(expected, rel=1e-6)


def test_warmup_decay_schedule():
    assert ema_decay_at(1, 0.9999) == pytest.approx(2 / 11)
    assert ema_decay_at(8990, 0.9999) == pytest.approx(0.999)
    assert ema_decay_at(10**6, 0.9999) == 0.9999
    assert ema_decay_at(5, 0.9999, warmup=False) == 0.9999


def test_warmup_forgets_the_initialization():
    # 1,000 updates at the target weight 1 from 0: fixed decay 0.999 keeps 0.999^999 ≈ 0.37 of the start
    values = [0.0] + [1.0] * 999
    assert _run(0.999, False, values) == pytest.approx(1 - 0.999**999, rel=1e-4)
    assert _run(0.999, True, values) > 0.99


def test_make_ema_rejects_bad_decay():
    with pytest.raises(ValueError, match="decay must be a float in \\(0, 1\\), got 1.0"):
        make_ema(nn.Linear(1, 1), 1.0)
