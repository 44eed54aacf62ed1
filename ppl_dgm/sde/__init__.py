"""Score-based models: SDEs, score matching (denoising, explicit, implicit, sliced), Langevin, reverse-SDE,
PC and probability-flow samplers, and energy-based models with their normalizing constant by quadrature (2-D).

Importing this package does not import torchsde or torchdiffeq (they load inside the samplers).
"""
from ppl_dgm.sde.ebm import (
    EnergyModel,
    GridDensity,
    energy_loss,
    grid_density,
    log_partition,
    quadrature_log_prob,
    sample_langevin,
)
from ppl_dgm.sde.flow import ODELikelihood, ode_bits_per_dim, ode_log_likelihood, probability_flow_field, sample_ode
from ppl_dgm.sde.langevin import annealed_langevin, langevin_dynamics
from ppl_dgm.sde.losses import (
    check_sigmas,
    dsm_loss,
    explicit_score_matching,
    geometric_sigmas,
    implicit_score_matching,
    score_sde_loss,
    sliced_score_matching,
)
from ppl_dgm.sde.ncsn import NoiseConditionalScoreNet, noise_level_time
from ppl_dgm.sde.pc import langevin_corrector_step, sample_pc
from ppl_dgm.sde.reverse import GeneratorBrownian, sample_reverse_sde
from ppl_dgm.sde.sdes import SDE, VESDE, VPSDE, ReverseSDE, SubVPSDE, score_fn

__all__ = [
    "SDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "ReverseSDE",
    "score_fn",
    "dsm_loss",
    "score_sde_loss",
    "explicit_score_matching",
    "implicit_score_matching",
    "sliced_score_matching",
    "geometric_sigmas",
    "check_sigmas",
    "NoiseConditionalScoreNet",
    "noise_level_time",
    "EnergyModel",
    "energy_loss",
    "sample_langevin",
    "GridDensity",
    "grid_density",
    "log_partition",
    "quadrature_log_prob",
    "langevin_dynamics",
    "annealed_langevin",
    "sample_reverse_sde",
    "GeneratorBrownian",
    "sample_pc",
    "langevin_corrector_step",
    "sample_ode",
    "ode_log_likelihood",
    "ode_bits_per_dim",
    "ODELikelihood",
    "probability_flow_field",
]
