"""Keras, imported without its backend's start-up chatter. The one place ``nas`` imports Keras from.

TensorFlow's C++ libraries print lines at import (absl's "All log messages before absl::InitializeLog()",
oneDNN's "custom operations are on", CUDA factories already registered) that ``TF_CPP_MIN_LOG_LEVEL`` does not
silence in TensorFlow 2.21; they filled the first screen of a ``nas search``. Standard error is caught while
Keras (and so its backend) is imported, and everything but those known lines is written back. TensorFlow's
Python warnings (``tf.function`` retracing, as a search predicts with one model after another) are kept to errors.
With ``NAS_VERBOSE`` set (``nas --verbose``) all of it is shown.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

CHATTER = re.compile(
    r"absl::InitializeLog\(\)|oneDNN custom operations are on|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation placer already registered|This TensorFlow binary is optimized|TF-TRT Warning"
    r"|To enable the following instructions: .* rebuild TensorFlow"
    r"|cuda_(dnn|fft|blas)\.cc.*already been registered|could not find cuda drivers|CUDA_ERROR_NO_DEVICE"
)


VERBOSE = "NAS_VERBOSE"  # set (to anything but empty or 0): show the backend's start-up lines and warnings


def verbose() -> bool:
    """Whether ``NAS_VERBOSE`` asks for the backend's own lines."""
    return os.environ.get(VERBOSE, "") not in ("", "0")


@contextmanager
def _without_chatter() -> Iterator[None]:
    """Write back what was printed to standard error in the block, less the lines ``CHATTER`` matches (all of it
    where ``verbose``)."""
    if verbose():
        yield
        return
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no standard error to catch
        yield
        return
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [
                line for line in caught.read().decode(errors="replace").splitlines(True) if not CHATTER.search(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


with _without_chatter():
    import keras as keras  # the backend's libraries load here
if not verbose():
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # by name: nothing of TensorFlow's is imported here
