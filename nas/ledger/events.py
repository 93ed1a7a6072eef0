"""Events: the source of truth of a search. Frozen dataclasses named in the past tense.

Every event carries ``search_id``, ``seq`` (1, 2, ... with no gaps) and, through its class, a
``schema_version``. The canonical JSON codec (sorted keys, no spaces, no NaN) is what gets hashed
and stored; reading an old record upcasts it step by step to the current version.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Event:
    search_id: str
    seq: int

    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1


@dataclass(frozen=True)
class SearchStarted(Event):
    """A search began: everything needed to rerun it."""

    name: str
    config: dict[str, Any]
    dataset_fingerprint: str
    code_version: str
    seed: int
    initial_architecture: str  # canonical JSON
    # v2: a proposal reads the outcomes it sees in the order the models were proposed (False: in the order they
    # ended, as logs from before search.propose_ahead did; see ``upcast_search_started_v1_v2``)
    outcomes_in_proposal_order: bool = True
    TYPE: ClassVar[str] = "SearchStarted"
    VERSION: ClassVar[int] = 2


@dataclass(frozen=True)
class ArchitectureProposed(Event):
    """The proposer chose a model to train: where it comes from and why."""

    model_id: str
    parent_model_id: str | None
    morphisms: list[dict[str, Any]]
    architecture_id: str
    architecture: str  # canonical JSON
    strategy: str
    acquisition: float | None = None
    gp_mean: float | None = None
    gp_std: float | None = None
    candidates: int = 0
    proposal_seconds: float = 0.0
    batch_index: int = 0  # v2: its place in the batch proposed at once (replay re-runs whole batches)
    batch_size: int = 1  # v2
    # v3: wall-clock seconds the search had run when proposed, summed over its runners' sessions (None before v3)
    elapsed_s: float | None = None
    # v4: the learning rate its training starts from, chosen with the morphisms (``search.learning_rates``); None:
    # the configured one (train.learning_rate; x lr_decay^ancestors where a search set the removed train.lr_decay)
    learning_rate: float | None = None
    TYPE: ClassVar[str] = "ArchitectureProposed"
    VERSION: ClassVar[int] = 4


@dataclass(frozen=True)
class SurrogateRefitted(Event):
    """The Gaussian process was refitted on every observation so far."""

    observations: int
    length_scale: float
    noise: float
    log_marginal_likelihood: float
    seconds: float
    TYPE: ClassVar[str] = "SurrogateRefitted"


@dataclass(frozen=True)
class TrainingStarted(Event):
    """A training began. ``epochs`` (v2): the epochs it planned, fewer than configured where the search's
    wall-clock budget leaves time for fewer (its learning-rate schedule spans those); None: as configured."""

    model_id: str
    attempt: int = 1
    epochs: int | None = None
    TYPE: ClassVar[str] = "TrainingStarted"
    VERSION: ClassVar[int] = 2


@dataclass(frozen=True)
class TrainingCompleted(Event):
    """A model trained; its weights are an artifact of this event's run (``weights.npz``), whose sha256
    the event records (v2), so a replaced weights file is caught like an edited event."""

    model_id: str
    architecture_id: str
    val_accuracy: float
    param_count: int
    epochs: list[dict[str, float | None]] = field(default_factory=list)
    preservation_error: float | None = None
    seconds: float = 0.0
    weights_sha256: str | None = None  # None: logged by v1, which did not record it
    VERSION: ClassVar[int] = 2
    TYPE: ClassVar[str] = "TrainingCompleted"


# budget: not trained, as not even one epoch of it would have ended within the search's wall-clock budget
FAILURE_REASONS = ("out_of_memory", "nan_loss", "timeout", "error", "budget")


@dataclass(frozen=True)
class TrainingFailed(Event):
    model_id: str
    reason: str  # one of FAILURE_REASONS
    error: str = ""
    param_count: int = 0
    seconds: float = 0.0
    TYPE: ClassVar[str] = "TrainingFailed"


@dataclass(frozen=True)
class SearchFinished(Event):
    best_model_id: str | None
    val_accuracy: float | None
    reason: str
    elapsed_s: float | None = None  # v2: the search's wall-clock seconds at its end (None before v2)
    TYPE: ClassVar[str] = "SearchFinished"
    VERSION: ClassVar[int] = 2


@dataclass(frozen=True)
class ModelRegistered(Event):
    model_id: str
    registered_name: str
    version: str
    TYPE: ClassVar[str] = "ModelRegistered"


EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (
        SearchStarted,
        ArchitectureProposed,
        SurrogateRefitted,
        TrainingStarted,
        TrainingCompleted,
        TrainingFailed,
        SearchFinished,
        ModelRegistered,
    )
}

# (type, version) -> function turning that version's payload into the next version's.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


def upcast_proposed_v1_v2(payload: dict[str, Any]) -> dict[str, Any]:
    """v1 logs proposed one model per ask, so each proposal is a batch of one."""
    return {**payload, "batch_index": 0, "batch_size": 1}


def upcast_completed_v1_v2(payload: dict[str, Any]) -> dict[str, Any]:
    """v1 did not record the weights' sha256: unknown, so the weights of a v1 log are not checked."""
    return {**payload, "weights_sha256": None}


def upcast_started_v1_v2(payload: dict[str, Any]) -> dict[str, Any]:
    """v1 trainings did not plan their epochs by the wall-clock budget: each planned the configured number."""
    return {**payload, "epochs": None}


def upcast_search_started_v1_v2(payload: dict[str, Any]) -> dict[str, Any]:
    """A v1 search read outcomes in proposal order where it logged ``search.propose_ahead`` (the code that had
    that setting did so), in the order they ended before."""
    return {**payload, "outcomes_in_proposal_order": "propose_ahead" in payload["config"].get("search", {})}


def upcast_elapsed(payload: dict[str, Any]) -> dict[str, Any]:
    """Before ArchitectureProposed v3 and SearchFinished v2 the wall clock was not recorded: unknown."""
    return {**payload, "elapsed_s": None}


def upcast_proposed_v3_v4(payload: dict[str, Any]) -> dict[str, Any]:
    """Before v4 no proposal chose a learning rate: each model trained at the configured one."""
    return {**payload, "learning_rate": None}


UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("SearchStarted", 1): upcast_search_started_v1_v2,
    ("ArchitectureProposed", 1): upcast_proposed_v1_v2,
    ("ArchitectureProposed", 2): upcast_elapsed,
    ("ArchitectureProposed", 3): upcast_proposed_v3_v4,
    ("TrainingStarted", 1): upcast_started_v1_v2,
    ("TrainingCompleted", 1): upcast_completed_v1_v2,
    ("SearchFinished", 1): upcast_elapsed,
}


# Settings added after searches were logged: the value a search logged before the setting existed ran with (which
# is not always today's default: before train.schedule a rate was constant, before train.min_steps no minimum).
BEFORE_SETTING: dict[str, dict[str, Any]] = {
    "data": {"label": "", "ignore_columns": []},
    "search": {
        "initial_units": 256,
        "initial_dense_layers": 2,
        "surrogate_targets": "raw",
    },
    "train": {"min_steps": 0, "schedule": "constant"},
}
# Settings removed because they lost or tied when measured: the value that does what the code now does, and the page.
REMOVED: dict[str, tuple[Any, str]] = {
    "search.max_steps": (0, "bench/results/steps1-fashion_mnist-1200.md"),
    "search.acquisition": ("ucb", "bench/results/cost-fashion_mnist-1200.md"),
    "search.parents": (0, "bench/results/parents1-fashion_mnist-1200.md"),
    "search.continue_leader": (False, "bench/results/continue_leader-cosine-fashion_mnist-1200.md"),
    "search.propose_ahead": (True, "bench/results/wait-fashion_mnist-1200.md"),
    "search.learning_rates": ([], "bench/results/rates-fashion_mnist-1200.md"),
    "train.lr_decay": (1.0, "bench/results/decay-fashion_mnist-1200.md"),
    "train.augment": ("none", "bench/results/flip-fashion_mnist-1200.md"),
    "train.weight_decay": (0.0, "bench/results/wd-fashion_mnist-1200.md"),
}
REMOVED_IN, LAST_WITH = "0.3.0", "0.2.0"  # the version that removed them, the last that has them


def removed_in_use(config: Mapping[str, Any]) -> list[str]:
    """``group.key=value`` for each removed setting that ``config`` (settings or a logged configuration) gives a
    value other than what the code now does; [] where it asks nothing the code has dropped."""
    found = []
    for path, (neutral, _) in REMOVED.items():
        group, key = path.split(".")
        values = config.get(group) or {}
        if key in values and values[key] != neutral:
            found.append(f"{path}={values[key]!r}")
    return found


def removed_by(used: list[str]) -> str:
    """What ``removed_in_use`` found, in words: the settings, the version that removed them and the page that
    measured the first."""
    page = REMOVED[used[0].split("=")[0]][1]
    return f"{', '.join(used)}, a setting nas {REMOVED_IN} removed (it did not pay: {page})"


def logged_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The upcaster of a logged search configuration (``SearchStarted.config``): every setting a search logged
    before it existed gets the value that search ran with (``BEFORE_SETTING``); what the log holds is kept. The
    fold applies it, so code reading a search's settings never guesses a default. A removed setting the log lacks
    reads as the value that does what the code now does (``REMOVED``), so the audit and the report read older
    logs, which have them, and newer ones alike."""
    out = {group: dict(values) for group, values in config.items()}
    for path, (neutral, _) in REMOVED.items():
        group, key = path.split(".")
        out.setdefault(group, {}).setdefault(key, copy.deepcopy(neutral))
    for group, values in BEFORE_SETTING.items():
        for key, value in values.items():
            out.setdefault(group, {}).setdefault(key, copy.deepcopy(value))
    return out


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, no NaN or infinity: the one byte string a value hashes as."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def finite_or_none(x: float | None) -> float | None:
    """NaN and infinities become None so metrics stay valid JSON."""
    return None if x is None or not math.isfinite(x) else float(x)


def to_record(event: Event) -> dict[str, Any]:
    """The JSON-able record of ``event``: type, schema_version, search_id, seq and payload."""
    payload = {f.name: getattr(event, f.name) for f in dataclasses.fields(event) if f.name not in ("search_id", "seq")}
    return {
        "type": event.TYPE,
        "schema_version": event.VERSION,
        "search_id": event.search_id,
        "seq": event.seq,
        "payload": payload,
    }


def from_record(record: dict[str, Any]) -> Event:
    """The event in ``record``, upcast to the current schema version; ValueError for unknown types."""
    kind, version = record.get("type"), record.get("schema_version")
    cls = EVENT_TYPES.get(str(kind))
    if cls is None:
        raise ValueError(f"unknown event type {kind!r} at seq {record.get('seq')}; is this code older than the log?")
    if not isinstance(version, int) or version > cls.VERSION:
        raise ValueError(
            f"event {kind} seq {record.get('seq')} has schema version {version!r}; this code reads up to {cls.VERSION}"
        )
    payload = dict(record["payload"])
    while version < cls.VERSION:
        payload = UPCASTERS[(cls.TYPE, version)](payload)
        version += 1
    try:
        return cls(search_id=record["search_id"], seq=record["seq"], **payload)
    except TypeError as e:
        raise ValueError(f"event {kind} seq {record.get('seq')} does not fit schema version {cls.VERSION}: {e}") from e
