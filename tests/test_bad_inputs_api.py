"""Bad calls of the public math API raise at the entry point, naming the argument and its value.

Each row is one bad call, the exception type and a literal part of the message (matched with
``re.escape``). A comment above a row says what the call did before its entry check existed
(returned NaN, broadcast silently, or died inside torch); rows without one guard messages that
were already right.
"""
import math
import re

import pytest
import torch
from torch import nn

from ppl_dgm.data import load_dataset, toy2d, toy2d_log_prob, toy2d_modes
from ppl_dgm.diffusion import (
    NoiseSchedule,
    cosine_schedule,
    ddim_encode,
    ddim_timesteps,
    drop_labels,
    linear_schedule,
    sample_ancestral,
    sample_ddim,
    simple_loss,
)
from ppl_dgm.gan import losses
from ppl_dgm.lvm import PPCA, FactorAnalysis, GaussianMixture
from ppl_dgm.metrics import (
    bits_per_dim,
    frechet_distance,
    frechet_distance_of_features,
    iwae_log_likelihood,
    kernel_distance,
    mode_coverage,
    sample_quality,
)
from ppl_dgm.nn import MLP, ConvDecoder, ConvEncoder, ConvFeatureEncoder, TimeConditionedMLP, UNet
from ppl_dgm.sde import (
    VESDE,
    VPSDE,
    SubVPSDE,
    annealed_langevin,
    dsm_loss,
    langevin_dynamics,
    ode_bits_per_dim,
    ode_log_likelihood,
    sample_ode,
    sample_pc,
    sample_reverse_sde,
    score_sde_loss,
)
from ppl_dgm.vae import VAE, GaussianLikelihood, conv_vae, make_likelihood, mlp_vae

NAN, INF = math.nan, math.inf


def zero_eps(x, t, y=None):
    return torch.zeros_like(x)


def first_column(x, t, y=None):
    """A network with the wrong output shape (B, 1): broadcasting would hide it."""
    return x[:, :1]


def trailing_singleton(x, t, y=None):
    return x.unsqueeze(-1)


def schedule():
    return linear_schedule(10)


def batch(*shape):
    return torch.linspace(-1.0, 1.0, math.prod(shape)).reshape(shape)


def times_with_one_nan():
    return torch.tensor([0.5, NAN, 0.5, 0.5], dtype=torch.float64)


def features_with(value):
    features = batch(3, 2).double()
    features[0, 0] = value
    return features


DATA = [
    pytest.param(lambda: load_dataset("mnistx"), ValueError,
                 "name='mnistx' is not a known dataset; expected one of ('mnist5k'", id="load_dataset-unknown-name"),
    pytest.param(lambda: load_dataset("digits", split="val"), ValueError,
                 "split='val' is not a known split; expected one of ('train', 'test', 'all')", id="load_dataset-bad-split"),
    pytest.param(lambda: load_dataset("mnist", root="/nonexistent/ppl_dgm_data"), FileNotFoundError,
                 "found no mnist data under root='/nonexistent/ppl_dgm_data'", id="load_dataset-missing-root"),
    pytest.param(lambda: load_dataset("fashion_mnist"), FileNotFoundError,
                 "load_dataset(name='fashion_mnist') needs root=<folder with the data>; got root=None", id="load_dataset-no-root"),
    pytest.param(lambda: load_dataset("digits", root=3), TypeError,
                 "root must be a str, an os.PathLike or None; got root=3", id="load_dataset-root-type"),
    pytest.param(lambda: toy2d("moon", 5), ValueError, "name='moon' is not a known toy density", id="toy2d-unknown-name"),
    pytest.param(lambda: toy2d("moons", 0), ValueError, "n must be a positive int; got n=0", id="toy2d-n-zero"),
    pytest.param(lambda: toy2d("moons", -3), ValueError, "n must be a positive int; got n=-3", id="toy2d-n-negative"),
    pytest.param(lambda: toy2d("moons", 2.5), TypeError, "n must be a positive int; got n=2.5 of type float", id="toy2d-n-float"),
    pytest.param(lambda: toy2d_log_prob("moons", torch.zeros(3, 2)), ValueError,
                 "name='moons' has no closed-form density", id="toy2d_log_prob-no-closed-form"),
    pytest.param(lambda: toy2d_log_prob("gaussian", torch.zeros(3, 3)), ValueError,
                 "x must be a floating tensor of shape (n, 2); got shape (3, 3)", id="toy2d_log_prob-x-shape"),
    pytest.param(lambda: toy2d_modes("checkerboard"), ValueError,
                 "name='checkerboard' is not a Gaussian mixture with known modes", id="toy2d_modes-not-a-mixture"),
]

NN = [
    pytest.param(lambda: UNet(channels=0), ValueError, "channels must be a positive int, got 0", id="UNet-channels-zero"),
    pytest.param(lambda: UNet(channel_mults=()), ValueError,
                 "channel_mults must contain at least one positive int, got ()", id="UNet-channel_mults-empty"),
    pytest.param(lambda: UNet(channel_mults=(1, 0)), ValueError,
                 "channel_mults must be a sequence of positive ints, got (1, 0)", id="UNet-channel_mults-zero"),
    pytest.param(lambda: UNet(channel_mults=2), TypeError,
                 "channel_mults must be a sequence of positive ints, got 2", id="UNet-channel_mults-int"),
    pytest.param(lambda: UNet(image_size=0), ValueError, "image_size must be a positive int, got 0", id="UNet-image_size-zero"),
    pytest.param(lambda: UNet(image_size=30), ValueError,
                 "attention_resolutions must be sides of the levels of a 30x30 input, (30, 15, 8), got (7,)",
                 id="UNet-attention-not-a-level-side"),
    pytest.param(lambda: UNet(channels=30), ValueError,
                 "groups must divide channels and every level width channels * mult, not 30", id="UNet-groups-not-dividing"),
    pytest.param(lambda: UNet(dropout=1.0), ValueError, "dropout must be a probability in [0, 1), got 1.0", id="UNet-dropout-one"),
    pytest.param(
        lambda: UNet(channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(14,))(batch(1, 1, 30, 30), 0.5),
        ValueError, "x has spatial size (30, 30), but attention_resolutions=(14,) were placed for image_size=28",
        id="UNet-forward-image-size-mismatch"),
    pytest.param(lambda: MLP(0, 2), ValueError, "in_features must be a positive int, got 0", id="MLP-in_features-zero"),
    pytest.param(lambda: MLP(2, -1), ValueError, "out_features must be a positive int, got -1", id="MLP-out_features-negative"),
    pytest.param(lambda: MLP(2.0, 2), TypeError, "in_features must be an int, got 2.0 of type float", id="MLP-in_features-float"),
    pytest.param(lambda: MLP(2, 2, hidden=(4, 0)), ValueError,
                 "hidden must be a sequence of positive ints, got (4, 0)", id="MLP-hidden-zero"),
    pytest.param(lambda: TimeConditionedMLP(0), ValueError, "dim must be a positive int, got 0", id="TimeConditionedMLP-dim-zero"),
    pytest.param(lambda: ConvEncoder((1, 30, 30), 8), ValueError,
                 "image_shape must be one of (C, 8, 8), (C, 28, 28), (C, 32, 32), got (1, 30, 30)", id="ConvEncoder-side-30"),
    pytest.param(lambda: ConvDecoder(4, (1, 28, 32)), ValueError,
                 "image_shape must be one of (C, 8, 8), (C, 28, 28), (C, 32, 32), got (1, 28, 32)", id="ConvDecoder-not-square"),
    pytest.param(lambda: ConvEncoder((1, 28, 28), 8, channels=0), ValueError,
                 "channels must be a positive int, got 0", id="ConvEncoder-channels-zero"),
    pytest.param(lambda: ConvFeatureEncoder((1, 28, 28), 0), ValueError,
                 "out_channels must be a positive int, got 0", id="ConvFeatureEncoder-out_channels-zero"),
]

DIFFUSION = [
    pytest.param(lambda: linear_schedule(0), ValueError, "num_steps must be a positive int, got 0", id="linear_schedule-T-zero"),
    pytest.param(lambda: cosine_schedule(0), ValueError, "num_steps must be a positive int, got 0", id="cosine_schedule-T-zero"),
    pytest.param(lambda: linear_schedule(10, beta_end=1.0), ValueError,
                 "beta_end must be a float in (0, 1), got 1.0", id="linear_schedule-beta_end-one"),
    pytest.param(lambda: NoiseSchedule(torch.tensor([0.1, 1.5])), ValueError,
                 "betas must lie in (0, 1), got betas[1] = 1.5 (step t=2)", id="NoiseSchedule-beta-above-one"),
    pytest.param(lambda: sample_ddim(zero_eps, schedule(), (2, 3), steps=0), ValueError,
                 "steps must be a positive int, got 0", id="sample_ddim-steps-zero"),
    pytest.param(lambda: sample_ddim(zero_eps, schedule(), (2, 3), steps=11), ValueError,
                 "steps must be at most T=10, got 11", id="sample_ddim-steps-above-T"),
    pytest.param(lambda: sample_ddim(zero_eps, schedule(), (2, 3), steps=5, eta=-0.5), ValueError,
                 "eta must be a float in [0, 1], got -0.5", id="sample_ddim-eta-negative"),
    pytest.param(lambda: sample_ddim(zero_eps, schedule(), (2, 3), steps=5, eta=NAN), ValueError,
                 "eta must be a float in [0, 1], got nan", id="sample_ddim-eta-nan"),
    pytest.param(lambda: sample_ddim(zero_eps, schedule(), (2, 3.0), steps=5), ValueError,
                 "shape must be a sequence of positive ints (B, ...), got (2, 3.0)", id="sample_ddim-shape-float"),
    pytest.param(lambda: sample_ancestral(zero_eps, schedule(), 3), ValueError,
                 "shape must be a sequence of positive ints (B, ...), got 3", id="sample_ancestral-shape-int"),
    # was "TypeError: 'NoneType' object is not iterable"
    pytest.param(lambda: sample_ancestral(zero_eps, schedule(), None), ValueError,
                 "shape must be a sequence of positive ints (B, ...), got None", id="sample_ancestral-shape-None"),
    # was "AttributeError: 'list' object has no attribute 'to'"
    pytest.param(lambda: sample_ancestral(zero_eps, schedule(), None, x_T=[[0.0]]), TypeError,
                 "x_T must be a floating tensor (B, ...) or None, got list", id="sample_ancestral-x_T-list"),
    pytest.param(lambda: sample_ancestral(zero_eps, schedule(), (2, 3), y=torch.zeros(2, dtype=torch.long), guidance_scale=-1.0),
                 ValueError, "guidance_scale must be a float >= 0 (w of Ho & Salimans 2022), got -1.0",
                 id="sample_ancestral-guidance_scale-negative"),
    pytest.param(lambda: sample_ddim(zero_eps, schedule(), (2, 3), steps=5, guidance_scale=1.0), ValueError,
                 "guidance_scale=1.0 needs class labels y, got y=None", id="sample_ddim-guidance-without-y"),
    pytest.param(lambda: sample_ancestral(zero_eps, schedule(), (2, 3), variance="sigma"), ValueError,
                 "variance='sigma' is not known; expected 'beta' or 'beta_tilde'", id="sample_ancestral-variance"),
    # was "AttributeError: 'NoneType' object has no attribute 'num_steps'"
    pytest.param(lambda: ddim_timesteps(None, 5), TypeError,
                 "schedule must be a NoiseSchedule, got NoneType", id="ddim_timesteps-schedule-None"),
    pytest.param(lambda: ddim_timesteps(schedule(), [3, 2]), ValueError,
                 "steps must be an int or a strictly increasing sequence of steps in 1..10, got [3, 2]", id="ddim_timesteps-decreasing"),
    # was "AttributeError: 'list' object has no attribute 'clone'"
    pytest.param(lambda: ddim_encode(zero_eps, schedule(), [[0.0]], steps=2), TypeError,
                 "x0 must be a floating tensor (B, ...), got list", id="ddim_encode-x0-list"),
    # was silent: a (B, 1) ε broadcast against (B, 3) noise and gave a finite loss
    pytest.param(lambda: simple_loss(first_column, schedule(), batch(4, 3)), ValueError,
                 "eps_model's output and x0 must have the same shape, got (4, 1) and (4, 3)", id="simple_loss-output-B1"),
    # was a RuntimeError from inside the subtraction, naming no argument
    pytest.param(lambda: simple_loss(trailing_singleton, schedule(), batch(4, 3)), ValueError,
                 "eps_model's output and x0 must have the same shape, got (4, 3, 1) and (4, 3)", id="simple_loss-output-extra-dim"),
    pytest.param(lambda: simple_loss(zero_eps, None, batch(4, 3)), TypeError,
                 "schedule must be a NoiseSchedule (e.g. linear_schedule()), got NoneType", id="simple_loss-schedule-None"),
    pytest.param(lambda: simple_loss(zero_eps, schedule(), torch.zeros(4, 3, dtype=torch.long)), TypeError,
                 "x0 must be a floating tensor (B, ...), got torch.int64", id="simple_loss-x0-int"),
    pytest.param(lambda: drop_labels(torch.zeros(3, dtype=torch.long), 1.5), ValueError,
                 "p_uncond must be a probability in [0, 1], got 1.5", id="drop_labels-p_uncond"),
]

SDE = [
    pytest.param(lambda: VPSDE(beta_min=5.0, beta_max=1.0), ValueError,
                 "beta_max must exceed beta_min=5.0, got 1.0", id="VPSDE-beta_min-above-beta_max"),
    pytest.param(lambda: SubVPSDE(beta_min=-1.0), ValueError,
                 "beta_min must be a positive finite float, got -1.0", id="SubVPSDE-beta_min-negative"),
    pytest.param(lambda: VESDE(sigma_min=-0.1), ValueError,
                 "sigma_min must be a positive finite float, got -0.1", id="VESDE-sigma_min-negative"),
    pytest.param(lambda: VESDE(sigma_min=10.0, sigma_max=1.0), ValueError,
                 "sigma_max must exceed sigma_min=10.0, got 1.0", id="VESDE-sigma_min-above-sigma_max"),
    # was NaN: t = NaN slipped through the range check and gave a NaN mean and std
    pytest.param(lambda: VPSDE().marginal_prob(batch(4, 2), NAN), ValueError,
                 "t must lie in [0, T=1.0], got 4 NaN value(s) of 4", id="VPSDE.marginal_prob-t-nan"),
    pytest.param(lambda: VESDE().marginal_prob(batch(4, 2), times_with_one_nan()), ValueError,
                 "t must lie in [0, T=1.0], got 1 NaN value(s) of 4", id="VESDE.marginal_prob-one-t-nan"),
    pytest.param(lambda: SubVPSDE().sde(batch(4, 2), NAN), ValueError,
                 "t must lie in [0, T=1.0], got 4 NaN value(s) of 4", id="SubVPSDE.sde-t-nan"),
    pytest.param(lambda: VESDE().sde(batch(4, 2), NAN), ValueError,
                 "t must lie in [0, T=1.0], got 4 NaN value(s) of 4", id="VESDE.sde-t-nan"),
    pytest.param(lambda: VPSDE().reverse(lambda x, t: -x).sde(batch(4, 2), times_with_one_nan()), ValueError,
                 "t must lie in [0, T=1.0], got 1 NaN value(s) of 4", id="ReverseSDE.sde-t-nan"),
    pytest.param(lambda: VPSDE().marginal_prob(batch(4, 2), 1.5), ValueError,
                 "t must lie in [0, T=1.0], got values in [1.5, 1.5]", id="VPSDE.marginal_prob-t-above-T"),
    pytest.param(lambda: VESDE().sde(batch(4, 2), -0.1), ValueError,
                 "t must lie in [0, T=1.0], got values in [-0.1, -0.1]", id="VESDE.sde-t-negative"),
    pytest.param(lambda: VPSDE().sde(batch(4, 2), INF), ValueError,
                 "t must lie in [0, T=1.0], got values in [inf, inf]", id="VPSDE.sde-t-inf"),
    pytest.param(lambda: VPSDE().sde(batch(4, 2), torch.full((3,), 0.5)), ValueError,
                 "t must be a float or a float tensor of shape (4,) matching x", id="VPSDE.sde-t-shape"),
    # was "TypeError: 'NoneType' object is not iterable"
    pytest.param(lambda: VPSDE().prior_sampling(None), ValueError,
                 "shape must be a sequence of positive ints (B, ...), got None", id="prior_sampling-shape-None"),
    pytest.param(lambda: sample_pc(zero_eps, VPSDE(), (2, 2), steps=0), ValueError,
                 "steps must be a positive int, got 0", id="sample_pc-steps-zero"),
    pytest.param(lambda: sample_pc(zero_eps, VPSDE(), (2, 2), steps=2, corrector_steps=-1), ValueError,
                 "corrector_steps must be an int >= 0, got -1", id="sample_pc-corrector_steps-negative"),
    pytest.param(lambda: sample_pc(zero_eps, VPSDE(), (2, 2), steps=2, snr=0.0), ValueError,
                 "snr must be a positive float (Song et al. 2021 use 0.16), got 0.0", id="sample_pc-snr-zero"),
    pytest.param(lambda: sample_pc(zero_eps, VPSDE(), (2, 2), steps=2, eps=NAN), ValueError,
                 "eps must be a float in (0, T=1.0), got nan", id="sample_pc-eps-nan"),
    pytest.param(lambda: sample_reverse_sde(zero_eps, VPSDE(), (2, 2), steps=0), ValueError,
                 "steps must be a positive int, got 0", id="sample_reverse_sde-steps-zero"),
    pytest.param(lambda: sample_reverse_sde(zero_eps, VPSDE(), (2, 2), steps=2, method="rk4"), ValueError,
                 "method='rk4' is not known; expected one of ('euler', 'srk', 'heun')", id="sample_reverse_sde-method"),
    # was "AttributeError: 'list' object has no attribute 'to'"
    pytest.param(lambda: sample_reverse_sde(zero_eps, VPSDE(), None, steps=2, x_T=[[0.0]]), TypeError,
                 "x_T must be a floating tensor (B, ...) or None, got list", id="sample_reverse_sde-x_T-list"),
    pytest.param(lambda: sample_ode(zero_eps, VPSDE(), (2, 2), atol=-1e-3), ValueError,
                 "atol must be a float in (0, 1), got -0.001", id="sample_ode-atol-negative"),
    pytest.param(lambda: langevin_dynamics(lambda x: -x, batch(4, 2), step_size=0.1, steps=0), ValueError,
                 "steps must be a positive int, got 0", id="langevin_dynamics-steps-zero"),
    pytest.param(lambda: langevin_dynamics(lambda x: -x, batch(4, 2), step_size=NAN, steps=2), ValueError,
                 "step_size must be a positive float, got nan", id="langevin_dynamics-step_size-nan"),
    # was "TypeError: 'NoneType' object is not iterable"
    pytest.param(lambda: annealed_langevin(lambda x, sigma: -x, torch.tensor([2.0, 1.0]), None), ValueError,
                 "shape must be a sequence of positive ints (B, ...), got None", id="annealed_langevin-shape-None"),
    pytest.param(lambda: ode_log_likelihood(zero_eps, VPSDE(), batch(4, 2), rtol=0.0), ValueError,
                 "rtol must be a float in (0, 1), got 0.0", id="ode_log_likelihood-rtol-zero"),
    pytest.param(lambda: ode_log_likelihood(zero_eps, VPSDE(), batch(4, 2), rtol=NAN), ValueError,
                 "rtol must be a float in (0, 1), got nan", id="ode_log_likelihood-rtol-nan"),
    pytest.param(lambda: ode_log_likelihood(zero_eps, VPSDE(), batch(4, 2), safety=1.5), ValueError,
                 "safety must be a float in (0, 1], got 1.5", id="ode_log_likelihood-safety"),
    # was NaN: the solver integrated a NaN point to a NaN log-likelihood
    pytest.param(lambda: ode_log_likelihood(zero_eps, VPSDE(), features_with(NAN).float()), ValueError,
                 "x must be finite, got 1 NaN and 0 infinite entries in a tensor of shape (3, 2)", id="ode_log_likelihood-x-nan"),
    # was "ValueError: range() arg 3 must not be zero", naming no argument
    pytest.param(lambda: ode_bits_per_dim(zero_eps, VPSDE(), batch(2, 1, 2, 2), batch_size=0), ValueError,
                 "batch_size must be a positive int, got 0", id="ode_bits_per_dim-batch_size-zero"),
    # were silent: a (B, 1) network output broadcast against (B, 2) noise
    pytest.param(lambda: dsm_loss(first_column, batch(4, 2), torch.tensor([1.0, 0.5])), ValueError,
                 "score_model's output and x0 must have the same shape, got (4, 1) and (4, 2)", id="dsm_loss-output-B1"),
    pytest.param(lambda: score_sde_loss(first_column, VPSDE(), batch(4, 2)), ValueError,
                 "eps_model's output and x0 must have the same shape, got (4, 1) and (4, 2)", id="score_sde_loss-output-B1"),
]

ASYMMETRIC = torch.tensor([[1.0, 0.5], [0.0, 1.0]], dtype=torch.float64)
INDEFINITE = torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
ZERO2, EYE2 = torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)

METRICS = [
    # were NaN: the Fréchet distance of non-finite features was returned as nan
    pytest.param(lambda: frechet_distance_of_features(features_with(NAN), batch(5, 2)), ValueError,
                 "features1 must be finite, got 1 NaN and 0 infinite entries in a tensor of shape (3, 2)", id="frechet-features1-nan"),
    pytest.param(lambda: frechet_distance_of_features(batch(5, 2), features_with(INF)), ValueError,
                 "features2 must be finite, got 0 NaN and 1 infinite entries in a tensor of shape (3, 2)", id="frechet-features2-inf"),
    pytest.param(lambda: frechet_distance(torch.tensor([NAN, 0.0]), EYE2, ZERO2, EYE2), ValueError,
                 "mean1 must be finite, got 1 NaN and 0 infinite entries in a tensor of shape (2,)", id="frechet-mean1-nan"),
    pytest.param(lambda: frechet_distance(ZERO2, EYE2, ZERO2, torch.full((2, 2), NAN)), ValueError,
                 "covariance2 must be finite, got 4 NaN and 0 infinite entries", id="frechet-covariance2-nan"),
    # were silent: eigh read one triangle of an asymmetric matrix, negative eigenvalues were clamped to 0
    pytest.param(lambda: frechet_distance(ZERO2, ASYMMETRIC, ZERO2, EYE2), ValueError,
                 "covariance1 must be a symmetric covariance matrix, got max |covariance1 - covariance1.T| = 0.5",
                 id="frechet-covariance1-asymmetric"),
    pytest.param(lambda: frechet_distance(ZERO2, EYE2, ZERO2, INDEFINITE), ValueError,
                 "covariance2 must be positive semi-definite, got smallest eigenvalue -1", id="frechet-covariance2-indefinite"),
    pytest.param(lambda: frechet_distance(ZERO2, EYE2, torch.zeros(3), torch.eye(3)), ValueError,
                 "means (d,) and covariances (d, d) must match, got mean1 of shape (2,), covariance1 of shape (2, 2), "
                 "mean2 of shape (3,), covariance2 of shape (3, 3)", id="frechet-dims-mismatch"),
    pytest.param(lambda: frechet_distance_of_features(batch(5, 2), batch(5, 3)), ValueError,
                 "features must be (N, d) with the same d and N >= 2, got features1 of shape (5, 2) and features2 of shape (5, 3)",
                 id="frechet-features-dims-mismatch"),
    # was NaN: KID of non-finite features was (nan, nan)
    pytest.param(lambda: kernel_distance(features_with(NAN), batch(5, 2), num_subsets=2), ValueError,
                 "features1 must be finite, got 1 NaN", id="kernel_distance-features1-nan"),
    pytest.param(lambda: kernel_distance(batch(5, 2), batch(5, 3)), ValueError,
                 "got features1 of shape (5, 2) and features2 of shape (5, 3)", id="kernel_distance-dims-mismatch"),
    # was silent: NaN samples passed the [0, 1] range check (every comparison with NaN is False)
    pytest.param(lambda: sample_quality(torch.full((2, 1, 28, 28), NAN)), ValueError,
                 "samples must be finite, got 1568 NaN and 0 infinite entries", id="sample_quality-samples-nan"),
    pytest.param(lambda: iwae_log_likelihood(lambda x: None, lambda x: None, batch(4, 2), 0), ValueError,
                 "k must be a positive int, got 0", id="iwae-k-zero"),
    pytest.param(lambda: bits_per_dim(1.0, 0), ValueError, "num_dims must be a positive int, got 0", id="bits_per_dim-num_dims-zero"),
    # was silent: num_stds = NaN counted no sample as high quality
    pytest.param(lambda: mode_coverage(batch(4, 2), "ring8", num_stds=NAN), ValueError,
                 "num_stds must be a finite float > 0, got nan", id="mode_coverage-num_stds-nan"),
    pytest.param(lambda: mode_coverage(batch(4, 2), "ring8", std=-1.0), ValueError,
                 "std must be a float > 0, got -1.0", id="mode_coverage-std-negative"),
]

GAN = [
    # were silent: each mean was taken separately, so outputs of different shapes went unnoticed
    pytest.param(lambda: losses.minimax_discriminator_loss(batch(4), batch(4, 1)), ValueError,
                 "real_logits and fake_logits must have the same shape, got (4,) and (4, 1)", id="minimax-shapes"),
    pytest.param(lambda: losses.least_squares_discriminator_loss(batch(4), batch(3)), ValueError,
                 "real and fake must have the same shape, got (4,) and (3,)", id="least_squares-shapes"),
    pytest.param(lambda: losses.wasserstein_discriminator_loss(batch(4, 1), batch(4)), ValueError,
                 "real and fake must have the same shape, got (4, 1) and (4,)", id="wasserstein-shapes"),
    pytest.param(lambda: losses.hinge_discriminator_loss(batch(4, 1), batch(4)), ValueError,
                 "real and fake must have the same shape, got (4, 1) and (4,)", id="hinge-shapes"),
    pytest.param(lambda: losses.objective("hinge").discriminator_loss(batch(8), batch(8, 1, 1)), ValueError,
                 "real and fake must have the same shape, got (8,) and (8, 1, 1)", id="objective-hinge-shapes"),
    pytest.param(lambda: losses.gradient_penalty(lambda x: x.sum(1), batch(4, 2), batch(3, 2)), ValueError,
                 "real and fake must have the same shape, got (4, 2) and (3, 2)", id="gradient_penalty-shapes"),
    # were silent: d (4, 1) against p (4,) broadcast to a (4, 4) sum; so did mis-shaped quadrature weights
    pytest.param(lambda: losses.value_function(batch(4, 1).sigmoid(), batch(4).sigmoid(), batch(4).sigmoid()), ValueError,
                 "d and p must have the same shape, got (4, 1) and (4,)", id="value_function-d-shape"),
    pytest.param(lambda: losses.value_function(batch(4).sigmoid(), batch(4).sigmoid(), batch(4).sigmoid(), torch.ones(2)),
                 ValueError, "weights must be a number or a tensor of the shape of p, (4,), got (2,)", id="value_function-weights-shape"),
    pytest.param(lambda: losses.generator_criterion(batch(4).sigmoid(), batch(4).sigmoid(), torch.ones(4, 1)), ValueError,
                 "weights must be a number or a tensor of the shape of p, (4,), got (4, 1)", id="generator_criterion-weights-shape"),
    pytest.param(lambda: losses.optimal_discriminator(batch(4).sigmoid(), batch(3).sigmoid()), ValueError,
                 "p and q must have the same shape, got (4,) and (3,)", id="optimal_discriminator-shapes"),
    pytest.param(lambda: losses.objective("wgan"), ValueError,
                 "loss='wgan' is not a known GAN objective; expected one of ('minimax'", id="objective-unknown"),
    pytest.param(lambda: losses.wasserstein_gp(-1.0), ValueError,
                 "penalty_weight must be a finite float >= 0, got -1.0", id="wasserstein_gp-penalty_weight"),
]

VAE_LVM = [
    pytest.param(lambda: mlp_vae((1, 8, 8), latent_dim=0), ValueError, "latent_dim must be a positive int, got 0", id="mlp_vae-latent_dim-zero"),
    pytest.param(lambda: conv_vae((1, 8, 8), latent_dim=0), ValueError, "latent_dim must be a positive int, got 0", id="conv_vae-latent_dim-zero"),
    pytest.param(lambda: VAE(nn.Identity(), nn.Identity(), nn.Identity(), 0), ValueError,
                 "latent_dim must be a positive int, got 0", id="VAE-latent_dim-zero"),
    pytest.param(lambda: mlp_vae((1, 8, 8), likelihood="poisson"), ValueError,
                 "likelihood='poisson' is not known; expected one of ('bernoulli', 'gaussian', 'gaussian_network', 'discretized_gaussian')",
                 id="mlp_vae-likelihood-unknown"),
    pytest.param(lambda: make_likelihood("laplace", (1, 8, 8)), ValueError,
                 "likelihood='laplace' is not known", id="make_likelihood-unknown"),
    # were NaN: the learned scale started at softplus⁻¹(NaN), so every log-likelihood was NaN
    pytest.param(lambda: GaussianLikelihood((1, 2, 2), init_scale=NAN), ValueError,
                 "init_scale must be finite and exceed min_scale=0.001, got nan", id="GaussianLikelihood-init_scale-nan"),
    pytest.param(lambda: GaussianLikelihood((1, 2, 2), min_scale=NAN), ValueError,
                 "min_scale must be a finite float >= 0, got nan", id="GaussianLikelihood-min_scale-nan"),
    pytest.param(lambda: GaussianLikelihood((1, 2, 2), scale=INF), ValueError,
                 "scale must be positive and finite, or None (learned), got inf", id="GaussianLikelihood-scale-inf"),
    pytest.param(lambda: GaussianMixture(0, 2), ValueError, "num_components must be a positive int, got 0", id="GaussianMixture-zero-components"),
    pytest.param(lambda: GaussianMixture(2, 2, covariance_type="spherical"), ValueError,
                 "covariance_type must be one of ('full', 'diag'), got 'spherical'", id="GaussianMixture-covariance_type"),
    # was silent: reg_covar = inf made every covariance infinite
    pytest.param(lambda: GaussianMixture(2, 2, reg_covar=INF), ValueError,
                 "reg_covar must be a finite non-negative float, got inf", id="GaussianMixture-reg_covar-inf"),
    pytest.param(lambda: FactorAnalysis(3, 0), ValueError, "latent_dim must be a positive int, got 0", id="FactorAnalysis-latent_dim-zero"),
    pytest.param(lambda: PPCA(2, 2), ValueError, "latent_dim must be smaller than data_dim=2, got latent_dim=2", id="PPCA-latent_dim-too-big"),
]


TABLES = {"data": DATA, "nn": NN, "diffusion": DIFFUSION, "sde": SDE, "metrics": METRICS, "gan": GAN, "vae_lvm": VAE_LVM}


@pytest.mark.parametrize("call, error, message", [case for table in TABLES.values() for case in table])
def test_bad_call_raises_naming_the_argument(call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call()


def test_the_table_has_at_least_45_distinct_bad_calls():
    ids = [case.id for table in TABLES.values() for case in table]
    assert len(ids) == len(set(ids)) >= 45


# ---- the new checks let good inputs through unchanged ------------------------------------------------------


def test_sde_accepts_the_closed_interval_ends():
    x = batch(4, 2)
    for sde in (VPSDE(), SubVPSDE(), VESDE()):
        for t in (0.0, 1.0):
            mean, std = sde.marginal_prob(x, t)
            assert torch.isfinite(mean).all() and torch.isfinite(std).all()


def test_frechet_accepts_rank_deficient_and_float32_covariances():
    generator = torch.Generator().manual_seed(0)
    # N = 3 < d = 10: 8 zero eigenvalues, 3 of them computed as about -1e-16 (FD ≈ 0 up to √ε-level error)
    few = torch.randn(3, 10, generator=generator, dtype=torch.float64)
    assert frechet_distance_of_features(few, few) == pytest.approx(0.0, abs=1e-5)
    # N = 20 < d = 64 in float32: torch.cov's smallest eigenvalue comes out about -3e-7
    features = torch.randn(20, 64, generator=generator)
    mean, covariance = features.mean(0), torch.cov(features.T)
    assert frechet_distance(mean, covariance, mean, covariance) == pytest.approx(0.0, abs=1e-2)


def test_gan_losses_accept_equal_shapes():
    real, fake = batch(4, 1), batch(4, 1).flip(0)
    expected = torch.relu(1.0 - real).mean() + torch.relu(1.0 + fake).mean()
    torch.testing.assert_close(losses.hinge_discriminator_loss(real, fake), expected)
    p = torch.tensor([0.25, 0.75], dtype=torch.float64)
    assert float(losses.value_function(torch.full_like(p, 0.5), p, p, torch.tensor(1.0))) == pytest.approx(-math.log(4.0))
