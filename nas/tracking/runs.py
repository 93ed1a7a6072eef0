"""The MLflow runs of one search: its experiment, its parent run and its event runs.

A search is a parent run (tag ``nas.role = search``) in the experiment; each event is a child run
(``nas.role = event``). The commit points of events are params of the parent, ``seq.000007 = <hash>``;
leases are params ``lease.0001``. Tags only help look-up.
"""

from __future__ import annotations

import re
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

from nas.ledger.ports import check_search_name

DEFAULT_EXPERIMENT = "nas"
CLAIM = re.compile(r"^seq\.(\d{6})$")
LEASE = re.compile(r"^lease\.(\d{4})$")
# With 200 models a search has about 800 event runs, and the runs table pages 100 runs at a time, newest
# first: the other searches sit behind many "Load more". This filter shows the searches alone.
SEARCHES_FILTER = "tags.`nas.role` = 'search'"


# MLflow 3.17 opens every page in its GenAI view unless the link asks for the model-training one.
MODEL_TRAINING_VIEW = {"workflowType": "machine_learning"}


def searches_path(experiment_id: str) -> str:
    """The MLflow UI's runs table of the experiment, searches only, in the model-training view (a '#/' path)."""
    query = urllib.parse.urlencode({**MODEL_TRAINING_VIEW, "searchFilter": SEARCHES_FILTER})
    return f"#/experiments/{experiment_id}/runs?{query}"


def run_path(experiment_id: str, run_id: str) -> str:
    """The MLflow UI's page of one run, in the model-training view (a '#/' path)."""
    return f"#/experiments/{experiment_id}/runs/{run_id}?{urllib.parse.urlencode(MODEL_TRAINING_VIEW)}"


def experiment_tags(experiment_id: str) -> dict[str, str]:
    """The experiment's tags: the MLflow UI opens it in the model-training view, with a description that links
    to the table of searches."""
    return {
        "mlflow.experimentKind": "custom_model_development",
        "mlflow.note.content": (
            "Neural architecture searches (nas): each parent run is one search, with its best model, its dataset "
            "and best_val_accuracy by models trained; its child runs are the search's events, in order (the "
            f"ledger). [Show the searches alone]({searches_path(experiment_id)}) (the runs table filtered with "
            f"`{SEARCHES_FILTER}`)."
        ),
    }


def claim_key(seq: int) -> str:
    return f"seq.{seq:06d}"


def claims_of(parent: Any) -> dict[int, str]:
    """The commit points on a parent run: seq -> hash."""
    return {int(m.group(1)): v for k, v in parent.data.params.items() if (m := CLAIM.match(k))}


class SearchRuns:
    """Look-up and creation of one search's runs; the parent run id is remembered once found."""

    def __init__(self, client: Any, search_id: str, experiment: str = DEFAULT_EXPERIMENT) -> None:
        self.client = client
        self.search_id = check_search_name(search_id)
        self.experiment_name = experiment
        self._experiment_id: str | None = None
        self._parent_id: str | None = None
        self._lock = threading.Lock()

    @property
    def experiment_id(self) -> str:
        """The experiment's id; the experiment is created (model-training view, described) if there is none."""
        if self._experiment_id is None:
            self._experiment_id = experiment_id(self.client, self.experiment_name)
        return self._experiment_id

    def search(self, query: str, max_results: int = 1000) -> Iterator[Any]:
        """Runs of this search matching ``query`` (ANDed with the search's id), every page."""
        token = None
        full = f"tags.`nas.search_id` = '{self.search_id}' and {query}"
        while True:
            page = self.client.search_runs([self.experiment_id], full, max_results=max_results, page_token=token)
            yield from page
            token = page.token
            if not token:
                return

    @property
    def parent_id(self) -> str | None:
        """The parent run's id (None if the search has none), found once."""
        if self._parent_id is None:
            runs = sorted(self.search("tags.`nas.role` = 'search'"), key=lambda r: (r.info.start_time, r.info.run_id))
            if runs:
                self._parent_id = runs[0].info.run_id  # the oldest, should two processes have created one at once
        return self._parent_id

    def parent(self) -> Any | None:
        """The search's parent run, freshly read (None if there is none)."""
        run_id = self.parent_id
        return None if run_id is None else self.client.get_run(run_id)

    def ensure_parent(self) -> str:
        """The parent run's id, created if there is none (of two processes creating one at once, the older stays)."""
        with self._lock:
            if self.parent_id is not None:
                return self.parent_id
            tags = {"nas.search_id": self.search_id, "nas.role": "search"}
            created = self.client.create_run(self.experiment_id, run_name=self.search_id, tags=tags)
            self._parent_id = None
            found = self.parent_id
            assert found is not None
            if found != created.info.run_id:
                self.client.delete_run(created.info.run_id)  # lost the race: keep one parent
            return found

    def claims(self) -> dict[int, str]:
        """seq -> hash of every committed event (one read of the parent run)."""
        parent = self.parent()
        return {} if parent is None else claims_of(parent)

    def event_runs(self) -> list[Any]:
        """Every active child run of this search with the event role, claimed or not."""
        return list(self.search("tags.`nas.role` = 'event'"))

    def children(self) -> list[Any]:
        """Every active run nested under the parent, whatever its tags (for the audit)."""
        parent_id = self.parent_id
        if parent_id is None:
            return []
        token, out = None, []
        query = f"tags.`mlflow.parentRunId` = '{parent_id}'"
        while True:
            page = self.client.search_runs([self.experiment_id], query, max_results=1000, page_token=token)
            out += list(page)
            token = page.token
            if not token:
                return out

    def runs_with_hash(self, digest: str) -> list[Any]:
        """The event runs whose ``nas.hash`` param is ``digest`` (normally one)."""
        return list(self.search(f"tags.`nas.role` = 'event' and params.`nas.hash` = '{digest}'"))


def experiment_id(client: Any, name: str) -> str:
    """The id of experiment ``name``, created with the tags the UI reads if missing (or added if absent)."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            exp = client.get_experiment(client.create_experiment(name))
        except Exception:  # created by another process meanwhile
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    for key, value in experiment_tags(str(exp.experiment_id)).items():
        if key not in exp.tags:
            client.set_experiment_tag(exp.experiment_id, key, value)
    return str(exp.experiment_id)
