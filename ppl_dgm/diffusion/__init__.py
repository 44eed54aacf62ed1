"""Denoising diffusion: schedules, DDPM as a Pyro hierarchical VAE, samplers, classifier-free guidance."""
from ppl_dgm.diffusion.ddpm import DDPM, ddpm_bits_per_dim, elbo_terms, simple_loss, to_image_space, to_model_space
from ppl_dgm.diffusion.guidance import drop_labels, guided_eps
from ppl_dgm.diffusion.samplers import ddim_encode, ddim_timesteps, sample_ancestral, sample_ddim
from ppl_dgm.diffusion.schedules import NoiseSchedule, cosine_schedule, linear_schedule

__all__ = [
    "DDPM",
    "NoiseSchedule",
    "cosine_schedule",
    "ddpm_bits_per_dim",
    "elbo_terms",
    "ddim_encode",
    "ddim_timesteps",
    "drop_labels",
    "guided_eps",
    "linear_schedule",
    "sample_ancestral",
    "sample_ddim",
    "simple_loss",
    "to_image_space",
    "to_model_space",
]
