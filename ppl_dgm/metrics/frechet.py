"""Fréchet distance and kernel (KID) distance on features of a small digit classifier the library trains.

No Inception download: a LeNet-style CNN is trained once on the dataset's train split (seeded,
deterministic) and cached under ``runs/feature_classifier/``; its penultimate layer gives the features.
Standard FID on Inception-v3 pool features (:func:`inception_fid`) needs a local weights file and the
``fid`` extra (torchmetrics, torch-fidelity); nothing is ever downloaded.
"""
from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ppl_dgm._checks import check_finite, check_positive_int

__all__ = [
    "DigitClassifier",
    "frechet_distance",
    "frechet_distance_of_features",
    "kernel_distance",
    "feature_classifier",
    "extract_features",
    "frechet_distance_of_samples",
    "inception_fid",
    "sample_quality",
]

_SUPPORTED = ("mnist5k", "mnist", "fashion_mnist")  # (1, 28, 28) datasets


class DigitClassifier(nn.Module):
    """Images (B, 1, 28, 28) in [0, 1] -> logits (B, num_classes); ``features`` gives the (B, feature_dim) penultimate layer."""

    def __init__(self, num_classes: int = 10, channels: int = 32, feature_dim: int = 128):
        super().__init__()
        channels, feature_dim = check_positive_int("channels", channels), check_positive_int("feature_dim", feature_dim)
        self.trunk = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 28 -> 14
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 14 -> 7
            nn.Flatten(), nn.Linear(2 * channels * 49, feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, check_positive_int("num_classes", num_classes))

    def features(self, x: Tensor) -> Tensor:
        return self.trunk(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(x))


def _symmetric_psd_eigenvalues(name: str, covariance: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Eigenvalues and vectors of a float64 covariance, or raise naming ``name`` if it is not symmetric PSD.

    Rounding slack as scipy's ``_eigvalsh_to_eps`` (``stats.multivariate_normal``): 1e6 ε·max|λ| when the
    caller's ``dtype`` is float64, else 1e3 ε of that dtype.
    """
    finfo = torch.finfo(dtype if dtype.is_floating_point else torch.float64)
    slack = (1e6 if finfo.eps == torch.finfo(torch.float64).eps else 1e3) * finfo.eps
    asymmetry = float((covariance - covariance.T).abs().max())
    if asymmetry > slack * float(covariance.abs().max()):
        raise ValueError(f"{name} must be a symmetric covariance matrix, got max |{name} - {name}.T| = {asymmetry:.3g}")
    values, vectors = torch.linalg.eigh(covariance)
    if float(values.min()) < -slack * float(values.abs().max()):
        raise ValueError(f"{name} must be positive semi-definite, got smallest eigenvalue {float(values.min()):.6g}")
    return values, vectors


def frechet_distance(mean1: Tensor, covariance1: Tensor, mean2: Tensor, covariance2: Tensor) -> float:
    """‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^{1/2}), the squared W₂ between Gaussians (Dowson & Landau 1982; Heusel et al. 2017, eq. 6).

    Tr (Σ₁Σ₂)^{1/2} = Σ √λ of the PSD matrix Σ₁^{1/2} Σ₂ Σ₁^{1/2} (eigendecompositions, float64). Raises on
    non-finite entries and on covariances that are not symmetric positive semi-definite.
    """
    arguments = {"mean1": mean1, "covariance1": covariance1, "mean2": mean2, "covariance2": covariance2}
    for name, value in arguments.items():
        check_finite(name, value)
    if mean1.shape != mean2.shape or covariance1.shape != covariance2.shape or covariance1.shape != mean1.shape * 2:
        raise ValueError("means (d,) and covariances (d, d) must match, got "
                         + ", ".join(f"{name} of shape {tuple(value.shape)}" for name, value in arguments.items()))
    dtypes = (covariance1.dtype, covariance2.dtype)
    mean1, mean2, covariance1, covariance2 = (t.detach().to(torch.float64) for t in (mean1, mean2, covariance1, covariance2))
    values, vectors = _symmetric_psd_eigenvalues("covariance1", covariance1, dtypes[0])
    _symmetric_psd_eigenvalues("covariance2", covariance2, dtypes[1])
    sqrt1 = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    middle = sqrt1 @ covariance2 @ sqrt1
    trace_sqrt = torch.linalg.eigvalsh(0.5 * (middle + middle.T)).clamp(min=0).sqrt().sum()
    return float(((mean1 - mean2) ** 2).sum() + covariance1.trace() + covariance2.trace() - 2 * trace_sqrt)


def _check_feature_pair(features1: Tensor, features2: Tensor, min_rows: int) -> tuple[Tensor, Tensor]:
    """Both feature sets as float64 (N, d) with one d and N >= ``min_rows``, finite; else raise naming the argument."""
    for name, value in (("features1", features1), ("features2", features2)):
        check_finite(name, value)
    if features1.ndim != 2 or features2.ndim != 2 or features1.shape[1] != features2.shape[1] or min(len(features1), len(features2)) < min_rows:
        raise ValueError(f"features must be (N, d) with the same d and N >= {min_rows}, got features1 of shape "
                         f"{tuple(features1.shape)} and features2 of shape {tuple(features2.shape)}")
    return features1.detach().double(), features2.detach().double()


def frechet_distance_of_features(features1: Tensor, features2: Tensor) -> float:
    """FD between Gaussians fitted (mean, unbiased covariance) to features (N₁, d) and (N₂, d)."""
    f1, f2 = _check_feature_pair(features1, features2, min_rows=2)
    return frechet_distance(f1.mean(0), torch.cov(f1.T), f2.mean(0), torch.cov(f2.T))


def kernel_distance(features1: Tensor, features2: Tensor, *, num_subsets: int = 100, subset_size: int = 1000,
                    generator: torch.Generator | None = None) -> tuple[float, float]:
    """KID: mean and std over subsets of the unbiased MMD² with k(x, y) = (xᵀy / d + 1)³ (Bińkowski et al. 2018, sec. 3 / eq. 4)."""
    check_positive_int("num_subsets", num_subsets)
    check_positive_int("subset_size", subset_size)
    f1, f2 = _check_feature_pair(features1, features2, min_rows=2)
    size = min(subset_size, len(f1), len(f2))
    if size < 2:
        raise ValueError(f"KID needs subset_size >= 2, got subset_size={subset_size}")
    dim = f1.shape[1]
    estimates = []
    for _ in range(num_subsets):
        x = f1[torch.randperm(len(f1), generator=generator)[:size]]
        y = f2[torch.randperm(len(f2), generator=generator)[:size]]
        k_xx, k_yy, k_xy = ((a @ b.T / dim + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        off_diagonal = size * (size - 1)
        # unbiased MMD²: diagonal terms k(x_i, x_i) excluded (Gretton et al. 2012, eq. 3)
        mmd2 = (k_xx.sum() - k_xx.diagonal().sum()) / off_diagonal + (k_yy.sum() - k_yy.diagonal().sum()) / off_diagonal - 2 * k_xy.mean()
        estimates.append(mmd2)
    values = torch.stack(estimates)
    return float(values.mean()), float(values.std()) if num_subsets > 1 else 0.0


def feature_classifier(dataset: str = "mnist5k", *, path: str | os.PathLike | None = None, cache_dir: str | os.PathLike = "runs",
                       seed: int = 0, epochs: int = 8, device: str | torch.device = "cpu", progress: bool = False) -> DigitClassifier:
    """The feature network for ``dataset``: loaded from ``path`` (default ``<cache_dir>/feature_classifier/<dataset>_seed<seed>.pt``)
    or trained there once (Adam 1e-3, batch 128, ``epochs`` epochs on the train split), in eval mode on ``device``."""
    from ppl_dgm.data import load_dataset
    from ppl_dgm.train.device import resolve_device
    from ppl_dgm.train.loop import fit

    if dataset not in _SUPPORTED:
        raise ValueError(f"dataset={dataset!r} has no feature classifier; expected one of {_SUPPORTED}")
    path = Path(path) if path is not None else Path(cache_dir) / "feature_classifier" / f"{dataset}_seed{seed}.pt"
    device = resolve_device(device)
    if path.is_file():
        from ppl_dgm.train.checkpoint import CorruptFileError, safe_torch_load

        state = safe_torch_load(path, what="feature-classifier cache")
        try:
            classifier = DigitClassifier(**state["shape"])
            classifier.load_state_dict(state["state_dict"])
        except (KeyError, TypeError, RuntimeError) as error:
            raise CorruptFileError(f"feature-classifier cache {str(path)!r} is not a classifier written by ppl_dgm: {error}; delete it to retrain") from None
        classifier.test_accuracy, classifier.cache_path = state["test_accuracy"], path
        return classifier.to(device).eval()
    torch.manual_seed(seed)
    classifier = DigitClassifier()
    train = load_dataset(dataset, "train")
    fit(classifier, lambda batch: F.cross_entropy(classifier(batch[0]), batch[1]), train, epochs=epochs, batch_size=128,
        device=device, seed=seed, progress=progress, description=f"feature classifier {dataset}")
    classifier.eval()
    test_x, test_y = load_dataset(dataset, "test").tensors
    with torch.no_grad():
        accuracy = float((classifier(test_x.to(device)).argmax(1).cpu() == test_y).double().mean())
    classifier.test_accuracy, classifier.cache_path = accuracy, path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    torch.save({"state_dict": {k: v.cpu() for k, v in classifier.state_dict().items()}, "test_accuracy": accuracy,
                "shape": {"num_classes": 10, "channels": 32, "feature_dim": 128}, "seed": seed, "epochs": epochs}, tmp)
    os.replace(tmp, path)
    return classifier


@torch.no_grad()
def extract_features(classifier: DigitClassifier, images: Tensor, batch_size: int = 500) -> Tensor:
    """Penultimate features (N, feature_dim) of images (N, 1, 28, 28) in [0, 1], in float64 on the CPU."""
    if images.ndim != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"images must have shape (N, 1, 28, 28) with values in [0, 1], got {tuple(images.shape)}")
    device = next(classifier.parameters()).device
    chunks = [classifier.features(images[i : i + batch_size].to(device, torch.float32)).double().cpu()
              for i in range(0, len(images), batch_size)]
    return torch.cat(chunks)


_INCEPTION_WEIGHTS = ("the state dict of torch-fidelity's FeatureExtractorInceptionV3, the FID Inception-v3 ported from "
                      "TensorFlow (weights-inception-2015-12-05-6726825d.pth)")


def _import_fid_packages() -> tuple[type, type]:
    """torchmetrics' FrechetInceptionDistance and torch-fidelity's FeatureExtractorInceptionV3, or an ImportError saying what to install."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError as error:
        raise ImportError(f"Inception FID needs torchmetrics and torch-fidelity ({error}); install them with "
                          "`pip install ppl_dgm[fid]`") from None
    return FrechetInceptionDistance, FeatureExtractorInceptionV3


def _check_weights_path(weights_path: object) -> Path:
    if not isinstance(weights_path, (str, os.PathLike)):
        raise TypeError(f"weights_path must be a str or os.PathLike, got {weights_path!r} of type {type(weights_path).__name__}")
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"Inception weights file {str(path)!r} does not exist; expected {_INCEPTION_WEIGHTS}")
    return path


class _PoolFeatures(nn.Module):
    """torch-fidelity's extractor as the module torchmetrics expects: uint8 (B, 3, H, W) -> float64 (B, 2048) pool features.

    float64 out so that torchmetrics' ``compute`` (which casts the FID to the features' dtype) keeps float64.
    """

    num_features = 2048

    def __init__(self, extractor: nn.Module):
        super().__init__()
        self.extractor = extractor

    def forward(self, images: Tensor) -> Tensor:
        return self.extractor(images)[0].double()


def _load_inception_extractor(weights_path: str | os.PathLike, device: torch.device) -> nn.Module:
    """torch-fidelity's FeatureExtractorInceptionV3 (2048-d pool features) with the weights in ``weights_path``, on ``device``.

    The file is read once, with ``weights_only=True`` (:func:`~ppl_dgm.train.checkpoint.safe_torch_load`).
    torch-fidelity's constructor only loads from a path or file object, so it gets an in-memory ``torch.save`` of
    the plain tensors already loaded, never the user's file, and its own load runs under :func:`forced_weights_only`.
    """
    from ppl_dgm.train.checkpoint import CorruptFileError, forced_weights_only, safe_torch_load

    _, FeatureExtractorInceptionV3 = _import_fid_packages()
    path = _check_weights_path(weights_path)
    state = safe_torch_load(path, what="Inception weights file")
    if not isinstance(state, Mapping) or not all(isinstance(key, str) and isinstance(value, Tensor) for key, value in state.items()):
        raise CorruptFileError(f"Inception weights file {str(path)!r} holds a {type(state).__name__} that is not a state dict "
                               f"(str -> tensor); expected {_INCEPTION_WEIGHTS}")
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    buffer.seek(0)
    del state
    try:
        with forced_weights_only():
            extractor = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=buffer)
    except RuntimeError as error:  # load_state_dict: missing or unexpected keys, shape mismatches
        details = "; ".join(line.strip()[:160] + "..." * (len(line.strip()) > 160) for line in str(error).splitlines()[1:4])
        raise CorruptFileError(f"Inception weights file {str(path)!r} does not fit torch-fidelity's Inception-v3 ({details}); "
                               f"expected {_INCEPTION_WEIGHTS}") from None
    return extractor.to(device)


def _check_images(name: str, images: object) -> Tensor:
    """``images`` (N >= 2, 1 or 3, H, W) in [0, 1] as uint8 (N, 3, H, W), rounded as an image file would store them."""
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a tensor of images (N, C, H, W) in [0, 1], got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] not in (1, 3) or len(images) < 2:
        raise ValueError(f"{name} must have shape (N, C, H, W) with N >= 2 and C in (1, 3), got {tuple(images.shape)}")
    check_finite(name, images)
    if images.min() < -1e-3 or images.max() > 1 + 1e-3:
        raise ValueError(f"{name} must lie in [0, 1] (images, not model space), got values in "
                         f"[{float(images.min()):.3g}, {float(images.max()):.3g}]")
    quantized = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return quantized.expand(-1, 3, -1, -1)  # grey -> RGB by repetition


@torch.no_grad()
def inception_fid(samples: Tensor, reference: Tensor, *, weights_path: str | os.PathLike, batch_size: int = 50,
                  device: str | torch.device = "cpu") -> float:
    """FID (Heusel et al. 2017, eq. 6) on the 2048-d Inception-v3 pool features of images (N, C, H, W) in [0, 1].

    ``weights_path``: a local copy of torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth`` (never downloaded).
    Images are rounded to uint8, grey ones repeated to 3 channels; torch-fidelity's extractor resizes them to
    299 x 299 (bilinear, as TensorFlow 1.x) and torchmetrics' FrechetInceptionDistance gives the distance.
    Biased in N: compare numbers computed with the same N.
    """
    from ppl_dgm.train.device import resolve_device

    samples, reference = _check_images("samples", samples), _check_images("reference", reference)
    batch_size, device = check_positive_int("batch_size", batch_size), resolve_device(device)
    FrechetInceptionDistance, _ = _import_fid_packages()
    metric = FrechetInceptionDistance(feature=_PoolFeatures(_load_inception_extractor(weights_path, device))).to(device)
    for images, real in ((reference, True), (samples, False)):
        for start in range(0, len(images), batch_size):
            metric.update(images[start : start + batch_size].to(device), real=real)
    return float(metric.compute())


def sample_quality(samples: Tensor, dataset: str = "mnist5k", *, reference: str = "test", classifier: DigitClassifier | None = None,
                   cache_dir: str | os.PathLike = "runs", seed: int = 0, device: str | torch.device = "cpu",
                   kid_subsets: int = 100, kid_subset_size: int = 500,
                   inception_weights: str | os.PathLike | None = None) -> dict[str, Any]:
    """FD and KID (mean, std) of samples (N, 1, 28, 28) in [0, 1] against ``dataset``'s ``reference`` split.

    FD depends on N (it is biased): compare numbers computed with the same N and reference. KID averages
    ``kid_subsets`` random subsets of ``kid_subset_size`` (smaller than N, so the std is meaningful).
    With ``inception_weights`` (a local FID Inception-v3 file, see :func:`inception_fid`) also ``"inception_fid"``.
    """
    from ppl_dgm.data import load_dataset

    check_finite("samples", samples)
    if samples.min() < -1e-3 or samples.max() > 1 + 1e-3:
        raise ValueError(f"samples must lie in [0, 1] (images, not model space), got values in [{float(samples.min()):.3g}, {float(samples.max()):.3g}]")
    if inception_weights is not None:  # fail before the classifier trains, not after
        _import_fid_packages()
        _check_weights_path(inception_weights)
    classifier = classifier or feature_classifier(dataset, cache_dir=cache_dir, seed=seed, device=device)
    real = load_dataset(dataset, reference).tensors[0]
    real_features, fake_features = extract_features(classifier, real), extract_features(classifier, samples)
    kid, kid_std = kernel_distance(real_features, fake_features, num_subsets=kid_subsets, subset_size=kid_subset_size,
                                   generator=torch.Generator().manual_seed(seed))
    quality = {"fd": frechet_distance_of_features(real_features, fake_features), "kid": kid, "kid_std": kid_std,
               "num_samples": len(samples), "num_reference": len(real), "reference": f"{dataset}/{reference}"}
    if inception_weights is not None:
        quality["inception_fid"] = inception_fid(samples, real, weights_path=inception_weights, device=device)
    return quality


def frechet_distance_of_samples(samples: Tensor, dataset: str = "mnist5k", **kwargs: Any) -> float:
    """FD of samples (N, 1, 28, 28) in [0, 1] against ``dataset``'s test split (see :func:`sample_quality`)."""
    return sample_quality(samples, dataset, kid_subsets=1, **kwargs)["fd"]
