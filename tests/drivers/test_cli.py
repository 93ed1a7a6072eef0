"""Bad input through the command line: one clear sentence, exit status 2, nothing logged."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nas.cli import main
from tests.conftest import mlflow_has_no_runs


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "search.strategy=greedy"], "search.strategy='greedy' must be one of bayesian, random, evolution"),
        (["--set", "search.surrogate_targets=log"], "search.surrogate_targets='log' must be one of rank, raw"),
        (["--set", "search.continue_leader=true"], "search.continue_leader=True: nas 0.3.0 removed this setting"),
        (["--set", "search.propose_ahead=false"], "(bench/results/wait-fashion_mnist-1200.md); delete it from the"),
        (["--set", "search.acquisition=ei_per_cost"], "search.acquisition='ei_per_cost': nas 0.3.0 removed this"),
        (["--set", "search.max_steps=1"], "(bench/results/steps1-fashion_mnist-1200.md); delete it from the settings"),
        (["--set", "search.parents=1"], "search.parents=1: nas 0.3.0 removed this setting, which did not pay when"),
        (["--set", "search.learning_rates=[0.001,0.002]"], "search.learning_rates=[0.001, 0.002]: nas 0.3.0 removed"),
        (["--set", "data.ignore_columns=[[id]]"], "data.ignore_columns=[['id']] must be a list of column names"),
        (["--set", "train.lr_decay=0.5"], "train.lr_decay=0.5: nas 0.3.0 removed this setting, which did not pay when"),
        (["--set", "train.schedule=linear"], "train.schedule='linear' must be one of constant, cosine"),
        (["--set", "train.augment=flip"], "measured (bench/results/flip-fashion_mnist-1200.md); delete it from the"),
        (["--set", "train.weight_decay=0.05"], "train.weight_decay=0.05: nas 0.3.0 removed this setting"),
        (["--set", "final.schedule=linear"], "final.schedule='linear' must be one of constant, cosine"),
        (["--set", "final.ensemble=0"], "final.ensemble=0 must be a positive integer (1: the best model alone)"),
        (["--set", "data.test_fraction=0"], "data.test_fraction=0.0 must be a number above 0 and below 1 (each split"),
        (["--set", "search.time_budget_s=-5"], "search.time_budget_s=-5.0 must be a positive number"),
        (["--set", "search.max_model=4"], "unknown setting 'search.max_model'"),
        (["--set", "data.dataset=cifar"], "unknown dataset 'cifar'; choose one of mnist5k, digits"),
        (["--set", "oops"], "must look like group.key=value"),
        (["--config", "missing.yaml"], "settings file 'missing.yaml' does not exist in "),
        (["--config", "."], "settings file '.' is a folder; pass --config with a YAML file"),
        (["--config", "params.yaml", "--name", ""], "search name '' is not allowed"),
        (["--name", "bad name!"], "search name 'bad name!' is not allowed"),
        (["--local", "--set", "search.max_params=10"], "above search.max_params=10"),
    ],
)
def test_bad_search_input(args: list[str], message: str, mlflow_uri: str, capsys, tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text((Path(__file__).parents[2] / "params.yaml").read_text())
    assert main(["search", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("nas: error: ") and len(err.strip().splitlines()) == 1
    assert mlflow_has_no_runs(mlflow_uri)


def test_unknown_search_names_are_reported(mlflow_uri: str, capsys) -> None:
    from nas.tracking import open_store

    open_store(mlflow_uri)  # a store, without those searches
    assert main(["replay", "ghost"]) == 2
    assert "no search named 'ghost'" in capsys.readouterr().err
    assert main(["resume", "ghost"]) == 2
    assert "there is no search 'ghost' to resume" in capsys.readouterr().err
    assert main(["audit", "ghost"]) == 2  # as every other command: stderr, bad input
    assert "there is no search 'ghost' in " in capsys.readouterr().err


def test_a_tracking_server_out_of_reach_is_one_sentence_and_exit_4(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """A real MLflow client against a port where nothing listens (no retries, so it answers at once)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    for command in (["ls"], ["audit", "s"], ["replay", "s"]):
        assert main(command) == 4, command
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line == (
            "nas: store error: the tracking store http://127.0.0.1:9 cannot be reached (connection refused); "
            "check that the server runs and MLFLOW_TRACKING_URI names it"
        )


def test_a_settings_file_that_is_not_yaml_is_one_line(tmp_path: Path, mlflow_uri: str, capsys) -> None:
    (tmp_path / "bad.yaml").write_text("data:\n  dataset: [digits\nsearch: {\n")
    assert main(["search", "--config", str(tmp_path / "bad.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nas: error: settings file '{tmp_path / 'bad.yaml'}' is not valid YAML at line ")
    assert len(err.strip().splitlines()) == 1


def test_scientific_notation_is_a_number() -> None:
    from nas.drivers.config import load

    config = load(Path(__file__).parents[2] / "params.yaml", ["train.learning_rate=1e-4", "search.time_budget_s=2e3"])
    assert config["train"]["learning_rate"] == 1e-4 and config["search"]["time_budget_s"] == 2000.0


def test_a_setting_left_out_takes_its_default_and_the_shipped_file_shows_at_most_20(tmp_path: Path) -> None:
    """A settings file sets what it changes: an empty one, an old one lacking later keys and the shipped
    params.yaml (which shows the common settings at their defaults) configure the same search and stages."""
    import yaml

    from nas.drivers.config import load, load_pipeline

    shipped = Path(__file__).parents[2] / "params.yaml"
    (tmp_path / "empty.yaml").write_text("data:\n")
    assert load(tmp_path / "empty.yaml") == load(shipped)
    assert load_pipeline(tmp_path / "empty.yaml") == load_pipeline(shipped)
    assert load(tmp_path / "empty.yaml")["train"]["schedule"] == "cosine"
    assert load(tmp_path / "empty.yaml", ["train.epochs=7"])["train"]["epochs"] == 7
    old = ["train.augment=none", "train.weight_decay=0", "train.lr_decay=1", "search.parents=0", "search.max_steps=0"]
    assert load(tmp_path / "empty.yaml", old) == load(shipped)
    assert sum(len(keys) for keys in yaml.safe_load(shipped.read_text()).values()) <= 20


def test_every_setting_is_documented_with_its_default() -> None:
    """docs/usage.md's table of every setting names each key of the schema with the default the code gives it."""
    from nas.drivers.config import PIPELINE_SCHEMA, SCHEMA

    page = (Path(__file__).parents[2] / "docs" / "usage.md").read_text()
    rows = {
        line.split("|")[1].strip(): line.split("|")[2].strip() for line in page.splitlines() if line.startswith("| `")
    }
    for group, keys in {**SCHEMA, **PIPELINE_SCHEMA}.items():
        for key, (*_, default) in keys.items():
            shown = rows.get(f"`{group}.{key}`")
            assert shown is not None, f"{group}.{key} is not in docs/usage.md's table"
            assert shown == f"`{json.dumps(default)}`", (
                f"{group}.{key}: docs/usage.md says {shown}, the code {default!r}"
            )


def test_a_relative_data_path_is_logged_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`located`: a relative (or ~/) data path that exists from here becomes absolute (the settings then find the
    data from any folder); a built-in name, an absolute path and a missing path are kept as given."""
    from nas.drivers.config import load, located

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "t.csv").write_text("1,0\n")
    (tmp_path / "digits").mkdir()  # a folder that shares a built-in's name does not replace it
    root = Path(__file__).parents[2] / "params.yaml"
    for given, logged in (
        ("t.csv", str(tmp_path / "t.csv")),
        ("./t.csv", str(tmp_path / "t.csv")),
        ("~/t.csv", str(tmp_path / "t.csv")),
        (str(tmp_path / "t.csv"), str(tmp_path / "t.csv")),
        ("digits", "digits"),
        ("missing.csv", "missing.csv"),
    ):
        config = load(root, [f"data.dataset={given}"])
        assert located(config)["data"]["dataset"] == logged
        assert located(config)["search"] == config["search"] and config["data"]["dataset"] == given


def test_a_folder_without_settings_is_told_which_file_to_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_uri: str, capsys
) -> None:
    """`nas search` in a user's folder with no params.yaml names the folder and the project's params.yaml; that
    file, copied there, is a complete settings file."""
    from nas.drivers.config import load

    monkeypatch.chdir(tmp_path)
    assert main(["search", "--local", "--set", "data.dataset=digits"]) == 2
    err = capsys.readouterr().err
    project = Path(__file__).parents[2].resolve() / "params.yaml"
    assert err == (
        f"nas: error: settings file 'params.yaml' does not exist in {tmp_path}; pass --config PATH, or copy "
        f"{project} (the common settings) here\n"
    )
    assert mlflow_has_no_runs(mlflow_uri)
    (tmp_path / "params.yaml").write_text(project.read_text())
    assert load()["data"]["dataset"] == "mnist5k"


def test_version_is_the_installed_package_version(capsys) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"nas {version('nas-ledger')}"


def test_verbose_asks_the_backend_for_its_own_lines(mlflow_uri: str, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """``nas --verbose`` sets NAS_VERBOSE before anything imports Keras (``nas.training.backend`` reads it; see
    tests/training/test_backend.py) and leaves TF_CPP_MIN_LOG_LEVEL as the user set it; without it, nothing changes
    the user's own variables but that default."""
    monkeypatch.setenv("NAS_VERBOSE", "0")  # (monkeypatch puts back what it set: --verbose's "1" leaks nowhere)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "")
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    assert main(["ls"]) == 0 and os.environ["NAS_VERBOSE"] == "0" and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    assert main(["--verbose", "ls"]) == 0 and os.environ["NAS_VERBOSE"] == "1"
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ and "no searches" in capsys.readouterr().out
