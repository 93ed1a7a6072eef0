"""The ledger's ports: what a storage backend provides besides the event log itself.

A ``SearchStore`` opens the event logs of one store (an MLflow tracking URI, or ``memory:``), lists
its searches without reading their events, and hands out each search's ``Lease`` (one runner per
search) and ``ReportSink`` (where progress, reports and the best model are published for people to
look at). ``Repairable`` is an optional capability of a log whose backend can be left half-written by
a crash; callers check it with ``isinstance``. Nothing here imports a backend.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.ledger.log import EventLog, Head

if TYPE_CHECKING:
    from nas.data import Splits
    from nas.ledger.audit import AuditReport
    from nas.ledger.state import ModelRecord


NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def check_search_name(name: str) -> str:
    """``name`` if it can name a search; ValueError saying what is allowed otherwise."""
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(
            f"search name {name!r} is not allowed: "
            "use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


# A process as ``process_tag`` writes it (host:pid:space); before spaces, "host:pid" (lease holders) or "host pid"
# (event writers).
PROCESS_TAG = re.compile(r"(?P<host>[^\]:\s]+)[: ](?P<pid>\d+)(?::(?P<space>[0-9a-f]+))?")
HOLDER_PROCESS = re.compile(rf"\[{PROCESS_TAG.pattern}\]$")


@lru_cache(maxsize=1)
def process_space() -> str:
    """Where a pid names one process: this kernel's boot and PID namespace, as 12 hex digits ('' where that cannot
    be read, off Linux). Two containers named alike, on one host or on two, differ here, so neither takes the
    other's pids for its own; a restarted machine differs from itself before the restart."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return hashlib.sha256(f"{boot} {namespace}".encode()).hexdigest()[:12]


def process_tag() -> str:
    """This process as ``host:pid`` and, where it can be told, ``:space`` (``process_space``)."""
    space = process_space()
    return f"{socket.gethostname()}:{os.getpid()}" + (f":{space}" if space else "")


def here(host: str, space: str | None) -> bool:
    """Whether a process tagged ``host`` and ``space`` (None: tagged before spaces were) is in this process's pid
    space, so that its pid can be looked up here. A tag without a space is here only off Linux, by its host."""
    if host != socket.gethostname():
        return False
    return space == process_space() if space else not process_space()


def alive(pid: int) -> bool:
    """Whether process ``pid`` of this pid space runs: it exists and is not a zombie waiting to be reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _ended_unreaped(pid)


def holder_name(description: str) -> str:
    """A lease holder's name: ``description`` and, in brackets, this process (``process_tag``)."""
    return f"{description} [{process_tag()}]"


def holder_is_dead(holder: str) -> bool:
    """Whether a lease holder is a process of this pid space (``here``) that has ended (its lease need not
    expire): one that no longer exists, or one killed whose parent has not yet reaped it (a zombie, which still
    answers signal 0). A holder elsewhere, or one that cannot be told apart from one elsewhere, is not."""
    found = HOLDER_PROCESS.search(holder)
    return found is not None and here(found["host"], found["space"]) and not alive(int(found["pid"]))


def _ended_unreaped(pid: int) -> bool:
    """Whether the process ``pid`` has ended and waits for its parent to reap it (state Z or X in Linux's
    ``/proc/<pid>/stat``); False where that cannot be read (another system: the lease then expires as usual)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] in (["Z"], ["X"])  # the state follows the parenthesised name


class LeaseHeld(RuntimeError):
    """Another runner holds the search: the message names it and says what to do."""


class Lease(ABC):
    """The right to run one search, held by one runner at a time and renewed while it runs."""

    @abstractmethod
    def acquire(self, holder: str, ttl_s: float) -> str | None:
        """Take the lease for ``holder``; returns the holder of an expired lease taken over (None if none).

        LeaseHeld, naming the holder and what to do, if another runner's lease is younger than ``ttl_s``.
        """

    @abstractmethod
    def renew(self) -> None:
        """Refresh the heartbeat; LeaseHeld if a later runner took the search over (this one was presumed dead)."""

    @abstractmethod
    def release(self) -> None:
        """Give the lease up, so the next runner need not wait for it to expire."""


class ReportSink(ABC):
    """Where a search shows its progress to people. Nothing published here is an event."""

    @abstractmethod
    def summary(self, values: Mapping[str, str], metrics: Mapping[str, Mapping[int, float]]) -> None:
        """Record the search's summary (what ``searches()`` lists) and each ``metrics[name][step]`` not yet recorded."""

    @abstractmethod
    def report(self, folder: Path) -> None:
        """Replace the published report with the files in ``folder``."""

    @abstractmethod
    def location(self) -> str:
        """Where people can look at the search (a URL, or how to open one)."""

    @abstractmethod
    def dataset(self, splits: Splits, source: str) -> None:
        """Show the data the search trains on (name, digest, ``source``) beside it; once, however often called."""

    @abstractmethod
    def best_model(
        self, model: ModelRecord, keras_model: Any, example: Any, names: Mapping[str, list[str]] | None = None
    ) -> str:
        """Publish trained ``model`` (built as a Keras model, with an input example, and ``Splits.names``: the
        names of its outputs and inputs where the data named them) so people can register it; returns where it
        lives (publishing the same weights again finds it instead)."""


class Repairable(ABC):
    """A log whose backend a crash can leave half-written (a run not committed, a commit not finished)."""

    @abstractmethod
    def repair(self) -> list[str]:
        """Finish or remove what a crash left, reporting each change; refuse anything that is not a crash's."""


@dataclass(frozen=True)
class SearchListing:
    """One search as ``searches()`` lists it, from its summary (its events are not read).

    ``failed`` counts failed trainings, ``not_trained`` the models never trained because no epoch of theirs fitted
    in the time left. ``problem`` says why a search cannot be summarised (it has no SearchStarted, its store entry
    is broken). ``stale``: the summary was made before the last events (its runner died before publishing it).
    """

    name: str
    status: str = "unknown"
    strategy: str = ""
    dataset: str = ""
    data_fingerprint: str = ""
    trained: int = 0
    failed: int = 0
    not_trained: int = 0
    best_val_accuracy: float | None = None
    events: int = 0
    problem: str | None = None
    stale: bool = False

    @classmethod
    def from_summary(cls, name: str, values: Mapping[str, Any], events: int) -> SearchListing:
        """The search as its summary values (``replay.summary_values``, here or as stored strings) describe it:
        ``failed`` there counts the models not trained for lack of time too, here it does not. ValueError if a
        count or the accuracy is not a number."""
        best = values.get("best_val_accuracy", "")
        not_trained = int(values.get("not_trained", 0))
        return cls(
            name,
            status=str(values.get("status", "unknown")),
            strategy=str(values.get("strategy", "")),
            dataset=str(values.get("dataset", "")),
            data_fingerprint=str(values.get("data_fingerprint", "")),
            trained=int(values.get("trained", 0)),
            failed=int(values.get("failed", 0)) - not_trained,
            not_trained=not_trained,
            best_val_accuracy=float(best) if best not in ("", None) else None,
            events=events,
            stale=str(values.get("events", events)).isdigit() and int(values.get("events", events)) < events,
        )


class SearchStore(ABC):
    """The searches of one store, by name."""

    uri: str

    @abstractmethod
    def log(self, search_id: str) -> EventLog:
        """The event log of search ``search_id`` (empty if there is no such search yet)."""

    @abstractmethod
    def create(self, search_id: str) -> None:
        """Make the place a new search lives in (so its lease can be taken before its first event)."""

    @abstractmethod
    def exists(self, search_id: str) -> bool:
        """Whether search ``search_id`` has a place in the store (with or without events)."""

    @abstractmethod
    def lease(self, search_id: str) -> Lease:
        """The lease of search ``search_id``, which must exist."""

    @abstractmethod
    def reports(self, search_id: str) -> ReportSink:
        """Where search ``search_id`` publishes its progress."""

    @abstractmethod
    def searches(self) -> list[SearchListing]:
        """Every search in the store, summarised without reading its events; broken ones carry ``problem``."""

    @abstractmethod
    def missing_files(self, search_id: str) -> list[tuple[int, str]]:
        """(seq, problem) for each stored file a committed event of the search names that the store does not have
        (an event's own file, a training's weights), found without reading the files; seq 0 for all of them."""

    @abstractmethod
    def audit(self, search_id: str, *, deep: bool = True, anchors: Sequence[Head] = ()) -> AuditReport:
        """Everything wrong with the stored search: its chain, seals, meaning and ``anchors``, and what the store
        shows people about it. ``deep`` also checks stored files (weights, artifacts) and metric histories."""
