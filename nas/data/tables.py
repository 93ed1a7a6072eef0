"""Tables: a user's ``.csv`` or ``.tsv`` file, numeric features, the label last or in the column ``data.label``
names, columns in ``data.ignore_columns`` left out."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np


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
