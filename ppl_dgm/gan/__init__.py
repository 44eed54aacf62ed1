"""Generative adversarial networks: objectives and closed forms, the critic as a W1 estimator, networks, the style-based
generator, the two-player loop.

Importing this package does not import scipy or matplotlib.
"""
from ppl_dgm.gan.losses import (
    OBJECTIVE_NAMES,
    Objective,
    apply_spectral_norm,
    earth_movers_distance,
    generator_criterion,
    gradient_penalty,
    hinge,
    least_squares,
    minimax,
    non_saturating,
    objective,
    optimal_discriminator,
    value_function,
    wasserstein,
    wasserstein_gp,
)
from ppl_dgm.gan.critic import estimate_w1
from ppl_dgm.gan.nets import DCGANDiscriminator, DCGANGenerator, PatchDiscriminator, Pix2PixGenerator, ResnetGenerator
from ppl_dgm.gan.stylegan import MappingNetwork, StyleGenerator
from ppl_dgm.gan.trainer import fit_gan, train_adversarial

__all__ = [
    "OBJECTIVE_NAMES",
    "Objective",
    "objective",
    "minimax",
    "non_saturating",
    "least_squares",
    "wasserstein",
    "wasserstein_gp",
    "hinge",
    "gradient_penalty",
    "apply_spectral_norm",
    "optimal_discriminator",
    "value_function",
    "generator_criterion",
    "earth_movers_distance",
    "estimate_w1",
    "DCGANGenerator",
    "DCGANDiscriminator",
    "Pix2PixGenerator",
    "PatchDiscriminator",
    "ResnetGenerator",
    "MappingNetwork",
    "StyleGenerator",
    "fit_gan",
    "train_adversarial",
]
