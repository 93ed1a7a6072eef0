"""Shared fixtures: small architectures and non-trivial weights (as if trained), the Prefect test API, and one
headless Chromium for the browser tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Heads the tests witness go to a temporary file, never into the folder pytest runs in (a test that checks the
# default, in the working directory, unsets it for its subprocess).
os.environ.setdefault("NAS_WITNESS", os.path.join(tempfile.mkdtemp(prefix="nas-tests-"), "nas-witness.jsonl"))

import numpy as np
import pytest

from nas.architectures.graph import Architecture
from nas.architectures.initial import initial_cnn, initial_mlp
from nas.architectures.weights import init_weights


def trained_like_weights(arch: Architecture, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, ...]]:
    """Random weights with non-zero biases and BatchNorm and Normalization statistics far from the identity."""
    out = {}
    for layer_id, arrays in init_weights(arch, rng).items():
        if arch.by_id[layer_id].kind == "Normalization":
            c = arrays[0].shape[0]
            out[layer_id] = (rng.normal(0, 3, c).astype("f4"), rng.uniform(0.1, 9, c).astype("f4"), np.array(100))
        elif arch.by_id[layer_id].kind == "BatchNormalization":
            c = arrays[0].shape[0]
            out[layer_id] = (
                rng.uniform(0.5, 1.5, c).astype("f4"),
                rng.normal(0, 0.3, c).astype("f4"),
                rng.normal(0, 0.3, c).astype("f4"),
                rng.uniform(0.5, 2.0, c).astype("f4"),
            )
        else:
            kernel, bias = arrays
            out[layer_id] = (kernel, rng.normal(0, 0.1, bias.shape).astype("f4"))
    return out


def mlflow_has_no_runs(uri: str) -> bool:
    """True when the store at ``uri`` holds no run of the ``nas`` experiment (nothing was logged)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("nas")
    return exp is None or not client.search_runs([exp.experiment_id])


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """One Prefect test API (a real server) per test session, in a temporary PREFECT_HOME."""
    home = tempfile.mkdtemp(prefix="nas-prefect-home-")
    os.environ["PREFECT_HOME"] = home
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite tracking store as MLFLOW_TRACKING_URI, in a temporary working directory (artifacts land in
    tmp_path/mlruns, MLflow's SQLite default), as a user in their own folder would have it."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("NAS_WITNESS", str(tmp_path / "nas-witness.jsonl"))
    return uri


@pytest.fixture
def small_cnn() -> Architecture:
    return initial_cnn((12, 12, 2), 5, blocks=3, filters=8, dense_units=8)


@pytest.fixture
def small_mlp() -> Architecture:
    return initial_mlp((20,), 4, layers=2, units=8)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for every browser test of the session: Debian's, driven by Playwright (Playwright's
    own browser download is not reachable here)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "the browser tests need Debian's chromium: apt-get install chromium (scripts/test.sh does it as root)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where the browser tests save what they saw: $NAS_SCREENSHOTS (bench/results/ui in the README's command
    that refreshes them) or a temporary folder."""
    folder = Path(os.environ.get("NAS_SCREENSHOTS") or tempfile.mkdtemp(prefix="nas-screens-"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def mlflow_ui(home: Path, uri: str) -> Iterator[str]:
    """``mlflow ui`` on the store at ``uri`` (a free port), as a user starts it; yields its base URL."""
    port = free_port()
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
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(ui.pid, signal.SIGTERM)  # the UI and the job workers it started
        ui.wait(timeout=30)
