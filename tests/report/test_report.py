"""What users look at: the report, the parent run's artifacts and metric, and the MLflow UI in a real browser."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from nas.drivers.cli import main
from nas.drivers.config import load
from nas.drivers.runner import run_search, splits_for
from nas.ledger.events import TrainingCompleted
from nas.ledger.service import SearchService
from nas.ledger.state import fold
from nas.report.page import random_baselines, render
from nas.tracking import open_store

ROOT = Path(__file__).parents[2]
SMALL = ["data.dataset=digits", "train.epochs=1", "search.initial_width=8", "search.max_models=3"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A store with a finished Bayesian search 'b', a finished random search 'r' on the same data, and a
    search 'half' that has proposed its first model and trained nothing."""
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
    assert main(["audit", "b"]) == 0  # published pictures and metrics are not events: the audit stays clean


def test_report_command_writes_html_with_baseline_and_says_when_partial(
    store: tuple[Path, str], tmp_path: Path, capsys
) -> None:
    _, uri = store
    assert main(["report", "b", "--out", str(tmp_path / "b")]) == 0
    page = (tmp_path / "b" / "report.html").read_text()
    assert "finished" in page and "partial" not in page
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _chromium(url: str, *args: str) -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "this test needs Debian's chromium: apt-get install chromium (scripts/test.sh does it as root)"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    done = subprocess.run(
        [browser, *flags, "--virtual-time-budget=20000", "--window-size=1400,1100", *args, url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", done.stdout))


@pytest.mark.slow
def test_mlflow_ui_shows_the_search_in_a_real_browser(store: tuple[Path, str], tmp_path: Path) -> None:
    home, uri = store
    port = _free_port()
    ui = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
         "--port", str(port)],
        cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or ui.poll() is not None:
                    raise AssertionError("mlflow ui did not start within 120 s") from None
                time.sleep(1)
        log = open_store(uri).log("b")
        parent = log.runs.parent()
        assert parent is not None
        page = f"http://127.0.0.1:{port}/#/experiments/{log.runs.experiment_id}/runs/{parent.info.run_id}"
        shot = tmp_path / "run-page.png"
        overview = _chromium(page, "--dump-dom")
        assert "Child runs" in overview and "Finished" in overview
        assert re.search(r"000\d trained m\d val_acc=", overview)  # the event runs, by their names
        assert "best_val_accuracy" in overview
        artifacts = _chromium(f"{page}/artifacts", "--dump-dom")
        assert " report " in artifacts
        _chromium(page, f"--screenshot={shot}", "--hide-scrollbars")
        assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    finally:
        os.killpg(ui.pid, signal.SIGTERM)  # the UI and the job workers it started
        ui.wait(timeout=30)
