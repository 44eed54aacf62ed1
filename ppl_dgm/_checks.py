"""Argument checks shared by public constructors and functions (errors at the boundary)."""

import math
import numbers
from collections.abc import Sequence

import torch

__all__ = [
    "check_positive_int",
    "check_seed",
    "check_positive_int_sequence",
    "check_image_shape",
    "check_shape",
    "check_choice",
    "check_positive_float",
    "check_finite",
    "check_same_shape",
]


def check_positive_int(name: str, value: object) -> int:
    """Return `value` as an int, or raise naming `name` if it is not an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def check_seed(value: object, name: str = "seed") -> int:
    """Return `value` as an int in [0, 2**32 - 1] (what NumPy's and Pyro's seeding accept), or raise naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    if value >= 2**32:
        raise ValueError(f"{name} must be an int below 2**32 (NumPy's seed range), got {value!r}")
    return int(value)


def check_positive_int_sequence(name: str, value: object, allow_empty: bool = False) -> tuple[int, ...]:
    """Return `value` as a tuple of ints >= 1, or raise naming `name`."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a sequence of positive ints, got {value!r}")
    if not value and not allow_empty:
        raise ValueError(f"{name} must contain at least one positive int, got {value!r}")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, numbers.Integral) or item < 1:
            raise ValueError(f"{name} must be a sequence of positive ints, got {value!r}")
    return tuple(int(item) for item in value)


def check_image_shape(value: object, name: str = "image_shape") -> tuple[int, int, int]:
    """Return `value` as a (C, H, W) tuple of positive ints, or raise naming `name`."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 3:
        raise ValueError(f"{name} must be (C, H, W) positive ints, got {value!r}")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, numbers.Integral) or item < 1:
            raise ValueError(f"{name} must be (C, H, W) positive ints, got {value!r}")
    return tuple(int(item) for item in value)


def check_shape(value: object, name: str = "shape") -> tuple[int, ...]:
    """Return `value` as a non-empty tuple of positive ints (B, ...), or raise a ValueError naming `name`."""
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or not value
        or not all(isinstance(item, numbers.Integral) and not isinstance(item, bool) and item >= 1 for item in value)
    ):
        raise ValueError(f"{name} must be a sequence of positive ints (B, ...), got {value!r}")
    return tuple(int(item) for item in value)


def check_choice(name: str, value: object, choices: Sequence[object]) -> object:
    """Return `value` if it is one of `choices`, else raise naming `name` and listing the choices."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not known; expected one of {tuple(choices)}")
    return value


def check_positive_float(name: str, value: object) -> float:
    """Return `value` as a float, or raise naming `name` if it is not a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive float, got {value!r}")
    return float(value)


def check_finite(name: str, value: object) -> torch.Tensor:
    """Return `value` if it is a tensor without NaN or infinite entries, else raise naming `name` and the count.

    One reduction and one host sync: call it once at an entry point, never inside a sampler loop.
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.is_floating_point() or value.is_complex():
        non_finite = ~torch.isfinite(value)
        if bool(non_finite.any()):
            num_nan = int(torch.isnan(value).sum())
            raise ValueError(
                f"{name} must be finite, got {num_nan} NaN and {int(non_finite.sum()) - num_nan} infinite "
                f"entries in a tensor of shape {tuple(value.shape)}"
            )
    return value


def check_same_shape(first_name: str, first: object, second_name: str, second: object) -> None:
    """Raise naming both arguments unless `first` and `second` are tensors of one shape (no silent broadcasting)."""
    for name, value in ((first_name, first), (second_name, second)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if first.shape != second.shape:
        raise ValueError(
            f"{first_name} and {second_name} must have the same shape, got {tuple(first.shape)} and {tuple(second.shape)}"
        )
