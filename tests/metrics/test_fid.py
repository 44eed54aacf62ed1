"""Standard FID on Inception-v3 pool features (torchmetrics + torch-fidelity), with random weights of the real architecture.

The real weights are never downloaded: a seeded, randomly initialized FeatureExtractorInceptionV3 is saved to a
temporary file and loaded back through the same path a user's ``weights-inception-2015-12-05-6726825d.pth`` takes.
Eight mnist5k test digits (multiples of 1/255, so uint8 rounding is exact) keep the module at ~25 s on one CPU
thread: each FID costs ~1.5 s of 299 x 299 forward passes and ~2 s of torchmetrics' eigvals of a 2048 x 2048 product.
"""
import io
import os
import pickle
import sys

import pytest
import torch
from torch import nn

pytest.importorskip("torchmetrics")
torch_fidelity_inception = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")

from torchmetrics.image.fid import FrechetInceptionDistance  # noqa: E402

from ppl_dgm.data import load_dataset  # noqa: E402
from ppl_dgm.metrics import frechet  # noqa: E402
from ppl_dgm.metrics.frechet import DigitClassifier, frechet_distance_of_features, inception_fid, sample_quality  # noqa: E402
from ppl_dgm.train.checkpoint import CorruptFileError, UnsafeFileError  # noqa: E402


class _RandomInception(torch_fidelity_inception.FeatureExtractorInceptionV3):
    """torch-fidelity's extractor keeping its random initialization (its constructor insists on loading weights)."""

    def load_state_dict(self, state_dict, strict=True, assign=False):
        return None


class _RecordingPoolFeatures(nn.Module):
    """The extractor as torchmetrics wants it (a tensor, not torch-fidelity's tuple); keeps what it computed."""

    num_features = 2048  # spares torchmetrics its dummy forward pass

    def __init__(self, extractor):
        super().__init__()
        self.extractor, self.seen = extractor, []

    def forward(self, images):
        features = self.extractor(images)[0]
        self.seen.append(features)
        return features


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def extractor():
    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    torch.manual_seed(0)
    network = _RandomInception("inception-v3-compat", ["2048"], feature_extractor_weights_path=empty)
    # default conv init shrinks activations ~6x a layer (pool features ~1e-8); He init keeps them O(1)
    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return network


@pytest.fixture(scope="module")
def weights_file(extractor, tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "weights-inception-random.pth"
    torch.save(extractor.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def halves():
    """Two halves (4, 1, 28, 28) of the first eight mnist5k test digits."""
    images = load_dataset("mnist5k", "test").tensors[0][:8]
    return images[:4], images[4:]


@pytest.fixture(scope="module")
def fid_of_halves(halves, weights_file):
    first, second = halves
    return inception_fid(first, second, weights_path=weights_file)


def _as_uint8_rgb(images):
    return (images * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)


def test_fid_of_a_set_with_itself_is_zero_and_fid_is_symmetric(halves, weights_file, fid_of_halves):
    first, second = halves
    assert abs(inception_fid(first, first, weights_path=weights_file)) < 1e-4  # measured -8e-6 (float32 features)
    assert fid_of_halves > 0.1  # measured 1.65
    assert inception_fid(second, first, weights_path=weights_file) == pytest.approx(fid_of_halves, rel=1e-6)


def test_fid_equals_torchmetrics_on_the_same_extractor_and_the_frechet_formula_on_its_features(
        halves, extractor, fid_of_halves):
    first, second = halves
    recorder = _RecordingPoolFeatures(extractor)
    metric = FrechetInceptionDistance(feature=recorder)
    metric.update(_as_uint8_rgb(second), real=True)
    metric.update(_as_uint8_rgb(first), real=False)
    assert fid_of_halves == pytest.approx(float(metric.compute()), rel=1e-6)
    second_features, first_features = (features.double() for features in recorder.seen)
    assert first_features.shape == second_features.shape == (4, 2048)
    # Heusel et al. 2017, eq. 6 on the 2048-d pool features, by the library's symmetric eigendecomposition route.
    # Measured 1.3e-6 apart: with N = 4, Σ₁Σ₂ has rank 3, and torchmetrics' sqrt of eigvals(Σ₁Σ₂) adds
    # √λ ~ 3e-8 for each of its ~2045 rounding-level eigenvalues (|λ| <= 1e-15); ours clamps them to 0.
    assert fid_of_halves == pytest.approx(frechet_distance_of_features(first_features, second_features), rel=1e-5)


def test_fid_of_different_image_sets_exceeds_that_of_two_halves_of_one_set(halves, weights_file, fid_of_halves):
    first, second = halves
    inverted = inception_fid(1 - second, first, weights_path=weights_file)
    assert inverted > 10 * fid_of_halves  # measured 81 vs 1.65


def test_weights_are_read_with_weights_only_and_torch_fidelity_never_unpickles_the_file(weights_file, monkeypatch):
    calls, torch_load = [], torch.load

    def recording_load(file, *args, **kwargs):
        forced = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD") == "1"  # torch then loads weights-only whatever the argument
        calls.append((file, kwargs.get("weights_only") or forced))
        return torch_load(file, *args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    network = frechet._load_inception_extractor(weights_file, torch.device("cpu"))
    assert isinstance(network, torch_fidelity_inception.FeatureExtractorInceptionV3)
    assert [weights_only for file, weights_only in calls if str(file) == str(weights_file)] == [True]
    assert all(isinstance(file, io.BytesIO) for file, weights_only in calls if not weights_only)
    assert all(weights_only for _, weights_only in calls)  # torch-fidelity's own load of the buffer is forced weights-only too
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ  # restored afterwards


def test_missing_weights_file_is_named(halves, tmp_path):
    missing = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    with pytest.raises(FileNotFoundError, match=f"Inception weights file '{missing}' does not exist"):
        inception_fid(*halves, weights_path=missing)


def test_weights_of_another_network_or_shape_are_refused_naming_the_file(halves, extractor, tmp_path):
    other = tmp_path / "classifier.pth"
    torch.save(DigitClassifier().state_dict(), other)
    with pytest.raises(CorruptFileError, match=rf"Inception weights file '{other}' does not fit torch-fidelity's Inception-v3 "
                                               r"\(Missing key\(s\).*expected the state dict of torch-fidelity's FeatureExtractorInceptionV3"):
        inception_fid(*halves, weights_path=other)
    resized = tmp_path / "resized.pth"
    torch.save(dict(extractor.state_dict(), **{"fc.weight": torch.zeros(10, 2048)}), resized)
    with pytest.raises(CorruptFileError, match=rf"'{resized}' does not fit .*size mismatch for fc.weight"):
        inception_fid(*halves, weights_path=resized)
    not_a_state_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], not_a_state_dict)
    with pytest.raises(CorruptFileError, match=rf"'{not_a_state_dict}' holds a list that is not a state dict"):
        inception_fid(*halves, weights_path=not_a_state_dict)


def test_random_bytes_are_refused_naming_the_file(halves, tmp_path):
    noise = tmp_path / "noise.pth"
    noise.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(CorruptFileError, match=rf"Inception weights file '{noise}' is not a file torch.save wrote"):
        inception_fid(*halves, weights_path=noise)


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_a_file_that_would_run_code_is_refused_and_runs_nothing(halves, tmp_path, writer):
    marker, payload = tmp_path / "MARKER", tmp_path / "payload.pth"
    if writer == "torch.save":
        torch.save({"Conv2d_1a_3x3.conv.weight": _RunsCode(marker)}, payload)
    else:
        payload.write_bytes(pickle.dumps(_RunsCode(marker), protocol=2))
    with pytest.raises(UnsafeFileError, match=rf"refused to load Inception weights file '{payload}'"):
        inception_fid(*halves, weights_path=payload)
    assert not marker.exists()


def test_missing_packages_say_what_to_install(halves, weights_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", None)
    with pytest.raises(ImportError, match=r"pip install ppl_dgm\[fid\]"):
        inception_fid(*halves, weights_path=weights_file)


def test_bad_images_are_refused_naming_the_argument(halves, weights_file):
    first, second = halves
    with pytest.raises(ValueError, match=r"reference must have shape \(N, C, H, W\) with N >= 2 and C in \(1, 3\), got \(4, 2, 28, 28\)"):
        inception_fid(first, second.repeat(1, 2, 1, 1), weights_path=weights_file)
    with pytest.raises(ValueError, match=r"samples must lie in \[0, 1\]"):
        inception_fid(2 * first - 1, second, weights_path=weights_file)
    with pytest.raises(TypeError, match="weights_path must be a str or os.PathLike, got None"):
        inception_fid(first, second, weights_path=None)


def test_sample_quality_adds_inception_fid_against_the_reference_split(halves, weights_file, monkeypatch, tmp_path):
    calls = []

    def recording_fid(samples, reference, *, weights_path, device):
        calls.append((samples, reference, weights_path, device))
        return 12.5

    monkeypatch.setattr(frechet, "inception_fid", recording_fid)
    samples = torch.cat(halves)
    quality = sample_quality(samples, "mnist5k", classifier=DigitClassifier().eval(), kid_subsets=2, kid_subset_size=8,
                             inception_weights=weights_file)
    assert quality["inception_fid"] == 12.5
    (called_samples, called_reference, called_path, called_device), = calls
    assert torch.equal(called_samples, samples) and called_path == weights_file and called_device == "cpu"
    assert torch.equal(called_reference, load_dataset("mnist5k", "test").tensors[0])
    assert "inception_fid" not in sample_quality(samples, "mnist5k", classifier=DigitClassifier().eval(), kid_subsets=2,
                                                 kid_subset_size=8)
    missing = tmp_path / "missing.pth"
    with pytest.raises(FileNotFoundError, match=f"Inception weights file '{missing}' does not exist"):
        sample_quality(samples, "mnist5k", inception_weights=missing, cache_dir=tmp_path)
    assert not (tmp_path / "feature_classifier").exists()  # refused before a classifier was trained
