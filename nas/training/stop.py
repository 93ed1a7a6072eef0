"""Stopping a search when asked (Ctrl-C, SIGTERM): a process-wide request, set by a signal handler and read where
stopping loses nothing, after a batch of a training and between the steps of a round.

A stopped training logs no outcome: its ``TrainingStarted`` has no end, so ``nas resume`` trains it again, as after
a crash. Keras is not imported here.
"""

from __future__ import annotations

import threading


class TrainingTimeout(RuntimeError):
    """A training ran longer than ``train.timeout_s``: it fails with reason "timeout"."""


class StopRequested(BaseException):  # as KeyboardInterrupt: not an error, so `except Exception` passes it on
    """The search was asked to stop; raised where stopping leaves the log whole. Its text says who asked."""


_asked = threading.Event()
_why = [""]


def request_stop(why: str) -> None:
    """Ask the search running in this process to stop at the next batch or step (``why``: e.g. "SIGINT")."""
    _why[0] = why
    _asked.set()


def stop_requested() -> bool:
    """Whether a stop was asked and not yet cleared."""
    return _asked.is_set()


def check_stop() -> None:
    """StopRequested if a stop was asked."""
    if _asked.is_set():
        raise StopRequested(_why[0])


def clear_stop() -> None:
    """Forget an earlier request (the next search in this process runs)."""
    _asked.clear()
    _why[0] = ""
