"""The DVC pipeline (dvc.yaml) in a temporary Git repository: real DVC, the real flow, the real registry."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from nas.cli import main
from tests.conftest import mlflow_has_no_runs

ROOT = Path(__file__).parents[2]
TINY = {
    "data": {"dataset": "digits"},
    "search": {"max_models": 3, "initial_width": 8},
    "train": {"epochs": 1, "min_steps": 0},
    "final": {"epochs": 1},
}


def _repo(path: Path) -> Path:
    """A Git repository holding this project's files (tracked and new, not ignored) with tiny settings."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        if (ROOT / name).is_file() and not name.startswith(("tests/", "bench/")):
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_bytes((ROOT / name).read_bytes())
    params = yaml.safe_load((path / "params.yaml").read_text())
    for group, values in TINY.items():
        params[group].update(values)
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "tiny settings"]):
        subprocess.run(command, cwd=path, check=True, env={**os.environ, **_GIT})
    return path


_GIT = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}


def _env(uri: str) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, **_GIT, "MLFLOW_TRACKING_URI": uri, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # `nas` and `dvc` of this venv
    return env


def _run(repo: Path, env: dict[str, str], *command: str) -> str:
    done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_dvc_pipeline_runs_skips_reruns_registers_and_reproduces(tmp_path: Path) -> None:
    import mlflow
    from mlflow import MlflowClient

    repo = _repo(tmp_path / "repo")
    uri = f"sqlite:///{repo / 'mlflow.db'}"
    env = _env(uri)
    _run(repo, env, "dvc", "repro")
    for out in (
        "data/prepared/train.npz", "data/prepared/val.npz", "data/prepared/test.npz", "data/prepared/fingerprint.json",
        "models/best.keras", "models/best.json", "models/final.keras", "models/registered.json",
        "metrics/search.json", "metrics/test.json", "plots/best_so_far.csv", "plots/best_so_far.png",
        "plots/confusion.csv", "plots/confusion.png",
    ):  # fmt: skip
        assert (repo / out).is_file(), out
    search, test, best = (_json(repo / p) for p in ("metrics/search.json", "metrics/test.json", "models/best.json"))
    assert search["models_trained"] + search["models_failed"] == 3 and search["best_val_accuracy"] > 0
    assert search["models_not_trained"] == 0  # the budget (params.yaml's) leaves time for every model
    assert search["search_seconds"] > 0 and search["elapsed_s"] > 0  # compute and wall clock
    assert (test["final_epochs"], test["final_schedule"]) == (1, "cosine")  # params.yaml's final fit
    # params.yaml's final.ensemble (3): the searched and the final model are the mean of the 3 best (all here)
    members = [m["model_id"] for m in best["members"]]
    assert members == search["members"] == test["members"] and members[0] == best["model_id"]
    assert len(members) == min(3, search["models_trained"])
    assert len((repo / "plots/best_so_far.csv").read_text().splitlines()) == 1 + 3
    client = MlflowClient(uri)
    runs = len(client.search_runs([client.get_experiment_by_name("nas").experiment_id]))

    again = _run(repo, env, "dvc", "repro")  # prepare reads the data again, the same bytes: nothing else runs
    assert "Running stage 'prepare'" in again
    assert [line for line in again.splitlines() if line.startswith("Running stage")] == ["Running stage 'prepare':"]
    assert len(client.search_runs([client.get_experiment_by_name("nas").experiment_id])) == runs

    # The champion predicts the test set with the accuracy the evaluate stage wrote; registering again adds nothing.
    mlflow.set_tracking_uri(uri)
    champion = mlflow.pyfunc.load_model("models:/nas-classifier@champion")
    with np.load(repo / "data/prepared/test.npz") as data:
        predicted = np.asarray(champion.predict(data["x"])).argmax(axis=1)
        assert float(np.mean(predicted == data["y"])) == pytest.approx(test["test_accuracy"], abs=1e-9)
    assert "already registered as nas-classifier version 1" in _run(repo, env, "nas", "stage", "register")
    versions = client.search_model_versions("name = 'nas-classifier'")
    assert [str(v.version) for v in versions] == ["1"] and versions[0].run_id == _parent_run_id(client, best["search"])
    assert versions[0].tags["nas.model_id"] == best["model_id"]
    assert versions[0].tags["nas.members"] == ",".join(members)
    assert str(client.get_model_version_by_alias("nas-classifier", "champion").version) == "1"
    assert ("ModelRegistered", 1) == _count_registered(uri, best["search"])

    # The local remote: push, lose the cache and an output, pull them back; nothing to rerun.
    _run(repo, env, "dvc", "push")
    assert (repo / "dvc-storage").is_dir()
    shutil.rmtree(repo / ".dvc" / "cache")
    (repo / "models" / "best.keras").unlink()
    _run(repo, env, "dvc", "pull")
    assert (repo / "models" / "best.keras").is_file()
    assert _run(repo, env, "dvc", "status").split() == ["prepare:", "always", "changed"]

    # Forced, on a fresh MLflow store (nothing to reuse): the same search, model and figures again.
    fresh = _env(f"sqlite:///{tmp_path / 'fresh.db'}")
    _run(repo, fresh, "dvc", "repro", "--force")
    assert _json(repo / "models/best.json") == best
    again_search = _json(repo / "metrics/search.json")
    # The chain head differs (events record times and seconds); everything measured is the same.
    varying = {"search_seconds", "elapsed_s", "head"}
    assert {k: v for k, v in again_search.items() if k not in varying} == {
        k: v for k, v in search.items() if k not in varying
    }
    assert _json(repo / "metrics/test.json") == test

    # An experiment with one search param changed reruns the search and what follows (prepare: the same data).
    _run(repo, env, "git", "add", "-A")
    _run(repo, env, "git", "commit", "-qm", "first run")
    out = _run(repo, env, "dvc", "exp", "run", "-S", "search.max_models=2")
    assert "Running stage 'search'" in out and "fingerprint" in out
    assert (
        _json(repo / "metrics/search.json")["models_trained"] + _json(repo / "metrics/search.json")["models_failed"]
        == 2
    )
    shown = json.loads(_run(repo, env, "dvc", "exp", "show", "--json"))
    experiments = [rev["data"] for row in shown for exp in row.get("experiments") or [] for rev in exp["revs"]]
    assert [e["params"]["params.yaml"]["data"]["search"]["max_models"] for e in experiments] == [2]
    assert experiments[0]["metrics"]["metrics/test.json"]["data"]["test_accuracy"] > 0
    assert len(client.search_model_versions("name = 'nas-classifier'")) == 2  # a new final model, a new version
    metrics = _run(repo, env, "dvc", "metrics", "show")
    assert "metrics/test.json" in metrics and "metrics/search.json" in metrics
    assert "dvc_plots/index.html" in _run(repo, env, "dvc", "plots", "show")
    page = (repo / "dvc_plots" / "index.html").read_text()
    for plot in ("best validation accuracy against models trained", "against search seconds", "confusion.csv"):
        assert plot in page
    assert "best_so_far.png" in page and "confusion.png" in page


def _parent_run_id(client, search: str) -> str:
    from nas.tracking import open_store

    parent = open_store(client.tracking_uri).runs(search).parent()
    assert parent is not None
    return parent.info.run_id


def _count_registered(uri: str, search: str) -> tuple[str, int]:
    from nas.ledger.events import ModelRegistered
    from nas.tracking import open_store

    events = open_store(uri).log(search).read()
    return ("ModelRegistered", sum(isinstance(e, ModelRegistered) for e in events))


def _prepared_md5(repo: Path) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return next(o["md5"] for o in lock["stages"]["prepare"]["outs"] if o["path"] == "data/prepared")


def test_dvc_repro_sees_the_users_data_change_in_place(tmp_path: Path) -> None:
    """A user's table outside the repository, named by params.yaml: `dvc repro` reads it on every run; the same
    bytes leave data/prepared (what the search stage depends on) as it was, new values under the same name
    change it, so the search reruns."""
    data = tmp_path / "elsewhere" / "table.npz"
    data.parent.mkdir()
    x, y = np.random.default_rng(0).normal(size=(90, 5)), np.arange(90) % 3
    np.savez(data, x=x, y=y)
    repo = _repo(tmp_path / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["dataset"] = str(data)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    _run(repo, env, "dvc", "repro", "prepare")
    md5, fingerprint = _prepared_md5(repo), _json(repo / "data/prepared/fingerprint.json")["fingerprint"]
    assert "Running stage 'prepare'" in _run(repo, env, "dvc", "repro", "prepare")  # read again ...
    assert _prepared_md5(repo) == md5  # ... and found the same
    x[0, 0] += 1.0
    np.savez(data, x=x, y=y)  # edited in place: the same name, one new value
    _run(repo, env, "dvc", "repro", "prepare")
    assert _prepared_md5(repo) != md5
    assert _json(repo / "data/prepared/fingerprint.json")["fingerprint"] != fingerprint


def test_bad_data_stops_prepare_with_one_sentence_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    x = np.random.default_rng(0).normal(size=(60, 4))
    x[3, 1] = np.nan
    np.savez(tmp_path / "bad.npz", x=x, y=np.arange(60) % 3)
    params["data"]["dataset"] = "bad.npz"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert main(["stage", "prepare"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nas: error: x contains NaN") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "data").exists()
    assert main(["stage", "search"]) == 2  # nothing prepared: no search starts
    assert "run the prepare stage first" in capsys.readouterr().err
    assert mlflow_has_no_runs(uri)
    assert main(["stage", "evaluate"]) == 2
    assert "run the" in capsys.readouterr().err


def test_the_final_fit_repeats_with_its_seed_and_follows_its_schedule() -> None:
    """``final_fit`` on real digits: the same seed gives the same weights; a cosine and a constant rate give
    different ones (the cosine's last steps are near 0); no epochs keep the searched weights."""
    from nas.architectures.initial import initial_architecture
    from nas.architectures.weights import init_weights
    from nas.data import load_splits
    from nas.drivers.pipeline import final_fit

    def same(a: dict, b: dict) -> bool:
        return a.keys() == b.keys() and all(np.array_equal(x, y) for k in a for x, y in zip(a[k], b[k], strict=True))

    splits = load_splits("digits")
    arch = initial_architecture(splits.input_shape, splits.num_classes, depth=1, width=4, dense_layers=1, units=16)
    searched = init_weights(arch, np.random.default_rng(0))
    cosine = {"epochs": 1, "learning_rate": 0.01, "schedule": "cosine"}
    first, again = (final_fit(arch, searched, splits, cosine, 32, seed=3) for _ in range(2))
    constant = final_fit(arch, searched, splits, {**cosine, "schedule": "constant"}, 32, seed=3)
    assert same(first, again) and not same(first, constant) and not same(first, searched)
    assert final_fit(arch, searched, splits, {**cosine, "epochs": 0}, 32, seed=3) is searched


def test_evaluate_names_the_classes_of_a_named_table_in_its_confusion_matrix(tmp_path: Path) -> None:
    """The evaluate stage on data whose labels are names: plots/confusion.csv reads "actual,predicted" by name."""
    from nas.architectures.initial import initial_architecture
    from nas.data import load_splits, save_prepared
    from nas.drivers.pipeline import evaluate
    from nas.training.builder import build_model, read_weights, save_ensemble

    rng = np.random.default_rng(0)
    labels = np.arange(90) % 3
    np.savez(
        tmp_path / "named.npz", x=rng.normal(size=(90, 4)) + labels[:, None], y=np.array(["ant", "bee", "cat"])[labels]
    )
    splits = load_splits(str(tmp_path / "named.npz"))
    save_prepared(splits, tmp_path / "prepared")
    arch = initial_architecture(splits.input_shape, splits.num_classes, dense_layers=1, units=8)
    save_ensemble([("m1", arch, read_weights(build_model(arch), arch))], tmp_path / "models" / "best.keras")
    (tmp_path / "models" / "best.json").write_text(json.dumps({"architecture": arch.to_dict()}))
    folders = {k: tmp_path / k for k in ("prepared", "models", "metrics", "plots")}
    result = evaluate({"epochs": 0, "learning_rate": 0.001, "schedule": "cosine"}, 16, 0, **folders)
    rows = (tmp_path / "plots" / "confusion.csv").read_text().splitlines()
    assert rows[0] == "actual,predicted" and len(rows) == 1 + result["test_examples"]
    actual = [row.split(",")[0] for row in rows[1:]]
    assert actual == [splits.classes[i] for i in splits.y_test] and set(actual) == {"ant", "bee", "cat"}
    assert all(row.split(",")[1] in splits.classes for row in rows[1:])
    assert (tmp_path / "plots" / "confusion.png").stat().st_size > 0


def test_evaluate_fine_tunes_each_member_of_an_ensemble_and_tests_their_mean(tmp_path: Path) -> None:
    """A searched model of two members (as the search stage writes it with final.ensemble=2): the evaluate stage
    fine-tunes each member alone, exactly as ``final_fit`` would, writes their ensemble, and the accuracy in
    metrics/test.json is that of the mean of their probabilities, which models/final.keras predicts as well."""
    import keras

    from nas.architectures.initial import initial_architecture
    from nas.data import load_splits, save_prepared
    from nas.drivers.pipeline import evaluate, final_fit
    from nas.training.builder import build_model, load_ensemble, predict_ensemble, read_weights, save_ensemble

    splits = load_splits("digits")
    save_prepared(splits, tmp_path / "prepared")
    keras.utils.set_random_seed(0)
    members = []
    for model_id, units in (("m5", 16), ("m2", 8)):
        arch = initial_architecture(splits.input_shape, splits.num_classes, dense_layers=1, units=units)
        members.append((model_id, arch, read_weights(build_model(arch), arch)))
    save_ensemble(members, tmp_path / "models" / "best.keras")
    described = [{"model_id": i, "architecture": arch.to_dict()} for i, arch, _ in members]
    best = {"search": "s", "model_id": "m5", "architecture": members[0][1].to_dict(), "members": described}
    (tmp_path / "models" / "best.json").write_text(json.dumps(best))
    folders = {k: tmp_path / k for k in ("prepared", "models", "metrics", "plots")}
    final = {"epochs": 1, "learning_rate": 0.001, "schedule": "cosine"}
    result = evaluate(final, 32, 4, **folders)

    assert result["members"] == ["m5", "m2"] and _json(tmp_path / "metrics" / "test.json") == result
    fitted = load_ensemble(tmp_path / "models" / "final.keras", [(i, arch) for i, arch, _ in members])
    for (_, arch, searched), weights in zip(members, fitted, strict=True):
        alone = final_fit(arch, searched, splits, final, 32, seed=4)
        assert all(np.array_equal(a, b) for k in alone for a, b in zip(alone[k], weights[k], strict=True))
    together = [(i, arch, w) for (i, arch, _), w in zip(members, fitted, strict=True)]
    by_hand = float(np.mean(predict_ensemble(together, splits.x_test).argmax(1) == splits.y_test))
    assert result["test_accuracy"] == pytest.approx(by_hand, abs=1.5 / len(splits.y_test))  # a tie may break apart
    loaded = keras.saving.load_model(tmp_path / "models" / "final.keras", compile=False)
    predicted = np.asarray(loaded.predict(splits.x_test, verbose=0)).argmax(1)
    assert float(np.mean(predicted == splits.y_test)) == result["test_accuracy"]
    searched = float(np.mean(predict_ensemble(members, splits.x_test).argmax(1) == splits.y_test))
    assert result["searched_model_test_accuracy"] == pytest.approx(searched, abs=1.5 / len(splits.y_test))
