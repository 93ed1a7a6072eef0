"""Keras is imported without its backend's start-up chatter, and nothing else printed then is lost."""

from __future__ import annotations

import os
import subprocess
import sys

from nas.training.backend import _without_chatter


def test_known_start_up_lines_are_dropped_and_others_kept(capfd) -> None:
    with _without_chatter():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on. You may see slightly different\n")
        os.write(2, b"a real problem\n")
    assert capfd.readouterr().err == "a real problem\n"


def test_importing_the_training_code_prints_nothing() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", "import nas.training.fit"], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr == ""


def test_with_nas_verbose_the_start_up_lines_are_shown() -> None:
    """``nas --verbose`` sets NAS_VERBOSE: the backend's own lines reach the screen, as without nas."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    code = "import logging, nas.training.backend; print(logging.getLogger('tensorflow').level)"
    quiet = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    loud = subprocess.run([sys.executable, "-c", code], env={**env, "NAS_VERBOSE": "1"}, capture_output=True, text=True)
    assert quiet.stdout.strip() == "40" and loud.stdout.strip() != "40"  # TensorFlow's warnings: errors only, or all
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        assert quiet.stderr == "" and loud.stderr != ""  # e.g. oneDNN's "custom operations are on"
