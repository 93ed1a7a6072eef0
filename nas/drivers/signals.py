"""Ctrl-C and SIGTERM while a search runs: the first asks it to stop where nothing is lost (``nas.training.stop``),
a second stops the process at once (as a kill would; ``nas resume`` repairs what that leaves)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from nas.training.stop import request_stop, stop_requested

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _handle(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    if stop_requested():
        os.write(2, f"\nnas: {name} again: stopping at once\n".encode())
        os._exit(128 + signum)
    request_stop(name)
    os.write(2, f"\nnas: {name}: stopping after this batch; send it again to stop at once\n".encode())


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """While the block runs, SIGINT and SIGTERM ask the search to stop (a second one ends the process with status
    128 + the signal's number); the handlers before are put back after. Outside the main thread, where Python
    cannot take signals, the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.signal(s, _handle) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
