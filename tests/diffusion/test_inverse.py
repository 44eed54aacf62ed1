"""Inverse problems with an unconditional ε-network: RePaint inpainting and DDRM, with the exact ε of Gaussian data."""
import pytest
import torch

from ppl_dgm.diffusion import linear_schedule
from ppl_dgm.diffusion.inverse import Denoising, Inpainting, SuperResolution, ddrm, inpaint, inpaint_smc

SCHEDULE = linear_schedule(1000)


class GaussianEps(torch.nn.Module):
    """The exact ε of data N(μ, Σ) under the DDPM forward process: √(1 − ᾱ)(ᾱΣ + (1 − ᾱ)I)⁻¹(x − √ᾱ μ), t = i/T."""

    def __init__(self, mean, covariance):
        super().__init__()
        self.register_buffer("mean", mean)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        self.register_buffer("eigenvalues", eigenvalues)
        self.register_buffer("eigenvectors", eigenvectors)
        self.register_buffer("alpha_bar", SCHEDULE.alpha_bar.to(mean.dtype))
        self.calls = 0

    def forward(self, x, t, y=None):
        self.calls += 1
        a = self.alpha_bar[(t * 1000).round().long() - 1].view(-1, *([1] * (x.ndim - 1)))
        flat = (x - a.sqrt() * self.mean).flatten(1)
        rotated = flat @ self.eigenvectors
        solved = rotated / (a.flatten(1) * self.eigenvalues + 1 - a.flatten(1))
        return ((1 - a).sqrt().flatten(1) * (solved @ self.eigenvectors.T)).view_as(x)


def correlated_gaussian(d=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=generator, dtype=torch.float64)
    return torch.linspace(-0.3, 0.5, d, dtype=torch.float64), a @ a.T / d * 0.5 + 0.05 * torch.eye(d, dtype=torch.float64)


def conditional_moments(mean, covariance, known, value):
    k, u = known.bool(), ~known.bool()
    gain = covariance[u][:, k] @ torch.linalg.inv(covariance[k][:, k])
    return mean[u] + gain @ (value[k] - mean[k]), covariance[u][:, u] - gain @ covariance[k][:, u]


def test_inpaint_keeps_the_known_pixels_and_counts_calls():
    mean, covariance = correlated_gaussian()
    eps = GaussianEps(mean, covariance)
    known = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    x_known = torch.tensor([0.7, 0.0, -0.4, 0.0], dtype=torch.float64).expand(16, 4)
    calls = []
    out = inpaint(eps, SCHEDULE, x_known, known, steps=25, resample=3, generator=torch.Generator().manual_seed(0),
                  callback=lambda call, x, x0: calls.append(call))
    assert torch.equal(out[:, known.bool()], x_known[:, known.bool()])
    assert calls == list(range(75)) and eps.calls == 75
    assert out[:, 1].std() > 0.1  # the unknown pixels are sampled, not copied


def test_smc_inpainting_calls_the_network_once_per_step_on_all_particles():
    mean, covariance = correlated_gaussian()
    eps = GaussianEps(mean, covariance)
    known = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    x_known = torch.tensor([0.7, 0.0, -0.4, 0.0], dtype=torch.float64).expand(3, 4)
    shapes = []
    out = inpaint_smc(eps, SCHEDULE, x_known, known, num_particles=5, steps=10, generator=torch.Generator().manual_seed(0),
                      callback=lambda call, x, x0: shapes.append((call, tuple(x.shape))))
    assert shapes == [(call, (15, 4)) for call in range(10)] and eps.calls == 10
    assert out.shape == (3, 4) and torch.equal(out[:, known.bool()], x_known[:, known.bool()])


def test_repaint_resampling_moves_toward_the_exact_conditional():
    """RePaint approximates p(x_u | x_k): the error of the conditional mean shrinks as resampling grows (U = 1, 4, 16)
    on correlated Gaussian data with its exact ε."""
    mean, covariance = correlated_gaussian()
    eps = GaussianEps(mean, covariance)
    known = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    value = torch.tensor([0.8, -0.5, 0.0, 0.0], dtype=torch.float64)
    exact_mean, _ = conditional_moments(mean, covariance, known, value)
    errors = []
    for resample in (1, 4, 16):
        out = inpaint(eps, SCHEDULE, value.expand(4000, 4), known, steps=50, resample=resample,
                      generator=torch.Generator().manual_seed(1))
        errors.append(float((out[:, 2:].mean(0) - exact_mean).norm()))
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.5 * errors[0], errors


def test_smc_inpainting_samples_the_exact_conditional_gaussian():
    """SMCDiff with the exact ε of correlated Gaussian data: the inpainted coordinates have the moments of the exact
    conditional p(x_u | x_k) within Monte Carlo error (2,000 independent images, 64 particles each, 200 steps), while
    one particle (plain replacement of the known pixels) is off by several standard errors."""
    scales = torch.tensor([1.0, 0.8, 1.2, 0.9], dtype=torch.float64).sqrt()
    covariance = (0.4 * torch.eye(4, dtype=torch.float64) + 0.6) * scales.outer(scales)  # correlation 0.6
    mean = torch.tensor([0.2, -0.3, 0.1, 0.4], dtype=torch.float64)
    eps = GaussianEps(mean, covariance)
    known = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    value = torch.tensor([0.8, -0.5, 0.0, 0.0], dtype=torch.float64)
    exact_mean, exact_covariance = conditional_moments(mean, covariance, known, value)
    n = 2000
    standard_error = (exact_covariance.diagonal() / n).sqrt()

    def moments(particles):
        out = inpaint_smc(eps, SCHEDULE, value.expand(n, 4), known, num_particles=particles, steps=200,
                          generator=torch.Generator().manual_seed(1))
        assert torch.equal(out[:, :2], value[:2].expand(n, 2))
        return (out[:, 2:].mean(0) - exact_mean) / standard_error, torch.cov(out[:, 2:].T)

    z, covariance_hat = moments(64)
    assert z.abs().max() < 3.5, z
    # the sample covariance's standard error is about √(2/n) ≈ 3% of each entry
    assert torch.allclose(covariance_hat, exact_covariance, atol=0.1 * float(exact_covariance.diagonal().max())), covariance_hat
    z_replacement, covariance_replacement = moments(1)
    assert z_replacement.abs().max() > 5 or (covariance_replacement.diagonal() / exact_covariance.diagonal()).max() > 1.2


def test_ddrm_with_noiseless_observations_reproduces_them():
    """σ_y = 0: DDRM's output is consistent with y exactly (H x̂ = y) for inpainting, denoising and 2x super-resolution."""
    torch.manual_seed(0)
    mean, covariance = torch.zeros(16, dtype=torch.float64), 0.3 * torch.eye(16, dtype=torch.float64) + 0.1
    eps = GaussianEps(mean.view(1, 4, 4), covariance)
    x = torch.randn(8, 1, 4, 4, dtype=torch.float64) * 0.5
    mask = (torch.rand(1, 1, 4, 4) > 0.5).double()
    for degradation in (Inpainting(mask), Denoising(), SuperResolution(2)):
        y = degradation.observe(x)
        out = ddrm(eps, SCHEDULE, degradation, y if not isinstance(degradation, Inpainting) else x * mask, x.shape, steps=10,
                   generator=torch.Generator().manual_seed(0))
        assert torch.allclose(degradation.observe(out), y, atol=1e-9), type(degradation).__name__


def test_super_resolution_basis_is_orthonormal_and_diagonalizes_pooling():
    sr = SuperResolution(2)
    x = torch.randn(3, 2, 6, 6, dtype=torch.float64)
    assert torch.allclose(sr.from_spectral(sr.to_spectral(x)), x, atol=1e-12)
    assert torch.allclose(sr.to_spectral(x).norm(), x.norm())
    spectral = sr.to_spectral(x)
    singular = sr.singular_values(x)
    # H x = U Σ Vᵀ x: per block the pooled value is s·(Vᵀx)₀ = (1/2)·(block sum / 2)
    pooled = (singular * spectral).view(3, 2, 3, 2, 3, 2).sum((3, 5))
    assert torch.allclose(pooled, sr.observe(x), atol=1e-12)


def test_ddrm_denoising_of_a_gaussian_matches_the_posterior_mean():
    """Denoising y = x + σ_y z of N(0, s² I) data: DDRM's samples have the posterior mean s²/(s² + σ_y²)·y (up to
    Monte Carlo error and the variational scheme's bias, within 10%)."""
    d = 8
    s2, noise_std = 0.25, 0.3
    eps = GaussianEps(torch.zeros(d, dtype=torch.float64), s2 * torch.eye(d, dtype=torch.float64))
    y = torch.full((2000, d), 0.6, dtype=torch.float64)
    out = ddrm(eps, SCHEDULE, Denoising(), y, y.shape, noise_std=noise_std, steps=50, generator=torch.Generator().manual_seed(0))
    expected = s2 / (s2 + noise_std**2) * 0.6
    assert float(out.mean()) == pytest.approx(expected, rel=0.1)


def test_inverse_bad_inputs():
    mean, covariance = correlated_gaussian()
    eps = GaussianEps(mean, covariance)
    x = torch.zeros(2, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"mask of shape \(3,\) does not broadcast to the images' shape \(2, 4\)"):
        inpaint(eps, SCHEDULE, x, torch.ones(3))
    with pytest.raises(ValueError, match=r"mask must hold only 0 \(unknown\) and 1 \(known\)"):
        inpaint(eps, SCHEDULE, x, torch.full((4,), 0.5))
    with pytest.raises(TypeError, match="mask must be a tensor"):
        inpaint(eps, SCHEDULE, x, [1, 0, 1, 0])
    with pytest.raises(ValueError, match="resample must be a positive int"):
        inpaint(eps, SCHEDULE, x, torch.ones(4), resample=0)
    with pytest.raises(ValueError, match="x_known holds NaN or inf"):
        inpaint(eps, SCHEDULE, torch.full((2, 4), float("nan")), torch.ones(4))
    with pytest.raises(ValueError, match="num_particles must be a positive int"):
        inpaint_smc(eps, SCHEDULE, x, torch.ones(4), num_particles=0)
    with pytest.raises(ValueError, match=r"ess_threshold must be a fraction in \[0, 1\]"):
        inpaint_smc(eps, SCHEDULE, x, torch.ones(4), ess_threshold=1.5)
    with pytest.raises(ValueError, match=r"mask of shape \(3,\) does not broadcast"):
        inpaint_smc(eps, SCHEDULE, x, torch.ones(3))
    with pytest.raises(ValueError, match=r"noise_std must be a float >= 0"):
        ddrm(eps, SCHEDULE, Denoising(), x, x.shape, noise_std=-1.0)
    with pytest.raises(ValueError, match=r"eta must be in \[0, 1\], got 2"):
        ddrm(eps, SCHEDULE, Denoising(), x, x.shape, eta=2)
    with pytest.raises(TypeError, match="degradation must be a LinearDegradation"):
        ddrm(eps, SCHEDULE, "sr", x, x.shape)
    with pytest.raises(ValueError, match=r"y must be the 2x average-pooled images, shape \(1, 1, 2, 2\), got \(1, 1, 4, 4\)"):
        ddrm(eps, SCHEDULE, SuperResolution(2), torch.zeros(1, 1, 4, 4), (1, 1, 4, 4))


def test_named_masks_and_mask_files(tmp_path):
    from torchvision.utils import save_image

    from ppl_dgm.diffusion.inverse import MASKS, named_mask

    lower = named_mask("lower-half", (1, 28, 28))
    assert lower.shape == (1, 28, 28) and lower[:, :14].eq(1).all() and lower[:, 14:].eq(0).all()
    center = named_mask("center", (3, 8, 8))
    assert center.shape == (3, 8, 8) and center[:, 2:6, 2:6].eq(0).all() and int(center.sum()) == 3 * (64 - 16)
    assert torch.equal(named_mask("random-half", (1, 28, 28)), named_mask("random-half", (1, 28, 28)))
    assert all(named_mask(name, (1, 28, 28)).sum() > 0 for name in MASKS)
    torch.save(lower[0], tmp_path / "mask.pt")
    assert torch.equal(named_mask(str(tmp_path / "mask.pt"), (1, 28, 28)), lower)
    save_image(lower, tmp_path / "mask.png")
    assert torch.equal(named_mask(tmp_path / "mask.png", (1, 28, 28)), lower)
    with pytest.raises(FileNotFoundError, match="mask 'nope' is neither one of"):
        named_mask("nope", (1, 28, 28))
    with pytest.raises(ValueError, match=r"mask of shape \(1, 14, 14\) does not fit the run's images of shape \(1, 28, 28\)"):
        named_mask(torch.ones(1, 14, 14), (1, 28, 28))
    torch.save({"not": "a tensor"}, tmp_path / "dict.pt")
    with pytest.raises(TypeError, match="must hold one tensor, got dict"):
        named_mask(tmp_path / "dict.pt", (1, 28, 28))


def test_restore_run_inpaints_and_upsamples_held_out_digits():
    from ppl_dgm.diffusion.experiment import DDPMConfig
    from ppl_dgm.diffusion.inverse import held_out_observations, restore_run

    from .conftest import GaussianOptimalEps

    config = DDPMConfig(dataset="mnist5k")
    net = GaussianOptimalEps(SCHEDULE, 0.0, 0.5).float()
    seen = held_out_observations(config, 3, inpaint_mask="lower-half")
    truth = seen["truth"]
    assert truth.shape == seen["observed"].shape == (3, 1, 28, 28)
    assert torch.equal(seen["observed"][..., 14:, :], torch.full_like(truth[..., 14:, :], 0.5))
    for method in ("repaint", "smc", "ddrm"):
        restored = restore_run(net, config, 3, inpaint_mask="lower-half", method=method, steps=4, resample=2, num_particles=3,
                               generator=torch.Generator().manual_seed(0))
        assert restored.shape == (3, 1, 28, 28)
        assert torch.allclose(restored[..., :14, :], truth[..., :14, :], atol=1e-5), method
    low = held_out_observations(config, 2, upsample=2)
    assert low["low"].shape == (2, 1, 14, 14) and low["observed"].shape == (2, 1, 28, 28)
    assert restore_run(net, config, 2, upsample=2, steps=4, generator=torch.Generator().manual_seed(0)).shape == (2, 1, 28, 28)
    with pytest.raises(ValueError, match="needs exactly one task"):
        restore_run(net, config, 2)
    with pytest.raises(ValueError, match=r"method='repaint' cannot upsample; expected one of \('ddrm',\)"):
        restore_run(net, config, 2, upsample=2, method="repaint")
    with pytest.raises(ValueError, match="upsample must be a factor >= 2 that divides the image side 28, got 3"):
        restore_run(net, config, 2, upsample=3)
    with pytest.raises(ValueError, match=r"images must have the run's image shape \(1, 28, 28\), got \(1, 8, 8\)"):
        restore_run(net, config, 2, inpaint_mask="center", images=torch.zeros(2, 1, 8, 8))
