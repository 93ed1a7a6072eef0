"""The report's pictures: best-so-far progress, the search tree, an architecture. matplotlib without pyplot,
so pictures can be drawn on any thread (the training step draws each model; the publisher draws reports)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nas.architectures.graph import Architecture
from nas.ledger.state import ModelStatus, SearchState


def _figure(width: float, height: float) -> Any:
    """A matplotlib Figure drawn with Agg, without pyplot (whose global state threads would share)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def plot_best_so_far(
    rows: Sequence[Mapping[str, Any]], path: Path, baselines: Mapping[str, Sequence[Mapping[str, Any]]] = {}
) -> None:
    """Best-so-far validation accuracy against search seconds and against models ended (each model as a
    dot), with each baseline search's best-so-far curve dashed."""
    fig = _figure(10, 3.6)
    axes = fig.subplots(1, 2, sharey=True)
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


def plot_tree(state: SearchState, path: Path) -> None:
    """The search tree: each model under the model it was morphed from, coloured by validation accuracy;
    failed trainings are red crosses, models not yet trained are hollow, models never trained for lack of time
    (a failure for ``budget``) are small grey crosses."""
    depth: dict[str, int] = {}
    for m in state.models.values():  # parents come before children in the log
        depth[m.model_id] = 0 if m.parent_id is None else depth.get(m.parent_id, 0) + 1
    levels: dict[int, list[str]] = {}
    for model_id, d in depth.items():
        levels.setdefault(d, []).append(model_id)
    pos = {m: (i - (len(ids) - 1) / 2, -d) for d, ids in levels.items() for i, m in enumerate(ids)}
    width = max((len(ids) for ids in levels.values()), default=1)
    fig = _figure(min(6 + 1.1 * width, 18), 1.5 + 1.0 * len(levels))
    ax = fig.subplots()
    for m in state.models.values():
        if m.parent_id in pos:
            (x0, y0), (x1, y1) = pos[m.parent_id], pos[m.model_id]
            ax.plot([x0, x1], [y0, y1], color="#999", lw=1, zorder=1)
    trained = [m for m in state.models.values() if m.status == ModelStatus.TRAINED]
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
        if m.out_of_time:
            ax.scatter([x], [y], marker="x", color="grey", s=90, zorder=2)
        elif m.status == ModelStatus.FAILED:
            ax.scatter([x], [y], marker="X", color="red", s=200, zorder=2)
        elif m.status != ModelStatus.TRAINED:
            ax.scatter([x], [y], facecolors="white", edgecolors="black", s=260, zorder=2)
        best = state.best is not None and state.best.model_id == m.model_id
        ax.annotate(m.model_id + (" *" if best else ""), (x, y), xytext=(0, 13), textcoords="offset points",
                    ha="center", fontsize=8, fontweight="bold" if best else "normal")  # fmt: skip
    ax.set_title(
        "search tree: parent above child; * best, red X failed, hollow not trained yet, grey x no time left", fontsize=9
    )
    ax.axis("off")
    ax.margins(0.15, 0.25)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


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
    order = ["input", *[lay.id for lay in arch.layers]]
    row = {layer_id: i for i, layer_id in enumerate(order)}
    fig = _figure(4.8, 0.9 + 0.34 * len(order))
    ax = fig.subplots()
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
