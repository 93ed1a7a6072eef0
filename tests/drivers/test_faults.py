"""Faults on the default path, as a user meets them: the installed `nas` in folders of their own, the local
SQLite store, no servers (each flow-mode search starts a Prefect API of its own). A SIGKILLed search resumes at
once and wedges no other; Ctrl-C and SIGTERM stop cleanly; a corrupt store and missing files get one sentence.

Set ``NAS_FAULTS_OUT`` to a file to have the drills append what they measured (``bench/faults.py`` does).
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.services.conftest import record_fault

ROOT = Path(__file__).parents[2]
NAS = str(Path(sys.executable).parent / "nas")
TINY = ["--set", "data.dataset=digits", "--set", "search.initial_width=8", "--set", "train.min_steps=0"]
LONG = ["--set", "train.epochs=40", "--set", "train.early_stopping_patience=40"]  # a training to interrupt


def _folder(path: Path) -> Path:
    path.mkdir(parents=True)
    shutil.copy(ROOT / "params.yaml", path / "params.yaml")
    return path


def _env(home: Path) -> dict[str, str]:
    """A user's environment: no servers (no PREFECT_API_URL, no MLFLOW_TRACKING_URI), one Prefect home for every
    nas process, as ~/.prefect is on one machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    return {**env, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def _start(cwd: Path, home: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [NAS, *args], cwd=cwd, env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # a group of its own, as a shell gives a job: a signal to it reaches what it started
    )  # fmt: skip


def _nas(cwd: Path, home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NAS, *args], cwd=cwd, env=_env(home), capture_output=True, text=True, timeout=timeout)


def _collect(process: subprocess.Popen[str]) -> list[str]:
    """Read the process's output on a thread, so the pipe never fills; the lines so far."""
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        lines.extend(process.stdout)

    threading.Thread(target=read, daemon=True).start()
    return lines


def _events(folder: Path, name: str) -> list:
    from nas.tracking import open_store

    return open_store(f"sqlite:///{folder / 'mlflow.db'}").log(name).read()


def _training_now(folder: Path, name: str, after: int = 0) -> str | None:
    """The model whose TrainingStarted (beyond seq ``after``) has no outcome yet, if any."""
    from nas.ledger.events import TrainingCompleted, TrainingFailed, TrainingStarted

    try:
        events = _events(folder, name)
    except Exception:  # the store is being created
        return None
    started = {e.model_id for e in events if isinstance(e, TrainingStarted) and e.seq > after}
    ended = {e.model_id for e in events if isinstance(e, TrainingCompleted | TrainingFailed)}
    return next(iter(sorted(started - ended)), None)


def _wait_for(check, timeout: float, what: str, output: list[str] | None = None):  # type: ignore[no-untyped-def]
    """The first true value of ``check()`` within ``timeout`` seconds; on failure, the last lines of ``output``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    tail = "".join((output or [])[-20:])
    raise AssertionError(f"no {what} within {timeout:.0f} s; the process said:\n{tail}")


def _servers_of(pid: int) -> list[psutil.Process]:
    """The Prefect API processes started by process ``pid`` (their command line names their parent)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "flows.local_api" in cmdline and str(pid) in cmdline:
            found.append(process)
    return found


def _outcomes(events: list) -> dict[str, int]:
    from nas.ledger.events import TrainingCompleted, TrainingFailed

    counts: dict[str, int] = {}
    for e in events:
        if isinstance(e, TrainingCompleted | TrainingFailed):
            counts[e.model_id] = counts.get(e.model_id, 0) + 1
    return counts


@pytest.mark.slow
def test_a_killed_flow_search_resumes_at_once_and_wedges_no_other_search(tmp_path: Path) -> None:
    """The issue's drill: before, the killed flow's training slot stayed taken in $PREFECT_HOME's database and
    every later flow-mode search on the machine waited for it (10 minutes and more), and its temporary Prefect
    server lived on."""
    home, a, b = tmp_path / "prefect-home", _folder(tmp_path / "a"), _folder(tmp_path / "b")
    search = _start(a, home, "search", "--name", "k1", *TINY, "--set", "search.max_models=2", *LONG)
    output = _collect(search)
    try:
        model = _wait_for(lambda: _training_now(a, "k1"), 240, "training", output)
        assert _servers_of(search.pid), "the search runs its Prefect API as a child of its own"
        search.kill()  # SIGKILL, mid-training
        search.wait()
    finally:
        search.kill()
    killed_at = time.monotonic()
    _wait_for(lambda: not _servers_of(search.pid), 10, "end of the killed search's Prefect API")
    server_gone_s = time.monotonic() - killed_at
    listed = _nas(a, home, "ls").stdout  # what nas ls says right after the kill is what the log holds
    assert "trained   0" in listed and "unfinished" in listed, listed
    before = len(_events(a, "k1"))
    # The search resumed, and another started in another folder at the same moment: neither waits on the dead.
    started = time.monotonic()
    resume = _start(a, home, "resume", "k1")
    other = _start(b, home, "search", "--name", "other", *TINY, "--set", "search.max_models=1", "--set",
                   "train.epochs=1")  # fmt: skip
    resume_out, other_out = _collect(resume), _collect(other)
    retrained = _wait_for(lambda: _training_now(a, "k1", after=before), 120, "training after the resume", resume_out)
    resumed_s = time.monotonic() - started
    assert retrained == model  # the interrupted training, first
    assert other.wait(timeout=300) == 0, "".join(other_out)
    other_s = time.monotonic() - started
    assert resume.wait(timeout=300) == 0, "".join(resume_out)
    events = _events(a, "k1")
    assert _outcomes(events) == {"m1": 1, "m2": 1}  # each model trained to its end once, nothing lost
    assert _nas(a, home, "audit", "k1").returncode == 0
    assert _nas(a, home, "replay", "k1", "--verify").returncode == 0
    _wait_for(lambda: not _servers_of(resume.pid) and not _servers_of(other.pid), 10, "end of the Prefect APIs")
    assert resumed_s < 60, f"the resume started training again after {resumed_s:.0f} s"
    record_fault(
        "local_flow_sigkill_resume",
        {
            "killed_during": f"training of {model}",
            "server_gone_after_kill_s": round(server_gone_s, 1),
            "resume_training_again_s": round(resumed_s, 1),
            "other_search_finished_s": round(other_s, 1),
            "models_retrained": 0,
            "events_before": before,
            "events_after": len(events),
        },
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "sent"),
    [([], signal.SIGINT), (["--local"], signal.SIGINT), ([], signal.SIGTERM)],
    ids=["flow-ctrl-c", "local-ctrl-c", "flow-sigterm"],
)
def test_ctrl_c_and_sigterm_stop_at_the_next_batch_with_one_line(
    tmp_path: Path, mode: list[str], sent: signal.Signals
) -> None:
    """Before, the training ran to its end, then ~40 lines of KeyboardInterrupt traceback and "Crash detected!"."""
    home, folder = tmp_path / "prefect-home", _folder(tmp_path / "s")
    search = _start(folder, home, "search", *mode, "--name", "s1", *TINY, "--set", "search.max_models=2", *LONG)
    output = _collect(search)
    try:
        model = _wait_for(lambda: _training_now(folder, "s1"), 240, "training", output)
        time.sleep(1.0)  # mid-training
        signalled = time.monotonic()
        os.killpg(search.pid, sent)  # as a terminal's Ctrl-C reaches the whole foreground job
        code = search.wait(timeout=120)
        stop_s = time.monotonic() - signalled
    finally:
        search.kill()
    text = "".join(output)
    assert code == 130, text
    assert "Traceback" not in text and "Crash detected" not in text, text
    assert "nas: stopped; continue it with: nas resume s1" in text.splitlines()[-1]
    assert model not in _outcomes(_events(folder, "s1"))  # cut short: no outcome, so resume trains it again
    _wait_for(lambda: not _servers_of(search.pid), 10, "end of the search's Prefect API")
    record_fault(
        f"{'local' if mode else 'flow'}_{sent.name.lower()}",
        {"stopped_during": f"training of {model}", "signal_to_exit_s": round(stop_s, 1), "exit_status": code},
    )


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once(tmp_path: Path) -> None:
    home, folder = tmp_path / "prefect-home", _folder(tmp_path / "s")
    # Batches of a second or so, so that the first stop is still under way when the second Ctrl-C comes.
    heavy = ["--set", "search.initial_width=192", "--set", "train.batch_size=1024"]
    search = _start(folder, home, "search", "--local", "--name", "s2", *TINY, *heavy, "--set",
                    "search.max_models=1", *LONG)  # fmt: skip
    output = _collect(search)
    try:
        _wait_for(lambda: _training_now(folder, "s2"), 240, "training", output)
        time.sleep(1)  # into the training's batches
        os.killpg(search.pid, signal.SIGINT)
        _wait_for(lambda: any("stopping after this batch" in line for line in output), 10, "first answer", output)
        os.killpg(search.pid, signal.SIGINT)  # two signals at once would arrive as one: the second after the first
        code = search.wait(timeout=30)
    finally:
        search.kill()
    assert code == 130 and "SIGINT again: stopping at once" in "".join(output), "".join(output)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a finished two-model search f1 in its local store (the plain loop: quick)."""
    folder = _folder(tmp_path_factory.mktemp("finished") / "f")
    home = folder.parent / "prefect-home"
    done = _nas(folder, home, "search", "--local", "--name", "f1", *TINY, "--set", "search.max_models=2", "--set",
                "train.epochs=1")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return folder


def _copy(folder: Path, to: Path) -> Path:
    shutil.copytree(folder, to)
    return to


def _rows(db: Path) -> tuple[int, int, int]:
    """Runs, params and tags in an MLflow SQLite store: anything written shows here."""
    with sqlite3.connect(db) as c:
        return tuple(c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("runs", "params", "tags"))  # type: ignore[return-value]


COMMANDS = [["ls"], ["audit", "f1"], ["replay", "f1"], ["replay", "f1", "--verify"], ["resume", "f1"],
            ["report", "f1"], ["register", "f1"]]  # fmt: skip


@pytest.mark.slow
def test_a_corrupt_store_is_one_sentence_and_exit_4_for_every_command(finished: Path, tmp_path: Path) -> None:
    """Before, each command printed an 84-line traceback ending in "database disk image is malformed", exit 1."""
    folder = _copy(finished, tmp_path / "c")
    db = folder / "mlflow.db"
    with sqlite3.connect(db) as c:  # everything in the main file, so that cutting it breaks it
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    os.truncate(db, db.stat().st_size // 2)
    for command in COMMANDS:
        done = _nas(folder, tmp_path / "prefect-home", *command)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 4 and len(lines) == 1, (command, done.stdout, done.stderr)
        assert lines[0].startswith(f"nas: store error: the MLflow store {db} cannot be read"), lines[0]
        assert "restore mlflow.db from a backup" in lines[0]
    record_fault("corrupt_store", {"commands": [" ".join(c) for c in COMMANDS], "exit_status": 4, "lines": 1})


@pytest.mark.slow
def test_every_integrity_check_refuses_a_store_whose_files_are_gone_before_writing(
    finished: Path, tmp_path: Path
) -> None:
    """Before, with mlruns/ deleted, nas audit failed but replay --verify said verified, and resume appended an
    event before it refused."""
    folder = _copy(finished, tmp_path / "m")
    shutil.rmtree(folder / "mlruns")
    # The copy's runs name their artifacts by absolute path, in the original's mlruns/: set that aside too.
    aside = finished.parent / "mlruns-aside"
    (finished / "mlruns").rename(aside)
    try:
        before = _rows(folder / "mlflow.db")
        home = tmp_path / "prefect-home"
        audit = _nas(folder, home, "audit", "f1")
        assert audit.returncode == 1 and "is missing" in audit.stdout, audit.stdout + audit.stderr
        for command in (["replay", "f1", "--verify"], ["resume", "f1"], ["resume", "f1", "--local"],
                        ["register", "f1"]):  # fmt: skip
            done = _nas(folder, home, *command)
            assert done.returncode == 3, (command, done.stdout, done.stderr)
            assert "mlruns" in done.stderr and "is missing" in done.stderr, done.stderr
            assert "Traceback" not in done.stderr, done.stderr
        assert _rows(folder / "mlflow.db") == before  # nothing written
    finally:
        aside.rename(finished / "mlruns")
    record_fault("missing_artifacts", {"refused_by": "audit (1), replay --verify, resume, register (3)",
                                       "rows_written": 0})  # fmt: skip


@pytest.mark.slow
def test_commands_that_only_read_create_no_store(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "empty")
    home = tmp_path / "prefect-home"
    assert "no searches" in _nas(folder, home, "ls").stdout
    for command in COMMANDS[1:]:
        done = _nas(folder, home, *command)
        assert done.returncode == 2 and "there is no MLflow store at" in done.stderr, (command, done.stderr)
    assert not (folder / "mlflow.db").exists() and not (folder / "mlruns").exists()


@pytest.mark.slow
def test_the_output_may_be_cut_short(finished: Path) -> None:
    """`nas audit NAME | head -1` ended in a BrokenPipeError traceback."""
    env = _env(finished.parent / "prefect-home")
    done = subprocess.run(
        f"{NAS} audit f1 | head -1", shell=True, cwd=finished, env=env, capture_output=True, text=True
    )
    assert done.stdout.startswith("audit passed") and done.stderr == "", done.stderr


@pytest.mark.slow
def test_two_searches_started_at_once_in_a_fresh_folder_one_runs_the_other_says_so(tmp_path: Path) -> None:
    """Before, one of the two died with ~120 lines of SQLAlchemy traceback while MLflow created its tables."""
    folder, home = _folder(tmp_path / "fresh"), tmp_path / "prefect-home"
    args = ["search", "--name", "c1", *TINY, "--set", "search.max_models=1", "--set", "train.epochs=1"]
    runs = [_start(folder, home, *args), _start(folder, home, *args)]
    outputs = [_collect(r) for r in runs]
    codes = sorted(r.wait(timeout=300) for r in runs)
    texts = ["".join(o) for o in outputs]
    assert codes == [0, 2], texts
    loser = next(t for t, r in zip(texts, runs, strict=True) if r.returncode == 2)
    said = loser.strip().splitlines()[-1]
    assert "Traceback" not in loser and said.startswith("nas: error: "), loser
    assert "already exists" in said or "at the same moment" in said, loser
    assert _outcomes(_events(folder, "c1")) == {"m1": 1}
    record_fault("two_searches_one_fresh_folder", {"exit_statuses": codes, "loser_says": said})
