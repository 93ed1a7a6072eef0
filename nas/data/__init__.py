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

from nas.data.builtin import BUILTIN, fashion_mnist_parts
from nas.data.sources import load, source_of
from nas.data.splits import Splits, check, fingerprint, load_prepared, load_splits, save_prepared, split

__all__ = [
    "BUILTIN",
    "Splits",
    "check",
    "fashion_mnist_parts",
    "fingerprint",
    "load",
    "load_prepared",
    "load_splits",
    "save_prepared",
    "source_of",
    "split",
]
