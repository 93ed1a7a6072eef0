"""The event log: append-only, hash-chained, optimistic. Two operations, as in Optuna's journal:

    append(events, expected_seq)   events must continue the log right after ``expected_seq``
    read(after_seq=0)              the events after ``after_seq``, chain verified

Each stored record is sealed: it carries ``prev_hash`` (the previous record's hash, zeros for the
first) and ``hash`` = sha256 of its canonical JSON with ``prev_hash`` included, so an edited,
deleted, reordered or inserted record breaks the chain. A writer holding a ledger key (the
environment variable ``NAS_LEDGER_KEY``, never stored with the log) also adds ``mac``, an HMAC of
the hash under that key: a chain re-hashed by someone without the key then fails the key check.
Appending at a seq that is taken fails with ``ConcurrencyError`` and writes nothing; re-appending
events that are already there, the same, is a no-op (a retry after a lost reply).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.ledger.events import Event, canonical_json, from_record, to_record

GENESIS = "0" * 64
KEY_VARIABLE = "NAS_LEDGER_KEY"
Attachments = Mapping[int, Mapping[str, Path]]  # seq -> {file name: local path}
SEAL_FIELDS = ("hash", "prev_hash", "mac")


class ConcurrencyError(RuntimeError):
    """Another writer appended first: re-read the log and decide again."""


class ChainError(ValueError):
    """The stored log is not what was written: names the search, the first bad record and the problem."""

    def __init__(self, seq: int, problem: str, search_id: str = "") -> None:
        where = f"search {search_id!r}, event seq {seq}" if search_id else f"event seq {seq}"
        super().__init__(f"{where}: {problem}")
        self.seq = seq
        self.problem = problem
        self.search_id = search_id


@dataclass(frozen=True)
class Head:
    """Where a log ends: its last seq and that record's hash. What an anchor outside the store keeps."""

    seq: int
    hash: str

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"

    @staticmethod
    def parse(text: str) -> Head:
        """``SEQ:HASH`` as printed; ValueError naming the text otherwise."""
        seq, sep, digest = text.strip().partition(":")
        if not sep or not seq.isdigit() or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"anchor {text!r} is not SEQ:HASH (a seq and 64 hex digits), e.g. 12:9f86d08...")
        return Head(int(seq), digest)


def ledger_key() -> bytes | None:
    """The key that seals records (``NAS_LEDGER_KEY``), or None when unset."""
    value = os.environ.get(KEY_VARIABLE, "")
    return value.encode() if value else None


def mac_of(digest: str, key: bytes) -> str:
    """HMAC-SHA256 of a record's hash under ``key``."""
    return hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()


def seal(record: Mapping[str, Any], prev_hash: str, key: bytes | None = None) -> dict[str, Any]:
    """``record`` with ``prev_hash``, its own ``hash`` and, with a key, its ``mac``."""
    body = {**record, "prev_hash": prev_hash}
    sealed = {**body, "hash": hashlib.sha256(canonical_json(body).encode()).hexdigest()}
    if key is not None:
        sealed["mac"] = mac_of(sealed["hash"], key)
    return sealed


def content_hash(sealed: Mapping[str, Any]) -> str:
    """The hash a sealed record's content gives (whatever its ``hash`` field claims)."""
    body = {k: v for k, v in sealed.items() if k not in ("hash", "mac")}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def verify_chain(sealed: Sequence[Mapping[str, Any]], search_id: str = "") -> list[Event]:
    """The events of a sealed log; ChainError at the first gap, broken link, wrong hash or unreadable record."""
    prev = GENESIS
    events = []
    for i, rec in enumerate(sealed, start=1):
        if rec.get("seq") != i:
            raise ChainError(i, f"expected seq {i}, found {rec.get('seq')}: a record is missing", search_id)
        if content_hash(rec) != rec.get("hash"):
            raise ChainError(i, "hash does not match the content: the record was edited", search_id)
        if rec.get("prev_hash") != prev:
            # Record i is intact, so the one before it changed after i was chained to it (or i is a forgery).
            raise ChainError(
                i - 1,
                f"its hash is not the one seq {i} was chained to: it was edited and re-hashed (or seq {i} was forged)",
                search_id,
            )
        prev = rec["hash"]
        try:
            events.append(from_record(record_of(rec)))
        except (ValueError, KeyError, TypeError) as e:
            raise ChainError(i, f"the record cannot be read as an event ({e})", search_id) from e
    return events


def check_macs(sealed: Sequence[Mapping[str, Any]], key: bytes) -> list[tuple[int, str]]:
    """(seq, problem) for every record whose ``mac`` is missing or not the key's HMAC of its hash."""
    out = []
    for rec in sealed:
        mac = rec.get("mac")
        if mac is None:
            out.append((int(rec.get("seq", 0)), f"the record carries no seal of the key in {KEY_VARIABLE}"))
        elif not hmac.compare_digest(str(mac), mac_of(str(rec.get("hash")), key)):
            out.append((int(rec.get("seq", 0)), f"the record's seal is not the key's ({KEY_VARIABLE}): forged"))
    return out


def record_of(sealed: Mapping[str, Any]) -> dict[str, Any]:
    """The unsealed record (what ``to_record`` gives) inside a sealed one."""
    return {k: v for k, v in sealed.items() if k not in SEAL_FIELDS}


class EventLog(ABC):
    """Shared append/read logic; backends store and load sealed records."""

    def __init__(self, search_id: str, key: bytes | None = None) -> None:
        self.search_id = search_id
        self.key = key

    @abstractmethod
    def _load(self) -> list[dict[str, Any]]:
        """All committed sealed records, in seq order (each one checked against its commit point)."""

    @abstractmethod
    def _commit(self, sealed: list[dict[str, Any]], attachments: Attachments) -> None:
        """Store new sealed records atomically per record; ConcurrencyError if a seq is taken."""

    @abstractmethod
    def attachment(self, seq: int, name: str) -> Path:
        """A local path to file ``name`` attached to event ``seq``."""

    def head(self) -> Head:
        """The last committed seq and its hash (0 and GENESIS when empty); backends may know it cheaper."""
        records = self._load()
        return Head(len(records), records[-1]["hash"]) if records else Head(0, GENESIS)

    def _current_head(self, expected_seq: int) -> Head:
        """The head to append after (backends that know it without reading may say so)."""
        return self.head()

    def last_seq(self) -> int:
        """The last committed seq (0 when empty), without reading the events."""
        return self.head().seq

    def records(self) -> list[dict[str, Any]]:
        """Every committed sealed record, in seq order, as stored."""
        return self._load()

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
        head = self._current_head(expected_seq)
        if head.seq != expected_seq:
            existing = self._load() if head.seq >= events[-1].seq else []
            if existing and all(record_of(existing[e.seq - 1]) == to_record(e) for e in events):
                return  # the same events are already there: a retry
            raise ConcurrencyError(
                f"search {self.search_id!r} is at seq {head.seq}, not {expected_seq}: "
                "another writer appended first; re-read the log and retry"
            )
        sealed = []
        prev = head.hash
        for event in events:
            sealed.append(seal(to_record(event), prev, self.key))
            prev = sealed[-1]["hash"]
        self._commit(sealed, attachments or {})

    def read(self, after_seq: int = 0) -> list[Event]:
        """The events after ``after_seq``, having verified the whole chain (ChainError names the first bad one)."""
        return verify_chain(self._load(), self.search_id)[after_seq:]
