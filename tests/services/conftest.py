"""The service stack (PostgreSQL, MLflow with basic auth, Prefect server, two process workers), once per module.

Set ``NAS_FAULTS_OUT`` to a file to have the drills append what they measured (bench/faults.py does).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ops.stack import Stack

LEASE_TTL_S = 20
LIVENESS_S = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    folder = Path(tempfile.mkdtemp(prefix="nas-stack-", dir="/tmp"))
    folder.chmod(0o755)  # PostgreSQL runs as its own user
    saved = dict(os.environ)
    os.environ.update(
        NAS_STACK_PG_PORT=str(free_port()),
        NAS_STACK_MLFLOW_PORT=str(free_port()),
        NAS_STACK_PREFECT_PORT=str(free_port()),
        NAS_LEASE_TTL_S=str(LEASE_TTL_S),
        NAS_TRAINING_LIVENESS_S=str(LIVENESS_S),
    )
    s = Stack(folder, workers=2)
    try:
        s.up()
        yield s
    finally:
        s.down()
        os.environ.clear()
        os.environ.update(saved)
        for log in sorted((folder / "logs").glob("*.log")):  # shown by pytest when a test failed
            print(f"--- {log.name} (tail)\n{log.read_text(errors='replace')[-1500:]}")
        shutil.rmtree(folder, ignore_errors=True)


def record_fault(drill: str, figures: dict[str, Any]) -> None:
    """Append a drill's measurements to $NAS_FAULTS_OUT (JSON lines), if set."""
    out = os.environ.get("NAS_FAULTS_OUT")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps({"drill": drill, **figures}) + "\n")
