"""Splits: a dataset checked, split (stratified, fixed by a seed) and written for DVC (the ``prepare`` stage's
folder) or read back; ``fingerprint`` names the data a search saw."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nas.data.sources import load


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
    classes: tuple[str, ...] = ()  # the name of each label 0, 1, ... where the data named them; () for numbers
    features: tuple[str, ...] = ()  # the name of each feature column where a table's header named them

    @property
    def names(self) -> dict[str, list[str]]:
        """What the data named, as a logged model's MLflow metadata: ``classes`` (output i is ``classes[i]``) and
        ``features`` (the input columns in order), each only where named."""
        named = {"classes": list(self.classes), "features": list(self.features)}
        return {key: value for key, value in named.items() if value}

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_val.max(), self.y_test.max())) + 1


def _whole_numbers(y: np.ndarray) -> bool:
    """Whether ``y`` holds integers, or floats that are all finite whole numbers (2.0)."""
    if np.issubdtype(y.dtype, np.integer):
        return True
    return bool(np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)))


def check(
    x: np.ndarray, y: np.ndarray, *, val_fraction: float, test_fraction: float, classes: tuple[str, ...] = ()
) -> None:
    """ValueError, in one sentence, for data a search cannot use (labels numbered 0 to K-1; ``classes`` names
    them in the messages where the data named them)."""
    if x.ndim not in (2, 4) or x.shape[0] == 0:
        raise ValueError(f"x has shape {x.shape}; it must be (N, features), (N, H, W) or (N, H, W, C) with N > 0")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"y has shape {y.shape} for {len(x)} examples; it must be one label per example")
    if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
        raise ValueError("x contains NaN, infinite or non-numeric values; clean or impute them first")
    if not _whole_numbers(y):
        odd = y[~np.isfinite(y) | (y != np.round(y))] if np.issubdtype(y.dtype, np.floating) else y
        shown = odd[0].item() if isinstance(odd[0], np.generic) else odd[0]  # 0.5, not np.float64(0.5)
        raise ValueError(
            f"labels are {y.dtype} values such as {shown!r}; they must be integers 0, 1, 2, ... or class names "
            "(strings)"
        )
    labels = np.unique(y)
    if labels.min() < 0 or labels.max() != len(labels) - 1:
        raise ValueError(f"labels are {labels[:10].tolist()}...; they must be the integers 0 to K-1, each used")
    if len(labels) < 2:
        raise ValueError("the data has one class only; a classifier needs at least two")
    counts = np.bincount(y.astype(np.int64))
    smallest = int(counts.argmin())
    if counts[smallest] < 3:
        named = f"class {classes[smallest]!r}" if classes else f"class {smallest}"
        rare = int(np.sum(counts < 3))
        hint = (
            f"; {rare} of the {len(labels)} classes have fewer than 3, so the label looks like a measurement or an "
            "identifier, not a class (nas search classifies)"
            if rare * 2 > len(labels)
            else ""
        )
        examples = f"{counts[smallest]} example{'s' if counts[smallest] != 1 else ''}"
        raise ValueError(f"{named} has {examples}; each class needs at least 3 (train, validation, test){hint}")
    for what, fraction in (("validation", val_fraction), ("test", test_fraction)):
        if round(len(y) * fraction) < len(labels):
            raise ValueError(
                f"{len(y)} examples give a {what} split of {round(len(y) * fraction)} for {len(labels)} classes; "
                "add examples or raise the split fraction"
            )


def split(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    features: tuple[str, ...] = (),
) -> Splits:
    """Stratified train/val/test split fixed by ``seed``; labels given as names (strings, bytes or booleans) or
    as integers other than 0 to K-1 (1..3, -1 and 1) are numbered in sorted order first, and their names kept in
    ``classes``; ``features`` names the feature columns."""
    from sklearn.model_selection import train_test_split

    for label, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 < frac < 1:
            raise ValueError(f"{label}={frac!r} must be above 0 and below 1 (each split needs examples)")
    if val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction + test_fraction = {val_fraction + test_fraction} leaves nothing to train on")
    classes: tuple[str, ...] = ()
    if y.dtype.kind in "USb" and y.ndim == 1:  # names (and booleans, as LabelEncoder takes them)
        names, y = np.unique(y, return_inverse=True)
        classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    elif y.ndim == 1 and _whole_numbers(y):
        codes, numbered = np.unique(y, return_inverse=True)
        if not np.array_equal(codes, np.arange(len(codes))):  # codes such as 1..3 or -1, 1, as LabelEncoder takes
            y, classes = numbered, tuple(str(int(c)) for c in codes)
    check(x, y, val_fraction=val_fraction, test_fraction=test_fraction, classes=classes)
    x, y = x.astype(np.float32), y.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=test_fraction, stratify=y, random_state=seed)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=val_fraction / (1 - test_fraction), stratify=y_rest, random_state=seed
    )
    return Splits(name, x_train, y_train, x_val, y_val, x_test, y_test, classes, features)


def load_splits(
    name: str,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    label: str = "",
    ignore: Sequence[str] = (),
) -> Splits:
    """A dataset (see ``load``), checked and split; a prepared folder (see ``save_prepared``) is read as split
    (``label`` and ``ignore`` were applied when it was prepared)."""
    path = Path(name).expanduser()
    if is_prepared(path):
        return load_prepared(path)
    x, y, features = load(name, label=label, ignore=ignore)
    return split(name, x, y, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, features=features)


PARTS = ("train", "val", "test")


def is_prepared(path: Path) -> bool:
    """Whether ``path`` is a folder written by ``save_prepared``."""
    return path.is_dir() and all((path / f"{part}.npz").is_file() for part in PARTS)


def _write_npz(path: Path, **arrays: np.ndarray) -> None:
    """Like ``np.savez`` but byte-for-byte repeatable (fixed zip time stamps), so DVC sees unchanged data as such."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for key, array in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buffer.getvalue())


def save_prepared(splits: Splits, out: Path) -> dict[str, object]:
    """Write ``train.npz``, ``val.npz``, ``test.npz`` (arrays x, y) and ``fingerprint.json`` to ``out``.

    Returns what ``fingerprint.json`` holds: the source, the fingerprint, each split's size, and the class
    and feature names where the data named them.
    """
    out.mkdir(parents=True, exist_ok=True)
    for part in PARTS:
        _write_npz(out / f"{part}.npz", x=getattr(splits, f"x_{part}"), y=getattr(splits, f"y_{part}"))
    info: dict[str, object] = {
        "dataset": splits.name,
        "fingerprint": fingerprint(splits),
        "input_shape": list(splits.input_shape),
        "num_classes": splits.num_classes,
        **{f"{part}_examples": len(getattr(splits, f"y_{part}")) for part in PARTS},
        **splits.names,
    }
    (out / "fingerprint.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def load_prepared(path: Path) -> Splits:
    """The splits ``save_prepared`` wrote to ``path``, checked; ValueError naming the bad file."""
    arrays: dict[str, np.ndarray] = {}
    for part in PARTS:
        try:
            with np.load(path / f"{part}.npz", allow_pickle=False) as data:
                arrays[f"x_{part}"], arrays[f"y_{part}"] = data["x"], data["y"]
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
            raise ValueError(f"prepared split {path / part}.npz is unreadable ({e}); prepare the data again") from e
    shapes = {arrays[f"x_{part}"].shape[1:] for part in PARTS}
    if len(shapes) != 1:
        raise ValueError(f"prepared splits in {path} have different example shapes {sorted(shapes)}; prepare again")
    x = np.concatenate([arrays[f"x_{part}"] for part in PARTS])
    y = np.concatenate([arrays[f"y_{part}"] for part in PARTS])
    n = len(y)
    check(x, y, val_fraction=len(arrays["y_val"]) / n, test_fraction=len(arrays["y_test"]) / n)
    try:
        info = json.loads((path / "fingerprint.json").read_text())
        source = str(info["dataset"])
    except (OSError, ValueError, KeyError, TypeError):
        info, source = {}, path.name
    classes = info.get("classes", []) if isinstance(info, dict) else []
    features = info.get("features", []) if isinstance(info, dict) else []
    if features and len(features) != x.shape[-1]:
        raise ValueError(f"{path / 'fingerprint.json'} names {len(features)} features for {x.shape[-1]}; prepare again")
    if classes and len(classes) != int(y.max()) + 1:
        raise ValueError(
            f"{path / 'fingerprint.json'} names {len(classes)} classes for labels 0 to {int(y.max())}; prepare again"
        )
    return Splits(
        source,
        **{k: v.astype(np.int64) if k.startswith("y") else v.astype(np.float32) for k, v in arrays.items()},
        classes=tuple(str(c) for c in classes),
        features=tuple(str(f) for f in features) if x.ndim == 2 else (),
    )


def fingerprint(splits: Splits) -> str:
    """sha256 over every split's bytes, shapes and dtypes: changes whenever the data a search sees does."""
    digest = hashlib.sha256()
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        array = np.ascontiguousarray(getattr(splits, name))
        digest.update(f"{name}:{array.dtype}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
