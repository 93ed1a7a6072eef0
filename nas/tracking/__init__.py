"""Tracking: the storage backends of the ledger, chosen by the tracking URI. The only package that imports MLflow.

``open_store(uri)`` gives the ``SearchStore`` for a URI: ``memory:`` (or ``memory:NAME``) for an
in-process store, anything else for MLflow (a ``sqlite:///`` file, a tracking server). With no URI it
takes ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the working directory, made explicit so
that MLflow never falls back to a file store it finds lying around. Searches live in the MLflow experiment
``MLFLOW_EXPERIMENT_NAME`` (default ``nas``), as MLflow's own clients read that variable.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from nas.ledger.memory import memory_store
from nas.ledger.ports import SearchListing, SearchStore


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///mlflow.db`` in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def experiment_name() -> str:
    """``MLFLOW_EXPERIMENT_NAME`` if set, else ``nas``: the MLflow experiment that holds the searches."""
    from nas.tracking.runs import DEFAULT_EXPERIMENT

    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT


def open_store(uri: str | None = None, experiment: str | None = None) -> SearchStore:
    """The store behind ``uri`` (default: ``tracking_uri()``), its searches in ``experiment`` (default:
    ``experiment_name()``; a memory store has none); one object per URI and experiment in a process."""
    uri = uri or tracking_uri()
    if uri.startswith("memory:"):
        return memory_store(uri)
    return _mlflow_store(uri, experiment or experiment_name())


def list_searches(uri: str | None = None) -> list[SearchListing]:
    """The searches of the store behind ``uri`` (default: ``tracking_uri()``) from their summaries, sorted by
    name. A SQLite store is read directly, a tracking server through its REST API (no MLflow import either
    way, a fraction of a second); any other store, or an answer this reading does not understand, through
    ``SearchStore.searches``."""
    import sqlite3

    from nas.tracking.listing import rest_searches, sqlite_path, sqlite_searches

    uri = uri or tracking_uri()
    experiment = experiment_name()
    path = sqlite_path(uri)
    listed: list[SearchListing] | None = None
    if path is not None:
        try:
            listed = sqlite_searches(path, experiment)
        except sqlite3.Error:
            pass  # not the schema this reading knows: MLflow reads it
    if listed is None and uri.startswith(("http://", "https://")):
        try:
            listed = rest_searches(uri, experiment)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreachable or not answering as this reading expects: MLflow's client says why
    if listed is None:
        listed = open_store(uri).searches()
    return [_fresh(uri, listing) if listing.stale else listing for listing in listed]


def _fresh(uri: str, listing: SearchListing) -> SearchListing:
    """A search whose summary is missing or older than its log (its runner died before publishing it), summarised
    from its events instead; the listing as it was when they cannot be read (``nas audit`` says why)."""
    from nas.ledger.replay import summary_values
    from nas.ledger.state import fold

    try:
        events = open_store(uri).log(listing.name).read()
        return SearchListing.from_summary(listing.name, summary_values(fold(events)), len(events))
    except ValueError:  # a ChainError, or events a fold refuses
        return listing


@lru_cache(maxsize=16)
def _mlflow_store(uri: str, experiment: str) -> SearchStore:
    from nas.tracking.store import MlflowStore

    return MlflowStore(uri, experiment)
