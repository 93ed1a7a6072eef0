"""The event log on MLflow: one parent run per search, one child run per event.

A child run holds the sealed record three ways: as params (the payload's scalars for the UI, the
seal, and the whole record in chunks, see ``records``), as the artifact ``event.json`` (to read in
the UI), and through its per-epoch metrics for trainings; attached files go under ``files/``.

The commit point of an event is a param on the parent run, ``seq.000007 = <hash>``: MLflow refuses
to change a param's value, atomically (the params table's primary key), so of two writers racing
for one seq exactly one commits; the other deletes its child run and gets ``ConcurrencyError``. A
child run is written completely before its claim, so a crash leaves either an unclaimed run (removed
by ``repair``) or a claimed one that only lacks its FINISHED status (which ``repair`` sets).

Reading checks every record against its claim, so whatever is cached here was verified once: records
are cached by run id with the hash they were checked against. A cold read is one read of the parent
and one ``search_runs`` page per 1,000 events; a warm read after one new event is two small queries.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from nas.ledger.log import GENESIS, Attachments, ChainError, ConcurrencyError, EventLog, Head
from nas.ledger.ports import PROCESS_TAG, Repairable, alive, here, process_tag
from nas.tracking.records import event_metrics, event_params, event_tags, record_from_params, run_name
from nas.tracking.runs import SearchRuns, claim_key

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per download is noise
FEW = 16  # up to this many uncached events are looked up one by one; more, all at once
UNCLAIMED_AGE_S = 120.0  # an uncommitted run younger than this may belong to a writer still committing it


class MlflowEventLog(EventLog, Repairable):
    """Event log of one search, on its MLflow runs."""

    def __init__(self, runs: SearchRuns, key: bytes | None = None) -> None:
        super().__init__(runs.search_id, key)
        self.runs = runs
        self.client = runs.client
        self._records: dict[int, dict[str, Any]] = {}  # seq -> sealed record, verified against its claim
        self._run_ids: dict[int, str] = {}  # seq -> the committed run's id
        self._head: Head | None = None  # the head this process last wrote or read

    # --- reading ------------------------------------------------------------------------------

    def head(self) -> Head:
        claims = self.runs.claims()
        self._head = Head(max(claims), claims[max(claims)]) if claims else Head(0, GENESIS)
        return self._head

    def _load(self) -> list[dict[str, Any]]:
        claims = self.runs.claims()
        if not claims:
            return []
        last = max(claims)
        for seq in range(1, last + 1):
            if seq not in claims:
                raise ChainError(seq, "no committed event: the log has a gap", self.search_id)
        missing = [s for s in range(1, last + 1) if self._records.get(s, {}).get("hash") != claims[s]]
        if missing:
            self._fetch(missing, claims)
        self._head = Head(last, claims[last])
        return [self._records[s] for s in range(1, last + 1)]

    def _fetch(self, seqs: list[int], claims: dict[int, str]) -> None:
        """Read and check the records of ``seqs`` (one query each when few, one query for all when many)."""
        if len(seqs) <= FEW:
            candidates = [run for s in seqs for run in self.runs.runs_with_hash(claims[s])]
        else:
            candidates = self.runs.event_runs()
        by_key: dict[tuple[int, str], Any] = {}
        for run in candidates:
            seq, digest = run.data.tags.get("nas.seq", ""), run.data.params.get("nas.hash")
            if seq.isdigit() and digest:
                by_key.setdefault((int(seq), digest), run)
        for seq in seqs:
            run = by_key.get((seq, claims[seq]))
            if run is None:
                raise ChainError(
                    seq, "the committed event's run is missing (deleted, or its seq tag changed)", self.search_id
                )
            record = self._stored(run, seq)
            if record.get("hash") != claims[seq]:
                raise ChainError(
                    seq, f"the record of run {run.info.run_id} is not the committed event (edited)", self.search_id
                )
            self._records[seq], self._run_ids[seq] = record, run.info.run_id

    def _stored(self, run: Any, seq: int) -> dict[str, Any]:
        """The sealed record a run holds: from its params, or (logs written before that) its event.json."""
        try:
            record = record_from_params(run.data.params)
        except ValueError as e:
            raise ChainError(
                seq, f"the record params of run {run.info.run_id} are not JSON ({e})", self.search_id
            ) from e
        return record if record is not None else self.artifact_record(run.info.run_id, seq)

    def artifact_record(self, run_id: str, seq: int) -> dict[str, Any]:
        """The ``event.json`` artifact of a run, as stored; ChainError naming ``seq`` if it cannot be read."""
        import mlflow

        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path="event.json", dst_path=tmp, tracking_uri=self.client.tracking_uri
                )
                record = json.loads(Path(path).read_text())
            except Exception as e:
                raise ChainError(
                    seq, f"the event.json artifact of run {run_id} cannot be read ({e})", self.search_id
                ) from e
        if not isinstance(record, dict):
            raise ChainError(seq, f"the event.json artifact of run {run_id} is not a JSON object", self.search_id)
        return record

    def run_id(self, seq: int) -> str:
        """The id of the run that holds committed event ``seq``."""
        if seq not in self._run_ids:
            self._load()
        if seq not in self._run_ids:
            raise FileNotFoundError(f"search {self.search_id!r} has no event seq {seq}")
        return self._run_ids[seq]

    def attachment(self, seq: int, name: str) -> Path:
        return run_attachment(self.client.tracking_uri, self.run_id(seq), seq, name, self.search_id)

    # --- writing ------------------------------------------------------------------------------

    def _commit(self, sealed: list[dict[str, Any]], attachments: Attachments) -> None:
        from mlflow.entities import Metric, Param
        from mlflow.exceptions import MlflowException

        if sealed[0]["type"] == "SearchStarted":
            parent_id = self.runs.ensure_parent()
        elif (found := self.runs.parent_id) is not None:
            parent_id = found
        else:
            raise ValueError(f"search {self.search_id!r} has no parent run; its log must start with SearchStarted")
        for rec in sealed:
            tags = {**event_tags(rec, parent_id, self.search_id), "nas.writer": process_tag()}
            run = self.client.create_run(self.runs.experiment_id, run_name=run_name(rec), tags=tags)
            run_id = run.info.run_id
            metrics = [
                Metric(name, value, 0, step)
                for name, steps in event_metrics(rec).items()
                for step, value in steps.items()
            ]
            params = [Param(k, v) for k, v in event_params(rec).items()]
            self.client.log_batch(run_id, params=params, metrics=metrics)
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                (folder / "event.json").write_text(json.dumps(rec, sort_keys=True, indent=1))
                for name, path in attachments.get(rec["seq"], {}).items():
                    (folder / "files").mkdir(exist_ok=True)
                    (folder / "files" / name).write_bytes(Path(path).read_bytes())
                self.client.log_artifacts(run_id, tmp)
            try:
                self.client.log_param(parent_id, claim_key(rec["seq"]), rec["hash"])  # the commit point
            except MlflowException as e:
                self.client.delete_run(run_id)
                raise ConcurrencyError(
                    f"search {self.search_id!r}: seq {rec['seq']} was committed by another writer; "
                    "re-read the log and retry"
                ) from e
            self.client.set_terminated(run_id, "FINISHED")
            self._records[rec["seq"]], self._run_ids[rec["seq"]] = rec, run_id
            self._head = Head(rec["seq"], rec["hash"])
            if rec["type"] == "SearchFinished":  # the UI then shows the search as finished, not running
                self.client.set_terminated(parent_id, "FINISHED")

    def _current_head(self, expected_seq: int) -> Head:
        """The head this process last wrote or read, when it is the expected one (no read): a writer that
        appended meanwhile makes the claim fail, which gives the same ConcurrencyError as reading would."""
        if self._head is not None and self._head.seq == expected_seq:
            return self._head
        return self.head()

    # --- after a crash --------------------------------------------------------------------------

    def repair(self) -> list[str]:
        """Finish committed runs a crash left RUNNING and delete uncommitted ones; returns what it did.

        A committed run in any other state (FAILED, KILLED) was not left so by a crash: ChainError, so the
        caller refuses to go on (the audit names it) rather than hiding the evidence.
        """
        claims = self.runs.claims()
        done = []
        for run in self.runs.event_runs():
            seq = int(run.data.tags.get("nas.seq", "0") or 0)
            if claims.get(seq) == run.data.params.get("nas.hash"):
                if run.info.status == "RUNNING":
                    self.client.set_terminated(run.info.run_id, "FINISHED")
                    done.append(f"finished run {run.info.run_id} of committed seq {seq}, left running by a crash")
                elif run.info.status != "FINISHED":
                    raise ChainError(
                        seq,
                        f"the committed event's run {run.info.run_id} is {run.info.status}, which no crash leaves; "
                        "run nas audit",
                        self.search_id,
                    )
            elif run.info.status == "RUNNING" and run.data.tags.get("nas.writer") and not in_flight(run):
                self.client.delete_run(run.info.run_id)
                done.append(f"deleted run {run.info.run_id} of seq {seq}, written but never committed (a crash)")
        return done


def in_flight(run: Any) -> bool:
    """Whether an uncommitted run may belong to a writer still between writing and claiming it: its writer (tag
    ``nas.writer``) is a live process of this pid space, or a process elsewhere that wrote it less than
    ``UNCLAIMED_AGE_S`` ago. A run with no writer tag was not written by a writer of ours."""
    writer = PROCESS_TAG.fullmatch(run.data.tags.get("nas.writer", ""))
    if writer is None:
        return False
    if here(writer["host"], writer["space"]):
        return alive(int(writer["pid"]))
    return time.time() - run.info.start_time / 1000 < UNCLAIMED_AGE_S


def run_attachment(uri: str, run_id: str, seq: int, name: str, search_id: str) -> Path:
    """A local copy of file ``name`` attached to event ``seq``'s run (FileNotFoundError if none)."""
    import mlflow

    target = Path(tempfile.mkdtemp(prefix="nas-attachment-"))
    try:
        return Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=f"files/{name}", dst_path=str(target), tracking_uri=uri
            )
        )
    except Exception as e:
        raise FileNotFoundError(f"event seq {seq} of search {search_id!r} has no attachment {name!r}") from e
