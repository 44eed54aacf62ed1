"""CUDA checks: run where a GPU is present (the device machine), skipped elsewhere."""
import pytest
import torch

from ppl_dgm.data import load_dataset
from ppl_dgm.train import evaluate_elbo, fit, fit_svi
from ppl_dgm.vae import conv_vae, mlp_vae
from ppl_dgm.vae.vqvae import VQVAE

pytestmark = pytest.mark.cuda


def test_vae_trains_and_samples_on_cuda():
    train = load_dataset("binarized_mnist5k", "train")
    vae = mlp_vae((1, 28, 28), latent_dim=20, hidden=(200,))
    history = fit_svi(vae.model, vae.guide, train, epochs=2, batch_size=128, device="cuda", progress=False)
    assert next(vae.parameters()).is_cuda and history.loss[-1] < history.loss[0]
    samples = vae.sample(8, generator=torch.Generator(device="cuda").manual_seed(0))
    assert samples.is_cuda and samples.shape == (8, 1, 28, 28)
    assert evaluate_elbo(vae.model, vae.guide, load_dataset("binarized_mnist5k", "test")) > -250


def test_cpu_and_cuda_give_the_same_elbo():
    vae = conv_vae((1, 28, 28), latent_dim=8, likelihood="gaussian").double()
    x = load_dataset("mnist5k", "test").tensors[0][:64].double()
    torch.manual_seed(0)
    cpu = evaluate_elbo(vae.model, vae.guide, (x,))
    vae.cuda()
    torch.manual_seed(0)
    gpu_noise_differs = evaluate_elbo(vae.model, vae.guide, (x,))
    assert abs(cpu - gpu_noise_differs) < 5.0  # same model, independent z draws: close, not equal


def test_plain_loop_on_cuda():
    model = VQVAE((1, 8, 8), num_codes=16, code_dim=4, channels=8)
    train = load_dataset("digits", "train")
    history = fit(model, model.loss, train, epochs=2, batch_size=100, device="cuda", progress=False)
    assert next(model.parameters()).is_cuda and len(history) == 2
