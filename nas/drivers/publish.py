"""Showing a search's progress to people, off the round's critical path.

After every round the ``Publisher`` wakes one background thread, so the round loop goes straight on to
the next training: the thread witnesses the new heads, records the summary (what ``nas ls`` lists) and the
new points of ``best_val_accuracy``, shows the data the search trains on (once), logs the best model (a
Keras model for the MLflow UI's "Register model") when it changed, and renders the report (PNGs, HTML) at
most every ``REPORT_EVERY_S`` seconds, always from the newest state. ``close`` does all of it one last time,
in the caller's thread. Nothing here is an event, and a failure here is reported and never stops a search.
"""

from __future__ import annotations

import contextvars
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nas.data import Splits, source_of
from nas.drivers.witness import witness
from nas.ledger.events import Event
from nas.ledger.log import Head
from nas.ledger.ports import ReportSink, SearchStore
from nas.ledger.replay import best_so_far, summary_values
from nas.ledger.service import SearchService
from nas.ledger.state import SearchState

REPORT_EVERY_S = 60.0


class Publisher:
    """Publishes one search's progress through its store's report sink."""

    def __init__(
        self,
        store: SearchStore,
        service: SearchService,
        splits: Splits,
        say: Any = print,
        also: Callable[[SearchState], None] | None = None,
    ) -> None:
        """``also``: one more way to show the newest state (the Prefect flow run's artifacts), called by the
        background thread after each round's summary and by ``close``; the thread runs in a copy of the
        caller's context, so it sees what the caller sees (its Prefect flow run)."""
        self.store, self.service, self.splits, self.say, self.also = store, service, splits, say, also
        self.example: np.ndarray = splits.x_val[:5]
        self.data_shown = False
        self.sink: ReportSink = store.reports(service.log.search_id)
        self.events: list[Event] = []
        self.best_published: str | None = None
        self.reported_at = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one publication at a time
        self._thread = threading.Thread(
            target=contextvars.copy_context().run, args=(self._work,), name="nas-publish", daemon=True
        )
        self._thread.start()

    def _catch_up(self) -> SearchState:
        state = self.service.state
        if len(self.events) < state.last_seq:
            self.events += self.service.log.read(after_seq=len(self.events))[: state.last_seq - len(self.events)]
        return state

    def round(self, state: SearchState | None = None) -> None:
        """After a round: wake the background thread, which publishes the newest state (nothing waits here)."""
        self._wake.set()

    def _summarise(self) -> None:
        """Witness the new heads; record the summary and the new best-so-far points (and show the data, once)."""
        try:
            with self._lock:
                if not self.data_shown:
                    self.sink.dataset(self.splits, source_of(str(self.service.state.config["data"]["dataset"])))
                    self.data_shown = True
                witnessed = len(self.events)
                state = self._catch_up()
                records = self.service.log.records()[witnessed : state.last_seq]
                if records:
                    heads = [Head(r["seq"], r["hash"]) for r in records]
                    witness(state.search_id, heads, self.store.uri, "runner")
                self.sink.summary(summary_values(state), {"best_val_accuracy": best_so_far(self.events)})
                if self.also is not None:
                    self.also(state)
        except Exception as e:  # a display problem must not cost a search
            self.say(f"could not publish the progress: {type(e).__name__}: {e}")

    def _work(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stop.is_set():
                return
            self._summarise()
            self.publish(final=False)

    def publish(self, final: bool) -> None:
        """Make the best model and (if due, or ``final``) the report from the newest state."""
        with self._lock:
            try:
                state = self._catch_up()
                events = list(self.events)
                best = state.best
                if best is not None and best.model_id != self.best_published:
                    self._best_model(state)
                    self.best_published = best.model_id
                if final or time.monotonic() - self.reported_at >= REPORT_EVERY_S:
                    self._report(events, state)
                    self.reported_at = time.monotonic()
            except Exception as e:  # a display problem must not cost a search
                self.say(f"could not publish the report or best model: {type(e).__name__}: {e}")

    def _best_model(self, state: SearchState) -> None:
        from nas.architectures.weights import load_weights
        from nas.training.builder import build_model

        best = state.best
        assert best is not None
        weights = load_weights(self.service.weights_file(best.model_id))
        where = self.sink.best_model(best, build_model(best.arch, weights), self.example, self.splits.names)
        self.say(f"best model so far: {best.model_id} ({where})")

    def _report(self, events: list[Event], state: SearchState) -> None:
        from nas.report.page import random_baselines, render

        with tempfile.TemporaryDirectory() as tmp:
            render(events, Path(tmp), random_baselines(self.store, state))
            self.sink.report(Path(tmp))

    def close(self) -> None:
        """Stop the background thread and publish everything one last time (summary, best model, report)."""
        self._stop.set()
        self._wake.set()
        self._thread.join()
        self._summarise()
        self.publish(final=True)
