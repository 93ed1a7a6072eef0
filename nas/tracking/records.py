"""What an event looks like as an MLflow run: its name, tags, params and metrics. One description, used
both to write a run (``MlflowEventLog``) and to check one (``audit``), so the two cannot drift apart.

The params hold the payload's scalar fields (for people, in the UI), the seal (``nas.hash``,
``nas.prev_hash``, ``nas.mac``) and the whole sealed record as canonical JSON in chunks
(``nas.record.0``, ``nas.record.1``, ...), so a reader rebuilds every record from one ``search_runs``
query instead of downloading one artifact per event. Params are write-once in MLflow.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from nas.ledger.events import canonical_json

CHUNK = 6000  # MLflow's longest param value
RECORD_PARAM = "nas.record."
EVENT_TAGS = ("mlflow.parentRunId", "nas.search_id", "nas.role", "nas.seq", "nas.type")


def run_name(record: Mapping[str, Any]) -> str:
    """A run name that reads well in the MLflow UI, e.g. ``0007 trained m5 val_acc=0.973``."""
    p, seq = record["payload"], f"{record['seq']:04d}"
    match record["type"]:
        case "SearchStarted":
            return f"{seq} started {p['name']}"
        case "ArchitectureProposed":
            origin = f" from {p['parent_model_id']}" if p["parent_model_id"] else ""
            chain = "+".join(m["kind"] for m in p["morphisms"]) or ("trained further" if origin else "initial")
            rate = f" lr={p['learning_rate']:g}" if p.get("learning_rate") else ""
            return f"{seq} proposed {p['model_id']}{origin} ({chain}){rate}"
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
        case "ModelRegistered":
            return f"{seq} registered {p['model_id']} as {p['registered_name']} v{p['version']}"
        case _:
            return f"{seq} {record['type']}"


def scalar_params(payload: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Payload fields as MLflow params: scalars and nested dicts of them; long text and lists stay in the record."""
    out: dict[str, str] = {}
    for key, value in payload.items():
        if isinstance(value, dict):
            out.update(scalar_params(value, f"{prefix}{key}."))
        elif value is None or isinstance(value, bool | int | float) or (isinstance(value, str) and len(value) <= 500):
            out[f"{prefix}{key}"] = str(value)
    return out


def event_params(sealed: Mapping[str, Any]) -> dict[str, str]:
    """Every param the run of a sealed record carries."""
    text = canonical_json(dict(sealed))
    chunks = {f"{RECORD_PARAM}{i}": text[i * CHUNK : (i + 1) * CHUNK] for i in range(-(-len(text) // CHUNK))}
    seal = {"nas.hash": sealed["hash"], "nas.prev_hash": sealed["prev_hash"]}
    if "mac" in sealed:
        seal["nas.mac"] = sealed["mac"]
    return {
        **scalar_params(sealed["payload"]),
        **seal,
        "nas.schema_version": str(sealed["schema_version"]),
        "nas.type": sealed["type"],
        **chunks,
    }


def event_tags(sealed: Mapping[str, Any], parent_run_id: str, search_id: str) -> dict[str, str]:
    """The tags of an event's run: its parent, and look-up hints (search, role, seq, type)."""
    return {
        "mlflow.parentRunId": parent_run_id,
        "nas.search_id": search_id,
        "nas.role": "event",
        "nas.seq": str(sealed["seq"]),
        "nas.type": sealed["type"],
    }


def event_metrics(sealed: Mapping[str, Any]) -> dict[str, dict[int, float]]:
    """Metric name -> {step (epoch): value} of a training's run; empty for other events."""
    out: dict[str, dict[int, float]] = {}
    if sealed["type"] != "TrainingCompleted":
        return out  # TrainingStarted's ``epochs`` is the number it planned, not a history
    for step, epoch in enumerate(sealed["payload"]["epochs"]):
        for key, value in epoch.items():
            if value is not None:
                out.setdefault(key, {})[step] = float(value)
    return out


def record_from_params(params: Mapping[str, str]) -> dict[str, Any] | None:
    """The sealed record a run's params hold (None for runs written before records went into params);
    ValueError if the chunks do not make JSON."""
    if f"{RECORD_PARAM}0" not in params:
        return None
    parts = []
    i = 0
    while f"{RECORD_PARAM}{i}" in params:
        parts.append(params[f"{RECORD_PARAM}{i}"])
        i += 1
    record = json.loads("".join(parts))
    if not isinstance(record, dict):
        raise ValueError("the record params do not hold a JSON object")
    return record
