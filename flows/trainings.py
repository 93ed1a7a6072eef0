"""How the ``nas-search`` flow trains models: as Prefect tasks in its own process, or as flow runs of the
``nas-train`` deployment that any worker of the pool picks up (``NAS_TRAIN_DEPLOYMENT``). Both hold a slot
of the global concurrency limit ``nas-trainer`` while training, so flows on one Prefect API share slots.

A deployed training sends a Prefect event ``nas.training.heartbeat`` every ``HEARTBEAT_S``; one whose flow
run ends without the model's outcome, or that stays silent for the liveness time (its worker died), is
marked Crashed and dispatched again, up to ``MAX_DISPATCHES`` times, then logged as failed.
"""

from __future__ import annotations

import contextvars
import os
import threading
import time
from contextlib import ExitStack, nullcontext
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.futures import PrefectFuture

from flows.local_api import shared_api
from flows.slots import TASK_LEASE_S, training_slot
from nas.data import Splits
from nas.drivers.runner import LeaseKeeper, Trainings, bar, splits_for
from nas.ledger.service import SearchService
from nas.ledger.state import ModelStatus
from nas.tracking import experiment_name, open_store, tracking_uri
from nas.training.stop import StopRequested, check_stop

HEARTBEAT = "nas.training.heartbeat"  # a Prefect event each training flow run sends every HEARTBEAT_S
HEARTBEAT_S = 5.0
MAX_DISPATCHES = 3  # flow runs one model's training may take before it is logged as failed
POLL_S = 2.0

_services = threading.local()  # one service per search and thread: a training task's log reads stay warm


def service_for(search_id: str, uri: str, experiment: str | None = None) -> SearchService:
    """This thread's service of search ``search_id`` in store ``uri`` (its MLflow ``experiment``; default:
    ``MLFLOW_EXPERIMENT_NAME`` or nas), caught up with the log."""
    cache = _services.__dict__.setdefault("by_key", {})
    key = (search_id, uri, experiment or experiment_name())
    if key not in cache:
        cache[key] = SearchService(open_store(uri, key[2]).log(search_id))
    service: SearchService = cache[key]
    service.refresh()
    return service


def data_of(config: Any) -> Splits:
    """The data a search's settings name (loaded once per process)."""
    return splits_for(config)


def _train_in_slot(
    search_id: str,
    model_id: str,
    uri: str,
    lease_s: float = TASK_LEASE_S,
    slot_held: bool = False,
    deadline: float | None = None,
    experiment: str | None = None,
) -> ModelStatus:
    """Train one model in a slot of ``nas-trainer`` (its lease, ``lease_s``, frees the slot of a process that
    died holding it; ``slot_held``: the caller holds one for it) and log the outcome; a model that has its
    outcome already is not trained again. ``deadline``: when the search's wall-clock budget runs out. A stop
    asked (``nas.training.stop``) ends it at the next batch with the model's status unchanged (no outcome)."""
    try:
        return _train(search_id, model_id, uri, lease_s, slot_held, deadline, experiment)
    except StopRequested:
        get_run_logger().info("%s: stopped before its end (no outcome logged; nas resume trains it again)", model_id)
        return service_for(search_id, uri, experiment).state.models[model_id].status


def _train(
    search_id: str,
    model_id: str,
    uri: str,
    lease_s: float,
    slot_held: bool,
    deadline: float | None,
    experiment: str | None,
) -> ModelStatus:
    from nas.training.task import run_training, train_config

    logger = get_run_logger()
    with nullcontext() if slot_held or not shared_api() else training_slot(lease_s):
        service = service_for(search_id, uri, experiment)
        model = service.state.models[model_id]
        if model.status.is_finished:
            return model.status  # a retried task after the outcome was logged: never train twice
        data = data_of(service.state.config)
        configured = train_config(service.state.config["train"]).epochs_for(len(data.x_train))

        def epoch(i: int, logs: dict[str, float]) -> None:
            planned = service.state.models[model_id].planned_epochs  # TrainingStarted's plan, logged before epoch 1
            logger.info(
                "%s epoch %s loss %.4f val_accuracy %.4f",
                model_id,
                bar(i + 1, planned or configured, 10),
                logs.get("loss", float("nan")),
                logs.get("val_accuracy", float("nan")),
            )

        status = run_training(service, model_id, data, on_epoch=epoch, deadline=deadline)
        record = service.state.models[model_id]
        detail = f"val_accuracy {record.val_accuracy:.4f}" if status == ModelStatus.TRAINED else record.failure
        logger.info("%s %s: %s", model_id, status, detail)
        return status


# No tags: a tagged task run asks the server for the tags' concurrency slots before it starts (an API call per
# training, every time Prefect's 5-s cache of "no such limit" has lapsed), and on a SQLite-backed server that
# call often met a locked database and waited out the client's 2-s retry.
@task(name="train", task_run_name="train {model_id}")
def train_task(search_id: str, model_id: str, uri: str, slot_held: bool = False, deadline: float | None = None) -> str:
    """Train one model in a training slot (``slot_held``: the flow holds one for it), ending by the search's
    ``deadline``, and log its outcome; returns trained or failed."""
    return str(_train_in_slot(search_id, model_id, uri, slot_held=slot_held, deadline=deadline))


@flow(name="nas-train", log_prints=True)
def nas_train(
    search_id: str,
    model_id: str,
    uri: str | None = None,
    deadline: float | None = None,
    experiment: str | None = None,
) -> str:
    """Train model ``model_id`` of search ``search_id`` (in the MLflow ``experiment``; default: the worker's
    ``MLFLOW_EXPERIMENT_NAME`` or nas) in a training slot and log its outcome (trained or
    failed); a model whose outcome is logged already is not trained again. Deployed for workers, it is how
    one search trains several models at once on several workers (see ``NAS_TRAIN_DEPLOYMENT``). ``deadline``
    (a Unix time) is when the search's wall-clock budget runs out: the training ends at an epoch before it."""
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
        where = uri or tracking_uri()
        return str(_train_in_slot(search_id, model_id, where, lease_s=60, deadline=deadline, experiment=experiment))
    finally:
        stop.set()


class TaskTrainings(Trainings):
    """Trainings as tasks of the search's flow run, in its process.

    The flow run takes the ``nas-trainer`` slots its trainings use and keeps them from one training to the next
    until ``close``: a search keeps its slots busy (its next model is proposed as a slot frees, or while one
    trains), and taking a slot anew for every training costs seconds on a SQLite-backed Prefect server, whose
    database is often locked right then. Beyond the first slot it takes only free ones; when there is none, the
    task waits for a slot itself, as deployed trainings do, so a search never holds a slot while waiting for
    another. On a Prefect API no other process uses (``flows.local_api``) there is no limit to take.
    """

    def __init__(self, search_id: str, uri: str) -> None:
        super().__init__()
        self.search_id, self.uri = search_id, uri
        self.futures: dict[str, PrefectFuture[str]] = {}
        self.service: SearchService | None = None
        self.done: set[str] = set()  # models whose task has ended, told by the futures' callbacks
        self.finished = threading.Event()
        self.slots: list[ExitStack] = []  # the slots this flow run holds
        self.on_held: set[str] = set()  # running models that use a slot the flow run holds
        self.shared = shared_api()  # slots of the global limit only where several processes use one API

    def adopt(self, service: SearchService) -> None:
        self.service = service  # a task does not outlive its flow run: nothing to adopt

    def _ended(self, model_id: str) -> None:
        self.done.add(model_id)
        self.finished.set()

    def _take_slot(self, wait: bool) -> None:
        slot = ExitStack()
        if slot.enter_context(training_slot(TASK_LEASE_S, wait=wait)):
            self.slots.append(slot)
        else:
            slot.close()

    def start(self, model_id: str) -> None:
        if len(self.on_held) >= len(self.slots) and self.shared:
            self._take_slot(wait=not self.slots)
        slot_held = len(self.on_held) < len(self.slots)
        if slot_held:
            self.on_held.add(model_id)
        assert self.service is not None, "adopt() comes first"
        budget_end = self.service.deadline()
        future = self.futures[model_id] = train_task.submit(self.search_id, model_id, self.uri, slot_held, budget_end)
        future.add_done_callback(lambda _: self._ended(model_id))
        self.running.append(model_id)
        # Wait until the training has logged its start, so a proposal computed next does not hold the GIL
        # while the task starts; TensorFlow's kernels release it once training runs.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.service.refresh().models[model_id].status == ModelStatus.PROPOSED:
            if model_id in self.done:
                break
            time.sleep(0.1)

    def wait(self, service: SearchService, lease: LeaseKeeper) -> list[str]:
        """Block until a training task ends (the first of those running, not all of them); the models that ended."""
        while True:
            lease.check()
            self.finished.clear()
            ended = [m for m in self.running if m in self.done]
            if ended:
                for model_id in ended:
                    self.futures.pop(model_id).result()
                    self.running.remove(model_id)
                    self.done.discard(model_id)
                    self.on_held.discard(model_id)
                # A task waiting for a slot of its own must not wait on one this flow run keeps idle.
                while len(self.slots) > len(self.on_held) and len(self.running) > len(self.on_held):
                    self.slots.pop().close()
                return ended
            self.finished.wait(POLL_S)

    def close(self) -> None:
        """Give the slots this flow run holds back."""
        while self.slots:
            self.slots.pop().close()


class DeployedTrainings(Trainings):
    """Trainings as flow runs of a ``nas-train`` deployment, which any worker of its pool takes."""

    def __init__(self, deployment: str, search_id: str, uri: str, liveness_s: float) -> None:
        from prefect.runtime import flow_run

        super().__init__()
        self.deployment, self.search_id, self.uri, self.liveness_s = deployment, search_id, uri, liveness_s
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
            if (
                run.parameters.get("search_id") == self.search_id
                and model_id in unfinished
                and model_id not in self.runs
            ):
                self.runs[model_id] = run.id
                self.running.append(model_id)
                self.dispatches[model_id] = self.dispatches.get(model_id, 0) + 1
                print(f"adopted training {model_id}: flow run {run.name} ({run.state_name})")

    def start(self, model_id: str) -> None:
        self._dispatch(model_id)
        self.running.append(model_id)

    def _dispatch(self, model_id: str) -> None:
        from prefect.deployments import run_deployment

        # Numbered after the trainings the log saw start too, so a resumed search does not reuse a dead run's name.
        model = self.service.refresh().models.get(model_id)  # just proposed, perhaps by another service instance
        n = max(self.dispatches.get(model_id, 0), model.attempts if model else 0) + 1
        run = run_deployment(
            self.deployment,
            parameters={
                "search_id": self.search_id,
                "model_id": model_id,
                "uri": self.uri,
                "deadline": self.service.deadline(),
                "experiment": experiment_name(),
            },
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
            self._dispatch(model_id)
            return
        message = f"{n} flow runs of {self.deployment} ended without an outcome; the last: {why}"
        print(f"training {model_id} failed: {message}")
        service.training_failed(model_id, "error", message, 0.0)

    def wait(self, service: SearchService, lease: LeaseKeeper) -> list[str]:
        """Block until a training ends (its outcome is logged); the models that ended."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.objects import StateType
        from prefect.states import Crashed

        while True:
            lease.check()
            check_stop()  # the trainings on workers go on; a resumed search adopts them
            state = service.refresh()
            ended = [m for m in self.running if state.models[m].status.is_finished]
            if ended:
                for model_id in ended:
                    self.runs.pop(model_id, None)
                    self.running.remove(model_id)
                return ended
            with get_client(sync_client=True) as client:
                for model_id, run_id in list(self.runs.items()):
                    run = client.read_flow_run(run_id)
                    if run.state is None:
                        continue
                    if run.state.is_final():
                        if not service.refresh().models[model_id].status.is_finished:
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
