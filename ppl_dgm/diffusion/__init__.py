"""Denoising diffusion: schedules, DDPM as a Pyro hierarchical VAE, samplers, fast solvers, classifier-free guidance, latent diffusion."""
from ppl_dgm.diffusion.ddpm import DDPM, ddpm_bits_per_dim, elbo_terms, simple_loss, to_image_space, to_model_space
from ppl_dgm.diffusion.guidance import drop_labels, guided_eps
from ppl_dgm.diffusion.latent import LatentDDPM, LatentDDPMConfig, load_latent_ddpm_run, sample_latent_ddpm, train_latent_ddpm
from ppl_dgm.diffusion.samplers import ddim_encode, ddim_timesteps, sample_ancestral, sample_ddim
from ppl_dgm.diffusion.schedules import NoiseSchedule, cosine_schedule, linear_schedule
from ppl_dgm.diffusion.solvers import NoiseLevels, sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_euler_ancestral, sample_heun

__all__ = [
    "DDPM",
    "LatentDDPM",
    "LatentDDPMConfig",
    "NoiseLevels",
    "NoiseSchedule",
    "cosine_schedule",
    "ddpm_bits_per_dim",
    "elbo_terms",
    "ddim_encode",
    "ddim_timesteps",
    "drop_labels",
    "guided_eps",
    "linear_schedule",
    "load_latent_ddpm_run",
    "sample_ancestral",
    "sample_ddim",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde",
    "sample_euler_ancestral",
    "sample_heun",
    "sample_latent_ddpm",
    "simple_loss",
    "to_image_space",
    "to_model_space",
    "train_latent_ddpm",
]
