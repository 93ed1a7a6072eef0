"""What users look at: a search's progress, its tree of morphisms and its best architecture, as PNGs
and one self-contained HTML page, from the events alone (matplotlib, no system binaries).

``render`` writes the report of any log; ``publish`` also puts it on the search's MLflow parent run
(artifacts under ``report/``) with the metric ``best_val_accuracy`` stepped by models ended, so the
MLflow UI shows progress while the search runs.
"""

from __future__ import annotations

import base64
import html
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nas.events import Event, TrainingCompleted, TrainingFailed
from nas.graph import Architecture
from nas.state import SearchState, fold

PNGS = ("best_so_far.png", "search_tree.png", "best_architecture.png")


def progress_rows(events: Sequence[Event]) -> list[dict[str, Any]]:
    """One row per ended training, in log order: models ended so far, search seconds spent so far,
    the model, its validation accuracy (empty if it failed) and the best validation accuracy so far."""
    rows: list[dict[str, Any]] = []
    state = SearchState()
    best: float | None = None
    for event in events:
        state = fold([event], state)
        if isinstance(event, TrainingCompleted | TrainingFailed):
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


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_best_so_far(
    rows: Sequence[Mapping[str, Any]], path: Path, baselines: Mapping[str, Sequence[Mapping[str, Any]]] = {}
) -> None:
    """Best-so-far validation accuracy against search seconds and against models ended (each model as a
    dot), with each baseline search's best-so-far curve dashed."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, key, label in ((axes[0], "seconds", "search seconds"), (axes[1], "models", "models trained")):
        for name, other in baselines.items():
            pts = [r for r in other if r["best_val_accuracy"] != ""]
            ax.step([r[key] for r in pts], [r["best_val_accuracy"] for r in pts], where="post", ls="--", label=name)
        pts = [r for r in rows if r["best_val_accuracy"] != ""]
        ax.step([r[key] for r in pts], [r["best_val_accuracy"] for r in pts], where="post", lw=2, label="best so far")
        done = [r for r in rows if r["val_accuracy"] != ""]
        ax.scatter([r[key] for r in done], [r["val_accuracy"] for r in done], s=14, color="grey", label="each model")
        failed = [r for r in rows if r["val_accuracy"] == ""]
        if failed:
            low = min((r["val_accuracy"] for r in done), default=0.0)
            ax.scatter([r[key] for r in failed], [low] * len(failed), marker="x", color="red", label="failed")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation accuracy")
    axes[1].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_tree(state: SearchState, path: Path) -> None:
    """The search tree: each model under the model it was morphed from, coloured by validation accuracy;
    failed trainings are red crosses, models not yet trained are hollow."""
    plt = _pyplot()
    depth: dict[str, int] = {}
    for m in state.models.values():  # parents come before children in the log
        depth[m.model_id] = 0 if m.parent_id is None else depth.get(m.parent_id, 0) + 1
    levels: dict[int, list[str]] = {}
    for model_id, d in depth.items():
        levels.setdefault(d, []).append(model_id)
    pos = {m: (i - (len(ids) - 1) / 2, -d) for d, ids in levels.items() for i, m in enumerate(ids)}
    width = max((len(ids) for ids in levels.values()), default=1)
    fig, ax = plt.subplots(figsize=(min(6 + 1.1 * width, 18), 1.5 + 1.0 * len(levels)))
    for m in state.models.values():
        if m.parent_id in pos:
            (x0, y0), (x1, y1) = pos[m.parent_id], pos[m.model_id]
            ax.plot([x0, x1], [y0, y1], color="#999", lw=1, zorder=1)
    trained = [m for m in state.models.values() if m.status == "trained"]
    if trained:
        dots = ax.scatter(
            [pos[m.model_id][0] for m in trained],
            [pos[m.model_id][1] for m in trained],
            c=[m.val_accuracy for m in trained],
            cmap="viridis",
            s=260,
            zorder=2,
            edgecolors="black",
        )
        fig.colorbar(dots, ax=ax, label="validation accuracy", shrink=0.8)
    for m in state.models.values():
        x, y = pos[m.model_id]
        if m.status == "failed":
            ax.scatter([x], [y], marker="X", color="red", s=200, zorder=2)
        elif m.status != "trained":
            ax.scatter([x], [y], facecolors="white", edgecolors="black", s=260, zorder=2)
        best = state.best is not None and state.best.model_id == m.model_id
        ax.annotate(m.model_id + (" *" if best else ""), (x, y), xytext=(0, 13), textcoords="offset points",
                    ha="center", fontsize=8, fontweight="bold" if best else "normal")  # fmt: skip
    ax.set_title("search tree: parent above child; * best, red X failed, hollow not trained yet", fontsize=9)
    ax.axis("off")
    ax.margins(0.15, 0.25)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _label(arch: Architecture, layer_id: str) -> str:
    lay = arch.by_id[layer_id]
    c = dict(lay.config)
    match lay.kind:
        case "Conv2D":
            k = c["kernel_size"]
            return f"Conv2D {c['filters']} {k}x{k}" + (f" /{c['strides']}" if c.get("strides", 1) != 1 else "")
        case "Dense":
            return f"Dense {c['units']}"
        case "Dropout":
            return f"Dropout {c['rate']:g}"
        case "MaxPooling2D":
            return f"MaxPool {c['pool_size']}"
    return lay.kind


def plot_architecture(arch: Architecture, path: Path, title: str = "") -> None:
    """The layers top to bottom with their widths, each edge an arrow: to the next row straight down,
    over rows (branches and skip connections) as an arc on the right, red into an Add, orange otherwise."""
    plt = _pyplot()
    order = ["input", *[lay.id for lay in arch.layers]]
    row = {layer_id: i for i, layer_id in enumerate(order)}
    fig, ax = plt.subplots(figsize=(4.8, 0.9 + 0.34 * len(order)))
    colours = {"Conv2D": "#cfe2f3", "Dense": "#d9ead3", "Add": "#f4cccc", "Concatenate": "#fce5cd"}
    for layer_id in order:
        y = -row[layer_id]
        text = f"input {tuple(arch.input_shape)}" if layer_id == "input" else _label(arch, layer_id)
        kind = "" if layer_id == "input" else arch.by_id[layer_id].kind
        ax.text(0, y, text, ha="center", va="center", fontsize=8, zorder=3,
                bbox={"boxstyle": "round,pad=0.25", "fc": colours.get(kind, "#eeeeee"), "ec": "#666"})  # fmt: skip
    skips = 0
    for lay in arch.layers:
        for source in lay.inputs:
            gap = row[lay.id] - row[source]
            if gap == 1:  # the next row: a short arrow between the boxes
                ax.annotate("", xy=(0, -row[lay.id] + 0.28), xytext=(0, -row[source] - 0.28),
                            arrowprops={"arrowstyle": "->", "color": "#666", "lw": 0.8})  # fmt: skip
            else:  # jumps over rows: parallel branches and skip connections, as arcs on the right
                skips += 1
                ax.annotate("", xy=(0.9, -row[lay.id]), xytext=(0.9, -row[source]),
                            arrowprops={"arrowstyle": "->", "color": "C3" if lay.kind == "Add" else "C1",
                                        "connectionstyle": f"arc3,rad=-{min(0.15 + 0.02 * gap, 0.6):.2f}"})  # fmt: skip
    ax.set_xlim(-1.6, 2.2)
    ax.set_ylim(-len(order) + 0.4, 0.6)
    ax.axis("off")
    ax.set_title(title or f"{arch.param_count:,} parameters, {len(arch.layers)} layers, {skips} skip connections",
                 fontsize=9)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _morphisms(chain: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(str(m.get("kind", m.get("type", "?"))) for m in chain) or "-"


def table(state: SearchState) -> list[dict[str, Any]]:
    """Every model: id, parent, morphism chain, parameters, status, validation accuracy, training seconds."""
    return [
        {
            "model": m.model_id,
            "parent": m.parent_id or "-",
            "morphisms": _morphisms(m.morphisms),
            "params": m.param_count if m.param_count is not None else m.arch.param_count,
            "status": m.status + (f" ({m.failure})" if m.failure else ""),
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
    ended = state.count("trained") + state.count("failed")
    if state.finished:
        status = f"finished ({html.escape(state.finish_reason or '')})"
    else:
        status = (
            f"<b>partial</b>: the search is still running or was interrupted "
            f"({ended} of at most {s.get('max_models', '?')} trainings ended); run again for the rest"
        )
    cells = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(f'{v:.4f}' if isinstance(v, float) and k == 'val_accuracy' else str(v))}</td>"
            for k, v in r.items()
        )
        + "</tr>"
        for r in table(state)
    )
    head = "".join(f"<th>{k}</th>" for k in ("model", "parent", "morphisms", "params", "status", "val accuracy", "s"))
    best_line = (
        f"best <b>{best.model_id}</b>, validation accuracy <b>{best.val_accuracy:.4f}</b>"
        if best is not None
        else "no model trained yet"
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>nas report: {html.escape(state.search_id)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}img{{max-width:100%}}
table{{border-collapse:collapse;font-size:0.85em}}td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}}</style>
</head><body>
<h1>Search {html.escape(state.search_id)}</h1>
<p>Status: {status}. Strategy {html.escape(str(s.get("strategy", "?")))}, {state.count("trained")} trained,
{state.count("failed")} failed, {state.spent_seconds:.0f} s spent; {best_line}.</p>
<h2>Progress</h2>{_img(out / "best_so_far.png", "best so far")}
<h2>Search tree</h2>{_img(out / "search_tree.png", "search tree")}
<h2>Best architecture</h2>{arch_section}
<h2>Models</h2><table><tr>{head}</tr>{cells}</table>
</body></html>
"""
    (out / "report.html").write_text(page)
    return out / "report.html"


_FINISHED: dict[tuple[str, str], list[Event]] = {}  # finished baseline logs, read once per process


def random_baselines(log: Any, state: SearchState, limit: int = 3) -> dict[str, list[Event]]:
    """Up to ``limit`` other random searches on the same data (same fingerprint) in the log's MLflow store."""
    if not hasattr(log, "publish_report"):
        return {}
    from nas.event_log.mlflow import MlflowEventLog, searches

    out: dict[str, list[Event]] = {}
    for tags in searches(log.uri):
        name = tags.get("search_id", "")
        if name == state.search_id or tags.get("strategy") != "random" or len(out) >= limit:
            continue
        if tags.get("data_fingerprint") != state.dataset_fingerprint:
            continue
        events = _FINISHED.get((log.uri, name)) or MlflowEventLog(name, uri=log.uri).read()
        if fold(events).finished:
            _FINISHED[(log.uri, name)] = events
        out[f"random search {name}"] = events
    return out


def publish(log: Any, events: Sequence[Event] | None = None) -> bool:
    """Render the report into the search's MLflow parent run (artifacts ``report/``), with random-search
    baselines on the same data, and log the metric ``best_val_accuracy`` for every models-ended step not
    logged yet. False (and nothing done) for logs without a parent run, such as the in-memory log."""
    if not hasattr(log, "publish_report"):
        return False
    events = log.read() if events is None else events
    with tempfile.TemporaryDirectory() as tmp:
        render(events, Path(tmp), random_baselines(log, fold(events)))
        steps = {r["models"]: r["best_val_accuracy"] for r in progress_rows(events) if r["best_val_accuracy"] != ""}
        log.publish_report(Path(tmp), {"best_val_accuracy": steps})
    return True


def publish_quietly(log: Any, say: Any = print) -> None:
    """``publish``, where a failure is reported and ignored: the report never stops a search."""
    try:
        publish(log)
    except Exception as e:  # a plotting or upload problem must not cost a search
        say(f"could not refresh the report on the parent run: {type(e).__name__}: {e}")
