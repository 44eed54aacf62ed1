import torch
from torch import nn


class LinearEps(nn.Module):
    """ε(x, t) = a·x + c·t + b: a known, smooth ε-network for closed-form checks."""

    def __init__(self, a=0.3, c=-0.5, b=0.1):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(float(a)))
        self.c = nn.Parameter(torch.tensor(float(c)))
        self.b = nn.Parameter(torch.tensor(float(b)))

    def forward(self, x, t, y=None):
        return self.a * x + self.c * t.view(-1, *([1] * (x.ndim - 1))) + self.b


class GaussianOptimalEps(nn.Module):
    """The optimal ε for data N(μ, σ²I): ε*(x_t, t) = (x_t − √ᾱ_t μ)·√(1−ᾱ_t)/(ᾱ_t σ² + 1 − ᾱ_t)."""

    def __init__(self, schedule, mean, std):
        super().__init__()
        self.register_buffer("alpha_bar", schedule.alpha_bar.clone())
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float64))
        self.std = float(std)
        self.num_steps = schedule.num_steps
        self.calls = 0

    def forward(self, x, t, y=None):
        self.calls += 1
        step = torch.round(t.double() * self.num_steps).long()
        alpha_bar = self.alpha_bar[step - 1].view(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        mean = self.mean.to(x.dtype)
        return (x - alpha_bar.sqrt() * mean) * (1 - alpha_bar).sqrt() / (alpha_bar * self.std**2 + 1 - alpha_bar)


class LabelShiftEps(nn.Module):
    """ε(x, t, y) = x·t + (y + 1) (null label −1 → x·t); counts its calls and batch sizes."""

    def __init__(self):
        super().__init__()
        self.batch_sizes = []

    def forward(self, x, t, y=None):
        self.batch_sizes.append(x.shape[0])
        shift = torch.zeros(x.shape[0]) if y is None else (y + 1).to(x.dtype)
        return x * t.view(-1, 1) + shift.view(-1, 1)
