"""One process at a time in a folder: for the first use of a database file, which its library creates or migrates
without guarding against another process doing the same (MLflow's tables, the Prefect server's)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (created if missing; flock on the directory itself, so no file is
    made) for the block, where the system has flock; the lock dies with the process."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system: no lock
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
