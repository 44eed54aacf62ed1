"""Denoising diffusion: schedules, DDPM as a Pyro hierarchical VAE, samplers, fast solvers, classifier-free and classifier
guidance, latent diffusion, image-conditioned diffusion (Palette)."""
from ppl_dgm.diffusion.classifier_guidance import NoisyClassifier, classifier_guided_eps
from ppl_dgm.diffusion.ddpm import DDPM, ddpm_bits_per_dim, elbo_terms, simple_loss, to_image_space, to_model_space
from ppl_dgm.diffusion.guidance import drop_labels, guided_eps
from ppl_dgm.diffusion.latent import LatentDDPM, LatentDDPMConfig, load_latent_ddpm_run, sample_latent_ddpm, train_latent_ddpm
from ppl_dgm.diffusion.palette import ImageConditionedEps, PaletteConfig, load_palette_run, sample_palette, train_palette
from ppl_dgm.diffusion.samplers import ddim_encode, ddim_timesteps, sample_ancestral, sample_ddim
from ppl_dgm.diffusion.schedules import NoiseSchedule, cosine_schedule, linear_schedule
from ppl_dgm.diffusion.solvers import NoiseLevels, sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_euler_ancestral, sample_heun

__all__ = [
    "DDPM",
    "ImageConditionedEps",
    "LatentDDPM",
    "LatentDDPMConfig",
    "NoiseLevels",
    "NoiseSchedule",
    "NoisyClassifier",
    "PaletteConfig",
    "classifier_guided_eps",
    "cosine_schedule",
    "ddpm_bits_per_dim",
    "elbo_terms",
    "ddim_encode",
    "ddim_timesteps",
    "drop_labels",
    "guided_eps",
    "linear_schedule",
    "load_latent_ddpm_run",
    "load_palette_run",
    "sample_ancestral",
    "sample_ddim",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde",
    "sample_euler_ancestral",
    "sample_heun",
    "sample_latent_ddpm",
    "sample_palette",
    "simple_loss",
    "to_image_space",
    "to_model_space",
    "train_latent_ddpm",
    "train_palette",
]
