"""Audit a search stored in MLflow, from MLflow alone: the ledger's checks plus everything the UI shows.

On top of ``nas.ledger.audit`` (chain, seals, meaning, anchors), for every committed seq (a claim on
the parent run) there must be exactly one FINISHED run whose params, tags and name are the ones its
record gives (``nas.tracking.records``, the description the writer used); every run nested under the
parent must be a committed event (a run a writer is committing right now is left alone); the parent's
summary tags and its ``best_val_accuracy`` chart must agree with the events. A deep audit also reads
each run's ``event.json``, its per-epoch metric histories, and the weights a training recorded (their
sha256, and that they load into the trained architecture). Downloads and metric reads run on 8 threads:
they are I/O-bound round trips, and 8 keeps a tracking server busy without flooding a small one.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from nas.ledger.audit import AuditReport, check_records, lineage
from nas.ledger.log import ChainError, Head, content_hash, from_record, ledger_key, record_of
from nas.ledger.replay import best_so_far, summary_values
from nas.ledger.state import fold
from nas.tracking.event_log import in_flight, run_attachment
from nas.tracking.records import EVENT_TAGS, event_metrics, event_params, event_tags, record_from_params, run_name
from nas.tracking.runs import SearchRuns, claims_of
from nas.tracking.sink import SUMMARY_PREFIX

THREADS = 8


def audit(
    runs: SearchRuns, *, deep: bool = True, anchors: Sequence[Head] = (), key: bytes | None = None
) -> AuditReport:
    """Every problem found in the search's MLflow runs, and the best model's lineage when there is none."""
    key = key if key is not None else ledger_key()
    report = AuditReport(runs.search_id)
    parent = runs.parent()
    claims = claims_of(parent) if parent is not None else {}
    if parent is None or not claims:
        where = f"experiment {runs.experiment_name!r}"
        report.add(0, f"no search {runs.search_id!r} in {where}" if parent is None else "no committed event")
        return report
    last = max(claims)
    report.events = last
    runs_by_id = {r.info.run_id: r for r in [*runs.event_runs(), *runs.children()]}
    by_hash: dict[str, list[Any]] = {}
    for run in runs_by_id.values():
        by_hash.setdefault(run.data.params.get("nas.hash", ""), []).append(run)
    sealed: list[dict[str, Any] | None] = []
    committed: dict[int, Any] = {}
    for seq in range(1, last + 1):
        if seq not in claims:
            report.add(seq, "no committed event: the log has a gap")
            sealed.append(None)
            continue
        matches = [r for r in by_hash.get(claims[seq], []) if r.data.tags.get("nas.seq") == str(seq)]
        matches = matches or by_hash.get(claims[seq], [])
        if not matches:
            report.add(seq, "the committed event's run is missing: it was deleted, or its hash param changed")
            sealed.append(None)
            continue
        run = matches[0]
        committed[seq] = run
        record = _record(run, seq, report, runs.client.tracking_uri)
        sealed.append(record)
        if record is not None:
            _check_run(report, run, record, parent.info.run_id, runs.search_id)
    for run in runs_by_id.values():
        if run.info.run_id in {r.info.run_id for r in committed.values()}:
            continue
        seq_tag = run.data.tags.get("nas.seq", "")
        seq = int(seq_tag) if seq_tag.isdigit() else 0
        if run.info.status == "RUNNING" and seq == last + 1 and in_flight(run):
            continue  # a writer is committing it right now
        ours = run.info.status == "RUNNING" and run.data.tags.get("nas.writer")
        what = "left by a crash (nas resume removes it)" if ours else "it was added"
        report.add(
            seq, f"run {run.info.run_id} ({run.info.run_name!r}) under the search is not a committed event: {what}"
        )
    state = check_records(report, sealed, key, anchors, claims)
    if all(r is not None for r in sealed):
        _check_parent(report, parent, sealed, runs)
    if deep:
        proposed = {
            r["payload"]["model_id"]: r["payload"]["architecture"]
            for r in sealed
            if r is not None and r.get("type") == "ArchitectureProposed"
        }
        _deep(report, runs, committed, sealed, proposed)
    report.sort()
    if report.ok:
        report.lineage = lineage(state)
    return report


def _record(run: Any, seq: int, report: AuditReport, uri: str) -> dict[str, Any] | None:
    """The sealed record a committed run holds (params, or event.json for logs written before)."""
    try:
        record = record_from_params(run.data.params)
        if record is None:
            record = _artifact(run.info.run_id, seq, uri)
    except (ValueError, ChainError) as e:
        report.add(seq, f"the record of run {run.info.run_id} cannot be read ({e})")
        return None
    if not isinstance(record.get("payload"), dict) or content_hash(record) != record.get("hash"):
        report.add(seq, f"the record of run {run.info.run_id} was edited (its hash does not match its content)")
    return record


def _artifact(run_id: str, seq: int, uri: str) -> dict[str, Any]:
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path="event.json", dst_path=tmp, tracking_uri=uri
            )
            value = json.loads(Path(path).read_text())
        except Exception as e:
            raise ChainError(seq, f"its event.json cannot be read ({e})") from e
    if not isinstance(value, dict):
        raise ChainError(seq, "its event.json is not a JSON object")
    return value


def _check_run(report: AuditReport, run: Any, record: Mapping[str, Any], parent_id: str, search_id: str) -> None:
    """The committed run shows its record: status, name, tags, params, latest metrics."""
    seq, run_id = int(record["seq"]), run.info.run_id
    if run.info.status != "FINISHED":
        report.add(seq, f"run {run_id} is {run.info.status}, not FINISHED")
    if run.info.run_name != run_name(record):
        report.add(seq, f"run {run_id} is named {run.info.run_name!r}; its event gives {run_name(record)!r}")
    expected_tags = event_tags(record, parent_id, search_id)
    for key in EVENT_TAGS:
        if run.data.tags.get(key) != expected_tags[key]:
            report.add(
                seq, f"tag {key!r} of run {run_id} is {run.data.tags.get(key)!r}, the event says {expected_tags[key]!r}"
            )
    expected, actual = event_params(record), dict(run.data.params)
    changed = sorted(k for k in expected if actual.get(k) != expected[k])
    added = sorted(set(actual) - set(expected))
    if changed and not changed[0].startswith("nas.record."):
        k = changed[0]
        report.add(seq, f"param {k!r} of run {run_id} is {actual.get(k)!r}, the event says {expected[k]!r}")
    elif changed:
        report.add(seq, f"the record params of run {run_id} are not its event's")
    if added:
        report.add(seq, f"run {run_id} has params the event does not: {', '.join(added)}")
    metrics = event_metrics(record)
    for name, steps in metrics.items():
        last = steps[max(steps)]
        if run.data.metrics.get(name) != last:
            report.add(
                seq,
                f"metric {name!r} of run {run_id} shows {run.data.metrics.get(name)!r}, "
                f"the event's last epoch {last!r}",
            )
    extra = sorted(set(run.data.metrics) - set(metrics))
    if extra:
        report.add(seq, f"run {run_id} has metrics the event does not: {', '.join(extra)}")


def _check_parent(report: AuditReport, parent: Any, sealed: Sequence[Any], runs: SearchRuns) -> None:
    """The parent run shows what the events say: its name, its summary tags, its best_val_accuracy chart."""
    tags = parent.data.tags
    if parent.info.run_name != runs.search_id:
        report.add(0, f"the search's parent run is named {parent.info.run_name!r}, not {runs.search_id!r}")
    if tags.get("nas.role") != "search" or tags.get("nas.search_id") != runs.search_id:
        report.add(0, "the parent run's nas.role or nas.search_id tag was changed")
    events = [from_record(record_of(r)) for r in sealed]
    at = tags.get(f"{SUMMARY_PREFIX}events", "")
    if at:
        if not at.isdigit() or not 0 < int(at) <= len(events):
            report.add(0, f"the parent's summary says it was made at seq {at!r}; the log has {len(events)} events")
        else:
            try:
                expected = summary_values(fold(events[: int(at)]))
            except ValueError:
                expected = {}
            for key, value in expected.items():
                shown = tags.get(f"{SUMMARY_PREFIX}{key}")
                if shown is not None and shown != value:
                    report.add(
                        0, f"the parent run's tag {SUMMARY_PREFIX}{key} shows {shown!r}; the events say {value!r}"
                    )
    try:
        steps = best_so_far(events)
    except ValueError:
        return
    history = runs.client.get_metric_history(parent.info.run_id, "best_val_accuracy")
    for m in history:
        if m.step not in steps or abs(steps[m.step] - m.value) > 1e-12:
            report.add(
                0,
                f"best_val_accuracy on the parent run shows {m.value} at step {m.step}; "
                f"the events say {steps.get(m.step)}",
            )
            break


def _deep(
    report: AuditReport,
    runs: SearchRuns,
    committed: Mapping[int, Any],
    sealed: Sequence[Any],
    proposed: Mapping[str, str],
) -> None:
    """Stored files and metric histories, read on THREADS threads."""
    jobs = []
    with ThreadPoolExecutor(THREADS) as pool:
        for seq, run in committed.items():
            record = sealed[seq - 1]
            if record is None:
                continue
            jobs.append(pool.submit(_deep_one, runs, run, record, proposed))
        for job in jobs:
            for seq, problem in job.result():
                report.add(seq, problem)


def _deep_one(
    runs: SearchRuns, run: Any, record: Mapping[str, Any], proposed: Mapping[str, str]
) -> list[tuple[int, str]]:
    seq, run_id, out = int(record["seq"]), run.info.run_id, []
    try:
        stored = _artifact(run_id, seq, runs.client.tracking_uri)
        if stored != dict(record):
            out.append((seq, f"the event.json artifact of run {run_id} was replaced or edited"))
    except ChainError:
        out.append((seq, f"the event.json artifact of run {run_id} is missing or unreadable"))
    for name, steps in event_metrics(record).items():
        shown = {m.step: m.value for m in runs.client.get_metric_history(run_id, name)}
        if shown != steps:
            out.append((seq, f"the {name!r} history of run {run_id} is not the event's epochs"))
    payload = record["payload"]
    if record["type"] == "TrainingCompleted" and payload.get("weights_sha256"):
        out += _weights(runs, run_id, seq, payload, proposed.get(payload["model_id"]))
    return out


def _weights(
    runs: SearchRuns, run_id: str, seq: int, payload: Mapping[str, Any], architecture: str | None
) -> list[tuple[int, str]]:
    """The recorded weights are there, unchanged, and fit the architecture that was proposed."""
    from nas.architectures.graph import Architecture
    from nas.architectures.weights import check_weights, file_sha256, load_weights

    try:
        path = run_attachment(runs.client.tracking_uri, run_id, seq, "weights.npz", runs.search_id)
    except FileNotFoundError:
        return [(seq, f"the weights.npz artifact of run {run_id} is missing")]
    if file_sha256(path) != payload["weights_sha256"]:
        return [(seq, f"the weights.npz artifact of run {run_id} was replaced")]
    if architecture is not None:
        try:
            check_weights(Architecture.from_json(architecture), load_weights(path))
        except (ValueError, OSError, KeyError) as e:
            return [(seq, f"the weights of {payload['model_id']} do not fit its proposed architecture ({e})")]
    return []


def missing_files(runs: SearchRuns) -> list[tuple[int, str]]:
    """The stored files the committed events name that the store does not have: each run's ``event.json`` and
    each training's ``weights.npz`` (listed, not downloaded). One finding, at seq 0, where the search's whole
    local artifact folder is gone."""
    parent = runs.parent()
    if parent is None:
        return []
    folder = _local_folder(parent.info.artifact_uri)
    if folder is not None and not folder.parent.parent.exists():
        return [(0, f"the artifact folder {folder.parent.parent} is missing: every event file and weight is gone")]
    claims = claims_of(parent)
    by_hash = {r.data.params.get("nas.hash", ""): r for r in runs.event_runs()}
    with ThreadPoolExecutor(THREADS) as pool:
        found = [pool.submit(_missing_of, runs, seq, by_hash.get(digest)) for seq, digest in sorted(claims.items())]
        return [problem for job in found for problem in job.result()]


def _local_folder(uri: str) -> Path | None:
    """The folder of a local artifact location (a path or ``file:`` URI); None for a remote one."""
    if uri.startswith("file://"):
        return Path(uri.removeprefix("file://"))
    return None if "://" in uri or uri.startswith("mlflow-artifacts:") else Path(uri)


def _missing_of(runs: SearchRuns, seq: int, run: Any) -> list[tuple[int, str]]:
    if run is None:
        return []  # the audit's finding (a committed event without its run), not a missing file
    run_id, out = run.info.run_id, []
    if "event.json" not in {f.path for f in runs.client.list_artifacts(run_id)}:
        out.append((seq, f"the event.json of run {run_id} is missing"))
    try:
        record = record_from_params(run.data.params)
    except (ValueError, ChainError):
        record = None
    payload = record.get("payload", {}) if record is not None else {}
    if record is not None and record.get("type") == "TrainingCompleted" and payload.get("weights_sha256"):
        if "files/weights.npz" not in {f.path for f in runs.client.list_artifacts(run_id, "files")}:
            out.append((seq, f"the weights of {payload.get('model_id')} (weights.npz of run {run_id}) are missing"))
    return out
