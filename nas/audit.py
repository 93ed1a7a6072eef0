"""Audit a search logged in MLflow, from MLflow alone: is every event there, intact, and in order?

Checks that every committed seq (the claims on the parent run) has exactly one FINISHED child run
whose ``event.json`` is the committed record, whose params equal its payload, and whose
``prev_hash`` links to the event before; that seqs have no gaps; and that no other child runs
exist; and that no model has more than one training outcome. Then prints how the best model came
to be: its morphism chain from the initial network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nas.event_log import ChainError, seal, verify_chain
from nas.event_log.mlflow import MlflowEventLog, scalar_params
from nas.morphisms import Morphism
from nas.state import fold
from nas.weights import file_sha256


@dataclass
class AuditReport:
    search: str
    events: int = 0
    findings: list[tuple[int, str]] = field(default_factory=list)  # (seq, problem), sorted by seq
    lineage: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        return {
            "search": self.search,
            "ok": self.ok,
            "events": self.events,
            "first_bad_seq": self.findings[0][0] if self.findings else None,
            "findings": [{"seq": s, "problem": p} for s, p in self.findings],
            "lineage": self.lineage,
        }


def _expected_params(record: dict[str, Any]) -> dict[str, str]:
    return {
        **scalar_params(record["payload"]),
        "nas.hash": record["hash"],
        "nas.prev_hash": record["prev_hash"],
        "nas.schema_version": str(record["schema_version"]),
        "nas.type": record["type"],
    }


def audit(log: MlflowEventLog) -> AuditReport:
    """Every problem found in the search's MLflow runs, and the best model's lineage when there is none."""

    report = AuditReport(log.search_id)
    claims = log.claims()
    if not claims:
        report.findings.append((0, f"no search {log.search_id!r} in experiment {log.experiment_name!r}"))
        return report
    report.events = max(claims)
    runs = log.event_runs()
    matched: set[str] = set()
    records: list[dict[str, Any]] = []
    prev = None
    for seq in range(1, max(claims) + 1):
        if seq not in claims:
            report.findings.append((seq, "no committed event: the log has a gap"))
            continue
        candidates = [
            r for r in runs if r.data.tags.get("nas.seq") == str(seq) and r.data.params.get("nas.hash") == claims[seq]
        ]
        if not candidates:
            report.findings.append(
                (seq, "the committed event's run is missing: deleted, or its seq tag or hash param changed")
            )
            continue
        run = candidates[0]
        matched.add(run.info.run_id)
        if run.info.status != "FINISHED":
            report.findings.append((seq, f"run {run.info.run_id} is {run.info.status}, not FINISHED"))
        try:
            record = log.stored_record(run, seq)
        except ChainError as e:
            report.findings.append((seq, e.problem))
            continue
        body = {k: v for k, v in record.items() if k != "hash"}
        if record.get("hash") != claims[seq] or seal(body, record.get("prev_hash", ""))["hash"] != claims[seq]:
            report.findings.append((seq, f"the event.json artifact of run {run.info.run_id} was replaced or edited"))
            continue
        if prev is not None and record["prev_hash"] != prev:
            report.findings.append((seq, "prev_hash does not link to the previous event: events were reordered"))
        prev = record["hash"]
        expected, actual = _expected_params(record), dict(run.data.params)
        changed = sorted(k for k in expected if actual.get(k) != expected[k])
        added = sorted(set(actual) - set(expected))
        if changed:
            k = changed[0]
            report.findings.append(
                (seq, f"param {k!r} of run {run.info.run_id} is {actual.get(k)!r}, the event says {expected[k]!r}")
            )
        elif added:
            report.findings.append((seq, f"run {run.info.run_id} has params the event does not: {', '.join(added)}"))
        weights = record["payload"].get("weights_sha256") if record["type"] == "TrainingCompleted" else None
        if weights is not None:
            try:
                replaced = file_sha256(log.run_attachment(run, seq, "weights.npz")) != weights
            except FileNotFoundError:
                report.findings.append((seq, f"the weights.npz artifact of run {run.info.run_id} is missing"))
            else:
                if replaced:
                    report.findings.append((seq, f"the weights.npz artifact of run {run.info.run_id} was replaced"))
        records.append(record)
    for run in runs:
        if run.info.run_id not in matched:
            seq = int(run.data.tags.get("nas.seq", "0") or 0)
            report.findings.append(
                (seq, f"run {run.info.run_id} ({run.info.run_name!r}) is not a committed event: it was added")
            )
    outcomes: dict[str, list[int]] = {}
    for record in records:
        if record["type"] in ("TrainingCompleted", "TrainingFailed"):
            outcomes.setdefault(record["payload"]["model_id"], []).append(record["seq"])
    for model_id, seqs in outcomes.items():
        if len(seqs) > 1:
            where = ", ".join(map(str, seqs))
            report.findings.append((seqs[1], f"model {model_id} has {len(seqs)} training outcomes (seqs {where})"))
    report.findings.sort(key=lambda f: f[0])
    if report.ok:
        try:
            state = fold(verify_chain(records))
        except ChainError as e:
            report.findings.append((e.seq, str(e)))
            return report
        report.lineage = lineage(state)
    return report


def lineage(state: Any) -> list[dict[str, Any]]:
    """The best model's ancestry, initial network first: each model with the morphisms that made it."""
    steps = []
    model = state.best
    while model is not None:
        steps.append(
            {
                "model": model.model_id,
                "morphisms": [Morphism.from_dict(m).describe() for m in model.morphisms],
                "val_accuracy": model.val_accuracy,
                "params": model.param_count,
            }
        )
        model = state.models.get(model.parent_id) if model.parent_id else None
    return list(reversed(steps))
