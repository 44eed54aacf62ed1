import json
import math

import pytest
import torch
from torch import nn

from ppl_dgm.train import Checkpoint, TrainingDiverged, fit


def regression_data(n=100):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, generator=generator)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(n, 1, generator=generator)
    return x, y


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.2), nn.Tanh(), nn.Linear(8, 1))


def mse(model):
    # dropout makes the loss depend on the global RNG: resume must restore it to be exact
    return lambda batch: ((model(batch[0]) - batch[1]) ** 2).mean()


def test_fit_converges_on_linear_regression():
    x, y = regression_data(400)
    model = nn.Linear(3, 1)
    history = fit(model, lambda b: ((model(b[0]) - b[1]) ** 2).mean(), (x, y), epochs=60, batch_size=32,
                  optim=lambda p: torch.optim.Adam(p, lr=0.05), device="cpu", progress=False)
    assert history.loss[-1] < 0.02  # noise variance is 0.01
    assert torch.allclose(model.weight.detach(), torch.tensor([[1.0, -2.0, 0.5]]), atol=0.05)


@pytest.mark.parametrize("first_steps", [7, 14])  # mid-epoch (batches of 16 → 7 per epoch) and epoch boundary
def test_resume_continues_exactly(tmp_path, first_steps):
    data = regression_data()
    kwargs = dict(epochs=4, batch_size=16, device="cpu", progress=False, ema_decay=0.9,
                  val_data=regression_data(30), optim=lambda p: torch.optim.Adam(p, lr=1e-2))

    model = make_model()
    torch.manual_seed(123)
    full = fit(model, mse(model), data, checkpoint=tmp_path / "full.pt", metrics_path=tmp_path / "full.jsonl", **kwargs)

    resumed = make_model()
    torch.manual_seed(123)
    fit(resumed, mse(resumed), data, checkpoint=tmp_path / "part.pt", metrics_path=tmp_path / "part.jsonl",
        max_steps=first_steps, **kwargs)
    torch.manual_seed(999)  # the resumed run must not depend on the RNG state it starts in
    fresh = make_model()
    again = fit(fresh, mse(fresh), data, checkpoint=tmp_path / "part.pt", metrics_path=tmp_path / "part.jsonl",
                resume=True, **kwargs)

    assert len(again) == len(full) == 4
    for key in ("loss", "val_loss", "step"):
        assert again[key] == pytest.approx(full[key], rel=1e-6, abs=1e-9)
    for p, q in zip(model.parameters(), fresh.parameters()):
        torch.testing.assert_close(p, q)
    full_state = Checkpoint(tmp_path / "full.pt").load()
    part_state = Checkpoint(tmp_path / "part.pt").load()
    for name, value in full_state["ema"].items():
        torch.testing.assert_close(part_state["ema"][name], value)
    lines = [json.loads(line) for line in (tmp_path / "part.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2, 3, 4]


def test_nan_stops_with_message_and_keeps_last_good_checkpoint(tmp_path):
    x, y = regression_data()
    model = nn.Linear(3, 1)
    calls = {"n": 0}

    def exploding(batch):
        calls["n"] += 1
        loss = ((model(batch[0]) - batch[1]) ** 2).mean()
        return loss * (math.inf if calls["n"] > 10 else 1.0)  # epoch 1 (7 steps) is fine, epoch 2 diverges

    checkpoint = Checkpoint(tmp_path / "ck.pt")
    with pytest.raises(TrainingDiverged, match=r"loss (nan|inf) is not finite at epoch 2.*last good checkpoint is .*ck.pt"):
        fit(model, exploding, (x, y), epochs=5, batch_size=16, device="cpu", progress=False, checkpoint=checkpoint)
    state = checkpoint.load()
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["module"].values())
    assert len(state["history"]) == 1 and math.isfinite(state["history"][0]["loss"])


def test_fit_rejects_bad_arguments():
    model = nn.Linear(3, 1)
    data = regression_data()
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        fit(model, mse(model), data, epochs=1, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="epochs must be a positive int, got -1"):
        fit(model, mse(model), data, epochs=-1, batch_size=4, progress=False)
    with pytest.raises(ValueError, match="disagree in their first dimension"):
        fit(model, mse(model), (data[0], data[1][:5]), epochs=1, batch_size=4, progress=False)
    with pytest.raises(TypeError, match="data must be a TensorDataset"):
        fit(model, mse(model), [1, 2, 3], epochs=1, batch_size=4, progress=False)


def test_bf16_autocast_trains_in_bf16_and_keeps_float32_weights():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    x = torch.randn(256, 4)
    y = x.sum(1, keepdim=True)
    seen = []

    def loss_fn(batch):
        prediction = net(batch[0])
        seen.append(prediction.dtype)
        return (prediction.float() - batch[1]).pow(2).mean()

    history = fit(net, loss_fn, (x, y), epochs=20, batch_size=64, device="cpu", progress=False, amp="bf16",
                  optim=lambda p: torch.optim.Adam(p, lr=1e-2))
    assert set(seen) == {torch.bfloat16}  # the matmuls ran under autocast
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert history.loss[-1] < 0.1 * history.loss[0]
    with pytest.raises(ValueError, match="amp must be None or 'bf16', got 'fp16'"):
        fit(net, loss_fn, (x, y), epochs=1, batch_size=64, device="cpu", progress=False, amp="fp16")


def test_a_loss_that_grows_past_the_divergence_factor_stops_training(tmp_path):
    x, y = regression_data()
    model = nn.Linear(3, 1)
    calls = {"n": 0}

    def growing(batch):  # finite but 1e6 x its first value from the second epoch on (7 steps per epoch)
        calls["n"] += 1
        return ((model(batch[0]) - batch[1]) ** 2).mean() * (1e6 if calls["n"] > 7 else 1.0)

    checkpoint = Checkpoint(tmp_path / "ck.pt")
    with pytest.raises(TrainingDiverged, match=r"exceeds 100 x its first-step scale .* at epoch 2.*last good checkpoint is .*ck.pt"):
        fit(model, growing, (x, y), epochs=5, batch_size=16, device="cpu", progress=False, checkpoint=checkpoint)
    assert checkpoint.load()["epoch"] == 1
    calls["n"] = 0  # the factor is configurable and None disables it
    history = fit(model, growing, (x, y), epochs=2, batch_size=16, device="cpu", progress=False, divergence_factor=None)
    assert len(history) == 2
    with pytest.raises(ValueError, match="divergence_factor must be None or a number > 1, got 0.5"):
        fit(model, growing, (x, y), epochs=1, batch_size=16, progress=False, divergence_factor=0.5)


@pytest.mark.parametrize("grad_clip", [-1.0, 0.0, math.nan, "1"])
def test_grad_clip_must_be_a_positive_norm(grad_clip):
    model = nn.Linear(3, 1)
    with pytest.raises(ValueError, match=f"grad_clip must be None or a positive max-norm, got {grad_clip!r}"):
        fit(model, mse(model), regression_data(), epochs=1, batch_size=16, progress=False, grad_clip=grad_clip)


def test_non_finite_data_is_refused_before_training_naming_the_example():
    x, y = regression_data()
    x[73, 1] = math.nan
    model = nn.Linear(3, 1)
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"data holds NaN or inf: tensor 0, example 73 \(of 100\)"):
        fit(model, mse(model), (x, y), epochs=1, batch_size=16, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters()))
    y[5] = math.inf
    with pytest.raises(ValueError, match=r"val_data holds NaN or inf: tensor 1, example 5"):
        fit(model, mse(model), regression_data(), val_data=(regression_data()[0], y), epochs=1, batch_size=16, progress=False)


def test_extending_a_run_equals_a_straight_run_and_callbacks_do_not_perturb_it(tmp_path):
    x, y = regression_data()

    def run(folder, epochs, resume=False):
        model = make_model()

        def draw_noise(epoch, record):  # a callback drawing from the global RNG (e.g. a sample grid)
            torch.rand(1000)

        fit(model, mse(model), (x, y), val_data=(x, y), epochs=epochs, batch_size=16, device="cpu", progress=False,
            checkpoint=tmp_path / folder / "ck.pt", metrics_path=tmp_path / folder / "m.jsonl", resume=resume, ema_decay=0.9,
            grad_clip=1.0, on_epoch_end=draw_noise)
        return Checkpoint(tmp_path / folder / "ck.pt").load()

    straight = run("straight", 4)
    run("extended", 2)
    extended = run("extended", 4, resume=True)
    for key in ("module", "ema"):
        for name, value in straight[key].items():
            assert torch.equal(value, extended[key][name]), (key, name)
    assert (tmp_path / "straight/m.jsonl").read_bytes() == (tmp_path / "extended/m.jsonl").read_bytes()


def test_a_caller_owned_ema_is_the_one_the_loop_updates_and_checkpoints(tmp_path):
    from ppl_dgm.train import make_ema

    x, y = regression_data()
    model = make_model()
    ema = make_ema(model, 0.9)
    fit(model, mse(model), (x, y), epochs=2, batch_size=16, device="cpu", progress=False, ema=ema, checkpoint=tmp_path / "ck.pt")
    assert int(ema.n_averaged) == 14  # 7 steps per epoch
    saved = Checkpoint(tmp_path / "ck.pt").load()["ema"]
    assert all(torch.equal(value, saved[name]) for name, value in ema.state_dict().items())
    assert not any(p.requires_grad for p in ema.parameters())
    with pytest.raises(ValueError, match="give ema .* or ema_decay, not both; got ema_decay=0.9"):
        fit(model, mse(model), (x, y), epochs=1, batch_size=16, progress=False, ema=ema, ema_decay=0.9)
    with pytest.raises(TypeError, match="ema must be made by ppl_dgm.train.make_ema"):
        fit(model, mse(model), (x, y), epochs=1, batch_size=16, progress=False, ema=make_model())
