"""The ``nas-search`` Prefect flow: a thin orchestrator over ``nas.search`` (ask/tell).

Rounds are tasks: ``refit`` (CPU: the Gaussian process on the results so far, logged),
``propose`` (CPU: choose the next model with the logged surrogate, logged) and ``train`` (one
training slot: train from the parent's weights, log the outcome). While models
train, the next one is proposed from the results so far, as in Auto-Keras; with ``trainers = k``,
k models train at once. Training slots are the global concurrency limit ``nas-trainer``, so
several flows on one machine share them. Running the flow with the name of an existing search
resumes it: the event log says where to go on.

Trainings run as tasks in the flow's process, or, when ``NAS_TRAIN_DEPLOYMENT`` names a deployment
of the ``nas-train`` flow (the service stack sets it), each as its own flow run that any worker of
the pool picks up: that is how ``trainers = k`` spreads over k workers and machines. A training whose
flow run crashes, or that stops sending heartbeats (its worker was killed), is run again, up to
``MAX_DISPATCHES`` times. One runner per search: the flow holds the search's lease while it runs.
"""

from __future__ import annotations

import contextvars
import os
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.concurrency.sync import concurrency
from prefect.futures import PrefectFuture, wait

from nas.config import load
from nas.data import Splits
from nas.event_log.mlflow import LeaseHeld, MlflowEventLog, tracking_uri
from nas.report import publish_quietly
from nas.runner import open_search, splits_for
from nas.search import SearchService

TRAINER_LIMIT = "nas-trainer"
HEARTBEAT = "nas.training.heartbeat"  # a Prefect event each training flow run sends every HEARTBEAT_S
HEARTBEAT_S = 5.0
MAX_DISPATCHES = 3  # flow runs one model's training may take before it is logged as failed
POLL_S = 2.0


def _env_seconds(name: str, default: float) -> float:
    """A positive number of seconds from the environment; ValueError naming the variable otherwise."""
    raw = os.environ.get(name, "")
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{name}={raw!r} is not a positive number of seconds; unset it or set e.g. {name}={default:g}")
    return value


def bar(done: int, total: int, width: int = 20) -> str:
    """A text progress bar, e.g. ``[#####---------------] 1/4``."""
    filled = round(width * min(done, total) / total) if total else width
    return f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total}"


@lru_cache(maxsize=4)
def _splits(data_items: tuple[tuple[str, Any], ...]) -> Splits:
    """The prepared data, loaded once per process."""
    return splits_for({"data": dict(data_items)})


def _data_key(config: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(config["data"].items()))


@lru_cache(maxsize=8)
def _proposer_service(search_id: str, uri: str) -> SearchService:
    """One service per search and store for proposing: its anchors and event cache are built once per process."""
    return SearchService(MlflowEventLog(search_id, uri=uri))


@task(name="refit")
def refit(search_id: str) -> None:
    """Refit the surrogate on the results the next proposal may see, and log it (Bayesian only)."""
    service = _proposer_service(search_id, tracking_uri())
    service.refresh()
    service.refit()


@task(name="propose")
def propose(search_id: str) -> str | None:
    """Propose the next model with the logged surrogate; None when nothing new fits."""
    service = _proposer_service(search_id, tracking_uri())
    service.refresh()
    proposed = service.ask(1)
    return proposed[0].model_id if proposed else None


def _wait_until_training(service: SearchService, model_ids: list[str], timeout: float = 60.0) -> None:
    """Block until the given models have logged TrainingStarted (or ended), so a proposal computed next
    does not hold the GIL while their tasks start; TensorFlow's kernels release it once training runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(service.state.models[m].status != "proposed" for m in model_ids):
            return
        time.sleep(0.2)
        service.refresh()


@task(name="train", tags=[TRAINER_LIMIT])
def train(search_id: str, model_id: str) -> str:
    """Train one model in a training slot and log its outcome; returns trained or failed."""
    return _train_in_slot(search_id, model_id)


@flow(name="nas-train", log_prints=True)
def nas_train(search_id: str, model_id: str) -> str:
    """Train model ``model_id`` of search ``search_id`` in a training slot and log its outcome (trained or
    failed); a model whose outcome is logged already is not trained again. Deployed for workers, it is how
    one search trains several models at once on several workers (see ``NAS_TRAIN_DEPLOYMENT``)."""
    from prefect.events import emit_event
    from prefect.runtime import flow_run

    resource = {"prefect.resource.id": f"prefect.flow-run.{flow_run.id}", "nas.model": f"{search_id}/{model_id}"}
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                emit_event(HEARTBEAT, resource=resource)
            except Exception:  # a missed beat is what the dispatcher watches for; never fail the training
                pass
            if stop.wait(HEARTBEAT_S):
                return

    # The thread runs in a copy of this context, so it sees this flow run's settings (its API URL).
    beats = threading.Thread(target=contextvars.copy_context().run, args=(beat,), name="nas-heartbeat", daemon=True)
    beats.start()
    try:
        return _train_in_slot(search_id, model_id, lease_s=60)
    finally:
        stop.set()


def _train_in_slot(search_id: str, model_id: str, lease_s: float = 300) -> str:
    """The body of ``train`` and ``nas-train``: a slot of the ``nas-trainer`` limit held while training
    (its lease, ``lease_s``, frees the slot of a process that died holding it)."""
    from nas.training import train_model

    logger = get_run_logger()
    with concurrency(TRAINER_LIMIT, occupy=1, lease_duration=lease_s):
        service = SearchService(MlflowEventLog(search_id))
        model = service.state.models[model_id]
        if model.status in ("trained", "failed"):
            return model.status  # a retried task after the outcome was logged: never train twice
        splits = _splits(_data_key(dict(service.state.config)))

        epochs = service.state.config["train"]["epochs"]

        def epoch(i: int, logs: dict[str, float]) -> None:
            logger.info(
                "%s epoch %s loss %.4f val_accuracy %.4f",
                model_id,
                bar(i + 1, epochs, 10),
                logs.get("loss", float("nan")),
                logs.get("val_accuracy", float("nan")),
            )

        status = train_model(service, model_id, splits, on_epoch=epoch)
        record = service.state.models[model_id]
        logger.info(
            "%s %s: %s",
            model_id,
            status,
            f"val_accuracy {record.val_accuracy:.4f}" if status == "trained" else record.failure,
        )
        return status


def _ensure_trainer_limit(trainers: int) -> None:
    """Create the shared training-slot limit if this Prefect API has none yet; warn when it is below ``trainers``.

    The limit is shared by every flow on the API, so an existing one is left as its owner set it.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(TRAINER_LIMIT).limit
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=TRAINER_LIMIT, limit=trainers))
            except ObjectAlreadyExists:
                pass
            return
    if limit < trainers:
        get_run_logger().warning(
            "search.trainers=%d but the shared limit %r allows %d training(s) at once on this Prefect API; "
            "raise it with: prefect gcl update %s --limit %d",
            trainers,
            TRAINER_LIMIT,
            limit,
            TRAINER_LIMIT,
            trainers,
        )


def search_config(
    config_path: str | None = None,
    overrides: list[str] | None = None,
    **params: Any,
) -> dict[str, Any]:
    """params.yaml (or ``config_path``) with the flow's named parameters and ``overrides`` applied, validated."""
    names = {
        "dataset": "data.dataset",
        "strategy": "search.strategy",
        "max_models": "search.max_models",
        "time_budget_s": "search.time_budget_s",
        "seed": "search.seed",
        "trainers": "search.trainers",
        "max_params": "search.max_params",
        "epochs": "train.epochs",
        "batch_size": "train.batch_size",
    }
    sets = [f"{names[k]}={v}" for k, v in params.items() if v is not None]
    return load(Path(config_path) if config_path else None, [*sets, *(overrides or [])])


class _Lease:
    """The search's lease, held while this flow runs it; a daemon thread renews the heartbeat every ttl/4."""

    def __init__(self, search_id: str, holder: str, ttl_s: float) -> None:
        self.log = MlflowEventLog(search_id)  # its own client: renewals run on another thread
        self.holder, self.ttl_s = holder, ttl_s
        self.number: int | None = None
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="nas-lease", daemon=True)

    def acquire(self) -> None:
        """Take the lease (LeaseHeld if another runner has it); a dead holder's flow run is marked Crashed."""
        self.number, previous = self.log.acquire_lease(self.holder, self.ttl_s)
        if previous:
            print(f"took the search over from {previous}: its lease expired")
            _crash_flow_run(previous, f"its lease on search {self.log.search_id!r} expired; {self.holder} resumed it")
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                assert self.number is not None
                self.log.renew_lease(self.number)
            except LeaseHeld as e:
                self.lost = str(e)
                return
            except Exception as e:  # the store is down: MLflow's client retries; the next beat tries again
                print(f"could not renew the lease ({type(e).__name__}); retrying")

    def check(self) -> None:
        """LeaseHeld if another runner took the search over (this one was presumed dead)."""
        if self.lost:
            raise LeaseHeld(self.lost)

    def release(self) -> None:
        self._stop.set()
        if self.number is not None and self.lost is None:
            try:
                self.log.release_lease(self.number)
            except Exception as e:  # it expires by itself
                print(f"could not release the lease ({type(e).__name__}); it expires in {self.ttl_s:g} s")


def _holder() -> str:
    """Who runs the search: this flow run, or this process."""
    from prefect.runtime import flow_run

    if flow_run.id:
        return f"flow run {flow_run.name} ({flow_run.id})"
    return f"process {os.getpid()} on {socket.gethostname()}"


def _crash_flow_run(holder: str, message: str) -> None:
    """Mark the flow run named in ``holder`` Crashed if Prefect still shows it running (it died unseen)."""
    import re
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    found = re.search(r"\(([0-9a-f-]{36})\)", holder)
    if not found:
        return
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(found.group(1)))
            if run.state is not None and not run.state.is_final():
                client.set_flow_run_state(run.id, Crashed(message=message), force=True)
    except Exception as e:  # cosmetic: the search goes on either way
        print(f"could not mark {holder} crashed ({type(e).__name__}: {e})")


class _LocalTrainings:
    """Trainings as tasks of this flow run, in its process."""

    def __init__(self, search_id: str) -> None:
        self.search_id = search_id
        self.futures: dict[str, PrefectFuture[str]] = {}

    def adopt(self, service: SearchService) -> None:
        """Nothing to adopt: a task does not outlive its flow run."""

    def start(self, model_id: str) -> None:
        self.futures[model_id] = train.submit(self.search_id, model_id)

    def wait(self, service: SearchService, lease: _Lease) -> list[str]:
        """Block until a training ends; the models that ended."""
        while True:
            lease.check()
            done, _ = wait(list(self.futures.values()), timeout=POLL_S)
            ended = [m for m, f in self.futures.items() if f in done]
            if ended:
                for model_id in ended:
                    self.futures.pop(model_id).result()
                return ended


class _DeployedTrainings:
    """Trainings as flow runs of a ``nas-train`` deployment, which any worker of its pool takes.

    A run that ends without logging the model's outcome (crashed, failed, cancelled), or that sends no
    heartbeat for ``liveness_s`` (its worker died), is marked Crashed and dispatched again; after
    ``MAX_DISPATCHES`` the model is logged as failed.
    """

    def __init__(self, deployment: str, search_id: str, liveness_s: float) -> None:
        from prefect.runtime import flow_run

        self.deployment, self.search_id, self.liveness_s = deployment, search_id, liveness_s
        self.service: SearchService  # set by adopt, which runs first
        self.runs: dict[str, Any] = {}  # model id -> flow run id
        self.dispatches: dict[str, int] = {}
        self.key = str(flow_run.id or os.getpid())

    def adopt(self, service: SearchService) -> None:
        """Take over the trainings a previous runner of this search left running (so none runs twice)."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import (
            DeploymentFilter,
            DeploymentFilterName,
            FlowFilter,
            FlowFilterName,
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType

        self.service = service
        flow_name, _, deployment_name = self.deployment.partition("/")
        unfinished = {m.model_id for m in service.state.unfinished}
        live = FlowRunFilterStateType(any_=[StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING])
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=live)),
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment_name])),
            )
        for run in runs:
            model_id = run.parameters.get("model_id")
            if run.parameters.get("search_id") == self.search_id and model_id in unfinished:
                self.runs[model_id] = run.id
                self.dispatches[model_id] = self.dispatches.get(model_id, 0) + 1
                print(f"adopted training {model_id}: flow run {run.name} ({run.state_name})")

    def start(self, model_id: str) -> None:
        from prefect.deployments import run_deployment

        # Numbered after the trainings the log saw start too, so a resumed search does not reuse a dead run's name.
        model = self.service.refresh().models.get(model_id)  # just proposed, perhaps by another service instance
        n = max(self.dispatches.get(model_id, 0), model.attempts if model else 0) + 1
        run = run_deployment(
            self.deployment,
            parameters={"search_id": self.search_id, "model_id": model_id},
            timeout=0,
            flow_run_name=f"{self.search_id}-{model_id}-{n}",
            idempotency_key=f"{self.key}/{self.search_id}/{model_id}/{n}",
        )
        self.runs[model_id], self.dispatches[model_id] = run.id, n  # type: ignore[union-attr]

    def _last_beat(self, client: Any, run_id: Any) -> datetime | None:
        from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter

        since = datetime.now(UTC) - timedelta(seconds=10 * self.liveness_s)
        page = client.read_events(
            EventFilter(
                event=EventNameFilter(name=[HEARTBEAT]),
                resource=EventResourceFilter(id=[f"prefect.flow-run.{run_id}"]),
                occurred=EventOccurredFilter(since=since),  # type: ignore[arg-type]
            ),
            limit=1,
        )
        return max((e.occurred for e in page.events), default=None)

    def _lost(self, service: SearchService, model_id: str, why: str) -> None:
        """The training's flow run is gone without an outcome: run it again, or log the model failed."""
        n = self.dispatches[model_id]
        if n < MAX_DISPATCHES:
            print(f"training {model_id}: {why}; dispatching it again ({n + 1}/{MAX_DISPATCHES})")
            self.start(model_id)
            return
        message = f"{n} flow runs of {self.deployment} ended without an outcome; the last: {why}"
        print(f"training {model_id} failed: {message}")
        service.training_failed(model_id, "error", message, 0.0)

    def wait(self, service: SearchService, lease: _Lease) -> list[str]:
        """Block until a training ends (its outcome is logged); the models that ended."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.objects import StateType
        from prefect.states import Crashed

        while True:
            lease.check()
            state = service.refresh()
            ended = [m for m in self.runs if state.models[m].status in ("trained", "failed")]
            if ended:
                for model_id in ended:
                    self.runs.pop(model_id)
                return ended
            with get_client(sync_client=True) as client:
                for model_id, run_id in list(self.runs.items()):
                    run = client.read_flow_run(run_id)
                    if run.state is None:
                        continue
                    if run.state.is_final():
                        if service.refresh().models[model_id].status not in ("trained", "failed"):
                            self._lost(service, model_id, f"flow run {run.name} ended {run.state.name}")
                        continue
                    if run.state.type != StateType.RUNNING:
                        continue  # waiting for a worker
                    beat = self._last_beat(client, run_id)
                    started = run.start_time or run.expected_start_time
                    seen = max(t for t in (beat, started) if t is not None) if (beat or started) else None
                    quiet = (datetime.now(UTC) - seen).total_seconds() if seen else 0.0
                    if quiet > self.liveness_s:
                        message = f"no heartbeat for {quiet:.0f} s: its worker is gone"
                        client.set_flow_run_state(run_id, Crashed(message=message), force=True)
                        self._lost(service, model_id, f"flow run {run.name}: {message}")
            time.sleep(POLL_S)


@flow(name="nas-search", log_prints=True)
def nas_search(
    name: str = "nas-search",
    dataset: str | None = None,
    strategy: str | None = None,
    max_models: int | None = None,
    time_budget_s: float | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    trainers: int | None = None,
    max_params: int | None = None,
    overrides: list[str] | None = None,
    config_path: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) search ``name``. Unset parameters come from params.yaml; returns the summary.

    LeaseHeld (the flow run fails at once, having logged nothing) if another runner is running the search.
    """
    from nas.event_log import ConcurrencyError

    def make_config() -> dict[str, Any]:
        return search_config(
            config_path,
            overrides,
            dataset=dataset,
            strategy=strategy,
            max_models=max_models,
            time_budget_s=time_budget_s,
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
            trainers=trainers,
            max_params=max_params,
        )

    deployment = os.environ.get("NAS_TRAIN_DEPLOYMENT", "")
    trainings: _LocalTrainings | _DeployedTrainings = (
        _DeployedTrainings(deployment, name, _env_seconds("NAS_TRAINING_LIVENESS_S", 30.0))
        if deployment
        else _LocalTrainings(name)
    )
    log = MlflowEventLog(name)
    lease = _Lease(name, _holder(), _env_seconds("NAS_LEASE_TTL_S", 60.0))
    config: dict[str, Any] | None = None
    if log.parent_run() is None:  # a new search: refuse bad settings and data before writing anything
        config = make_config()
        _splits(_data_key(config))
        log.ensure_parent()
    lease.acquire()  # before anything is written or repaired: of two runners, only one goes on
    try:
        try:
            service, _ = open_search(
                log, lambda: config or make_config(), lambda c: _splits(_data_key(dict(c))), print
            )
        except ConcurrencyError as e:  # a runner without the lease (the plain loop) started it meanwhile
            raise LeaseHeld(f"search {name!r} was started by another runner at the same moment; this one stops") from e
        return _run(service, trainings, lease)
    finally:
        lease.release()


def _run(service: SearchService, trainings: _LocalTrainings | _DeployedTrainings, lease: _Lease) -> dict[str, Any]:
    """The rounds: keep the training slots busy, propose the next model while they train, until the budget is spent."""
    from nas.replay import summary

    name = service.log.search_id
    slots = service.state.config["search"]["trainers"]
    _ensure_trainer_limit(slots)
    trainings.adopt(service)
    running = trainings.runs if isinstance(trainings, _DeployedTrainings) else trainings.futures
    # Proposed, not yet training: what a crash left behind, then one proposal made ahead of time.
    queued = [m.model_id for m in service.state.unfinished if m.model_id not in running]
    exhausted = False
    while True:
        lease.check()
        # A training is submitted only into a free slot, so it starts at once rather than polling for one.
        submitted = []
        while queued and len(running) < slots:
            model_id = queued.pop(0)
            trainings.start(model_id)
            submitted.append(model_id)
        service.refresh()
        if isinstance(trainings, _LocalTrainings):
            _wait_until_training(service, submitted)
        order = list(service.state.models)
        # The next proposal may only see models 1 .. j-1-trainers (see Proposing.batch): wait for those.
        waiting_on = [m for m in [*running, *queued] if order.index(m) < len(order) - slots]
        can_propose = not exhausted and not queued and service.stop_reason() is None and not service.state.finished
        if can_propose and not waiting_on:
            refit(name)  # both computed on the CPU while the submitted models train
            proposed = propose(name)
            if proposed is None:
                exhausted = True
            else:
                queued.append(proposed)
            continue
        if not running:
            break
        trainings.wait(service, lease)
        state = service.refresh()
        done = state.count("trained") + state.count("failed")
        best = f"best {state.best.model_id} {state.best.val_accuracy:.4f}" if state.best else "no model trained yet"
        print(f"models {bar(done, state.config['search']['max_models'])}  {best}")
        publish_quietly(service.log, print)  # report and best_val_accuracy on the parent run, every round
    service.refresh()
    if not service.state.finished:
        service.finish(service.stop_reason() or "no new architecture within the caps")
    publish_quietly(service.log, print)
    info = summary(service.state, service.state.last_seq)
    print(f"search {name} finished: best {info['best_model']} val_accuracy {info['best_val_accuracy']}")
    return info


if __name__ == "__main__":
    # `python -m flows.nas_search` serves the flow as deployment 'nas-search/local'.
    nas_search.serve(name=os.environ.get("NAS_DEPLOYMENT", "local"))
