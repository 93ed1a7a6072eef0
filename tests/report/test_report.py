"""What users look at: the report, the parent run's artifacts and metric, and the MLflow UI in a real browser."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nas.cli import main
from nas.drivers.config import load
from nas.drivers.runner import run_search, splits_for
from nas.ledger.events import TrainingCompleted
from nas.ledger.service import SearchService
from nas.ledger.state import fold
from nas.report.page import morphism_summary, random_baselines, render, table
from nas.tracking import open_store
from nas.tracking.runs import searches_path
from tests.conftest import mlflow_ui
from tests.tracking.forge import fake_search, fake_training

ROOT = Path(__file__).parents[2]
SMALL = ["data.dataset=digits", "train.epochs=1", "train.min_steps=0", "search.initial_width=8", "search.max_models=3"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A store with a finished Bayesian search 'b', a finished random search 'r' on the same data, a search 'half'
    that has proposed its first model and trained nothing, and a search 'further' (trainings faked) whose third
    model found no time to train, so its fourth is the leader trained further."""
    home = tmp_path_factory.mktemp("report")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    before, cwd = os.environ.get("MLFLOW_TRACKING_URI"), Path.cwd()
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.chdir(home)
    try:
        store = open_store(uri)
        run_search(store, "b", load(ROOT / "params.yaml", SMALL))
        run_search(store, "r", load(ROOT / "params.yaml", [*SMALL, "search.strategy=random"]))
        config = load(ROOT / "params.yaml", SMALL)
        splits = splits_for(config)
        store.create("half")
        half = SearchService(store.log("half"))
        from nas.data import fingerprint

        half.start("half", config, splits.input_shape, splits.num_classes, fingerprint(splits))
        half.refit()
        half.ask(1)
        further = fake_search(store, "further", models=2, finish=False)
        (late,) = further.ask(1)
        further.training_failed(late.model_id, "budget", "not one epoch fits in the 3 s left", 0.0)
        (again,) = further.ask(1)
        fake_training(further, again.model_id, 0.95, np.random.default_rng(0))  # the best: its lineage shows it
        yield home, uri
    finally:
        os.chdir(cwd)
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before


def test_the_parent_run_carries_the_report_and_progress(store: tuple[Path, str]) -> None:
    _, uri = store
    log = open_store(uri).log("b")
    parent = log.runs.parent()
    assert parent is not None and parent.info.status == "FINISHED"
    names = {a.path for a in log.client.list_artifacts(parent.info.run_id, "report")}
    assert names == {
        f"report/{n}" for n in ("report.html", "best_so_far.png", "search_tree.png", "best_architecture.png")
    }
    history = log.client.get_metric_history(parent.info.run_id, "best_val_accuracy")
    state = fold(log.read())
    ended = state.ended
    assert sorted(m.step for m in history) == list(range(1, ended + 1))  # once per step, rounds after rounds
    assert max(m.value for m in history) == pytest.approx(state.best.val_accuracy)
    values = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert values == sorted(values)  # best so far never falls
    for run in log.runs.event_runs():  # every training outcome carries its architecture's picture
        if run.data.tags["nas.type"] in ("TrainingCompleted", "TrainingFailed"):
            assert "files/architecture.png" in {a.path for a in log.client.list_artifacts(run.info.run_id, "files")}
    inputs = parent.inputs.dataset_inputs  # `nas search` shows its data as the parent's input, as DVC's stage does
    shown = [(i.dataset.name, i.dataset.source) for i in inputs]
    assert shown == [("digits", '{"uri": "sklearn.datasets.load_digits"}')]
    assert parent.data.tags["nas.data_fingerprint"].startswith(inputs[0].dataset.digest)
    assert main(["audit", "b"]) == 0  # published pictures and metrics are not events: the audit stays clean


def test_report_command_writes_html_with_baseline_and_says_when_partial(
    store: tuple[Path, str], tmp_path: Path, capsys
) -> None:
    _, uri = store
    assert main(["report", "b", "--out", str(tmp_path / "b")]) == 0
    page = (tmp_path / "b" / "report.html").read_text()
    assert "finished" in page and "partial" not in page
    assert re.search(r"\d+ s of compute in \d+ s of wall clock", page)  # the two clocks apart
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 3  # self-contained
    events = open_store(uri).log("b").read()
    trained = [e.model_id for e in events if isinstance(e, TrainingCompleted)]
    assert all(f"<td>{m}</td>" in page for m in trained)
    assert list(random_baselines(open_store(uri), fold(events))) == ["random search r"]

    assert main(["report", "half", "--out", str(tmp_path / "half")]) == 0
    assert "this report is partial" in capsys.readouterr().out
    page = (tmp_path / "half" / "report.html").read_text()
    assert "partial" in page and "No model has finished training yet" in page
    assert not (tmp_path / "half" / "best_architecture.png").exists()

    render(events[:7], tmp_path / "prefix")  # any prefix of a log renders
    assert "partial" in (tmp_path / "prefix" / "report.html").read_text()
    assert main(["report", "ghost"]) == 2
    assert "there is no search 'ghost'" in capsys.readouterr().err


def test_morphism_chains_read_short_in_tables() -> None:
    chain = [{"kind": "add_skip"}] * 8 + [{"kind": "concat_skip"}, {"kind": "wider"}, {"kind": "wider"}]
    assert morphism_summary(chain) == "add_skip x8, concat_skip, wider x2"
    assert morphism_summary([]) == "-"


def test_a_model_trained_further_says_so_in_the_table_the_run_names_and_the_audit(
    store: tuple[Path, str], capsys
) -> None:
    """In search 'further' m4, proposed after m3 found no time to train, is the leader trained further: no
    morphisms, parent the leader."""
    _, uri = store
    log = open_store(uri).log("further")
    state = fold(log.read())
    leader = max(("m1", "m2"), key=lambda m: state.models[m].val_accuracy or 0.0)
    rows = {row["model"]: row for row in table(state)}
    assert (rows["m1"]["parent"], rows["m1"]["morphisms"]) == ("-", "-")
    assert (rows["m4"]["parent"], rows["m4"]["morphisms"]) == (leader, "trained further")
    names = {run.info.run_name for run in log.runs.event_runs()}
    assert any(re.fullmatch(rf"\d{{4}} proposed m4 from {leader} \(trained further\)", n) for n in names)
    assert main(["audit", "further"]) == 0  # its lineage of the best model, m4: the same words
    lineage = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")}
    assert lineage
    for model_id, line in lineage.items():
        model = state.models[model_id]
        if not model.morphisms:
            assert line.endswith("trained further" if model.parent_id else "initial network")


def test_nas_register_puts_the_best_model_in_the_registry_once(store: tuple[Path, str], capsys) -> None:
    from mlflow.tracking import MlflowClient

    _, uri = store
    best = fold(open_store(uri).log("b").read()).best
    assert main(["register", "b", "--model-name", "digits-nas-cli", "--alias", "champion"]) == 0
    assert f"{best.model_id} of search b is registered as digits-nas-cli version 1, alias champion" in (
        capsys.readouterr().out
    )
    assert main(["register", "b", "--model-name", "digits-nas-cli", "--alias", "champion"]) == 0  # idempotent
    assert "already registered as digits-nas-cli version 1" in capsys.readouterr().out
    client = MlflowClient(uri)
    assert len(client.search_model_versions("name = 'digits-nas-cli'")) == 1
    assert str(client.get_model_version_by_alias("digits-nas-cli", "champion").version) == "1"
    state = fold(open_store(uri).log("b").read())
    assert [r[:2] for r in state.registered if r[1] == "digits-nas-cli"] == [(state.best.model_id, "digits-nas-cli")]
    assert main(["audit", "b"]) == 0


def test_nas_register_ensemble_registers_the_mean_of_the_best_models(store: tuple[Path, str], capsys) -> None:
    """`nas register b --ensemble 2`: a version whose model, loaded through MLflow, predicts the mean of the two
    best models' probabilities, tagged with its members; again, it finds that version; 0 is refused."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from nas.architectures.weights import load_weights
    from nas.data import load_splits
    from nas.training.builder import predict

    _, uri = store
    log = open_store(uri).log("b")
    state = fold(log.read())
    ids = [m.model_id for m in state.leaders(2)]
    assert main(["register", "b", "--model-name", "digits-mean", "--ensemble", "2"]) == 0
    out = capsys.readouterr().out
    assert f"the mean of {', '.join(ids)} of search b is registered as digits-mean version 1" in out
    assert main(["register", "b", "--model-name", "digits-mean", "--ensemble", "2"]) == 0
    assert "already registered as digits-mean version 1" in capsys.readouterr().out
    version = MlflowClient(uri).get_model_version_by_alias("digits-mean", "champion")
    assert version.tags["nas.members"] == ",".join(ids) and version.tags["nas.model_id"] == ids[0]
    d = state.config["data"]
    splits = load_splits(d["dataset"], val_fraction=d["val_fraction"], test_fraction=d["test_fraction"], seed=d["seed"])
    service = SearchService(log)
    by_hand = np.mean(
        [predict(state.models[i].arch, load_weights(service.weights_file(i)), splits.x_test) for i in ids], axis=0
    )
    mlflow.set_tracking_uri(uri)
    loaded = np.asarray(mlflow.pyfunc.load_model("models:/digits-mean@champion").predict(splits.x_test))
    np.testing.assert_allclose(loaded, by_hand, atol=1e-5)
    assert main(["register", "b", "--model-name", "digits-mean", "--ensemble", "0"]) == 2
    assert "--ensemble 0 must be a positive integer" in capsys.readouterr().err


def _close_assistant(page: Any) -> None:
    """Close MLflow's assistant panel, if it is open, so the screenshots show the page."""
    panel = page.get_by_text("Ask questions about your experiments")
    if panel.count():
        page.locator("button[aria-label='Close']").last.click()


@pytest.mark.slow
def test_register_the_best_model_by_clicking_in_the_mlflow_ui(
    store: tuple[Path, str], browser: Any, screenshots: Path
) -> None:
    """As a user: follow the link `nas search` printed to the parent run, open its newest logged model, "Register
    model" as a new registered model, give the version the alias champion. The registry then has them, and
    ``models:/NAME@champion`` predicts the validation split with the accuracy the search reported."""
    import mlflow
    from mlflow.tracking import MlflowClient
    from playwright.sync_api import expect

    home, uri = store
    log = open_store(uri).log("b")
    best = fold(log.read()).best
    assert best is not None and best.val_accuracy is not None
    printed = open_store(uri).reports("b").location()  # "mlflow ui ..., then http://127.0.0.1:5000/#/..."
    name = "digits-nas-ui"
    with mlflow_ui(home, uri) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 950})
        try:
            page.goto(f"{url}/{searches_path(log.runs.experiment_id)}")  # what the experiment's description links
            expect(page.get_by_text("4 matching runs")).to_be_visible(timeout=30_000)  # b, r, half, further: no events
            _close_assistant(page)
            page.screenshot(path=screenshots / "mlflow-0-searches.png")

            page.goto(f"{url}/{printed.split('5000/', 1)[1]}")
            expect(page.get_by_text("Child runs", exact=True)).to_be_visible(timeout=30_000)
            _close_assistant(page)
            expect(page.get_by_text("Neural architecture search b: bayesian on digits")).to_be_visible()
            expect(page.get_by_text(re.compile(r"^digits \([0-9a-f]{8}\)$"))).to_be_visible()  # the dataset input
            expect(page.get_by_role("link", name=re.compile(r"^000\d trained m\d val_acc=")).first).to_be_visible()
            expect(page.get_by_role("link", name="best_val_accuracy")).to_be_visible()
            page.screenshot(path=screenshots / "mlflow-1-search-run.png")

            logged = page.locator("a:not([target='_blank'])").filter(has_text=re.compile(rf"^b-{best.model_id}$"))
            logged.click()  # in the "Logged models" table (the metrics table's link opens a new tab)
            expect(page.get_by_text("Not registered", exact=True)).to_be_visible(timeout=30_000)
            _close_assistant(page)
            model_id = page.url.rsplit("/", 1)[1]
            page.screenshot(path=screenshots / "mlflow-2-logged-model.png")

            page.get_by_role("button", name="Register model").click()
            dialog = page.get_by_role("dialog")
            dialog.get_by_role("combobox").click()
            page.locator(".du-bois-light-select-item-option").filter(has_text="Create New Model").click()
            dialog.get_by_placeholder("Input a model name").fill(name)
            page.screenshot(path=screenshots / "mlflow-3-register-dialog.png")
            dialog.get_by_role("button", name="Register", exact=True).click()
            version = page.locator(f"a[href='#/models/{name}/versions/1']")  # under "Model versions"
            expect(version).to_be_visible(timeout=30_000)

            version.click()
            expect(page.get_by_text("Aliases", exact=True)).to_be_visible(timeout=30_000)
            _close_assistant(page)
            page.get_by_role("button", name="Add", exact=True).first.click()
            aliases = page.get_by_role("dialog")
            aliases.get_by_role("combobox").fill("champion")
            aliases.get_by_role("combobox").press("Enter")
            chosen = aliases.get_by_text("champion").filter(visible=True).first  # the "@ champion" tag in the box
            expect(chosen).to_be_visible()  # chosen, not still being typed, before Save
            aliases.get_by_role("button", name="Save aliases").click()
            expect(aliases).to_be_hidden(timeout=30_000)
            expect(page.get_by_role("status", name="champion")).to_be_visible()
            page.screenshot(path=screenshots / "mlflow-4-version-champion.png")
        except Exception:
            page.screenshot(path=screenshots / "mlflow-failed.png")  # what the page showed when it went wrong
            raise
        finally:
            page.close()

    client = MlflowClient(uri)
    registered = client.get_model_version_by_alias(name, "champion")
    assert str(registered.version) == "1" and registered.source == f"models:/{model_id}"
    assert client.get_logged_model(model_id).tags["nas.model_id"] == best.model_id
    splits = splits_for(fold(log.read()).config)
    assert main(["audit", "b"]) == 0  # registering from the UI changes no event run
    # Another module may have set MLflow's global URIs (set_tracking_uri also sets MLFLOW_TRACKING_URI): point
    # them at this store for models:/ and put everything back after.
    before, env = (mlflow.get_tracking_uri(), mlflow.get_registry_uri()), os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])
        if env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env
    predicted = np.asarray(model.predict(splits.x_val)).argmax(axis=1)
    assert float((predicted == splits.y_val).mean()) == pytest.approx(best.val_accuracy, abs=0.5 / len(splits.y_val))
