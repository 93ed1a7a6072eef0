"""What an audit finds in a log, whatever stores it: the chain, the seals, the meaning, and anchors.

- **Chain**: seqs 1, 2, ... without gaps; each record's hash is its content's; each ``prev_hash`` is the
  hash of the record before. A link that breaks after an intact record is reported at the record
  before it (that one was edited and re-hashed), so a finding names the first tampered seq.
- **Seals**: with the ledger key at hand, every record must carry the key's HMAC of its hash.
- **Meaning**: the log starts with one SearchStarted; a proposal's architecture id is its
  architecture's, its parent is a trained model, and its morphisms turn the parent into it; every
  training event names a proposed model; an outcome agrees with its proposal (architecture id, parameter
  count); a model has at most one outcome; SearchFinished names the best model the fold names.
- **Anchors**: a head recorded outside the store (printed, in a witness file, in DVC's outputs) must
  still be in the log: a shorter log was truncated, another hash at that seq means a re-chained or
  rolled-back log.

Backends add what only they can see (``nas.tracking.audit`` checks every MLflow run against these records).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from nas.architectures.graph import Architecture
from nas.architectures.morphisms import Morphism, apply_chain
from nas.ledger.events import (
    ArchitectureProposed,
    Event,
    SearchFinished,
    SearchStarted,
    TrainingCompleted,
    TrainingFailed,
)
from nas.ledger.log import GENESIS, ChainError, Head, check_macs, content_hash, from_record, record_of
from nas.ledger.state import ImpossibleEvent, ModelStatus, SearchState, apply

if TYPE_CHECKING:
    from nas.ledger.ports import SearchStore


@dataclass
class AuditReport:
    """Every problem found, by seq (0 for the search as a whole), and the best model's lineage when clean."""

    search: str
    events: int = 0
    head: Head = field(default_factory=lambda: Head(0, GENESIS))
    findings: list[tuple[int, str]] = field(default_factory=list)
    lineage: list[dict[str, Any]] = field(default_factory=list)
    anchors_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.findings

    def add(self, seq: int, problem: str) -> None:
        if (seq, problem) not in self.findings:
            self.findings.append((seq, problem))

    def sort(self) -> None:
        """Events in seq order first, then what concerns the search as a whole (seq 0): the earliest bad event
        is what a reader needs, since everything the runs show derives from the events."""
        self.findings.sort(key=lambda f: (f[0] == 0, f[0]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "search": self.search,
            "ok": self.ok,
            "events": self.events,
            "head": str(self.head),
            "anchors_checked": self.anchors_checked,
            "first_bad_seq": self.findings[0][0] if self.findings else None,
            "findings": [{"seq": s, "problem": p} for s, p in self.findings],
            "lineage": self.lineage,
        }


def chain_findings(
    sealed: Sequence[Mapping[str, Any] | None], key: bytes | None = None, claims: Mapping[int, str] | None = None
) -> list[tuple[int, str]]:
    """Problems of the chain (and of the seals, with a key), each at the first seq it touches.

    ``sealed[i]`` is seq i+1's record, or None where the store lost it (the backend reports that). With
    ``claims`` (seq -> committed hash, as a backend keeps them) each record is also checked against its
    claim, and a link is checked against the claimed hash before it, so a lost record does not make the
    next one look re-linked.
    """
    out: list[tuple[int, str]] = []
    prev: str | None = GENESIS
    for i, rec in enumerate(sealed, start=1):
        if rec is None:
            prev = claims.get(i) if claims else None
            continue
        if rec.get("seq") != i:
            out.append((i, f"the record at seq {i} says seq {rec.get('seq')}: records were moved"))
        intact = content_hash(rec) == rec.get("hash")
        if not intact:
            out.append((i, "the record's hash does not match its content: it was edited"))
        elif claims is not None and claims.get(i) != rec.get("hash"):
            out.append((i, "the record is not the committed event (its hash differs from the claim): it was replaced"))
        elif prev is not None and rec.get("prev_hash") != prev:
            # Record i is intact and points at a hash record i-1 no longer has: i-1 was edited and re-hashed.
            out.append((i - 1, f"its hash is not the one seq {i} was chained to: it was edited and re-hashed"))
        prev = str(rec.get("hash")) if claims is None else claims.get(i)
    if key is not None:
        out += check_macs([r for r in sealed if r is not None], key)
    return out


def meaning_findings(sealed: Sequence[Mapping[str, Any] | None]) -> tuple[list[tuple[int, str]], SearchState]:
    """Problems of what the events say, and the state of the events that made sense (impossible ones skipped)."""
    out: list[tuple[int, str]] = []
    state = SearchState()
    outcomes: dict[str, list[int]] = {}
    for rec in sealed:
        if rec is None:
            continue
        seq = int(rec.get("seq", 0))
        try:
            event = from_record(record_of(rec))
        except (ValueError, KeyError, TypeError) as e:
            out.append((seq, f"the record cannot be read as an event ({e})"))
            continue
        problem = _meaning(event, state)
        if isinstance(event, TrainingCompleted | TrainingFailed):
            outcomes.setdefault(event.model_id, []).append(seq)
            if len(outcomes[event.model_id]) > 1:
                seqs = outcomes[event.model_id]
                problem = f"model {event.model_id} has {len(seqs)} training outcomes (seqs {', '.join(map(str, seqs))})"
        if problem is None:
            try:
                state = replace(apply(event, state), last_seq=seq)
                continue
            except ImpossibleEvent as e:
                problem = e.problem
        out.append((seq, problem))
        state = replace(state, last_seq=seq)
    return out, state


def _meaning(event: Event, state: SearchState) -> str | None:
    """Why ``event`` cannot follow ``state`` (None when it can). The fold itself refuses unknown models."""
    if isinstance(event, SearchStarted) != (state.last_seq == 0):
        return "a log starts with one SearchStarted, and only there"
    if isinstance(event, SearchStarted):
        try:
            Architecture.from_json(event.initial_architecture)
        except ValueError as e:
            return f"the initial architecture does not parse ({e})"
        return None
    if state.finished and not type(event).__name__ == "ModelRegistered":
        return f"{type(event).__name__} comes after SearchFinished"
    if isinstance(event, ArchitectureProposed):
        return _proposal_problem(event, state)
    if isinstance(event, TrainingCompleted):
        model = state.models.get(event.model_id)
        if model is None:
            return None  # the fold names it
        if event.architecture_id != model.architecture_id:
            return (
                f"the outcome of {event.model_id} names architecture {event.architecture_id[:12]}, "
                f"its proposal {model.architecture_id[:12]}"
            )
        if event.param_count != model.arch.param_count:
            return (
                f"the outcome of {event.model_id} has {event.param_count:,} parameters, "
                f"its architecture {model.arch.param_count:,}"
            )
    if isinstance(event, TrainingFailed):
        model = state.models.get(event.model_id)
        if model is not None and event.param_count not in (0, model.arch.param_count):
            return (
                f"the failure of {event.model_id} has {event.param_count:,} parameters, "
                f"its architecture {model.arch.param_count:,}"
            )
    if isinstance(event, SearchFinished):
        best = state.best
        expected = (best.model_id, best.val_accuracy) if best else (None, None)
        if (event.best_model_id, event.val_accuracy) != expected:
            return (
                f"SearchFinished names best {event.best_model_id} ({event.val_accuracy}); the events before it make "
                f"{expected[0]} ({expected[1]}) the best"
            )
    return None


def _proposal_problem(event: ArchitectureProposed, state: SearchState) -> str | None:
    try:
        arch = Architecture.from_json(event.architecture)
    except ValueError as e:
        return f"the architecture of {event.model_id} does not parse ({e})"
    if arch.id != event.architecture_id:
        return f"{event.model_id} names architecture {event.architecture_id[:12]}, its architecture is {arch.id[:12]}"
    if event.model_id != f"m{len(state.models) + 1}" or event.model_id in state.models:
        return f"{event.model_id} is proposed where m{len(state.models) + 1} comes next"
    rates = state.config["search"]["learning_rates"]
    if event.learning_rate is not None and event.learning_rate not in rates:
        listed = f"not one of search.learning_rates {rates}"
        return f"{event.model_id} is proposed at learning rate {event.learning_rate}, {listed}"
    if event.parent_model_id is None:
        return None
    parent = state.models.get(event.parent_model_id)
    if parent is None or parent.status != ModelStatus.TRAINED:
        return f"{event.model_id} is morphed from {event.parent_model_id}, which is not a trained model"
    try:
        child, _ = apply_chain(parent.arch, None, [Morphism.from_dict(m) for m in event.morphisms])
    except (ValueError, KeyError, TypeError) as e:
        return f"the morphisms of {event.model_id} do not apply to {event.parent_model_id} ({e})"
    if child.id != arch.id:
        return (
            f"the morphisms of {event.model_id} turn {event.parent_model_id} "
            "into another architecture than the one proposed"
        )
    return None


def anchor_findings(hashes: Sequence[str | None], anchors: Sequence[Head]) -> list[tuple[int, str]]:
    """Problems with heads recorded outside the store (``hashes[i]`` is seq i+1's): each must still be in the log."""
    out: list[tuple[int, str]] = []
    for anchor in sorted(set(anchors), key=lambda h: h.seq):
        if anchor.seq > len(hashes):
            out.append(
                (
                    len(hashes) + 1,
                    f"the log ends at seq {len(hashes)}, but seq {anchor.seq} was anchored: it was truncated",
                )
            )
        elif anchor.seq > 0 and hashes[anchor.seq - 1] != anchor.hash:
            out.append(
                (
                    anchor.seq,
                    f"seq {anchor.seq} is not the record anchored as {anchor}: the log was re-chained or rolled back "
                    "at or before it",
                )
            )
    return out


def check_records(
    report: AuditReport,
    sealed: Sequence[Mapping[str, Any] | None],
    key: bytes | None,
    anchors: Sequence[Head] = (),
    claims: Mapping[int, str] | None = None,
) -> SearchState:
    """Add the chain, seal, meaning and anchor findings of ``sealed`` (see ``chain_findings``) to ``report``;
    the state the sensible events add up to."""
    hashes = [claims.get(i + 1) if claims else (r or {}).get("hash") for i, r in enumerate(sealed)]
    if hashes and hashes[-1]:
        report.head = Head(len(hashes), str(hashes[-1]))
    report.events = max(report.events, len(sealed))
    for seq, problem in chain_findings(sealed, key, claims):
        report.add(seq, problem)
    found, state = meaning_findings(sealed)
    for seq, problem in found:
        report.add(seq, problem)
    for seq, problem in anchor_findings(hashes, anchors):
        report.add(seq, problem)
    report.anchors_checked += len(anchors)
    return state


def lineage(state: SearchState) -> list[dict[str, Any]]:
    """The best model's ancestry, initial network first: each model with the morphisms that made it and the
    learning rate its proposal chose (None: the configured one)."""
    steps = []
    model = state.best
    while model is not None:
        steps.append(
            {
                "model": model.model_id,
                "morphisms": [Morphism.from_dict(m).describe() for m in model.morphisms],
                "val_accuracy": model.val_accuracy,
                "params": model.param_count,
                "learning_rate": model.learning_rate,
            }
        )
        model = state.models.get(model.parent_id) if model.parent_id else None
    return list(reversed(steps))


def require_clean(report: AuditReport) -> None:
    """ValueError naming the first finding and how to go on, when a log must not be built on."""
    if report.ok:
        return
    seq, problem = report.findings[0]
    more = f" ({len(report.findings) - 1} more)" if len(report.findings) > 1 else ""
    raise ChainError(
        seq,
        f"{problem}{more}. The log fails its audit, so nothing was resumed: see `nas audit {report.search}`; "
        "to go on, restore the store from a backup, or start a new search under another name",
        report.search,
    )


def require_files(store: SearchStore, search_id: str) -> None:
    """ChainError naming the first stored file search ``search_id``'s events need that the store lacks (its
    events' files, its trainings' weights), and how many more; what resume, replay --verify and register check
    before they write or build anything, as the audit does."""
    missing = store.missing_files(search_id)
    if not missing:
        return
    seq, problem = missing[0]
    more = f" ({len(missing) - 1} more missing)" if len(missing) > 1 else ""
    raise ChainError(
        seq,
        f"{problem}{more}. Nothing was done: restore the store's files from a backup (nas audit {search_id} "
        "lists each one), or start a new search under another name",
        search_id,
    )
