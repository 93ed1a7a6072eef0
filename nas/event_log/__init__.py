"""The event log: append-only, hash-chained, optimistic. Two operations, as in Optuna's journal:

    append(events, expected_seq)   events must continue the log right after ``expected_seq``
    read(after_seq=0)              the events after ``after_seq``, chain verified

Each stored record is sealed: it carries ``prev_hash`` (the previous record's hash, zeros for the
first) and ``hash`` = sha256 of its canonical JSON with ``prev_hash`` included, so an edited,
deleted, reordered or inserted record breaks the chain. Appending at a seq that is taken fails
with ``ConcurrencyError`` and writes nothing; re-appending events that are already there, the
same, is a no-op (a retry after a lost reply).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nas.events import Event, canonical_json, from_record, to_record

GENESIS = "0" * 64
Attachments = Mapping[int, Mapping[str, Path]]  # seq -> {file name: local path}


class ConcurrencyError(RuntimeError):
    """Another writer appended first: re-read the log and decide again."""


class ChainError(ValueError):
    """The stored log is not what was written: names the first bad record."""

    def __init__(self, seq: int, problem: str) -> None:
        super().__init__(f"event seq {seq}: {problem}")
        self.seq = seq
        self.problem = problem


def seal(record: Mapping[str, Any], prev_hash: str) -> dict[str, Any]:
    """``record`` with ``prev_hash`` and its own ``hash``."""
    body = {**record, "prev_hash": prev_hash}
    return {**body, "hash": hashlib.sha256(canonical_json(body).encode()).hexdigest()}


def verify_chain(sealed: Sequence[Mapping[str, Any]]) -> list[Event]:
    """The events of a sealed log; ChainError at the first gap, broken link or wrong hash."""
    prev = GENESIS
    events = []
    for i, rec in enumerate(sealed, start=1):
        if rec.get("seq") != i:
            raise ChainError(i, f"expected seq {i}, found {rec.get('seq')}: a record is missing or out of order")
        if rec.get("prev_hash") != prev:
            raise ChainError(i, "prev_hash does not match the previous record: records were removed or reordered")
        body = {k: v for k, v in rec.items() if k != "hash"}
        if seal(body, prev)["hash"] != rec.get("hash"):
            raise ChainError(i, "hash does not match the content: the record was edited")
        prev = rec["hash"]
        events.append(from_record(body))
    return events


def record_of(sealed: Mapping[str, Any]) -> dict[str, Any]:
    """The unsealed record (what ``to_record`` gives) inside a sealed one."""
    return {k: v for k, v in sealed.items() if k not in ("hash", "prev_hash")}


class EventLog(ABC):
    """Shared append/read logic; backends store and load sealed records."""

    def __init__(self, search_id: str) -> None:
        self.search_id = search_id

    @abstractmethod
    def _load(self) -> list[dict[str, Any]]:
        """All committed sealed records, in seq order."""

    @abstractmethod
    def _commit(self, sealed: list[dict[str, Any]], attachments: Attachments) -> None:
        """Store new sealed records atomically per record; ConcurrencyError if a seq is taken."""

    def last_seq(self) -> int:
        """The last committed seq (0 when empty), without reading the events."""
        return self._head()[0]

    def _head(self) -> tuple[int, str]:
        """The last committed seq and its hash (0 and GENESIS when empty); backends may know it cheaper."""
        records = self._load()
        return (len(records), records[-1]["hash"]) if records else (0, GENESIS)

    @abstractmethod
    def attachment(self, seq: int, name: str) -> Path:
        """A local path to file ``name`` attached to event ``seq``."""

    def append(self, events: Sequence[Event], expected_seq: int, attachments: Attachments | None = None) -> None:
        """Append ``events`` (seqs expected_seq+1, +2, ...) with optional files attached to them."""
        events = list(events)
        for offset, event in enumerate(events, start=1):
            if event.search_id != self.search_id:
                raise ValueError(f"event for search {event.search_id!r} appended to the log of {self.search_id!r}")
            if event.seq != expected_seq + offset:
                raise ValueError(f"event seq {event.seq} does not follow expected seq {expected_seq} in order")
        if not events:
            return
        last, prev = self._head()
        if last != expected_seq:
            existing = self._load() if last >= events[-1].seq else []
            if existing and all(record_of(existing[e.seq - 1]) == to_record(e) for e in events):
                return  # the same events are already there: a retry
            raise ConcurrencyError(
                f"search {self.search_id!r} is at seq {last}, not {expected_seq}: "
                "another writer appended first; re-read the log and retry"
            )
        sealed = []
        for event in events:
            sealed.append(seal(to_record(event), prev))
            prev = sealed[-1]["hash"]
        self._commit(sealed, attachments or {})

    def read(self, after_seq: int = 0) -> list[Event]:
        """The events after ``after_seq``, having verified the whole chain."""
        return verify_chain(self._load())[after_seq:]
