"""An in-memory event log, for tests and for trying things out."""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from nas.event_log import Attachments, ConcurrencyError, EventLog


class MemoryEventLog(EventLog):
    """Holds sealed records in a list; attachments are copied into a private temp directory."""

    def __init__(self, search_id: str) -> None:
        super().__init__(search_id)
        self.records: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._dir = Path(tempfile.mkdtemp(prefix="nas-memlog-"))

    def _load(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.records)

    def _commit(self, sealed: list[dict[str, Any]], attachments: Attachments) -> None:
        with self._lock:
            if len(self.records) + 1 != sealed[0]["seq"]:
                raise ConcurrencyError(f"search {self.search_id!r} moved on to seq {len(self.records)} meanwhile")
            for rec in sealed:
                for name, path in attachments.get(rec["seq"], {}).items():
                    target = self._dir / str(rec["seq"]) / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, target)
                self.records.append(rec)

    def attachment(self, seq: int, name: str) -> Path:
        path = self._dir / str(seq) / name
        if not path.exists():
            raise FileNotFoundError(f"event seq {seq} of search {self.search_id!r} has no attachment {name!r}")
        return path
