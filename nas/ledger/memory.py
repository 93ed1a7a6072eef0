"""The in-memory backend: event logs, leases and report sinks held by this process.

For tests and for trying things out (``MLFLOW_TRACKING_URI=memory:``); everything is gone when the
process ends. Every store with the same ``memory:`` URI in one process is the same store.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.ledger.log import Attachments, ConcurrencyError, EventLog, Head, ledger_key
from nas.ledger.ports import Lease, LeaseHeld, ReportSink, SearchListing, SearchStore, holder_is_dead

if TYPE_CHECKING:
    from nas.data import Splits
    from nas.ledger.audit import AuditReport
    from nas.ledger.state import ModelRecord


class MemoryEventLog(EventLog):
    """Holds sealed records in a list; attachments are copied into a private temp directory."""

    def __init__(self, search_id: str, key: bytes | None = None) -> None:
        super().__init__(search_id, key)
        self.sealed: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._dir = Path(tempfile.mkdtemp(prefix="nas-memlog-"))

    def _load(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.sealed)

    def _commit(self, sealed: list[dict[str, Any]], attachments: Attachments) -> None:
        with self._lock:
            if len(self.sealed) + 1 != sealed[0]["seq"]:
                raise ConcurrencyError(f"search {self.search_id!r} moved on to seq {len(self.sealed)} meanwhile")
            for rec in sealed:
                for name, path in attachments.get(rec["seq"], {}).items():
                    target = self._dir / str(rec["seq"]) / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, target)
                self.sealed.append(rec)

    def attachment(self, seq: int, name: str) -> Path:
        path = self._dir / str(seq) / name
        if not path.exists():
            raise FileNotFoundError(f"event seq {seq} of search {self.search_id!r} has no attachment {name!r}")
        return path


class MemoryLease(Lease):
    """A lease held in this process: a holder and a heartbeat time."""

    def __init__(self, search_id: str, state: dict[str, Any]) -> None:
        self.search_id, self._state, self.number = search_id, state, 0

    def acquire(self, holder: str, ttl_s: float) -> str | None:
        s = self._state
        previous = None
        if s.get("holder") not in (None, holder) and not s.get("released"):
            age = time.time() - s["beat"]
            if age <= ttl_s and not holder_is_dead(s["holder"]):
                raise LeaseHeld(
                    f"search {self.search_id!r} is already being run by {s['holder']} (heartbeat {age:.0f} s ago); "
                    f"wait for it to finish, or if it died, run again in {ttl_s - age:.0f} s when its lease expires"
                )
            previous = s["holder"]
        if s.get("holder") != holder or s.get("released"):
            s["number"] = s.get("number", 0) + 1
        s.update(holder=holder, beat=time.time(), released=False)
        self.number = s["number"]
        return previous

    def renew(self) -> None:
        if self._state.get("number") != self.number:
            raise LeaseHeld(f"search {self.search_id!r} was taken over by {self._state['holder']}; this one stops")
        self._state["beat"] = time.time()

    def release(self) -> None:
        if self._state.get("number") == self.number:
            self._state["released"] = True


class MemoryReportSink(ReportSink):
    """Keeps what was published, for tests to look at."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.metrics: dict[str, dict[int, float]] = {}
        self.files: list[str] = []
        self.best: str | None = None
        self.data: tuple[str, str] | None = None  # (name, source)

    def summary(self, values: Mapping[str, str], metrics: Mapping[str, Mapping[int, float]]) -> None:
        self.values.update(values)
        for name, steps in metrics.items():
            self.metrics.setdefault(name, {}).update(steps)

    def report(self, folder: Path) -> None:
        self.files = sorted(p.name for p in folder.iterdir())

    def location(self) -> str:
        return "in this process's memory"

    def dataset(self, splits: Splits, source: str) -> None:
        self.data = self.data or (splits.name, source)

    def best_model(
        self, model: ModelRecord, keras_model: Any, example: Any, names: Mapping[str, list[str]] | None = None
    ) -> str:
        self.best = model.model_id
        return f"memory:{model.model_id}"


class MemoryStore(SearchStore):
    """Searches held in this process."""

    def __init__(self, uri: str = "memory:") -> None:
        self.uri = uri
        self._logs: dict[str, MemoryEventLog] = {}
        self._leases: dict[str, dict[str, Any]] = {}
        self._sinks: dict[str, MemoryReportSink] = {}
        self._created: set[str] = set()
        self._lock = threading.Lock()

    def log(self, search_id: str) -> MemoryEventLog:
        with self._lock:
            if search_id not in self._logs:
                self._logs[search_id] = MemoryEventLog(search_id, ledger_key())
            return self._logs[search_id]

    def create(self, search_id: str) -> None:
        self.log(search_id)
        self._created.add(search_id)

    def exists(self, search_id: str) -> bool:
        return search_id in self._created or (search_id in self._logs and self._logs[search_id].last_seq() > 0)

    def lease(self, search_id: str) -> MemoryLease:
        with self._lock:
            return MemoryLease(search_id, self._leases.setdefault(search_id, {}))

    def reports(self, search_id: str) -> MemoryReportSink:
        with self._lock:
            return self._sinks.setdefault(search_id, MemoryReportSink())

    def searches(self) -> list[SearchListing]:
        out = []
        for name in sorted(n for n in self._logs if self.exists(n)):
            v = self.reports(name).values
            if not v:
                problem = None if self._logs[name].last_seq() else "no SearchStarted: an empty or broken search"
                out.append(SearchListing(name, events=self._logs[name].last_seq(), problem=problem))
                continue
            out.append(SearchListing.from_summary(name, v, int(v.get("events", 0))))
        return out

    def missing_files(self, search_id: str) -> list[tuple[int, str]]:
        log = self._logs.get(search_id)
        out = []
        for record in log.records() if log is not None else []:
            payload = record["payload"]
            if record["type"] == "TrainingCompleted" and payload.get("weights_sha256"):
                try:
                    log.attachment(record["seq"], "weights.npz")  # type: ignore[union-attr]
                except FileNotFoundError:
                    out.append((record["seq"], f"the weights of {payload['model_id']} are missing"))
        return out

    def audit(self, search_id: str, *, deep: bool = True, anchors: Sequence[Head] = ()) -> AuditReport:
        from nas.ledger.audit import AuditReport, check_records, lineage

        report = AuditReport(search_id)
        if search_id not in self._logs or not self._logs[search_id].last_seq():
            report.add(0, f"no search {search_id!r} in {self.uri}")
            return report
        state = check_records(report, self._logs[search_id].records(), ledger_key(), anchors)
        report.sort()
        if report.ok:
            report.lineage = lineage(state)
        return report


_STORES: dict[str, MemoryStore] = {}


def memory_store(uri: str = "memory:") -> MemoryStore:
    """The process-wide in-memory store named by ``uri`` (``memory:`` or ``memory:NAME``)."""
    return _STORES.setdefault(uri, MemoryStore(uri))
