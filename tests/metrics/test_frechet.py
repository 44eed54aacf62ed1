import numpy as np
import pytest
import torch
from scipy import linalg

from ppl_dgm.data import load_dataset
from ppl_dgm.metrics.frechet import (
    extract_features,
    feature_classifier,
    frechet_distance,
    frechet_distance_of_features,
    frechet_distance_of_samples,
    kernel_distance,
    sample_quality,
)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return feature_classifier("mnist5k", cache_dir=tmp_path_factory.mktemp("runs"), epochs=2, seed=0)


def random_covariance(dim, generator):
    factor = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
    return factor @ factor.T / dim + 0.1 * torch.eye(dim, dtype=torch.float64)


def test_frechet_distance_of_gaussians_equals_the_closed_form():
    generator = torch.Generator().manual_seed(0)
    mean1, mean2 = torch.randn(5, generator=generator, dtype=torch.float64), torch.randn(5, generator=generator, dtype=torch.float64)
    sigma1, sigma2 = torch.rand(5, generator=generator, dtype=torch.float64) + 0.5, torch.rand(5, generator=generator, dtype=torch.float64) + 0.5
    # commuting (diagonal) covariances: W₂² = ‖μ₁ − μ₂‖² + Σ (σ₁ − σ₂)²
    closed_form = float(((mean1 - mean2) ** 2).sum() + ((sigma1 - sigma2) ** 2).sum())
    assert frechet_distance(mean1, torch.diag(sigma1**2), mean2, torch.diag(sigma2**2)) == pytest.approx(closed_form, rel=1e-10)
    # general covariances: against scipy.linalg.sqrtm of Σ₁Σ₂ (Heusel et al. 2017, eq. 6)
    cov1, cov2 = random_covariance(5, generator), random_covariance(5, generator)
    reference = float(((mean1 - mean2) ** 2).sum()) + np.trace(cov1.numpy() + cov2.numpy() - 2 * linalg.sqrtm(cov1.numpy() @ cov2.numpy()).real)
    assert frechet_distance(mean1, cov1, mean2, cov2) == pytest.approx(reference, rel=1e-8)
    assert frechet_distance(mean1, cov1, mean1, cov1) == pytest.approx(0.0, abs=1e-10)


def test_frechet_distance_of_gaussian_samples_approaches_the_closed_form():
    generator = torch.Generator().manual_seed(1)
    cov1, cov2 = random_covariance(3, generator), random_covariance(3, generator)
    mean2 = torch.tensor([1.0, -0.5, 0.0], dtype=torch.float64)
    x = torch.randn(40000, 3, generator=generator, dtype=torch.float64) @ torch.linalg.cholesky(cov1).T
    y = torch.randn(40000, 3, generator=generator, dtype=torch.float64) @ torch.linalg.cholesky(cov2).T + mean2
    exact = frechet_distance(torch.zeros(3, dtype=torch.float64), cov1, mean2, cov2)
    assert frechet_distance_of_features(x, y) == pytest.approx(exact, rel=0.03)


def test_kid_is_unbiased_zero_for_one_distribution_and_matches_a_direct_computation():
    generator = torch.Generator().manual_seed(2)
    x, y = torch.randn(400, 4, generator=generator), torch.randn(400, 4, generator=generator)
    same, _ = kernel_distance(x, y, num_subsets=50, subset_size=200, generator=torch.Generator().manual_seed(0))
    shifted, _ = kernel_distance(x, y + 0.5, num_subsets=50, subset_size=200, generator=torch.Generator().manual_seed(0))
    assert abs(same) < 0.02 < shifted  # unbiased: centred on 0 for equal distributions (Bińkowski et al. 2018)
    a, b = x[:5].double(), (y[:5] + 1).double()
    kernel = lambda u, v: (u @ v.T / 4 + 1) ** 3  # noqa: E731
    direct = (sum(kernel(a[i : i + 1], a[j : j + 1]) for i in range(5) for j in range(5) if i != j) / 20
              + sum(kernel(b[i : i + 1], b[j : j + 1]) for i in range(5) for j in range(5) if i != j) / 20
              - 2 * kernel(a, b).mean())
    value, _ = kernel_distance(a, b, num_subsets=1, subset_size=5, generator=torch.Generator().manual_seed(0))
    assert value == pytest.approx(float(direct), rel=1e-9)  # the estimate does not depend on the order in a subset


def test_classifier_is_accurate_and_cached_deterministically(classifier, tmp_path):
    assert classifier.test_accuracy > 0.85
    assert classifier.cache_path.name == "mnist5k_seed0.pt"
    again = feature_classifier("mnist5k", path=classifier.cache_path)  # loaded, not retrained
    for name, value in classifier.state_dict().items():
        assert torch.equal(again.state_dict()[name], value)
    with pytest.raises(ValueError, match=r"dataset='cifar10' has no feature classifier; expected one of \('mnist5k'"):
        feature_classifier("cifar10", cache_dir=tmp_path)


def test_fd_of_data_is_small_and_grows_monotonically_with_noise(classifier):
    train, test = load_dataset("mnist5k", "train").tensors[0], load_dataset("mnist5k", "test").tensors[0]
    reference = extract_features(classifier, test)
    generator = torch.Generator().manual_seed(0)
    distances = []
    for noise in (0.0, 0.1, 0.2, 0.4):
        noisy = (train[:1000] + noise * torch.randn(train[:1000].shape, generator=generator)).clamp(0, 1)
        distances.append(frechet_distance_of_features(reference, extract_features(classifier, noisy)))
    assert distances == sorted(distances) and distances[-1] > 5 * distances[0]
    result = sample_quality(train[:1000], classifier=classifier, kid_subsets=10)
    assert result["fd"] == pytest.approx(distances[0]) and abs(result["kid"]) < 0.05 * distances[-1]
    assert frechet_distance_of_samples(train[:1000], classifier=classifier) == pytest.approx(distances[0])


def test_bad_input_raises_clear_errors(classifier):
    with pytest.raises(ValueError, match=r"samples must lie in \[0, 1\] \(images, not model space\), got values in \[-1"):
        sample_quality(torch.full((4, 1, 28, 28), -1.0), classifier=classifier)
    with pytest.raises(ValueError, match=r"images must have shape \(N, 1, 28, 28\)"):
        extract_features(classifier, torch.zeros(4, 1, 8, 8))
    with pytest.raises(ValueError, match=r"features must be \(N, d\) with the same d and N >= 2"):
        frechet_distance_of_features(torch.zeros(4, 3), torch.zeros(4, 2))
