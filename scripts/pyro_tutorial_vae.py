"""The baseline both VAE scripts compare against: Pyro's VAE tutorial style, on one of our VAEs' networks.

Modules are registered in Pyro's global param store with ``pyro.module`` and trained by
``SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())``, one ``svi.step`` per minibatch.
"""
import pyro
import pyro.distributions as dist
from pyro.infer import SVI, Trace_ELBO


def tutorial_svi(vae, lr=1e-3):
    """An ``SVI`` object training ``vae.encoder``/``vae.decoder`` (Bernoulli decoder) the tutorial's way."""

    def model(x):
        pyro.module("decoder", vae.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], vae.latent_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=vae.decoder(z)).to_event(3), obs=x)

    def guide(x):
        pyro.module("encoder", vae.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, scale = vae.encoder(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    return SVI(model, guide, pyro.optim.Adam({"lr": lr}), Trace_ELBO())
