"""The event log on MLflow: one parent run per search, one child run per event.

A child run holds the sealed record as the artifact ``event.json``, the payload's scalar fields as
params (write-once), per-epoch metrics for trainings, and attached files under ``files/``. Tags
(``nas.search_id``, ``nas.seq``, ``nas.type``) only help look-up.

The commit point of an event is a param on the parent run, ``seq.000007 = <hash>``: MLflow refuses
to change a param's value, atomically (the params table's primary key), so of two writers racing
for one seq exactly one commits; the other deletes its child run and gets ``ConcurrencyError``.
A child run is written completely before its claim, so a crash leaves either an unclaimed run
(ignored, and deleted by ``repair``) or a claimed one that only lacks its FINISHED status (which
``repair`` sets).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nas.event_log import GENESIS, Attachments, ChainError, ConcurrencyError, EventLog

DEFAULT_EXPERIMENT = "nas"
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per event read is noise
CLAIM = re.compile(r"^seq\.(\d{6})$")
LEASE = re.compile(r"^lease\.(\d{4})$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class LeaseHeld(RuntimeError):
    """Another runner holds the search: the message names it and says what to do."""


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///mlflow.db`` in the working directory (made explicit)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def searches(uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT) -> list[dict[str, str]]:
    """The searches in the store: each parent run's ``nas.*`` tags (search_id, strategy, data_fingerprint)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri or tracking_uri())
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], "tags.`nas.role` = 'search'", max_results=50_000)
    return [{k[4:]: v for k, v in r.data.tags.items() if k.startswith("nas.")} for r in runs]


def _leases(parent: Any) -> dict[int, tuple[str, float]]:
    """The leases claimed on a parent run: number -> (holder, claim time)."""
    out = {}
    for key, value in parent.data.params.items():
        if m := LEASE.match(key):
            at, _, holder = value.partition(" ")
            out[int(m.group(1))] = (holder, float(at))
    return out


def _last_sign_of_life(parent: Any, number: int, claimed_at: float) -> float:
    """When the holder of lease ``number`` was last known alive: its claim, or a later heartbeat of that lease."""
    beat_number, _, at = parent.data.tags.get("nas.lease.heartbeat", "").partition(" ")
    return max(claimed_at, float(at)) if beat_number == str(number) and at else claimed_at


def check_search_name(name: str) -> str:
    if not NAME.match(name):
        raise ValueError(
            f"search name {name!r} is not allowed: "
            "use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def run_name(record: dict[str, Any]) -> str:
    """A run name that reads well in the MLflow UI, e.g. ``0007 trained m5 val_acc=0.973``."""
    p, seq = record["payload"], f"{record['seq']:04d}"
    match record["type"]:
        case "SearchStarted":
            return f"{seq} started {p['name']}"
        case "ArchitectureProposed":
            chain = "+".join(m["kind"] for m in p["morphisms"]) or "initial"
            origin = f" from {p['parent_model_id']}" if p["parent_model_id"] else ""
            return f"{seq} proposed {p['model_id']}{origin} ({chain})"
        case "SurrogateRefitted":
            return f"{seq} refit n={p['observations']}"
        case "TrainingStarted":
            return f"{seq} training {p['model_id']}"
        case "TrainingCompleted":
            return f"{seq} trained {p['model_id']} val_acc={p['val_accuracy']:.3f}"
        case "TrainingFailed":
            return f"{seq} failed {p['model_id']} {p['reason']}"
        case "SearchFinished":
            best = p["best_model_id"] or "none"
            acc = f" val_acc={p['val_accuracy']:.3f}" if p["val_accuracy"] is not None else ""
            return f"{seq} finished best={best}{acc}"
        case _:
            return f"{seq} {record['type']}"


def scalar_params(payload: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Payload fields as MLflow params: scalars and nested dicts of them; long text and lists stay in the artifact."""
    out: dict[str, str] = {}
    for key, value in payload.items():
        if isinstance(value, dict):
            out.update(scalar_params(value, f"{prefix}{key}."))
        elif value is None or isinstance(value, bool | int | float) or (isinstance(value, str) and len(value) <= 500):
            out[f"{prefix}{key}"] = str(value)
    return out


class MlflowEventLog(EventLog):
    """Event log of search ``search_id`` in MLflow experiment ``experiment``."""

    def __init__(self, search_id: str, *, uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT) -> None:
        super().__init__(check_search_name(search_id))
        from mlflow.tracking import MlflowClient

        self.uri = uri or tracking_uri()
        self.client = MlflowClient(tracking_uri=self.uri)
        self.experiment_name = experiment
        self._experiment_id: str | None = None
        self._records: dict[str, dict[str, Any]] = {}  # run id -> sealed record (verified against its claim)
        self._runs_by_seq: dict[int, Any] = {}
        self._parent_id: str | None = None

    # --- runs --------------------------------------------------------------------------------

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            exp = self.client.get_experiment_by_name(self.experiment_name)
            if exp is None:
                try:
                    self._experiment_id = self.client.create_experiment(self.experiment_name)
                except Exception:  # created by another process meanwhile
                    exp = self.client.get_experiment_by_name(self.experiment_name)
                    if exp is None:
                        raise
                    self._experiment_id = exp.experiment_id
            else:
                self._experiment_id = exp.experiment_id
        return self._experiment_id

    def _search(self, role: str) -> Iterator[Any]:
        token = None
        query = f"tags.`nas.search_id` = '{self.search_id}' and tags.`nas.role` = '{role}'"
        while True:
            page = self.client.search_runs([self.experiment_id], query, max_results=1000, page_token=token)
            yield from page
            token = page.token
            if not token:
                return

    def parent_run(self) -> Any | None:
        """The search's parent run (the oldest, should two processes have created one at once), freshly read."""
        if self._parent_id is not None:
            return self.client.get_run(self._parent_id)
        runs = sorted(self._search("search"), key=lambda r: (r.info.start_time, r.info.run_id))
        if not runs:
            return None
        self._parent_id = runs[0].info.run_id
        return runs[0]

    def ensure_parent(self) -> Any:
        """The search's parent run, created if there is none (should two processes create one at once, the
        older survives). A runner creates it before its first event, to hold the search's lease from the start."""
        parent = self.parent_run()
        if parent is not None:
            return parent
        tags = {"nas.search_id": self.search_id, "nas.role": "search"}
        created = self.client.create_run(self.experiment_id, run_name=self.search_id, tags=tags)
        parent = self.parent_run()
        if parent is not None and parent.info.run_id != created.info.run_id:
            self.client.delete_run(created.info.run_id)  # lost the race: keep one parent
        return parent

    def _parent_for(self, record: dict[str, Any]) -> Any:
        """The parent run ``record`` and those after it go under; a log must start with SearchStarted."""
        if record["type"] != "SearchStarted":
            parent = self.parent_run()
            if parent is None:
                raise ValueError(f"search {self.search_id!r} has no parent run; its log must start with SearchStarted")
            return parent
        return self.ensure_parent()

    def publish_report(self, folder: Path, metrics: dict[str, dict[int, float]]) -> None:
        """Replace the parent run's ``report/`` artifacts with the files in ``folder``, and log each
        ``metrics[name][step]`` not logged yet (so the UI's charts show progress by step)."""
        from mlflow.entities import Metric

        parent = self.parent_run()
        if parent is None:
            raise ValueError(f"search {self.search_id!r} has no parent run to publish a report on")
        run_id = parent.info.run_id
        self.client.log_artifacts(run_id, str(folder), artifact_path="report")
        now = int(time.time() * 1000)
        new = []
        for name, values in metrics.items():
            logged = {m.step for m in self.client.get_metric_history(run_id, name)}
            new += [Metric(name, float(v), now, step) for step, v in sorted(values.items()) if step not in logged]
        if new:
            self.client.log_batch(run_id, metrics=new)

    # --- lease: one runner per search -----------------------------------------------------------------

    def acquire_lease(self, holder: str, ttl_s: float) -> tuple[int, str | None]:
        """Claim the right to run this search for ``holder``: the lease number (to renew and release) and the
        holder of an expired lease this one takes over (None if the last one was released or was ours).

        A lease is a write-once param ``lease.NNNN = <claim time> <holder>`` on the parent run (so of two
        runners claiming at once exactly one wins) with a heartbeat tag ``NNNN <time>`` the holder renews.
        The next lease may be claimed once the last one was released or it is older than ``ttl_s`` (claim or
        last heartbeat: its holder died). LeaseHeld, naming the holder and what to do, if another runner holds it.
        """
        from mlflow.exceptions import MlflowException

        parent = self.parent_run()
        if parent is None:
            raise ValueError(f"search {self.search_id!r} has no parent run to lease; start it first")
        leases = _leases(parent)
        number = max(leases, default=0)
        previous = None
        if number and leases[number][0] != holder and parent.data.tags.get("nas.lease.released") != str(number):
            previous = leases[number][0]
            age = time.time() - _last_sign_of_life(parent, number, leases[number][1])
            if age <= ttl_s:
                raise LeaseHeld(
                    f"search {self.search_id!r} is already being run by {previous} (heartbeat {age:.0f} s ago); "
                    f"wait for it to finish, or if it died, run again in {ttl_s - age:.0f} s when its lease expires"
                )
        if not number or leases[number][0] != holder:
            number += 1
            try:
                self.client.log_param(parent.info.run_id, f"lease.{number:04d}", f"{time.time():.3f} {holder}")
            except MlflowException as e:
                raise LeaseHeld(
                    f"search {self.search_id!r} was claimed by another runner at the same moment; "
                    "it runs the search, this one stops"
                ) from e
        self.client.set_tag(parent.info.run_id, "nas.lease.heartbeat", f"{number} {time.time():.3f}")
        return number, previous

    def renew_lease(self, number: int) -> None:
        """Refresh the heartbeat of lease ``number``; LeaseHeld if a later lease took over (we were presumed dead)."""
        parent = self.parent_run()
        assert parent is not None
        later = [holder for n, (holder, _) in sorted(_leases(parent).items()) if n > number]
        if later:
            raise LeaseHeld(
                f"search {self.search_id!r} was taken over by {later[-1]} after this runner's lease expired; "
                "this one stops"
            )
        self.client.set_tag(parent.info.run_id, "nas.lease.heartbeat", f"{number} {time.time():.3f}")

    def release_lease(self, number: int) -> None:
        """Give lease ``number`` up, so the next runner need not wait for it to expire."""
        assert self._parent_id is not None
        self.client.set_tag(self._parent_id, "nas.lease.released", str(number))

    def event_runs(self) -> list[Any]:
        """Every active child run of this search, claimed or not (for the audit)."""
        return list(self._search("event"))

    # --- EventLog -------------------------------------------------------------------------------

    def _head(self) -> tuple[int, str]:
        claims = self.claims()  # one read of the parent run; the chain itself is checked on read
        return (max(claims), claims[max(claims)]) if claims else (0, GENESIS)

    def claims(self) -> dict[int, str]:
        parent = self.parent_run()
        if parent is None:
            return {}
        return {int(m.group(1)): v for k, v in parent.data.params.items() if (m := CLAIM.match(k))}

    def _load(self) -> list[dict[str, Any]]:
        claims = self.claims()
        if not claims:
            return []
        runs: dict[tuple[int, str], Any] = {}
        for run in self.event_runs():
            seq, h = run.data.tags.get("nas.seq"), run.data.params.get("nas.hash")
            if seq and seq.isdigit() and h:
                runs.setdefault((int(seq), h), run)
        records = []
        for seq in range(1, max(claims) + 1):
            if seq not in claims:
                raise ChainError(seq, "no committed event: the log has a gap")
            run = runs.get((seq, claims[seq]))
            if run is None:
                raise ChainError(seq, "the committed event's run is missing (deleted?)")
            self._runs_by_seq[seq] = run
            records.append(self._record(run, seq, claims[seq]))
        return records

    def stored_record(self, run: Any, seq: int) -> dict[str, Any]:
        """The ``event.json`` artifact of ``run``, as stored; ChainError naming ``seq`` if it cannot be read."""
        import mlflow

        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = mlflow.artifacts.download_artifacts(
                    run_id=run.info.run_id, artifact_path="event.json", dst_path=tmp, tracking_uri=self.uri
                )
                return json.loads(Path(path).read_text())
            except Exception as e:
                raise ChainError(seq, f"the event.json artifact of run {run.info.run_id} cannot be read ({e})") from e

    def _record(self, run: Any, seq: int, claimed: str) -> dict[str, Any]:
        cached = self._records.get(run.info.run_id)
        if cached is not None and cached["hash"] == claimed:
            return cached
        record = self.stored_record(run, seq)
        if record.get("hash") != claimed:
            raise ChainError(seq, f"the event.json artifact of run {run.info.run_id} is not the committed event")
        self._records[run.info.run_id] = record
        return record

    def _commit(self, sealed: list[dict[str, Any]], attachments: Attachments) -> None:
        from mlflow.entities import Metric, Param
        from mlflow.exceptions import MlflowException

        parent = self._parent_for(sealed[0])
        for rec in sealed:
            payload = rec["payload"]
            tags = {
                "mlflow.parentRunId": parent.info.run_id,
                "nas.search_id": self.search_id,
                "nas.role": "event",
                "nas.seq": str(rec["seq"]),
                "nas.type": rec["type"],
            }
            run = self.client.create_run(self.experiment_id, run_name=run_name(rec), tags=tags)
            run_id = run.info.run_id
            params = {
                **scalar_params(payload),
                "nas.hash": rec["hash"],
                "nas.prev_hash": rec["prev_hash"],
                "nas.schema_version": str(rec["schema_version"]),
                "nas.type": rec["type"],
            }
            metrics = []
            for step, epoch in enumerate(payload.get("epochs") or []):
                metrics += [Metric(k, v, 0, step) for k, v in epoch.items() if v is not None]
            self.client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()], metrics=metrics)
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / "event.json").write_text(json.dumps(rec, sort_keys=True, indent=1))
                self.client.log_artifact(run_id, str(Path(tmp) / "event.json"))
            for name, path in attachments.get(rec["seq"], {}).items():
                with tempfile.TemporaryDirectory() as tmp:
                    named = Path(tmp) / name
                    named.write_bytes(Path(path).read_bytes())
                    self.client.log_artifact(run_id, str(named), artifact_path="files")
            try:
                self.client.log_param(parent.info.run_id, f"seq.{rec['seq']:06d}", rec["hash"])  # the commit point
            except MlflowException as e:
                self.client.delete_run(run_id)
                raise ConcurrencyError(
                    f"search {self.search_id!r}: seq {rec['seq']} was committed by another writer; "
                    "re-read the log and retry"
                ) from e
            self.client.set_terminated(run_id, "FINISHED")
            self._records[run_id] = rec
            if rec["type"] == "SearchStarted":  # what `searches` lists: the strategy and the data
                strategy = str(payload.get("config", {}).get("search", {}).get("strategy", ""))
                self.client.set_tag(parent.info.run_id, "nas.strategy", strategy)
                self.client.set_tag(parent.info.run_id, "nas.data_fingerprint", str(payload["dataset_fingerprint"]))
            if rec["type"] == "SearchFinished":  # the UI then shows the search as finished, not running
                self.client.set_terminated(parent.info.run_id, "FINISHED")

    def attachment(self, seq: int, name: str) -> Path:
        run = self._runs_by_seq.get(seq)
        if run is None:
            self._load()
            run = self._runs_by_seq.get(seq)
        if run is None:
            raise FileNotFoundError(f"search {self.search_id!r} has no event seq {seq}")
        return self.run_attachment(run, seq, name)

    def run_attachment(self, run: Any, seq: int, name: str) -> Path:
        """A local copy of the file ``name`` attached to event ``seq``'s run (FileNotFoundError if none)."""
        import mlflow

        target = Path(tempfile.mkdtemp(prefix="nas-attachment-"))
        try:
            return Path(
                mlflow.artifacts.download_artifacts(
                    run_id=run.info.run_id, artifact_path=f"files/{name}", dst_path=str(target), tracking_uri=self.uri
                )
            )
        except Exception as e:
            raise FileNotFoundError(f"event seq {seq} of search {self.search_id!r} has no attachment {name!r}") from e

    def repair(self) -> list[str]:
        """After a crash: finish claimed runs left RUNNING, delete unclaimed ones. Returns what it did."""
        claims = self.claims()
        done = []
        for run in self.event_runs():
            seq = int(run.data.tags.get("nas.seq", "0") or 0)
            if claims.get(seq) == run.data.params.get("nas.hash"):
                if run.info.status != "FINISHED":
                    self.client.set_terminated(run.info.run_id, "FINISHED")
                    done.append(f"finished run {run.info.run_id} (seq {seq})")
            elif run.info.status == "RUNNING":
                self.client.delete_run(run.info.run_id)
                done.append(f"deleted unclaimed run {run.info.run_id} (seq {seq})")
        return done
