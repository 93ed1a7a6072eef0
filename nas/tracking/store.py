"""The searches of one MLflow tracking store (SQLite file, or a tracking server)."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from nas.ledger.audit import AuditReport
from nas.ledger.log import Head, ledger_key
from nas.ledger.ports import SearchListing, SearchStore
from nas.tracking.event_log import MlflowEventLog
from nas.tracking.lease import MlflowLease
from nas.tracking.listing import sqlite_path, summarise
from nas.tracking.locking import folder_lock
from nas.tracking.runs import DEFAULT_EXPERIMENT, SearchRuns, claims_of, experiment_id
from nas.tracking.sink import MlflowReportSink


class MlflowStore(SearchStore):
    """Searches as parent runs of one experiment (``nas`` unless told otherwise)."""

    def __init__(self, uri: str, experiment: str = DEFAULT_EXPERIMENT) -> None:
        from mlflow.tracking import MlflowClient

        for chatty in ("mlflow.store.db.utils", "alembic.runtime.migration"):  # first use of a SQLite store
            logging.getLogger(chatty).setLevel(logging.WARNING)
        # On a tracking server MLflow prints two "View run" lines for every run it ends, after fetching the
        # run once more: an event run each. The search prints its own links; set the variable to false for
        # MLflow's.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        self.uri = uri
        self.experiment = experiment
        path = sqlite_path(uri)
        if path is None:
            self.client = MlflowClient(tracking_uri=uri)
            return
        with folder_lock(path.parent):
            write_ahead_log(path)
            # MLflow creates (or upgrades) its tables when the client is made; two processes doing it at once in
            # a new file race, and one dies ("table ... already exists"): done here, one process at a time.
            self.client = MlflowClient(tracking_uri=uri)
            self.client.search_experiments(max_results=1)

    def runs(self, search_id: str) -> SearchRuns:
        """The runs of search ``search_id`` (ValueError for a name MLflow filters could not hold)."""
        return SearchRuns(self.client, search_id, self.experiment)

    def log(self, search_id: str) -> MlflowEventLog:
        return MlflowEventLog(self.runs(search_id), ledger_key())

    def create(self, search_id: str) -> None:
        self.runs(search_id).ensure_parent()

    def exists(self, search_id: str) -> bool:
        return self.runs(search_id).parent_id is not None

    def lease(self, search_id: str) -> MlflowLease:
        return MlflowLease(self.runs(search_id))

    def reports(self, search_id: str) -> MlflowReportSink:
        return MlflowReportSink(self.runs(search_id))

    def searches(self) -> list[SearchListing]:
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is None:
            return []
        out, token = [], None
        while True:
            page = self.client.search_runs(
                [exp.experiment_id], "tags.`nas.role` = 'search'", max_results=1000, page_token=token
            )
            out += [_listing(run) for run in page]
            token = page.token
            if not token:
                break
        return sorted(out, key=lambda s: s.name)

    def audit(self, search_id: str, *, deep: bool = True, anchors: Sequence[Head] = ()) -> AuditReport:
        from nas.tracking.audit import audit

        return audit(self.runs(search_id), deep=deep, anchors=anchors)

    def missing_files(self, search_id: str) -> list[tuple[int, str]]:
        from nas.tracking.audit import missing_files

        return missing_files(self.runs(search_id))

    def experiment_id(self) -> str:
        """The experiment's id (created if missing)."""
        return experiment_id(self.client, self.experiment)


def _listing(run: Any) -> SearchListing:
    """A search as its parent run's summary tags describe it; ``problem`` when they cannot."""
    return summarise(run.data.tags, run.info.run_name or run.info.run_id, len(claims_of(run)))


def write_ahead_log(path: Path) -> None:
    """Put the SQLite database ``path`` (created if missing) in write-ahead-log mode, which the file keeps: a
    commit then writes the log once instead of the pages twice, and readers (``mlflow ui``) never block the
    writer. An append is several commits (bench/results/ledger.md). A file that is not a database is left
    for MLflow to report."""
    try:
        with closing(sqlite3.connect(path, timeout=30)) as db:
            db.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error:
        pass
