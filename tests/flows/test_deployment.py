"""`prefect deployment run 'nas-search/local'` against a real Prefect server and a serve process."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from nas.ledger.events import TrainingCompleted
from nas.tracking import open_store

ROOT = Path(__file__).parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s")


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.mark.slow
def test_deployment_runs_a_search_that_lands_in_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_TRACKING_URI": uri,
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    logs = tmp_path / "logs"
    logs.mkdir()
    server = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=(logs / "server.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    serve = None
    try:
        wait_for(lambda: healthy(f"http://127.0.0.1:{port}/api/health"), "Prefect server", 180)
        serve = subprocess.Popen(
            [sys.executable, "-m", "flows.nas_search"],
            env=env,
            cwd=tmp_path,
            stdout=(logs / "serve.log").open("w"),
            stderr=subprocess.STDOUT,
        )

        def deployed() -> bool:
            probe = [PREFECT, "deployment", "inspect", "nas-search/local"]
            return subprocess.run(probe, env=env, cwd=tmp_path, capture_output=True).returncode == 0

        wait_for(deployed, "deployment nas-search/local", 180)
        run = subprocess.run(
            [
                PREFECT,
                "deployment",
                "run",
                "nas-search/local",
                "--flow-run-name",
                "dep1-by-hand",
                "--watch",
                "--watch-timeout",
                "400",
                "-p",
                "name=dep1",
                "-p",
                "max_models=2",
                "-p",
                "dataset=digits",
                "-p",
                "epochs=1",
                "-p",
                'overrides=["search.initial_width=8", "train.min_steps=0"]',
            ],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=480,
        )
        assert run.returncode == 0, run.stdout + run.stderr + (logs / "serve.log").read_text()[-3000:]
        assert "Completed" in run.stdout
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
            named = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["dep1-by-hand"])))
        assert [r.state_name for r in named] == ["Completed"]  # a deployment run keeps the name it was given
    finally:
        for proc in (serve, server):
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    events = open_store().log("dep1").read()
    assert sum(isinstance(e, TrainingCompleted) for e in events) == 2
    assert open_store().runs("dep1").parent().info.run_name == "dep1"
