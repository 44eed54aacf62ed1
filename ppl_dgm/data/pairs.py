"""Paired and unpaired image-to-image digit tasks built from mnist5k (pix2pix / CycleGAN benchmarks).

Tasks (source -> target), images (N, 1, 28, 28) in [0, 1], on mnist5k's seeded train/test split:
``"edges2digit"`` (Sobel edge magnitude -> digit), ``"digit2inverted"`` (x -> 1 − x),
``"digit2rotated"`` (x -> x rotated 90° counter-clockwise).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import TensorDataset

__all__ = ["PAIR_TASKS", "sobel_edges", "pair_transform", "paired_dataset", "load_pairs", "load_unpaired"]

PAIR_TASKS = ("edges2digit", "digit2inverted", "digit2rotated")
_UNPAIRED_SEED = 1


def sobel_edges(images: Tensor) -> Tensor:
    """Sobel gradient magnitude √(G_x² + G_y²) of images (N, C, H, W), divided by 4 and clipped to [0, 1]."""
    kernel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=images.dtype, device=images.device)
    kernels = torch.stack([kernel_x, kernel_x.T])[:, None]  # (2, 1, 3, 3): G_x, G_y
    channels = images.shape[1]
    gradients = F.conv2d(images.reshape(-1, 1, *images.shape[2:]), kernels, padding=1)
    magnitude = gradients.pow(2).sum(1, keepdim=True).sqrt()
    return (magnitude / 4.0).clamp(0, 1).reshape(-1, channels, *images.shape[2:])


def _check_task(task: object) -> None:
    if task not in PAIR_TASKS:
        raise ValueError(f"task={task!r} is not a known image-to-image task; expected one of {PAIR_TASKS}")


def pair_transform(task: str, images: Tensor) -> tuple[Tensor, Tensor]:
    """(source, target) of ``task`` for digit images (N, 1, H, W) in [0, 1]."""
    _check_task(task)
    if task == "edges2digit":
        return sobel_edges(images), images
    if task == "digit2inverted":
        return images, 1.0 - images
    return images, torch.rot90(images, 1, dims=(2, 3))


def paired_dataset(source: Tensor, target: Tensor, labels: Tensor | None = None) -> TensorDataset:
    """TensorDataset(source, target[, labels]) of aligned pairs, checked to have the same (N, C, H, W) shape."""
    if source.shape != target.shape or source.ndim != 4:
        raise ValueError(f"source and target must have the same shape (N, C, H, W), got {tuple(source.shape)} and {tuple(target.shape)}")
    if labels is not None and labels.shape != source.shape[:1]:
        raise ValueError(f"labels must have shape ({source.shape[0]},), got {tuple(labels.shape)}")
    return TensorDataset(source, target) if labels is None else TensorDataset(source, target, labels)


def load_pairs(task: str, split: str = "train") -> TensorDataset:
    """Aligned (source, target, label) triples of ``task`` on mnist5k's ``split`` (4,000 train / 1,000 test)."""
    from ppl_dgm.data.datasets import load_dataset

    _check_task(task)
    images, labels = load_dataset("mnist5k", split).tensors
    return paired_dataset(*pair_transform(task, images), labels)


def load_unpaired(task: str, split: str = "train") -> TensorDataset:
    """Unpaired domains (A, B) of ``task``: sources of one half of ``split``'s digits and targets of the other half,
    so no B image is the translation of any A image (2,000 + 2,000 train, 500 + 500 test)."""
    pairs = load_pairs(task, split)
    source, target = pairs.tensors[0], pairs.tensors[1]
    order = torch.randperm(len(source), generator=torch.Generator().manual_seed(_UNPAIRED_SEED))
    half = len(source) // 2
    return TensorDataset(source[order[:half]], target[order[half : 2 * half]])
