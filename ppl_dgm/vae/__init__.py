"""Variational autoencoders as Pyro model/guide pairs (VAE, two-layer HVAE, discrete VAE) and the VQ-VAE (plain torch)."""
from ppl_dgm.vae.dvae import DiscreteVAE
from ppl_dgm.vae.hvae import HVAE, mlp_hvae
from ppl_dgm.vae.likelihoods import BernoulliLikelihood, GaussianLikelihood, make_likelihood
from ppl_dgm.vae.vae import VAE, GaussianEncoder, conv_vae, mlp_vae
from ppl_dgm.vae.vqvae import VQVAE, VectorQuantizer

__all__ = [
    "VAE",
    "GaussianEncoder",
    "BernoulliLikelihood",
    "GaussianLikelihood",
    "make_likelihood",
    "mlp_vae",
    "conv_vae",
    "HVAE",
    "mlp_hvae",
    "VQVAE",
    "VectorQuantizer",
    "DiscreteVAE",
]
