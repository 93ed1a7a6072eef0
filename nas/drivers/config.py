"""Search configuration: ``params.yaml`` groups, ``--set`` overrides, one clear error for a bad value."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from nas.ledger.events import REMOVED, REMOVED_IN, removed_in_use
from nas.strategy.targets import TARGETS
from nas.training import SCHEDULES


class Column(str):
    """Schema type of a setting that names a table's column: empty where none is given, and a name YAML reads as a
    number (a column 2024, pandas' 0, 1, ...) is that name."""


# group -> key -> (type, check, what a good value is, the default)
_POSITIVE = (lambda v: v > 0, "a positive number")
_FRACTION = (lambda v: 0 < v < 1, "a number above 0 and below 1 (each split needs examples)")
_ANY = (lambda v: True, "")


SCHEMA: dict[str, dict[str, tuple[type, Any, str, Any]]] = {
    "data": {
        "dataset": (str, *_ANY, "mnist5k"),
        "label": (Column, *_ANY, ""),
        "ignore_columns": (list, lambda v: len(set(v)) == len(v), "a list of distinct column names", []),
        "val_fraction": (float, *_FRACTION, 0.2),
        "test_fraction": (float, *_FRACTION, 0.2),
        "seed": (int, lambda v: v >= 0, "a non-negative integer", 0),
    },
    "search": {
        "strategy": (
            str,
            lambda v: v in ("bayesian", "random", "evolution"),
            "one of bayesian, random, evolution",
            "bayesian",
        ),
        "max_models": (int, *_POSITIVE, 10),
        "time_budget_s": (float, *_POSITIVE, 480.0),
        "seed": (int, lambda v: v >= 0, "a non-negative integer", 0),
        "trainers": (int, *_POSITIVE, 1),
        "max_params": (int, *_POSITIVE, 1000000),
        "max_layers": (int, *_POSITIVE, 60),
        "beta": (float, lambda v: v >= 0, "a non-negative number", 2.576),
        "kernel_lambda": (float, lambda v: v >= 0, "a non-negative number", 1.0),
        "surrogate_targets": (str, lambda v: v in TARGETS, f"one of {', '.join(TARGETS)}", "rank"),
        "initial_width": (int, *_POSITIVE, 32),
        "initial_depth": (int, *_POSITIVE, 3),
        "initial_units": (int, *_POSITIVE, 256),
        "initial_dense_layers": (int, *_POSITIVE, 2),
    },
    "train": {
        "epochs": (int, *_POSITIVE, 4),
        "batch_size": (int, *_POSITIVE, 64),
        "learning_rate": (float, *_POSITIVE, 0.001),
        "schedule": (str, lambda v: v in SCHEDULES, f"one of {', '.join(SCHEDULES)}", "cosine"),
        "early_stopping_patience": (int, lambda v: v >= 0, "a non-negative integer", 2),
        "min_steps": (int, lambda v: v >= 0, "a non-negative integer", 150),
        "timeout_s": (float, *_POSITIVE, 600.0),
    },
}
# Groups of params.yaml that the DVC stages after the search read; they are not part of a search's config.
PIPELINE_SCHEMA: dict[str, dict[str, tuple[type, Any, str, Any]]] = {
    "final": {
        "epochs": (int, lambda v: v >= 0, "a non-negative integer (0 keeps the searched weights)", 2),
        "learning_rate": (float, *_POSITIVE, 0.0001),
        "schedule": (str, lambda v: v in SCHEDULES, f"one of {', '.join(SCHEDULES)}", "cosine"),
        "ensemble": (int, lambda v: v > 0, "a positive integer (1: the best model alone)", 3),
    },
    "register": {
        "model_name": (str, lambda v: bool(v.strip()), "a non-empty name", "nas-classifier"),
    },
}
DEFAULT_FILE = Path("params.yaml")


def _coerce(key: str, value: Any, typ: type) -> Any:
    if typ is list:  # column names: a YAML list, or one name (several joined by commas, as --set writes them)
        if value is None:
            return []
        names = value.split(",") if isinstance(value, str) else value
        if not isinstance(names, list) or not all(isinstance(n, str | int) and not isinstance(n, bool) for n in names):
            raise ValueError(f"{key}={value!r} must be a list of column names, e.g. [id, date]")
        return [str(n).strip() for n in names if str(n).strip()]
    if typ is Column:
        if value is None:  # label: (empty) in YAML
            return ""
        if isinstance(value, str | int) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"{key}={value!r} must be a string")
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is float and isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, typ) or isinstance(value, bool):
        kind = {float: "a number", int: "an integer", str: "a string"}[typ]
        raise ValueError(f"{key}={value!r} must be {kind}")
    return value


def _removed(path: str, value: Any) -> None:
    """A removed setting in a settings file: ignored at the value that does what the code now does, else
    ValueError naming it, its measurement and the fix."""
    group, key = path.split(".")
    if removed_in_use({group: {key: value}}):
        raise ValueError(
            f"{path}={value!r}: nas {REMOVED_IN} removed this setting, which did not pay when measured "
            f"({REMOVED[path][1]}); "
            "delete it from the settings file"
        )


def _validate(
    config: Mapping[str, Any], schema: Mapping[str, Mapping[str, tuple[type, Any, str, Any]]]
) -> dict[str, Any]:
    """``config`` checked against ``schema`` and completed with the schema's defaults: every group, every key."""
    out: dict[str, Any] = {group: {} for group in schema}
    for group, values in config.items():
        if group not in schema:
            raise ValueError(f"unknown settings group {group!r}; groups are {', '.join([*SCHEMA, *PIPELINE_SCHEMA])}")
        if values is None:  # a group left empty in YAML
            continue
        if not isinstance(values, Mapping):
            raise ValueError(f"settings group {group!r} must be a mapping of keys to values")
        for key, value in values.items():
            if f"{group}.{key}" in REMOVED:
                _removed(f"{group}.{key}", value)
                continue
            if key not in schema[group]:
                raise ValueError(f"unknown setting '{group}.{key}'; {group} has {', '.join(schema[group])}")
            typ, check, good, _ = schema[group][key]
            value = _coerce(f"{group}.{key}", value, typ)
            if not check(value):
                raise ValueError(f"{group}.{key}={value!r} must be {good}")
            out[group][key] = value
    for group, keys in schema.items():
        for key, (*_, default) in keys.items():
            out[group].setdefault(key, copy.deepcopy(default))
    return out


def validate(config: Mapping[str, Any]) -> dict[str, Any]:
    """A complete, checked copy of a search's ``config``; ValueError naming the first unknown key or bad value."""
    out = _validate(config, SCHEMA)
    if out["data"]["val_fraction"] + out["data"]["test_fraction"] >= 1:
        raise ValueError("data.val_fraction + data.test_fraction must be below 1, or nothing is left to train on")
    return out


def apply_overrides(config: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """``config`` with ``group.key=value`` overrides (values parsed as YAML)."""
    out = copy.deepcopy(dict(config))
    for item in overrides:
        path, sep, raw = item.partition("=")
        group, dot, key = path.strip().partition(".")
        if not sep or not dot or not key:
            raise ValueError(f"--set {item!r} must look like group.key=value, e.g. search.max_models=4")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ValueError(f"--set {item!r}: the value does not parse ({e})") from e
        out.setdefault(group, {})
        if not isinstance(out[group], dict):
            raise ValueError(f"--set {item!r}: {group!r} is not a settings group")
        out[group][key] = value
    return out


def _read(given: Path | None, overrides: Iterable[str]) -> dict[str, Any]:
    path = given or DEFAULT_FILE
    if path.is_dir():
        raise ValueError(f"settings file {str(path)!r} is a folder; pass --config with a YAML file such as params.yaml")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        example = Path(__file__).resolve().parents[2] / DEFAULT_FILE  # the project's, where nas runs from a clone
        copy_it = f", or copy {example} (the common settings) here" if given is None and example.is_file() else ""
        raise ValueError(
            f"settings file {str(path)!r} does not exist in {Path.cwd()}; pass --config PATH{copy_it}"
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"settings file {str(path)!r} is not valid YAML{where}: {problem}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"settings file {str(path)!r} cannot be read ({e})") from e
    if not isinstance(raw, dict):
        raise ValueError(f"settings file {str(path)!r} must hold groups of settings (data, search, train)")
    return apply_overrides(raw, overrides)


def load(path: Path | None = None, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """A search's settings (groups data, search, train) from ``path`` (default ./params.yaml) with
    overrides, validated; the pipeline's groups (final, register) are checked when present, not returned."""
    raw = _read(path, overrides)
    pipeline = {g: raw.pop(g) for g in PIPELINE_SCHEMA if g in raw}
    for group, values in pipeline.items():
        _validate({group: values}, {group: PIPELINE_SCHEMA[group]})
    return validate(raw)


def located(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with a relative (or ``~/``) ``data.dataset`` path that exists from the working folder made
    absolute, so a search's logged settings find its data from anywhere (``nas register`` or ``nas resume`` run
    from another folder, a deployment's worker); a built-in name, an absolute path or a path that does not exist
    is kept as given (the data check names it). The DVC stages keep ``data/prepared`` relative: their search
    names must not depend on where the repository is."""
    from nas.data import BUILTIN

    dataset = str(config["data"]["dataset"])
    path = Path(dataset).expanduser()
    if dataset in BUILTIN or Path(dataset).is_absolute() or not path.exists():
        return dict(config)
    return {**config, "data": {**config["data"], "dataset": str(path.resolve())}}


def load_pipeline(path: Path | None = None, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """The settings of the stages after the search (groups final, register), validated and complete."""
    raw = _read(path, overrides)
    return _validate({g: raw.get(g, {}) for g in PIPELINE_SCHEMA}, PIPELINE_SCHEMA)
