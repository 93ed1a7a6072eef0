"""Listing searches from their parent runs' summary tags, and doing it on a SQLite store without MLflow.

``nas ls`` should answer in well under the ~3 s it takes to import MLflow. On a ``sqlite:///`` store,
``sqlite_searches`` reads the parent runs' tags and counts their claims with one read-only query over
MLflow's tables, the same rows ``MlflowClient.search_runs`` reads; any surprise in the schema (another
MLflow version) is an ``sqlite3.Error``, and the caller then lists through MLflow. A test holds both ways
of listing to the same answer.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote

from nas.ledger.ports import SearchListing

ROLE_QUERY = """
SELECT r.run_uuid, r.name, t.key, t.value FROM runs r
JOIN experiments e ON e.experiment_id = r.experiment_id
JOIN tags t ON t.run_uuid = r.run_uuid AND t.key LIKE 'nas.%'
WHERE e.name = ? AND e.lifecycle_stage = 'active' AND r.lifecycle_stage = 'active'
  AND EXISTS (SELECT 1 FROM tags s WHERE s.run_uuid = r.run_uuid AND s.key = 'nas.role' AND s.value = 'search')
"""
CLAIMS_QUERY = """
SELECT p.run_uuid, COUNT(*) FROM params p
WHERE p.run_uuid IN (SELECT value FROM json_each(?)) AND p.key GLOB 'seq.[0-9][0-9][0-9][0-9][0-9][0-9]'
GROUP BY p.run_uuid
"""


def summarise(tags: Mapping[str, str], run_name: str, events: int) -> SearchListing:
    """A search as its parent run's summary tags describe it (``events`` committed claims); ``problem`` when
    they cannot."""
    name = tags.get("nas.search_id", run_name)
    if not events:
        return SearchListing(name, problem="no SearchStarted: nothing was logged (an empty or decoy parent run)")
    if "nas.status" not in tags:
        return SearchListing(name, events=events, problem="no summary yet: see nas replay " + name)
    try:
        best = tags.get("nas.best_val_accuracy", "")
        return SearchListing(
            name,
            status=tags["nas.status"],
            strategy=tags.get("nas.strategy", ""),
            dataset=tags.get("nas.dataset", ""),
            data_fingerprint=tags.get("nas.data_fingerprint", ""),
            trained=int(tags.get("nas.trained", "0")),
            failed=int(tags.get("nas.failed", "0")),
            best_val_accuracy=float(best) if best else None,
            events=events,
        )
    except ValueError as e:
        return SearchListing(name, events=events, problem=f"its summary tags are not readable ({e}): run nas audit")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI, or None for any other kind of store."""
    match = re.fullmatch(r"sqlite:///(.+)", uri)
    return Path(unquote(match.group(1))) if match else None


def sqlite_searches(path: Path, experiment: str) -> list[SearchListing]:
    """The searches of experiment ``experiment`` in the MLflow SQLite database ``path``, sorted by name, read
    without writing (sqlite3.Error when the file is not such a database)."""
    if not path.is_file():
        return []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
        runs: dict[str, tuple[str, dict[str, str]]] = {}
        for run_id, run_name, key, value in db.execute(ROLE_QUERY, (experiment,)):
            runs.setdefault(run_id, (run_name or run_id, {}))[1][key] = value
        claims = dict(db.execute(CLAIMS_QUERY, (json.dumps(sorted(runs)),)).fetchall())
    listed = [summarise(tags, name, claims.get(run_id, 0)) for run_id, (name, tags) in runs.items()]
    return sorted(listed, key=lambda listing: listing.name)
