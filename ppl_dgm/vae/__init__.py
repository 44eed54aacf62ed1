"""Variational autoencoders as Pyro model/guide pairs."""
from ppl_dgm.vae.likelihoods import BernoulliLikelihood, GaussianLikelihood, make_likelihood
from ppl_dgm.vae.vae import VAE, GaussianEncoder, conv_vae, mlp_vae

__all__ = ["VAE", "GaussianEncoder", "BernoulliLikelihood", "GaussianLikelihood", "make_likelihood", "mlp_vae", "conv_vae"]
