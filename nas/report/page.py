"""What users look at: a search's progress, its tree of morphisms and its best architecture, as PNGs
and one self-contained HTML page, from the events alone (matplotlib, no system binaries).

``render`` writes the report of any log prefix; ``nas.drivers.publish`` puts it where people look.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

from nas.ledger.events import Event, TrainingCompleted, TrainingFailed
from nas.ledger.ports import SearchStore
from nas.ledger.state import ModelStatus, SearchState, fold
from nas.report.figures import plot_architecture, plot_best_so_far, plot_tree

PNGS = ("best_so_far.png", "search_tree.png", "best_architecture.png")


def progress_rows(events: Sequence[Event]) -> list[dict[str, Any]]:
    """One row per ended training, in log order: models ended so far, search seconds spent so far,
    the model, its validation accuracy (empty if it failed) and the best validation accuracy so far. A model not
    trained for lack of time (a failure for ``budget``) ended no training, so it has no row."""
    rows: list[dict[str, Any]] = []
    state = SearchState()
    best: float | None = None
    for event in events:
        state = fold([event], state)
        if isinstance(event, TrainingCompleted) or (isinstance(event, TrainingFailed) and event.reason != "budget"):
            accuracy = event.val_accuracy if isinstance(event, TrainingCompleted) else None
            if accuracy is not None and (best is None or accuracy > best):
                best = accuracy
            rows.append(
                {
                    "models": len(rows) + 1,
                    "seconds": round(state.spent_seconds, 3),
                    "model_id": event.model_id,
                    "val_accuracy": "" if accuracy is None else accuracy,
                    "best_val_accuracy": "" if best is None else best,
                }
            )
    return rows


def morphism_summary(chain: Sequence[Mapping[str, Any]]) -> str:
    """The kinds of a morphism chain in order, repeats counted: "add_skip x8, concat_skip" ("-" for none)."""
    kinds = [str(m.get("kind", m.get("type", "?"))) for m in chain]
    runs = [(kind, len(list(group))) for kind, group in groupby(kinds)]
    return ", ".join(kind if n == 1 else f"{kind} x{n}" for kind, n in runs) or "-"


def table(state: SearchState) -> list[dict[str, Any]]:
    """Every model: id, parent, morphism chain ("trained further" for none from a parent), parameters, where the
    search chooses learning rates the one its proposal chose ("-": the configured one), status, validation
    accuracy, training seconds."""
    rates = bool(state.config["search"]["learning_rates"])
    return [
        {
            "model": m.model_id,
            "parent": m.parent_id or "-",
            "morphisms": "trained further" if m.parent_id and not m.morphisms else morphism_summary(m.morphisms),
            "params": m.param_count if m.param_count is not None else m.arch.param_count,
            **({"learning_rate": "-" if m.learning_rate is None else f"{m.learning_rate:g}"} if rates else {}),
            "status": "not trained (budget: no time left)"
            if m.out_of_time
            else m.status + (f" ({m.failure})" if m.failure else ""),
            "val_accuracy": m.val_accuracy,
            "seconds": round(m.train_seconds, 1),
        }
        for m in state.models.values()
    ]


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def render(events: Sequence[Event], out: Path, baselines: Mapping[str, Sequence[Event]] | None = None) -> Path:
    """Write the PNGs and ``report.html`` (images embedded: one file to send) of a search to ``out``.

    ``baselines`` maps a label to another search's events, drawn dashed on the progress plot.
    A search that has not finished gets a report marked partial. Returns the HTML path.
    """
    out.mkdir(parents=True, exist_ok=True)
    state = fold(events)
    rows = progress_rows(events)
    plot_best_so_far(rows, out / "best_so_far.png", {k: progress_rows(v) for k, v in (baselines or {}).items()})
    plot_tree(state, out / "search_tree.png")
    best = state.best
    arch_section = "<p>No model has finished training yet.</p>"
    if best is not None:
        plot_architecture(
            best.arch,
            out / "best_architecture.png",
            f"{best.model_id}: val accuracy {best.val_accuracy:.4f}, {best.arch.param_count:,} parameters",
        )
        arch_section = _img(out / "best_architecture.png", "best architecture")
    elif (out / "best_architecture.png").exists():
        (out / "best_architecture.png").unlink()
    s = state.config.get("search", {})
    ended = state.ended
    if state.finished:
        status = f"finished ({html.escape(state.finish_reason or '')})"
    else:
        status = (
            f"<b>partial</b>: the search is still running or was interrupted "
            f"({ended} of at most {s.get('max_models', '?')} trainings ended); run again for the rest"
        )
    rows_of_models = table(state)
    cells = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(f'{v:.4f}' if isinstance(v, float) and k == 'val_accuracy' else str(v))}</td>"
            for k, v in r.items()
        )
        + "</tr>"
        for r in rows_of_models
    )
    names = {"learning_rate": "learning rate", "val_accuracy": "val accuracy", "seconds": "s"}
    plain = ("model", "parent", "morphisms", "params", "status", "val_accuracy", "seconds")  # before any model
    keys = rows_of_models[0] if rows_of_models else plain
    head = "".join(f"<th>{names.get(k, k)}</th>" for k in keys)
    best_line = (
        f"best <b>{best.model_id}</b>, validation accuracy <b>{best.val_accuracy:.4f}</b>"
        if best is not None
        else "no model trained yet"
    )
    wall = "" if state.elapsed_s is None else f" in {state.elapsed_s:.0f} s of wall clock"
    skipped = state.out_of_time
    failed = f"{state.failed_trainings} failed" + (f", {skipped} not trained for lack of time" if skipped else "")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>nas report: {html.escape(state.search_id)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}img{{max-width:100%}}
table{{border-collapse:collapse;font-size:0.85em}}td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}}</style>
</head><body>
<h1>Search {html.escape(state.search_id)}</h1>
<p>Status: {status}. Strategy {html.escape(str(s.get("strategy", "?")))}, {state.count(ModelStatus.TRAINED)} trained,
{failed}, {state.spent_seconds:.0f} s of compute{wall}; {best_line}.</p>
<h2>Progress</h2>{_img(out / "best_so_far.png", "best so far")}
<h2>Search tree</h2>{_img(out / "search_tree.png", "search tree")}
<h2>Best architecture</h2>{arch_section}
<h2>Models</h2><table><tr>{head}</tr>{cells}</table>
</body></html>
"""
    (out / "report.html").write_text(page)
    return out / "report.html"


def random_baselines(store: SearchStore, state: SearchState, limit: int = 3) -> dict[str, list[Event]]:
    """Up to ``limit`` finished random searches on the same data (same fingerprint) in ``store``, by name."""
    out: dict[str, list[Event]] = {}
    for listing in store.searches():
        if len(out) >= limit:
            break
        if listing.name == state.search_id or listing.problem or listing.strategy != "random":
            continue
        if listing.data_fingerprint == state.dataset_fingerprint and listing.status == "finished":
            out[f"random search {listing.name}"] = store.log(listing.name).read()
    return out
