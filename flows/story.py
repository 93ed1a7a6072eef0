"""What the Prefect UI tells of a search while its flow runs: a progress bar and a table of the models so far.

Both are artifacts of the flow run, updated every round: the progress artifact (models ended of
``max_models``) and a markdown artifact, keyed by the search, with each model's parent, morphisms,
parameters, accuracy and seconds, the best so far, and a link to the search in MLflow.
"""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

from nas.ledger.state import ModelStatus, SearchState
from nas.report.page import table


def artifact_key(name: str) -> str:
    """A Prefect artifact key for search ``name`` (lowercase letters, digits and dashes)."""
    return "nas-" + (re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "search")


def markdown(state: SearchState, location: str) -> str:
    """The models table of a search, best first line, as markdown."""
    best = state.best
    head = (
        f"**Best so far: {best.model_id}, validation accuracy {best.val_accuracy:.4f}** "
        f"({best.arch.param_count:,} parameters)"
        if best is not None
        else "**No model has finished training yet.**"
    )
    status = f"finished ({state.finish_reason})" if state.finished else "running"
    lines = [
        f"# Search {state.search_id}",
        "",
        f"{head}. Status: {status}; {state.count(ModelStatus.TRAINED)} trained, "
        f"{state.count(ModelStatus.FAILED)} failed, {len(state.models)} proposed.",
        "",
        f"In MLflow: {location}",
        "",
        "| model | parent | morphisms | parameters | status | val accuracy | seconds |",
        "|---|---|---|---:|---|---:|---:|",
    ]
    for row in table(state):
        acc = f"{row['val_accuracy']:.4f}" if isinstance(row["val_accuracy"], float) else "-"
        mark = " **(best)**" if best is not None and row["model"] == best.model_id else ""
        lines.append(
            f"| {row['model']}{mark} | {row['parent']} | {row['morphisms']} | {row['params']:,} | {row['status']} "
            f"| {acc} | {row['seconds']} |"
        )
    return "\n".join(lines)


class FlowStory:
    """The search's artifacts on the current flow run (nothing outside a flow run)."""

    def __init__(self, name: str, location: str) -> None:
        self.name, self.location = name, location
        self.progress_id: UUID | None = None

    def round(self, state: SearchState) -> None:
        """Update the progress bar and the models table to ``state``."""
        from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact

        total = int(state.config["search"]["max_models"])
        percent = 100.0 * min(state.ended, total) / total
        try:
            if self.progress_id is None:
                made: Any = create_progress_artifact(
                    percent, key=f"{artifact_key(self.name)}-progress", description=f"models ended of {total}"
                )
                self.progress_id = made if isinstance(made, UUID) else getattr(made, "id", None)
            else:
                update_progress_artifact(self.progress_id, percent)
            create_markdown_artifact(
                markdown(state, self.location),
                key=artifact_key(self.name),
                description=f"models of search {self.name} so far",
            )
        except Exception as e:  # the UI's story must not cost a search
            print(f"could not update the flow run's artifacts: {type(e).__name__}: {e}")
