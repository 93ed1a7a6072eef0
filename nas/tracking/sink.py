"""Where a search shows its progress in MLflow: tags, metrics and artifacts of its parent run.

None of this is an event: the summary tags (``nas.status``, ``nas.trained``, ``nas.best_val_accuracy``,
..., with ``nas.events``, the seq they were computed at) let ``nas ls`` list searches without reading
their events, and the audit checks them against the fold; ``best_val_accuracy`` is stepped by models
ended so the UI charts it; the report lives under the parent's ``report/`` artifacts; the best model is
a LoggedModel linked to the parent run and to the training run that made it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nas.data import Splits
from nas.ledger.ports import ReportSink, SearchListing
from nas.ledger.state import ModelRecord
from nas.tracking.runs import SearchRuns, run_path

SUMMARY_PREFIX = "nas."


class MlflowReportSink(ReportSink):
    """The report sink of one search's parent run."""

    def __init__(self, runs: SearchRuns) -> None:
        self.runs = runs
        self._logged: dict[str, set[int]] = {}  # metric -> steps already on the parent run

    def _parent_id(self) -> str:
        parent_id = self.runs.parent_id
        if parent_id is None:
            raise ValueError(f"search {self.runs.search_id!r} has no parent run to publish on")
        return parent_id

    def summary(self, values: Mapping[str, str], metrics: Mapping[str, Mapping[int, float]]) -> None:
        from mlflow.entities import Metric, RunTag

        run_id = self._parent_id()
        client = self.runs.client
        now = int(time.time() * 1000)
        new = []
        for name, steps in metrics.items():
            if name not in self._logged:
                self._logged[name] = {m.step for m in client.get_metric_history(run_id, name)}
            fresh = {s: v for s, v in steps.items() if s not in self._logged[name]}
            new += [Metric(name, float(v), now, step) for step, v in sorted(fresh.items())]
            self._logged[name] |= set(fresh)
        tags = [RunTag(f"{SUMMARY_PREFIX}{k}", str(v)) for k, v in values.items()]
        tags.append(RunTag("mlflow.note.content", self._description(values)))
        client.log_batch(run_id, metrics=new, tags=tags)

    def _description(self, values: Mapping[str, str]) -> str:
        """The parent run's description in the UI: what the search is and where it stands."""
        name = self.runs.search_id
        what = f"Neural architecture search {name}: {values.get('strategy')} on {values.get('dataset')}"
        listed = SearchListing.from_summary(name, values, 0)
        where = f"{listed.status}, {listed.trained} models trained, {listed.failed} failed"
        if listed.not_trained:
            where += f", {listed.not_trained} not trained for lack of time"
        best = values.get("best_model")
        if best:
            where += f"; best {best} at validation accuracy {float(values['best_val_accuracy']):.4f}"
        return (
            f"{what}, {where}. Its logged models are its best models so far (register the newest from its page). "
            f"Its child runs are the search's events in order: its ledger, which `nas audit {name}` verifies."
        )

    def report(self, folder: Path) -> None:
        self.runs.client.log_artifacts(self._parent_id(), str(folder), artifact_path="report")

    def location(self) -> str:
        path = run_path(self.runs.experiment_id, self._parent_id())
        uri = self.runs.client.tracking_uri
        if uri.startswith(("http://", "https://")):
            return f"{uri.rstrip('/')}/{path}"
        return f"mlflow ui --backend-store-uri {uri}, then http://127.0.0.1:5000/{path}"

    def dataset(self, splits: Splits, source: str) -> None:
        from nas.tracking.registry import link_data

        link_data(self.runs, splits, source)

    def best_model(
        self, model: ModelRecord, keras_model: Any, example: Any, names: Mapping[str, list[str]] | None = None
    ) -> str:
        from nas.tracking.registry import log_best_model

        return f"models:/{log_best_model(self.runs, model, keras_model, example, names)}"
