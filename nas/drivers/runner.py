"""Run or resume a search: the one round loop, for the plain loop and the Prefect flow alike.

A round keeps the training slots busy and proposes the next model while every slot trains. How models are trained is
a ``Trainings``: in this process (the plain loop, ``nas search --local``), as Prefect tasks, or as deployed flow
runs on workers (``flows/``). Which outcomes the proposal for model j sees is ``Proposing.known``'s rule; the loop
only waits for them.

Before anything is written, a new search's settings, data and initial network are checked; then the search's place
is created, its lease taken (one runner per search), a resumed log repaired (crash leftovers only, each reported)
and audited, and only then are events written.
"""

from __future__ import annotations

import os
import socket
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from nas.architectures.initial import initial_for
from nas.data import Splits, fingerprint, load_splits
from nas.ledger.ports import Lease, LeaseHeld, Repairable, SearchStore, holder_name
from nas.ledger.proposing import Proposing
from nas.ledger.service import SearchService
from nas.ledger.state import ModelRecord, ModelStatus, SearchState
from nas.training.stop import check_stop

Progress = Callable[[str], None]


def splits_for(config: Mapping[str, Any]) -> Splits:
    """The data a configuration (validated, or a search's as its fold completes it) names, split as it says
    (ValueError for an unknown or bad dataset). Loaded once per process for the same settings and the same file
    (its size and modification time are part of the key)."""
    d = config["data"]
    path = Path(str(d["dataset"]))
    stamp = (path.stat().st_size, path.stat().st_mtime_ns) if path.is_file() else None
    label, ignore = d["label"], tuple(d["ignore_columns"])
    return _load(d["dataset"], d["val_fraction"], d["test_fraction"], d["seed"], label, ignore, stamp)


@lru_cache(maxsize=2)
def _load(
    dataset: str, val_fraction: float, test_fraction: float, seed: int, label: str, ignore: tuple[str, ...], stamp: Any
) -> Splits:
    return load_splits(
        dataset, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, label=label, ignore=ignore
    )


def check_new(config: Mapping[str, Any]) -> Splits:
    """The data of a new search with ``config``, after checking that it loads and that the initial network fits
    the size cap; ValueError naming the problem otherwise. Nothing is written."""
    splits = splits_for(config)
    initial_for(config, splits.input_shape, splits.num_classes)
    return splits


def check_same_data(state: SearchState, splits: Splits) -> None:
    """ValueError when ``splits`` are not the data the search started on (a resume must not switch data)."""
    if state.dataset_fingerprint != fingerprint(splits):
        raise ValueError(
            f"the data of search {state.search_id!r} changed since it started (its fingerprint differs); "
            "resume with the same dataset and split settings"
        )


class LeaseKeeper:
    """A search's lease, held while a runner runs it; a daemon thread renews the heartbeat every ttl/4."""

    def __init__(
        self,
        lease: Lease,
        holder: str,
        ttl_s: float,
        say: Progress = print,
        on_takeover: Callable[[str], None] = lambda previous: None,
    ) -> None:
        self.lease, self.holder, self.ttl_s, self.say = lease, holder, ttl_s, say
        self.on_takeover = on_takeover
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="nas-lease", daemon=True)

    def acquire(self) -> str | None:
        """Take the lease (LeaseHeld if another runner has it); the holder of an expired lease taken over."""
        previous = self.lease.acquire(self.holder, self.ttl_s)
        if previous:
            self.say(f"took the search over from {previous}: its lease expired")
            self.on_takeover(previous)
        self._thread.start()
        return previous

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                self.lease.renew()
            except LeaseHeld as e:
                self.lost = str(e)
                return
            except Exception as e:  # the store is down: its client retries; the next beat tries again
                self.say(f"could not renew the lease ({type(e).__name__}); retrying")

    def check(self) -> None:
        """LeaseHeld if another runner took the search over (this one was presumed dead)."""
        if self.lost:
            raise LeaseHeld(self.lost)

    def release(self) -> None:
        self._stop.set()
        if self.lost is None:
            try:
                self.lease.release()
            except Exception as e:  # it expires by itself
                self.say(f"could not release the lease ({type(e).__name__}); it expires in {self.ttl_s:g} s")


def env_seconds(name: str, default: float) -> float:
    """A positive number of seconds from the environment; ValueError naming the variable otherwise."""
    raw = os.environ.get(name, "")
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{name}={raw!r} is not a positive number of seconds; unset it or set e.g. {name}={default:g}")
    return value


def process_holder() -> str:
    """A lease holder name for a runner that is this process."""
    return holder_name(f"process {os.getpid()} on {socket.gethostname()}")


def require_current(name: str, config: Mapping[str, Any]) -> None:
    """ValueError if search ``name`` was logged with a setting this version removed, at a value that changed what
    it did: its trainings cannot go on as they began. Replay, audit, report and register still read it."""
    from nas.ledger.events import LAST_WITH, removed_by, removed_in_use

    used = removed_in_use(config)
    if used:
        raise ValueError(
            f"search {name!r} was started with {removed_by(used)}; resume it with nas {LAST_WITH} or start a new "
            "search; replay, audit, report and register still work on it"
        )


def open_search(
    store: SearchStore,
    name: str,
    config: Mapping[str, Any] | None,
    load: Callable[[Mapping[str, Any]], Splits],
    lease: LeaseKeeper,
    progress: Progress,
) -> tuple[SearchService, Splits]:
    """The service of search ``name`` and its data, ready for rounds, holding its lease.

    A new search (``config`` given, nothing in the store) is checked first: its data loads and passes its
    checks and its initial network fits the size cap, or ValueError with nothing written. A search that
    exists is resumed with its logged settings: the files its events name must all be there, crash
    leftovers are repaired (each reported), the log must pass the audit's checks (ChainError naming the
    first finding otherwise), and its data must be the data it started on.
    """
    from nas.ledger.audit import require_clean, require_files

    splits: Splits | None = None
    if not store.exists(name):
        if config is None:
            raise ValueError(f"there is no search {name!r} to resume; start it with nas search")
        splits = load(config)  # bad data is refused before anything is written
        initial_for(config, splits.input_shape, splits.num_classes)  # and so is an initial network over the cap
        store.create(name)
    else:
        require_files(store, name)  # a log whose files are gone is refused before anything is written
    lease.acquire()
    log = store.log(name)
    if isinstance(log, Repairable):
        for line in log.repair():
            progress(f"repaired: {line}")
    if log.last_seq():
        require_clean(store.audit(name, deep=False))
    service = SearchService(log)
    if service.state.started:
        require_current(name, service.state.config)
        splits = load(service.state.config)
        check_same_data(service.state, splits)
        progress(f"resuming search {name} at event {service.state.last_seq}")
        return service, splits
    if config is None:
        raise ValueError(f"search {name!r} has no SearchStarted; it cannot be resumed: start a new one")
    splits = splits or load(config)
    service.start(name, config, splits.input_shape, splits.num_classes, fingerprint(splits))
    progress(f"started search {name}: {splits.name}, {len(splits.x_train)} training examples")
    return service, splits


class Trainings(ABC):
    """How a search's models are trained. ``running`` holds the models started and not yet collected."""

    def __init__(self) -> None:
        self.running: list[str] = []

    @abstractmethod
    def adopt(self, service: SearchService) -> None:
        """Called first: take over trainings a previous runner of this search left running (so none runs twice)."""

    @abstractmethod
    def start(self, model_id: str) -> None:
        """Start training ``model_id`` in a free slot."""

    @abstractmethod
    def wait(self, service: SearchService, lease: LeaseKeeper) -> list[str]:
        """Block until at least one running training has its outcome logged; those models, removed from running."""

    def close(self) -> None:  # noqa: B027 (a hook: most trainings hold nothing between rounds)
        """Called once when the rounds are over (or broke off): give back what is held between trainings."""


class InProcessTrainings(Trainings):
    """Each training runs to its end in this process, when started."""

    def __init__(self, splits: Splits, on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> None:
        super().__init__()
        self.splits, self.on_epoch = splits, on_epoch
        self.service: SearchService | None = None

    def adopt(self, service: SearchService) -> None:
        self.service = service

    def start(self, model_id: str) -> None:
        from nas.training.task import run_training

        assert self.service is not None, "adopt() comes first"
        self.running.append(model_id)
        run_training(self.service, model_id, self.splits, on_epoch=self.on_epoch, deadline=self.service.deadline())

    def wait(self, service: SearchService, lease: LeaseKeeper) -> list[str]:
        ended, self.running = self.running, []
        return ended


@dataclass
class RoundHooks:
    """What a runner does at each step: the defaults are the plain service calls and printing."""

    refit: Callable[[], None] | None = None
    propose: Callable[[], str | None] | None = None
    progress: Progress = print
    on_outcome: Callable[[ModelRecord], None] = field(default=lambda record: None)
    on_round: Callable[[SearchState], None] = field(default=lambda state: None)


def bar(done: int, total: int, width: int = 20) -> str:
    """A text progress bar, e.g. ``[#####---------------] 1/4``."""
    filled = round(width * min(done, total) / total) if total else width
    return f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total}"


def outcome_line(record: ModelRecord) -> str:
    """One line on a model that ended, e.g. ``m3 val_accuracy 0.9613`` (``m3 val_accuracy 0.9613 at learning rate
    0.002`` where its proposal chose the rate) or ``m4 failed: out_of_memory``."""
    if record.status == ModelStatus.TRAINED:
        rate = "" if record.learning_rate is None else f" at learning rate {record.learning_rate:g}"
        return f"{record.model_id} val_accuracy {record.val_accuracy:.4f}{rate}"
    return f"{record.model_id} failed: {record.failure}"


def run_rounds(service: SearchService, trainings: Trainings, lease: LeaseKeeper, hooks: RoundHooks) -> SearchState:
    """The rounds: keep the training slots busy, propose the next model once the outcomes it may see are in,
    until the budget is spent or nothing new fits; then log SearchFinished. Returns the final state.
    StopRequested (``nas.training.stop``) between steps, or from a training, when a stop was asked: the
    trainings it cut short have no outcome and are trained again on resume."""

    def refit() -> None:
        service.refit()

    def propose() -> str | None:
        proposed = service.ask(1)
        return proposed[0].model_id if proposed else None

    do_refit, do_propose = hooks.refit or refit, hooks.propose or propose
    slots = service.state.config["search"]["trainers"]
    trainings.adopt(service)
    # Proposed, not yet training: what a crash left behind, then the next proposal.
    queued = [m.model_id for m in service.state.unfinished if m.model_id not in trainings.running]
    exhausted = False
    while True:
        lease.check()
        check_stop()
        while queued and len(trainings.running) < slots:
            trainings.start(queued.pop(0))
        state = service.refresh()
        order = list(state.models)
        # The next proposal sees the outcomes of the first Proposing.known(state) models: wait for those.
        waiting_on = [m for m in [*trainings.running, *queued] if order.index(m) < Proposing.known(state)]
        can_propose = not exhausted and not queued and service.stop_reason() is None and not state.finished
        if can_propose and not waiting_on:
            do_refit()
            proposed = do_propose()
            if proposed is None:
                exhausted = True
            else:
                queued.append(proposed)
            continue
        if not trainings.running:
            break
        ended = trainings.wait(service, lease)
        check_stop()  # a training that stopped for it has no outcome to show
        state = service.refresh()
        for model_id in ended:
            hooks.progress(outcome_line(state.models[model_id]))
            hooks.on_outcome(state.models[model_id])
        best = f"best {state.best.model_id} {state.best.val_accuracy:.4f}" if state.best else "no model trained yet"
        hooks.progress(f"models {bar(state.ended, state.config['search']['max_models'])}  {best}")
        hooks.on_round(state)
    if not service.refresh().finished:
        reason = service.stop_reason() or "no new architecture within the caps"
        service.finish(reason)
        hooks.progress(f"finished: {reason}")
    return service.state


def run_search(
    store: SearchStore,
    name: str,
    config: Mapping[str, Any] | None,
    splits: Splits | None = None,
    *,
    progress: Progress = lambda line: None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    on_outcome: Callable[[ModelRecord], None] = lambda record: None,
) -> SearchState:
    """Start search ``name`` with ``config`` (validated settings), or resume it (config None: the logged
    ones), in this process until its budget is spent; its progress is published to the store's sink."""
    from nas.drivers.publish import Publisher

    keeper = LeaseKeeper(store.lease(name), process_holder(), env_seconds("NAS_LEASE_TTL_S", 60.0), progress)
    try:
        service, data = open_search(store, name, config, (lambda c: splits) if splits else splits_for, keeper, progress)
        publisher = Publisher(store, service, data, progress)
        try:
            hooks = RoundHooks(progress=progress, on_outcome=on_outcome, on_round=publisher.round)
            state = run_rounds(service, InProcessTrainings(data, on_epoch), keeper, hooks)
        finally:
            publisher.close()
        return state
    finally:
        keeper.release()
